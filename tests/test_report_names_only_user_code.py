"""Every text of a report quotes only the user's code: a loop's reason, its run-time messages
("check `...` was false", why it ran as written), the notes, fallbacks and forms name no value
the rewrite generated (``_x_row``, ``_optimize_loss_torch``, a renamed loop variable); and the
strategy a report names is the one that runs."""
from __future__ import annotations

import ast
import inspect
import re

import pytest
import torch

from examples.real import rl_a2c_gae_storage
from passes import loop_run_counters
from passes.loops.runtime_checks import MARKER
from rewrite import explain, optimize_loss
from tests.helpers import EXAMPLE_NAMES, REAL_EXAMPLE_NAMES, run_on_small
from tests.test_number_list_operands import negated_alpha


def report_texts(report) -> list[str]:
    """The user-facing texts of ``report`` (what ``str(report)`` and ``inspect`` show of it,
    without file names)."""
    texts = [loop.reason for loop in report.loops]
    texts += [loop.last_failure for loop in report.loops]
    texts += [loop.kept_at_run_time for loop in report.loops]
    texts += [f.reason for f in report.fallbacks] + list(report.notes)
    return texts + [str(f) for f in report.forms]


def foreign_names(texts: list[str], source: str) -> set[str]:
    """The identifiers ``_name`` in ``texts`` that ``source`` does not hold."""
    found = {w for t in texts for w in re.findall(r"(?<![\w.])_\w+", t)}
    return {w for w in found if not re.search(rf"(?<![\w]){re.escape(w)}(?!\w)", source)}


def _leaks(name: str) -> list[str]:
    module, fn = run_on_small(name)
    texts = report_texts(fn.report)
    return [f"{name}: `{w}` in: " + next(t for t in texts if w in t)
            for w in sorted(foreign_names(texts, inspect.getsource(module)))]


def test_the_corpus_reports_quote_only_the_users_code():
    # one test over the corpus, so that a failure lists every leak at once
    leaks = [leak for name in EXAMPLE_NAMES + REAL_EXAMPLE_NAMES for leak in _leaks(name)]
    assert not leaks, "\n".join(leaks)


def per_column(x):
    s = 0
    for c in range(x.shape[1]):
        s = s + (x[:, c] * 2).sum()
    return s


def test_the_report_names_the_form_that_ran():
    # a focal loss's class weights from a module-level list (``-ALPHA[c]``): its batched form's
    # check (``1 == prob.dim()``) is false for 4-d logits, so vmap runs, and the report says so
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, generator=g).requires_grad_()
    focal = optimize_loss(negated_alpha, compile=False)
    focal(logits, torch.randint(0, 3, (2, 4, 4), generator=g))
    assert "loop vectorized (vmap)" in str(focal.report), focal.report
    (loop,) = focal.report.loops
    assert loop.vmap_runs == loop.vectorized_runs == 1 and loop.ran_as() == "vmap"
    plain = optimize_loss(per_column, compile=False)
    plain(torch.randn(4, 3))
    assert "loop vectorized (batched)" in str(plain.report), plain.report


def test_a_check_message_keeps_the_users_own_getattr():
    # the user's ``getattr(obj, 'w', None)`` stays as written; the rewrite's read of
    # ``obj.v`` (``guarded_read``) is shown as the attribute it reads
    user = "def f(obj, x):\n    return getattr(obj, 'w', None) * obj.v\n"
    guard = ast.parse(
        "if isinstance(getattr(obj, 'w', None), torch.Tensor) and "
        "isinstance(getattr(obj, 'v', None), torch.Tensor):\n"
        f"    {MARKER.format(2)!r}\nelse:\n    pass\n")
    reasons = {n.value for n in ast.walk(loop_run_counters.instrument(guard, "c", user))
               if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert "check `isinstance(getattr(obj, 'w', None), torch.Tensor)` was false" in reasons
    assert "check `isinstance(obj.v, torch.Tensor)` was false" in reasons


def test_a_check_on_a_generated_value_is_not_quoted():
    guard = ast.parse("if isinstance(_optimize_loss_torch.ones(1), _optimize_loss_torch.Tensor)"
                      f" and _made > 0:\n    {MARKER.format(2)!r}\nelse:\n    pass\n")
    reasons = {n.value for n in ast.walk(loop_run_counters.instrument(
        guard, "c", "def f(x):\n    return x\n", {"_optimize_loss_torch": "torch"}))
        if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert "check `isinstance(torch.ones(1), torch.Tensor)` was false" in reasons
    assert "a check on a value the rewrite computes was false" in reasons


def test_a_reason_names_an_attribute_the_rewrite_reads_with_getattr_as_the_attribute():
    # the storage's loops read ``self.masks`` ... through ``getattr(self, 'masks', None)``
    reasons = " ".join(loop.reason for loop in explain(rl_a2c_gae_storage.naive).loops)
    assert "`self.masks`" in reasons and "getattr(" not in reasons, reasons


SEEN = """
import pytest
import torch

def f(scores, pos):
    for u in range(scores.shape[0]):
        scores[u, pos[u]] = float("-inf")
    return -torch.logsumexp(scores, dim=1).mean()
"""


@pytest.mark.parametrize("as_list", [False, True])
def test_a_failed_check_on_a_stacked_list_names_the_users_list(tmp_path, as_list):
    # two positives per user: `pos` holds rows, not the one index the batched write takes; the
    # check of its stacked tensor (`_pos_stacked.dim() == 1`) was "a check on a value the
    # rewrite computes"
    from tests.helpers import load_module
    user = load_module(tmp_path, SEEN)
    pos = torch.tensor([[0, 3], [2, 2], [1, 4]])
    fast = optimize_loss(user.f, compile=False)
    scores = torch.randn(3, 5)
    fast(scores, list(pos) if as_list else pos)
    assert fast.report.loops[0].last_failure == "check `pos.dim() == 1` was false"
