"""`make demo`: the seed examples, original vs optimized: value and gradient check, timing table.

Optimized here means ``optimize_loss(naive, compile=False)``: the AST rewrite alone, so the demo
runs in seconds; `python -m rewrite bench` measures the compiled variants too.
"""
import warnings
from pathlib import Path

import torch

from _check import forward_backward_ms, load
from rewrite import optimize_loss
from rewrite.testing import assert_equivalent

SEEDS = ["masked_mse", "target_scaling", "log1p_target", "class_weighted_ce", "slow_add",
         "elementwise_fn_loop", "elementwise_if_else"]


def main() -> None:
    torch.manual_seed(0)
    here = Path(__file__).parent
    print(f"{'example':22} {'check':8} {'naive ms':>9} {'optimized ms':>13} {'expert ms':>10} "
          f"{'speed-up':>9}  loops")
    for name in SEEDS:
        module = load(here / f"{name}.py")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fast = optimize_loss(module.naive, compile=False)
            for dtype in (torch.float32, torch.float64):
                assert_equivalent(module.naive, fast, *module.make_inputs("small", dtype))
        inputs = module.make_inputs("small")
        naive, optimized, expert = (forward_backward_ms(f, inputs)
                                    for f in (module.naive, fast, module.expert))
        loops = fast.report.loops
        summary = ", ".join(f"{l.lineno}:{l.strategy}" for l in loops) or "none"
        check = "fallback" if caught else "ok"
        print(f"{name:22} {check:8} {naive:9.2f} {optimized:13.2f} {expert:10.2f} "
              f"{naive / optimized:8.1f}x  {summary}")
    print("check: value and every gradient equal (float32 and float64) at the 'small' size; "
          "times: best fwd+bwd of 3 after warm-up")


if __name__ == "__main__":
    main()
