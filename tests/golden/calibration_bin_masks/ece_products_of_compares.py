def ece_products_of_compares(logits, labels, lowers, uppers):
    conf, pred = logits.softmax(1).max(1)
    acc = (pred == labels).to(logits.dtype)
    total = logits.new_zeros(())
    for lo, hi in zip(lowers, uppers):
        in_bin = (conf > lo) * (conf <= hi)
        prop = in_bin.to(logits.dtype).mean()
        if prop.item() > 0:
            total = total + prop * (conf[in_bin].mean() - acc[in_bin].mean()).abs()
    return total