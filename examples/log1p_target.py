"""Root mean squared logarithmic error (RMSLE), the metric of Kaggle sales / demand forecasting
competitions, used directly as the training loss: both the count targets and the non-negative
predictions go through ``log1p`` inside the loss. Competition kernels often write it as a list
comprehension over ``zip(pred, target)`` summed with the builtin ``sum`` before the square root."""
import torch
import torch.nn.functional as F

CASE = {
    "loops": "vectorize",
    "elementwise": False,
    "target_preprocessing": True,  # bench: timed with and without hoisting
    "sizes": {"small": "pred/target [16, 7] (one week)", "bench": "pred/target [8192, 28] (four weeks)"},
}


def naive(pred, target):
    sq_errors = [((torch.log1p(p) - torch.log1p(t)) ** 2).mean() for p, t in zip(pred, target)]
    return torch.sqrt(sum(sq_errors) / len(sq_errors))


def expert(pred, target):
    return torch.sqrt(F.mse_loss(torch.log1p(pred), torch.log1p(target)))


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    shape = {"small": (16, 7), "bench": (8192, 28)}[size]
    # Predictions come out of a softplus head, so they are positive.
    pred = (torch.rand(shape, generator=g, dtype=dtype) * 50).requires_grad_()
    target = torch.randint(0, 100, shape, generator=g).to(dtype)  # unit sales per day
    return pred, target


if __name__ == "__main__":
    from _check import main  # run as a script, examples/ itself is sys.path[0]
    main(__file__)
