"""last_writes_to_scatters: a loop whose one write lands at slots an index tensor picks, a later
iteration overwriting an earlier one's slot (detection matchers' ``match``), becomes one scatter
of the iteration numbers and one write of the winners' values. Golden before/after and forms
left to the stages; behaviour: value, every gradient and dtype equal the original's (float32,
float64, integer targets), with repeated, distinct and negative indices, one-element index rows,
int32 indices; out-of-range indices raise the original's exception after its writes, zero
iterations, bool indices and other dtypes run the loop as written."""
from __future__ import annotations

import pytest
import torch

from rewrite.testing import assert_equivalent
from tests.loop_helpers import build, dedent, rewrite_source

MATCH = """
    def f(best_truth_idx, best_prior_idx):
        for j in range(best_prior_idx.size(0)):
            best_truth_idx[best_prior_idx[j]] = j
        return best_truth_idx
    """

ROWS = """
    def f(t, idx, v):
        t = t * 1
        for j, k in enumerate(idx):
            t[k] = v[j]
        return t
    """

NUMBER = """
    def f(t, idx):
        t = t * 1
        for k in idx:
            t[k] = -2
        return t
    """


def test_golden_matcher_writes_iteration_numbers_by_one_scatter():
    code, report = rewrite_source(MATCH)
    assert code + "\n" == dedent("""
        def f(best_truth_idx, best_prior_idx):
            if isinstance(best_prior_idx.size(0), int) and best_prior_idx.size(0) > 0 and isinstance(best_prior_idx, torch.Tensor) and (best_prior_idx.dim() >= 1) and (best_prior_idx.size(0) <= best_prior_idx.shape[0]) and isinstance(best_truth_idx, torch.Tensor) and (best_prior_idx.dtype in (torch.int64, torch.int32)) and (best_prior_idx.device == best_truth_idx.device) and (best_prior_idx.dim() == 1 or (best_prior_idx.dim() == 2 and best_prior_idx.shape[1] == 1)) and (best_truth_idx.dim() >= 1) and (not best_truth_idx.is_complex()) and (not (best_truth_idx.is_leaf and best_truth_idx.requires_grad)) and (best_prior_idx.untyped_storage().data_ptr() != best_truth_idx.untyped_storage().data_ptr()) and (-best_truth_idx.shape[0] <= int((best_prior_idx if best_prior_idx.size(0) == best_prior_idx.shape[0] else best_prior_idx[0:best_prior_idx.size(0)]).min())) and (int((best_prior_idx if best_prior_idx.size(0) == best_prior_idx.shape[0] else best_prior_idx[0:best_prior_idx.size(0)]).max()) < best_truth_idx.shape[0]) and (best_truth_idx.dtype in (torch.int64, torch.int32, torch.float32, torch.float64)) and (best_prior_idx.size(0) <= 16777216):
                'optimize_loss: loop at line 2 vectorized'
                _slots = (best_prior_idx if best_prior_idx.size(0) == best_prior_idx.shape[0] else best_prior_idx[0:best_prior_idx.size(0)]).reshape(-1).long() % best_truth_idx.shape[0]
                _order = torch.arange(best_prior_idx.size(0), device=best_truth_idx.device)
                _winner = torch.full((best_truth_idx.shape[0],), -1, dtype=torch.int64, device=best_truth_idx.device).scatter_reduce(0, _slots, _order, 'amax')[_slots]
                best_truth_idx.index_put_((_slots,), _winner.to(best_truth_idx.dtype) if best_truth_idx.dim() == 1 else _winner.to(best_truth_idx.dtype).reshape((-1,) + (1,) * (best_truth_idx.dim() - 1)))
            else:
                for j in range(best_prior_idx.size(0)):
                    best_truth_idx[best_prior_idx[j]] = j
            return best_truth_idx
        """)
    [loop] = report.loops
    assert loop.vectorized and loop.strategy == "batched", loop
    assert "the last iteration to pick a slot winning" in loop.reason


def test_golden_enumerated_rows_and_numbers():
    code, _ = rewrite_source(ROWS)
    assert "_picked = v[_winner]\n        t.index_put_((_slots,), torch.where((_winner == _order)" \
        ".reshape((-1,) + (1,) * (t.dim() - 1)), _picked, _picked.detach()).to(t.dtype))" in code
    assert "(v.shape[0] >= idx.shape[0]) and (v.shape[1:] == t.shape[1:])" in code
    code, report = rewrite_source(NUMBER)
    assert "_slots = idx.reshape(-1).long() % t.shape[0]\n        t.index_fill_(0, _slots, -2)" \
        in code, code
    assert "(t.dtype not in (torch.float16, torch.bfloat16))" in code
    assert report.loops[0].vectorized, report.loops[0]


@pytest.mark.parametrize("change", [
    ("return best_truth_idx", "return best_truth_idx, j"),                # the index read after
    ("= j\n", "= j * 2\n"),                                               # another value
    ("best_truth_idx[best_prior_idx[j]] = j",
     "best_truth_idx[best_prior_idx[j]] = j\n            print(j)"),   # another statement
    ("best_truth_idx[best_prior_idx[j]]", "best_prior_idx[best_prior_idx[j]]"),  # idx itself
])
def test_golden_other_forms_are_left_to_the_stages(change):
    src = MATCH.replace(*change)
    assert src != MATCH
    code, report = rewrite_source(src)
    assert "scatter_reduce" not in code
    assert not report.loops[0].vectorized


def _vectorized(src: str):
    original, optimized, code, report = build(src)
    assert report.loops[0].vectorized, report.loops[0]
    return original, optimized


# repeated (later wins), distinct, negative (counting from the end) slots of 12
SLOTS = {"repeated": [3, 7, 3, 0, 7, 7, 11], "distinct": [5, 1, 9, 0],
         "negative": [-1, 11, 2, -10, 2, -12, 0]}


@pytest.mark.parametrize("slots", SLOTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64, torch.int32])
@pytest.mark.parametrize("idx_dtype", [torch.int64, torch.int32])
def test_iteration_numbers_equivalent(slots, dtype, idx_dtype):
    original, optimized = _vectorized(MATCH)
    truth = torch.arange(12).to(dtype)
    truth = truth.requires_grad_() if dtype.is_floating_point else truth
    for idx in (torch.tensor(SLOTS[slots], dtype=idx_dtype),
                torch.tensor(SLOTS[slots], dtype=idx_dtype).reshape(-1, 1)):  # idx[j] of [1]
        want = original(truth.detach().clone(), idx)
        assert torch.equal(optimized(truth.detach().clone(), idx), want)
        if dtype.is_floating_point:  # the gradient reaches the entries no iteration overwrote
            assert_equivalent(*_vectorized(MATCH.replace(
                "for j", "best_truth_idx = best_truth_idx * 1\n        for j")), truth, idx)


@pytest.mark.parametrize("slots", SLOTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("v_dtype", ["same", torch.float64, torch.int64])
def test_rows_equivalent_value_every_gradient_dtype(slots, dtype, v_dtype):
    original, optimized = _vectorized(ROWS)
    idx = torch.tensor(SLOTS[slots])
    for idx, shape in ((idx, (12,)), (idx, (12, 3)), (idx.int().reshape(-1, 1), (12, 3))):
        t = torch.randn(shape, dtype=dtype, requires_grad=True)
        v = torch.randn((len(idx) + 2,) + shape[1:], dtype=dtype) * 5
        v = v.to(dtype if v_dtype == "same" else v_dtype)
        v = v.requires_grad_() if v.dtype.is_floating_point else v
        if idx.dim() == 2 and v.dtype != dtype:  # setitem at a one-element index refuses it
            assert _outcome(optimized, t, idx, v)[:2] == _outcome(original, t, idx, v)[:2]
            continue
        assert_equivalent(original, optimized, t, idx, v)
        assert optimized(t, idx, v).dtype == original(t, idx, v).dtype == dtype


@pytest.mark.parametrize("slots", SLOTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64, torch.int32])
def test_numbers_equivalent(slots, dtype):
    original, optimized = _vectorized(NUMBER)
    t = torch.arange(12).to(dtype)
    t = t.requires_grad_() if dtype.is_floating_point else t
    assert_equivalent(original, optimized, t, torch.tensor(SLOTS[slots]))


def test_fewer_iterations_than_indices_write_only_those():
    original, optimized = _vectorized(MATCH.replace("best_prior_idx.size(0)", "n")
                                      .replace("best_prior_idx):", "best_prior_idx, n):"))
    idx = torch.tensor([4, 4, 1, 4])
    for n in (1, 2, 3):
        assert torch.equal(optimized(torch.zeros(6), idx, n), original(torch.zeros(6), idx, n))


def _outcome(fn, *args):
    try:
        return fn(*args)
    except Exception as exc:  # the exception and the writes made before it
        return type(exc), str(exc), args[0].tolist()


@pytest.mark.parametrize("idx", [
    torch.tensor([1, 12, 2]), torch.tensor([1, -13]),        # out of range: the loop raises
    torch.tensor([], dtype=torch.int64),                      # zero iterations
    torch.tensor([True, False, True]),                        # a mask each iteration
    torch.tensor([1.0, 2.0]), torch.tensor([[1, 2], [3, 4]]),  # not an index of one slot
])
def test_other_indices_run_the_loop_as_written(idx):
    original, optimized = _vectorized(MATCH)
    want = _outcome(original, torch.zeros(12), idx)
    got = _outcome(optimized, torch.zeros(12), idx)
    assert type(got) is type(want)
    assert got[:3] == want[:3] if isinstance(want, tuple) else torch.equal(got, want)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float16])
def test_a_number_the_target_cannot_hold_raises_or_rounds_as_the_original(dtype):
    original, optimized = _vectorized(NUMBER.replace("-2", "-70000"))
    idx = torch.tensor([1, 1])
    want = _outcome(original, torch.zeros(3, dtype=dtype), idx)
    got = _outcome(optimized, torch.zeros(3, dtype=dtype), idx)
    assert got[:2] == want[:2] if isinstance(want, tuple) else torch.equal(got, want)


def test_a_leaf_that_requires_grad_raises_the_original_message():
    original, optimized = _vectorized(MATCH)
    truth, idx = torch.zeros(4, requires_grad=True), torch.tensor([1])
    assert _outcome(optimized, truth, idx)[:2] == _outcome(original, truth, idx)[:2]


def test_a_rows_tensor_sharing_the_targets_storage_runs_as_written():
    original, optimized = _vectorized(ROWS.replace("t = t * 1\n        ", ""))
    idx = torch.tensor([2, 0, 2])
    first, second = torch.arange(6.0), torch.arange(6.0)
    assert torch.equal(optimized(first, idx, first[1:]), original(second, idx, second[1:]))
