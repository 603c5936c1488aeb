"""argmax, argmin and argsort are pure ops of the registry (positions: integers, no gradient):
a residual statement reading `logp.argmax()` does not change `logp` in place, so the heavy
statement binding `logp` is hoisted out of a loop that prints it (found on a prototypical-network
loss counting its correct queries, `correct += (logp.argmax(1) == c).float().sum().item()`,
whose kept loop's reason said that line changed `logp` in place). A residual statement that does
change it (`logp.clamp_(...)`) still keeps the loop, and the reason says so. Golden before/after
(with the no-change case), the reasons, and equivalence of the value, every gradient, the dtype
and the printed lines in float32 and float64, ties and NaN included."""
from __future__ import annotations

import pytest
import torch

from passes import ops
from rewrite import assert_equivalent
from tests.loop_helpers import assert_golden, build, rewrite_source

SOURCES = {
    "positions_printed": """
        def f(x, y, w):
            loss = 0
            for i in range(len(x)):
                logp = F.log_softmax(x[i] @ w, dim=-1)
                loss = loss - logp[y[i]]
                print(i, logp.argmax().item(), logp.argmin(0).item(), torch.argsort(logp)[0].item())
            return loss
        """,
    # the printed statement clamps `logp` in place (after its item is read): nothing is hoisted
    "changed_in_place": """
        def f(x, y, w):
            loss = 0
            for i in range(len(x)):
                logp = x[i] @ w
                loss = loss - logp[y[i]]
                print(i, logp.clamp_(min=-5).argmax().item())
            return loss
        """,
}
GOLDEN = {
    "positions_printed": """
        def f(x, y, w):
            loss = 0
            if isinstance(x, torch.Tensor) and len(x) <= x.shape[0] and isinstance(len(x), int) and (len(x) > 0) and (not _rounds_gradients(w)):
                'optimize_loss: loop at line 3 vectorized'
                if x.dim() >= 2 and (isinstance(w, torch.Tensor) and w.dim() == 2):
                    _x_row = x if len(x) == x.shape[0] else x[0:len(x):1]
                    logp = F.log_softmax(_x_row @ w, dim=-1)
                    _logp_all_item = logp
                    _outs_1 = (_logp_all_item,)
                else:

                    def _body(_x_row):
                        logp = F.log_softmax(_x_row @ w, dim=-1)
                        _logp_all_item = logp
                        return (torch.as_tensor(_logp_all_item),)
                    _outs_1 = _map_in_chunks(_body, in_dims=(0,))(x if len(x) == x.shape[0] else x[0:len(x):1])
                _logp_all = _outs_1[0].unbind(0)
                for i in range(len(x)):
                    logp = _logp_all[i]
                    loss = loss - logp[y[i]]
                    print(i, logp.argmax().item(), logp.argmin(0).item(), torch.argsort(logp)[0].item())
            else:
                for i in range(len(x)):
                    logp = F.log_softmax(x[i] @ w, dim=-1)
                    loss = loss - logp[y[i]]
                    print(i, logp.argmax().item(), logp.argmin(0).item(), torch.argsort(logp)[0].item())
            return loss
        """,
    "changed_in_place": SOURCES["changed_in_place"],
}
EXPECTED = {"positions_printed": {3: "distributed"}, "changed_in_place": {3: "kept"}}


def test_registry_knows_them_as_pure_integer_ops():
    for name in ("argmax", "argmin", "argsort"):
        for spec in (ops.by_call(f"torch.{name}", None), ops.by_call(None, name)):
            assert spec is not ops.UNKNOWN and spec.effect is None, name
            assert spec.derivative == "constant" and spec.integer == () and spec.total, name


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_golden(name):
    assert_golden(SOURCES[name], GOLDEN[name], EXPECTED[name])


def test_reasons():
    split = rewrite_source(SOURCES["positions_printed"])[1].loops[0].reason
    assert split.startswith("line 4 hoisted into one loop (batched); residual loop: ")
    assert "changes in place" not in split
    kept = rewrite_source(SOURCES["changed_in_place"])[1].loops[0].reason
    assert "<test>:4 `logp = x[i] @ w`: binds `logp`, which line 6 (residual) changes in " \
           "place" in kept


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(SOURCES))
def test_values_gradients_and_printed_lines(name, dtype, capsys):
    original, optimized, _, _ = build(SOURCES[name])
    x = torch.randn(5, 4, dtype=dtype).round()  # ties among the logits
    x[2, 1] = float("nan")
    x.requires_grad_()
    w = torch.randn(4, 3, dtype=dtype).round().requires_grad_()
    y = torch.tensor([0, 2, 1, 1, 0])
    assert_equivalent(original, optimized, x, y, w)
    capsys.readouterr()
    want, got = original(x, y, w), optimized(x, y, w)
    assert got.dtype == want.dtype == dtype
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 10 and lines[:5] == lines[5:]
