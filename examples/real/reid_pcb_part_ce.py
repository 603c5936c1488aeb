"""Part-based re-ID classification loss (PCB) as layumi/Person_reID_baseline_pytorch writes it in
train.py: the model returns a list of six part classifiers' logits, copied into a dict in a loop
(``part[i] = outputs[i]``), summed softmax scores give the logged prediction through
``torch.max(score.data, 1)``, and the loss starts from the first part and adds the others in a
loop with ``loss += criterion(part[i+1], labels)``, then is scaled in place by the warm-up
factor and read back with ``.item()`` for the running statistics."""
import torch
import torch.nn as nn
import torch.nn.functional as F

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "6 parts x [8, 10] logits", "bench": "6 parts x [64, 751] logits"},
    "source": "layumi/Person_reID_baseline_pytorch:train.py",
    "field": "re-identification",
    "target_args": ("labels",),
}

WARM_UP = 0.55  # the warm-up factor of an early iteration: loss *= warm_up


def naive(outputs, labels):
    criterion = nn.CrossEntropyLoss()
    part = {}
    sm = nn.Softmax(dim=1)
    num_part = 6
    for i in range(num_part):
        part[i] = outputs[i]

    score = sm(part[0]) + sm(part[1]) + sm(part[2]) + sm(part[3]) + sm(part[4]) + sm(part[5])
    _, preds = torch.max(score.data, 1)

    loss = criterion(part[0], labels)
    for i in range(num_part - 1):
        loss += criterion(part[i + 1], labels)

    loss *= WARM_UP
    running_loss = loss.item() * labels.size(0)                       # statistics, as in train.py
    running_corrects = float(torch.sum(preds == labels.data))
    return loss


def expert(outputs, labels):
    # Equal batch per part: the sum of six means is six times the mean over all parts.
    logits = torch.stack(outputs)                                     # [6, B, C]
    n_parts = logits.shape[0]
    return F.cross_entropy(logits.flatten(0, 1), labels.repeat(n_parts)) * n_parts * WARM_UP


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    b, c = {"small": (8, 10), "bench": (64, 751)}[size]
    outputs = [torch.randn(b, c, generator=g, dtype=dtype).requires_grad_() for _ in range(6)]
    labels = torch.randint(0, c, (b,), generator=g)
    return outputs, labels
