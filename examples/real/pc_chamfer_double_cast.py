"""Batched Chamfer distance that computes in double precision and hands back float32, from
``distChamfer`` in ThibaultGROUEIX/ChamferDistancePytorch (chamfer_python.py): the clouds are cast
with ``.double()``, the squared distances come from ``bmm`` plus expanded squared norms, and the
four results (both minima and both argmins) are cast back with ``.float()`` and ``.int()``; the
training code averages the two minima. No loop: the pattern is the dtype round trip, so a float64
caller gets a float32 loss, which any rewrite must preserve."""
import torch

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "a [4, 48, 3], b [4, 40, 3]", "bench": "a [16, 1200, 3], b [16, 1024, 3]"},
    "source": "ThibaultGROUEIX/ChamferDistancePytorch:chamfer_python.py",
    "field": "point clouds",
    "target_args": ("b",),
}


def distChamfer(a, b):
    """a: [B, N, D], b: [B, M, D]; returns both nearest squared distances and their indices."""
    x, y = a.double(), b.double()
    bs, num_points_x, points_dim = x.size()
    bs, num_points_y, points_dim = y.size()

    xx = torch.pow(x, 2).sum(2)
    yy = torch.pow(y, 2).sum(2)
    zz = torch.bmm(x, y.transpose(2, 1))
    rx = xx.unsqueeze(1).expand(bs, num_points_y, num_points_x)
    ry = yy.unsqueeze(1).expand(bs, num_points_x, num_points_y)
    P = rx.transpose(2, 1) + ry - 2 * zz
    return torch.min(P, 2)[0].float(), torch.min(P, 1)[0].float(), torch.min(P, 2)[1].int(), torch.min(P, 1)[1].int()


def naive(a, b):
    dist1, dist2, idx1, idx2 = distChamfer(a, b)
    return torch.mean(dist1) + torch.mean(dist2)


def expert(a, b):
    P = torch.cdist(a.double(), b.double()).pow(2)  # [B, N, M], in double like the original
    return P.min(2).values.float().mean() + P.min(1).values.float().mean()


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    bs, n, m = {"small": (4, 48, 40), "bench": (16, 1200, 1024)}[size]
    a = torch.rand(bs, n, 3, generator=g, dtype=dtype).requires_grad_()
    b = torch.rand(bs, m, 3, generator=g, dtype=dtype)
    return a, b
