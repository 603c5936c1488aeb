"""The smallest loop-vectorization case: an element-wise add written as a double Python loop
over rows and columns into a preallocated output (``out[i, j] = a[i, j] + b[i, j]``), then summed.
Code ported from C or NumPy-by-hand looks like this; every element costs several interpreter and
autograd operations, and every assignment adds a CopySlices node to the graph."""
import torch

CASE = {
    "loops": "vectorize",
    "elementwise": True,
    "sizes": {"small": "a/b [30, 30]", "bench": "a/b [1000, 1000]"},
}


def naive(a, b):
    out = torch.zeros_like(a)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[i, j] = a[i, j] + b[i, j]
    return out.sum()


def expert(a, b):
    return (a + b).sum()


def make_inputs(size: str = "small", dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    n = {"small": 30, "bench": 1000}[size]
    a = torch.randn(n, n, generator=g, dtype=dtype).requires_grad_()
    b = torch.randn(n, n, generator=g, dtype=dtype).requires_grad_()
    return a, b


if __name__ == "__main__":
    from _check import main  # run as a script, examples/ itself is sys.path[0]
    main(__file__)
