"""Chamfer loss with a Python loop over the clouds of a batch, built from the pure-PyTorch helpers
of ThibaultGROUEIX/ChamferDistancePytorch (chamfer_python.py): ``pairwise_dist`` expands the
diagonals of ``x x^T`` and ``y y^T`` into a squared-distance matrix for one cloud pair, and
``NN_loss`` takes the min over one dimension and averages; callers that only have the 2-D helpers
loop over the batch, adding the loss in both directions per cloud and dividing by the batch size
at the end. Each iteration is an independent reduction, so the loop vectorizes."""
import torch

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "pred/gt [4, 64, 3] (batch, points, xyz)", "bench": "pred/gt [16, 1024, 3]"},
    "source": "ThibaultGROUEIX/ChamferDistancePytorch:chamfer_python.py",
    "field": "point clouds",
    "target_args": ("gt",),
}


def pairwise_dist(x, y):
    xx, yy, zz = torch.mm(x, x.t()), torch.mm(y, y.t()), torch.mm(x, y.t())
    rx = xx.diag().unsqueeze(0).expand_as(xx)
    ry = yy.diag().unsqueeze(0).expand_as(yy)
    P = rx.t() + ry - 2 * zz
    return P


def NN_loss(x, y, dim=0):
    dist = pairwise_dist(x, y)
    values, indices = dist.min(dim=dim)
    return values.mean()


def naive(pred, gt):
    loss = 0
    for i in range(pred.size(0)):
        loss += NN_loss(pred[i], gt[i], dim=0) + NN_loss(pred[i], gt[i], dim=1)
    return loss / pred.size(0)


def expert(pred, gt):
    # Same expansion as the helper, batched: |x|^2 + |y|^2 - 2 x.y for every pair of every cloud.
    xx = pred.pow(2).sum(-1)
    yy = gt.pow(2).sum(-1)
    P = xx.unsqueeze(2) + yy.unsqueeze(1) - 2 * torch.bmm(pred, gt.transpose(1, 2))  # [B, N, M]
    return (P.min(dim=1).values.mean(dim=1) + P.min(dim=2).values.mean(dim=1)).mean()


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    b, n = {"small": (4, 64), "bench": (16, 1024)}[size]
    pred = torch.rand(b, n, 3, generator=g, dtype=dtype).requires_grad_()
    gt = torch.rand(b, n, 3, generator=g, dtype=dtype)
    return pred, gt
