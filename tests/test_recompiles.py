"""Dynamo graphs per batch size: the vectorized loop's check and trip count are plain arithmetic
on the bounds (never ``len(range(...))``, which makes Dynamo specialise a size), so a changing
batch size compiles at most 2 graphs; when Dynamo's recompile limit is reached all the same, the
user is told once."""
from __future__ import annotations

import warnings

import pytest
import torch

import examples.per_sample_ce
import examples.per_sample_mse
from rewrite import RewriteWarning, optimize_loss
from tests.helpers import load_module


def _counting():
    """A backend that records the compile id of every graph: (frame, compile of that frame)."""
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(torch._guards.CompileContext.current_compile_id())
        return gm.forward
    return backend, graphs


@pytest.mark.parametrize("module", [examples.per_sample_mse, examples.per_sample_ce],
                         ids=lambda m: m.__name__)
def test_ten_batch_sizes_compile_at_most_two_graphs(module):
    torch.compiler.reset()
    backend, graphs = _counting()
    fn = optimize_loss(module.naive, backend=backend, verify_compiled=False)
    pred, *rest = module.make_inputs("small")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RewriteWarning)  # no fallback, no recompile-limit warning
        for batch in range(8, 18):
            args = [pred[:batch].detach().requires_grad_()] + [r[:batch] for r in rest]
            torch.testing.assert_close(fn(*args), module.naive(*args))
    assert [l.strategy for l in fn.report.loops] == ["batched"]
    # At most 2 graphs per frame: the first size, then one with the size as a symbol. (A label
    # range check read on the host breaks per_sample_ce's graph in two frames.)
    assert graphs and max(g.frame_compile_id for g in graphs) <= 1


def test_a_bound_that_is_not_an_int_raises_as_the_original(tmp_path):
    module = load_module(tmp_path, """
        import torch

        def loss(x):
            total = 0
            for i in range(x.shape[0] / 2):
                total = total + x[i].sum()
            return total
        """)
    fn = optimize_loss(module.loss, compile=False)
    assert fn.report.loops[0].vectorized
    with pytest.raises(TypeError, match="'float' object cannot be interpreted as an integer"):
        fn(torch.randn(4, 3))


def test_reaching_the_recompile_limit_is_said_once(tmp_path):
    module = load_module(tmp_path, """
        def loss(x, mode):
            return (x * len(mode)).sum()
        """)
    # config.patch, not monkeypatch: monkeypatch's undo leaves the option hidden in Dynamo's
    # config module, and every later torch.compile in the session fails reading it.
    with torch._dynamo.config.patch(recompile_limit=2):
        torch.compiler.reset()
        fn = optimize_loss(module.loss, backend="eager")  # a key per signature: new ones are seen
        x = torch.randn(3)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results = [fn(x, mode) for mode in ("a", "bb", "ccc", "dddd", "eeeee")]
        assert results == [module.loss(x, m) for m in ("a", "bb", "ccc", "dddd", "eeeee")]
        said = [w for w in caught if issubclass(w.category, RewriteWarning)]
        assert len(said) == 1 and "recompile limit (2 graphs" in str(said[0].message)
        assert said[0].filename == module.__file__
        assert "uncompiled rewritten function runs" in str(said[0].message)
