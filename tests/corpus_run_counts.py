"""How many loops of the real-code corpus are reported vectorized, and how many run vectorized on
the small inputs (``compile=False``, first call): ``python -m tests.corpus_run_counts [-v]``.

A loop runs vectorized when its vectorized branch ran and never failed, or when it sits inside a
loop that did (the inner loop is part of the outer one's vectorized form: ``Report.ran_vectorized``).
``-v`` lists every loop with its run-time counts, its class (``examples/real/loop_classes.py``),
its strategy and, for kept loops, the reason. Loops of the methods and helpers the loss calls are
the loss's (the report lists them); ``distributed``: split into a vectorized loop and a residual
one. The last line is the goal's measure: of the loops whose iterations are independent, how many
run vectorized.
"""
from __future__ import annotations

import importlib
import sys
import warnings

from examples.real.loop_classes import INDEPENDENT, loop_class
from rewrite import optimize_loss
from tests.helpers import REAL_EXAMPLE_NAMES


def main(verbose: bool) -> None:
    loops = vectorized = running = distributed = independent = independent_running = 0
    for name in REAL_EXAMPLE_NAMES:
        module = importlib.import_module(f"examples.{name}")
        fn = optimize_loss(module.naive, compile=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn(*module.make_inputs("small"))
        for loop in fn.report.loops:
            runs = bool(fn.report.ran_vectorized(loop))
            loops, vectorized, running = loops + 1, vectorized + loop.vectorized, running + runs
            distributed += loop.strategy == "distributed"
            kind = loop_class(name.removeprefix("real."), loop.lineno)[0]
            independent += kind == INDEPENDENT
            independent_running += kind == INDEPENDENT and runs
            if verbose:
                print(f"{name}:{loop.lineno} {kind} vectorized={loop.vectorized} running={runs} "
                      f"strategy={loop.strategy} "
                      f"{loop.runs()} {'' if loop.vectorized else loop.reason[:120]}")
    print(f"{loops} loops, {vectorized} reported vectorized ({distributed} distributed), "
          f"{running} running vectorized")
    print(f"{independent} loops with independent iterations, {independent_running} of them running "
          f"vectorized ({100 * independent_running / max(independent, 1):.0f}%)")


if __name__ == "__main__":
    main("-v" in sys.argv)
