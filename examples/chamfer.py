"""Chamfer distance between a predicted and a ground-truth point cloud (point cloud completion,
3D reconstruction, PointNet-style autoencoders): for every point, the squared distance to its
nearest neighbour in the other set, averaged, in both directions. Without a CUDA extension,
research code loops over the points of each cloud (``for p in pred_points:``) and takes a
``.min()`` over the other set."""
import torch

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "sizes": {"small": "32 vs 24 points in 3D", "bench": "2048 vs 2048 points in 3D"},
}


def naive(pred_points, gt_points):
    pred_to_gt = 0
    for p in pred_points:
        pred_to_gt += ((gt_points - p) ** 2).sum(dim=1).min()
    gt_to_pred = 0
    for q in gt_points:
        gt_to_pred += ((pred_points - q) ** 2).sum(dim=1).min()
    return pred_to_gt / len(pred_points) + gt_to_pred / len(gt_points)


def expert(pred_points, gt_points):
    # The direct (not matmul-based) cdist avoids the cancellation of |a|^2 + |b|^2 - 2ab, which is
    # worst exactly for the small nearest-neighbour distances this loss keeps.
    d2 = torch.cdist(pred_points, gt_points, compute_mode="donot_use_mm_for_euclid_dist").square()
    return d2.amin(dim=1).mean() + d2.amin(dim=0).mean()


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    n, m = {"small": (32, 24), "bench": (2048, 2048)}[size]
    pred_points = torch.randn(n, 3, generator=g, dtype=dtype).requires_grad_()
    gt_points = torch.randn(m, 3, generator=g, dtype=dtype)
    return pred_points, gt_points


if __name__ == "__main__":
    from _check import main  # run as a script, examples/ itself is sys.path[0]
    main(__file__)
