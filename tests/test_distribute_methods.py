"""Distribution of a loop that calls a method of its own object (``inline_method_calls``):
the method is inlined, its loss module call hoisted (the module's class known from what a
subclass passes its base's ``__init__``: ``module_loss_calls``), its effects on the object kept
in the residual loop; a list of tensors is stacked for the hoisted loop. Golden generated code
(with a no-change case), equivalence (value, every gradient, float32 and float64, the object's
state after the loop) and the runtime checks (an object of another class, another loss module:
the loop runs as written)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from passes.report import Report
from rewrite import optimize_loss
from rewrite.frontend import rewrite_function
from rewrite.testing import assert_equivalent
from tests import method_call_sources as src

GOLDEN = Path(__file__).parent / "golden" / "distribute_methods"
CASES = {"abstract_method": (src.Scorer.score_all, {15: "distributed"}),
         "branchy_method": (src.Branchy.run, {48: "kept"})}


def generated(fn) -> tuple[str, dict[int, str], Report]:
    report = Report(fn.__qualname__, "", 0)
    _, changed = rewrite_function(fn, report)
    return (report.rewritten_source if changed else "(unchanged)\n",
            {loop.lineno: loop.strategy for loop in report.loops}, report)


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name):
    fn, expected = CASES[name]
    code, strategies, _ = generated(fn)
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("OL_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(code)
    assert code == path.read_text()
    assert strategies == expected


def test_reasons():
    reason = generated(src.Scorer.score_all)[2].loops[0].reason
    assert reason.startswith("lines 16, 29 hoisted into one loop")
    # the method's statement as written (not its inlined copy's fresh names), and the list the
    # loop iterates as the user names it (not the stacked tensor's name)
    assert "method_call_sources.py:29 `self.total += self.criterion(out, target)`" \
           ": assigns `self.total`: mutates an object" in reason
    assert "`outputs` is a tensor or a list or tuple of tensors" in reason
    assert "_score_" not in reason and "_stacked" not in reason
    kept = generated(src.Branchy.run)[2].loops[0].reason
    assert kept.startswith("`self._add(x[i], y[i])` calls `_add`, which changes `self.total` "
                           "(line 54): the original does it in every iteration")
    assert "`self._add(x[i], y[i])` is evaluated for its side effects" in kept


def inputs(dtype, steps=5):
    g = torch.Generator().manual_seed(3)
    outputs = [torch.randn(4, 6, generator=g, dtype=dtype).log_softmax(1).requires_grad_()
               for _ in range(steps)]
    targets = torch.randint(0, 6, (steps, 4), generator=g)
    targets[1, :2] = 1  # the class of weight 0
    return outputs, targets


def scored(method, cls, criterion=None):
    """``method`` on a new object of ``cls`` (its criterion replaced when given): the total
    and the count after the loop."""
    def run(outputs, targets):
        weight = torch.ones(6, dtype=outputs[0].dtype)
        weight[1] = 0
        scorer = cls(weight)
        if criterion is not None:
            scorer.criterion = criterion
        return method(scorer, outputs, targets), scorer.count
    return run


def rewritten():
    report = Report("Scorer.score_all", "", 0)
    fast, changed = rewrite_function(src.Scorer.score_all, report)
    assert changed
    return fast, report


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_values_gradients_and_state(dtype):
    fast, report = rewritten()
    assert_equivalent(scored(src.Scorer.score_all, src.NLLScorer),
                      scored(fast, src.NLLScorer), *inputs(dtype))
    assert report.loops[0].strategy == "distributed"


class Logged(src.NLLScorer):
    def _score(self, out, target):
        print(self.count)
        super()._score(out, target)


@pytest.mark.parametrize("cls, criterion", [(Logged, None),
                                            (src.NLLScorer, nn.CrossEntropyLoss())],
                         ids=["another_method", "another_module"])
def test_other_objects_run_as_written(cls, criterion, capsys):
    fast, report = rewritten()
    original = scored(src.Scorer.score_all, cls, criterion)
    assert_equivalent(original, scored(fast, cls, criterion), *inputs(torch.float64))
    printed = capsys.readouterr().out
    assert printed[:len(printed) // 2] == printed[len(printed) // 2:]


def test_the_inlined_form_runs_for_its_class():
    # the loops of a rewritten helper are counted: the vectorized branch ran, not the else
    fast = optimize_loss(src.nll_scores, compile=False)
    assert_equivalent(src.nll_scores, fast, *inputs(torch.float32))
    runs = fast.report.loops[0].runs()
    assert runs["vectorized"] > 0 and runs["as_written"] == 0
