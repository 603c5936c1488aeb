"""Equivalence checking: same value and same gradients. Used by ``verify=True`` and by tests."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils._pytree import tree_flatten, tree_map

# Default (rtol, atol) when none are given: vectorized reductions sum in another order, so float32
# needs more room than torch.testing's defaults; float64 stays tight.
TOLERANCES = {
    torch.float16: (1e-3, 1e-3),
    torch.bfloat16: (1.6e-2, 1e-2),
    torch.float32: (1e-4, 1e-5),
    torch.float64: (1e-7, 1e-9),
}

_SEED = 20261121


def assert_equivalent(original: Callable, optimized: Callable, *inputs: Any,
                      rtol: float | None = None, atol: float | None = None, **kwinputs: Any) -> None:
    """Assert ``optimized(*inputs)`` equals ``original(*inputs)`` in value and in the gradient
    w.r.t. every input that requires grad and every parameter of module inputs.

    Each side runs on its own clones of the inputs, with the same RNG seed, and gradients come from
    ``torch.autograd.grad`` with one fixed random cotangent, so ``.grad`` fields are not touched.
    """
    problems = differences(original, optimized, inputs, kwinputs, rtol, atol)
    if problems:
        raise AssertionError("not equivalent:\n  " + "\n  ".join(problems))


def differences(original: Callable, optimized: Callable, args: tuple, kwargs: dict,
                rtol: float | None = None, atol: float | None = None) -> list[str]:
    """Every mismatch of value or gradient between the two functions, as readable lines."""
    return compare(outputs_and_gradients(original, args, kwargs),
                   outputs_and_gradients(optimized, args, kwargs), rtol, atol)


def compare(want_run: tuple[list, dict], got_run: tuple[list, dict], rtol: float | None = None,
            atol: float | None = None) -> list[str]:
    """Every mismatch between two ``outputs_and_gradients`` results, as readable lines."""
    (want_values, want_grads), (got_values, got_grads) = want_run, got_run
    if len(want_values) != len(got_values):
        return [f"output structure differs: {len(want_values)} vs {len(got_values)} leaves"]
    problems = []
    for i, (want, got) in enumerate(zip(want_values, got_values)):
        problems += _compare(f"output {i}", want, got, rtol, atol)
    for name, want in want_grads.items():
        problems += _compare(f"gradient of {name}", want, got_grads[name], rtol, atol)
    return problems


def _compare(what: str, want: Any, got: Any, rtol: float | None, atol: float | None) -> list[str]:
    if not isinstance(want, torch.Tensor):
        if isinstance(got, torch.Tensor) and got.numel() == 1 and isinstance(want, (int, float)):
            got = got.item()  # a Python number vs a 0-d tensor of the same value is fine
        nans = isinstance(want, float) and isinstance(got, float) and want != want and got != got
        return [] if want == got or nans else [f"{what}: {want!r} != {got!r}"]
    if not isinstance(got, torch.Tensor):
        return [f"{what}: expected a tensor, got {type(got).__name__}"]
    if rtol is None and atol is None:
        rtol, atol = TOLERANCES.get(want.dtype, (None, None))
    try:
        torch.testing.assert_close(got.detach(), want.detach(), rtol=rtol, atol=atol,
                                   equal_nan=True)
    except AssertionError as exc:
        return [f"{what}: " + " ".join(str(exc).split())]
    return []


def outputs_and_gradients(fn: Callable, args: tuple, kwargs: dict) -> tuple[list, dict]:
    """Run ``fn`` on cloned inputs; return flat outputs and gradients by input name."""
    args, kwargs = clone_inputs(args, kwargs)
    wrt = differentiable_inputs(args, kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        out = fn(*args, **kwargs)
    values, _ = tree_flatten(out)
    # one cotangent per output position: the same for both sides even when one side returns a
    # Python number where the other returns a 0-d tensor
    total = sum((v * torch.randn(v.shape, generator=torch.Generator().manual_seed(_SEED + k),
                                 dtype=v.dtype).to(v.device)).sum()
                for k, v in enumerate(values) if isinstance(v, torch.Tensor) and v.requires_grad)
    grads: dict[str, torch.Tensor] = {}
    if wrt:
        names, tensors = zip(*wrt.items())
        if isinstance(total, torch.Tensor):
            found = torch.autograd.grad(total, tensors, allow_unused=True)
        else:
            found = (None,) * len(tensors)
        for name, t, g in zip(names, tensors, found):
            grads[name] = torch.zeros_like(t) if g is None else g
    return values, grads


def clone_inputs(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Detached copies of every tensor, keeping requires_grad: runs cannot interfere."""
    return tree_map(_clone, (args, kwargs))


def _clone(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().clone().requires_grad_(x.requires_grad)
    return x


def differentiable_inputs(args: tuple, kwargs: dict) -> dict[str, torch.Tensor]:
    """Tensors requiring grad and module parameters, named by where they sit in the inputs."""
    named: dict[str, torch.Tensor] = {}
    leaves = [(f"argument {i}", a) for i, a in enumerate(args)]
    leaves += [(f"argument {k!r}", v) for k, v in kwargs.items()]
    for where, leaf in leaves:
        if isinstance(leaf, torch.nn.Module):
            for pname, p in leaf.named_parameters():
                if p.requires_grad:
                    named[f"{where} parameter {pname}"] = p
            continue
        flat, _ = tree_flatten(leaf)
        for j, t in enumerate(flat):
            if isinstance(t, torch.Tensor) and t.requires_grad:
                named[where if len(flat) == 1 else f"{where}[{j}]"] = t
    return named
