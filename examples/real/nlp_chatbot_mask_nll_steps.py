"""Masked NLL over decoder time steps, from the PyTorch chatbot tutorial (pytorch/tutorials,
beginner_source/chatbot_tutorial.py, ``maskNLLLoss`` and ``train``): the decoder emits softmax
probabilities one step at a time, and for every ``t in range(max_target_len)`` the helper gathers
the target probability, takes ``-log``, keeps the non-padding positions with ``masked_select``,
averages them, moves the result ``.to(device)`` and also returns ``mask.sum().item()``; the
training step adds the per-step means into ``loss`` and logs ``mask_loss.item() * nTotal`` into a
list, a host round trip per step that does not feed the returned loss."""
import torch
import torch.nn.functional as F

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "scores [6, 4, 20] (time, batch, vocab), ragged lengths",
              "bench": "scores [10, 64, 7826] (MAX_LENGTH 10, batch 64, Cornell vocabulary)"},
    "source": "pytorch/tutorials:beginner_source/chatbot_tutorial.py",
    "field": "nlp sequence",
    "target_args": ("target_variable", "mask"),
}

device = torch.device("cpu")


def maskNLLLoss(inp, target, mask):
    nTotal = mask.sum()
    crossEntropy = -torch.log(torch.gather(inp, 1, target.view(-1, 1)).squeeze(1))
    loss = crossEntropy.masked_select(mask).mean()
    loss = loss.to(device)
    return loss, nTotal.item()


def naive(decoder_scores, target_variable, mask):
    max_target_len = target_variable.shape[0]
    loss = 0
    print_losses = []
    n_totals = 0
    for t in range(max_target_len):
        decoder_output = F.softmax(decoder_scores[t], dim=1)  # the decoder's last layer
        mask_loss, nTotal = maskNLLLoss(decoder_output, target_variable[t], mask[t])
        loss += mask_loss
        print_losses.append(mask_loss.item() * nTotal)
        n_totals += nTotal
    return loss


def expert(decoder_scores, target_variable, mask):
    probs = F.softmax(decoder_scores, dim=2)  # [T, B, V]
    nll = -torch.log(probs.gather(2, target_variable.unsqueeze(2)).squeeze(2))  # [T, B]
    per_step = torch.where(mask, nll, 0.0).sum(1) / mask.sum(1)
    return per_step.sum()


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    t, b, v = {"small": (6, 4, 20), "bench": (10, 64, 7826)}[size]
    decoder_scores = torch.randn(t, b, v, generator=g, dtype=dtype).requires_grad_()
    target_variable = torch.randint(3, v, (t, b), generator=g)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    lengths[0] = t  # batches are padded to their longest target
    mask = torch.arange(t)[:, None] < lengths[None, :]  # [T, B] bool, as binaryMatrix builds it
    target_variable[~mask] = 0  # PAD_token
    return decoder_scores, target_variable, mask
