def soft_ce(logits, labels):
    total = 0
    _averaged = False
    _labels_stacked = _stack_items(tuple(labels)) if (type(labels) is list or (isinstance(labels, tuple) and type(labels).__getitem__ is tuple.__getitem__ and (type(labels).__iter__ is tuple.__iter__) and (type(labels).__len__ is tuple.__len__))) and len(labels) > 0 and all((isinstance(_v, torch.Tensor) and _v.shape == labels[0].shape and (_v.dtype == labels[0].dtype) and (_v.device == labels[0].device) for _v in labels)) else labels
    if isinstance(_labels_stacked, torch.Tensor) and logits.shape[0] <= _labels_stacked.shape[0] and isinstance(logits, torch.Tensor) and (logits.shape[0] <= logits.shape[0]) and isinstance(logits.shape[0], int) and (logits.shape[0] > 0) and (to_one_hot is _to_one_hot_inlined):
        'optimize_loss: loop at line 147 vectorized'

        def _body(_labels_row, _logits_row):
            _total_part = 0
            _to_one_hot_label = _labels_row
            _to_one_hot_num_classes = logits.shape[1]
            _to_one_hot_vec = torch.zeros(_to_one_hot_num_classes)
            _to_one_hot_vec_at = torch.arange(_to_one_hot_vec.numel(), device=_to_one_hot_vec.device).view(_to_one_hot_vec.shape)[_to_one_hot_label]
            _to_one_hot_vec = _to_one_hot_vec.flatten().scatter(0, _to_one_hot_vec_at.flatten(), torch.as_tensor(1, dtype=_to_one_hot_vec.dtype, device=_to_one_hot_vec.device).expand(_to_one_hot_vec_at.shape).flatten()).view(_to_one_hot_vec.shape)
            _to_one_hot = _to_one_hot_vec
            target = _to_one_hot
            _total_part = _total_part + -(target * F.log_softmax(_logits_row, dim=0)).sum()
            return (torch.as_tensor(_total_part),)
        _outs = _map_in_chunks(_body, in_dims=(0, 0))(_labels_stacked if logits.shape[0] == _labels_stacked.shape[0] else _labels_stacked[0:logits.shape[0]:1], logits if logits.shape[0] == logits.shape[0] else logits[0:logits.shape[0]:1])
        _outs = (_loop_sum(_outs[0]) / logits.shape[0],)
        _averaged = True
        total = _outs[0]
    else:
        for b in range(logits.shape[0]):
            target = to_one_hot(labels[b], logits.shape[1])
            total = total + -(target * F.log_softmax(logits[b], dim=0)).sum()
    return total if _averaged else total / logits.shape[0]