"""Shared runner for ``python examples/<name>.py``: checks naive == expert and prints timings."""
import importlib.util
import time
from pathlib import Path

import torch

from rewrite.testing import assert_equivalent


def load(path):
    """Import an example from its file: run as a script, examples/ is not importable as a package."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"examples.{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def forward_backward_ms(fn, inputs, repeats=3):
    """Best wall time of forward + backward, in ms, after one warm-up call (first calls pay lazy init)."""
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        fn(*inputs).backward()
        times.append(time.perf_counter() - start)
    return min(times[1:]) * 1e3


def main(path):
    module = load(path)
    for dtype in (torch.float32, torch.float64):
        assert_equivalent(module.naive, module.expert, *module.make_inputs("small", dtype))
    naive_ms = forward_backward_ms(module.naive, module.make_inputs("small"))
    expert_ms = forward_backward_ms(module.expert, module.make_inputs("small"))
    print(f"{Path(path).stem}: OK (float32, float64)  small fwd+bwd: "
          f"naive {naive_ms:.1f} ms, expert {expert_ms:.1f} ms")
