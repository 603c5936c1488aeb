"""A boolean mask made in the body and cleared at the loop index (NT-Xent written per row)
becomes a comparison of positions (``cleared_positions_to_masks``), so the loop runs vectorized
with the same values and gradients; a loop-varying write into a tensor the body makes the same
in every iteration, which vmap cannot run, is refused at rewrite time (``check_mapped_body``):
no loop is reported vectorized whose vectorized form fails on every call."""
import pytest
import torch

from rewrite import assert_equivalent
from tests.loop_helpers import assert_golden, build, namespace

DTYPES = [torch.float32, torch.float64]

NTXENT = '''
def f(sim, n):
    loss = 0
    for i in range(2 * n):
        keep = torch.ones(2 * n, dtype=torch.bool)
        keep[i] = False
        loss += -sim[i, (i + n) % (2 * n)] + sim[i][keep].exp().sum().log()
    return loss / (2 * n)
'''

# the positive's column cleared instead of the row's own: no comparison with the index
OTHER_POSITION = '''
def f(sim, n):
    loss = 0
    for i in range(2 * n):
        keep = torch.ones(2 * n, dtype=torch.bool)
        keep[(i + n) % (2 * n)] = False
        loss += sim[i][keep].exp().sum().log()
    return loss / (2 * n)
'''

SET_AT_INDEX = '''
def f(sim, n):
    loss = 0
    for i in range(2 * n):
        own = torch.zeros(2 * n, dtype=torch.bool, device=sim.device)
        own[i] = True
        loss += sim[i][~own].exp().sum().log() - sim[i][own].sum()
    return loss
'''

# the mask longer than the loop: the check compares range's stop with its size
SHORT_LOOP = '''
def f(sim, m):
    loss = 0
    for i in range(m):
        keep = torch.ones(sim.shape[1], dtype=torch.bool)
        keep[i] = False
        loss = loss + sim[i][keep].exp().sum()
    return loss
'''


def test_ntxent_golden():
    assert_golden(NTXENT, '''
    def f(sim, n):
        loss = 0
        _averaged = False
        _sim_stacked = _stack_items(tuple(sim)) if (type(sim) is list or (isinstance(sim, tuple) and type(sim).__getitem__ is tuple.__getitem__ and (type(sim).__iter__ is tuple.__iter__) and (type(sim).__len__ is tuple.__len__))) and len(sim) > 0 and all((isinstance(_v, torch.Tensor) and _v.shape == sim[0].shape and (_v.dtype == sim[0].dtype) and (_v.device == sim[0].device) for _v in sim)) else sim
        if isinstance(_sim_stacked, torch.Tensor) and 2 * n <= _sim_stacked.shape[0] and isinstance(2 * n, int) and (2 * n > 0) and (not _rounds_gradients(n)):
            'optimize_loss: loop at line 3 vectorized'

            def _body(i, _sim_row):
                _loss_part = 0
                _pos = torch.arange(2 * n)
                keep = _pos != i
                _keep = keep.reshape(_mask_shape[keep.shape, _sim_row.shape])
                _loss_part = _loss_part + (-_sim_row[(i + n) % (2 * n)] + torch.where(_keep, torch.where(_keep, torch.where(_keep, _sim_row, False), 0).exp(), 0).sum().log())
                return (torch.as_tensor(_loss_part),)
            _outs = _map_in_chunks(_body, in_dims=(0, 0))(torch.arange(0, 2 * n, 1, device=_sim_stacked.device), _sim_stacked if 2 * n == _sim_stacked.shape[0] else _sim_stacked[0:2 * n:1])
            _outs = (_outs[0].sum(0) / (2 * n),)
            _averaged = True
            loss = _outs[0]
        else:
            for i in range(2 * n):
                keep = torch.ones(2 * n, dtype=torch.bool)
                keep[i] = False
                loss += -sim[i, (i + n) % (2 * n)] + sim[i][keep].exp().sum().log()
        return loss if _averaged else loss / (2 * n)
''', {3: "vmap"})


def test_write_at_another_position_is_refused_unchanged():
    assert_golden(OTHER_POSITION, OTHER_POSITION, {3: "kept"})
    _, _, _, report = build(OTHER_POSITION)
    # a mask made by its dtype selects (`masked_selections_to_where` takes it when written at
    # no position that varies): the selection is the first refusal, the write in the residual
    reason = report.loops[0].reason
    assert reason.startswith("boolean mask indexing `sim[i][keep]`"), reason
    assert "`keep[(i + n) % (2 * n)] = False`: write" in reason, reason


def _sims(dtype):
    """Random similarities, with ties (equal rows), and with inf on and off the diagonal."""
    sim = torch.randn(6, 6, dtype=dtype)
    tied = torch.ones(6, 6, dtype=dtype)
    own_inf = sim.clone().fill_diagonal_(float("inf"))
    other_inf = sim.clone()
    other_inf[1, 4] = float("inf")
    return [sim, tied, own_inf, other_inf]


def _same(src, args, dtype):
    original, rewritten, _, report = build(src, namespace())
    for sim in _sims(dtype):
        a = sim.clone().requires_grad_()
        b = sim.clone().requires_grad_()
        want, got = original(a, *args), rewritten(b, *args)
        assert got.dtype == want.dtype == dtype
        assert torch.allclose(got, want, equal_nan=True)
        if torch.isfinite(want):
            (ga,), (gb,) = torch.autograd.grad(want, a), torch.autograd.grad(got, b)
            assert torch.allclose(gb, ga, equal_nan=True)
    return report


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("src, args", [(NTXENT, (3,)), (SET_AT_INDEX, (3,)), (SHORT_LOOP, (4,)),
                                       (OTHER_POSITION, (3,))],
                         ids=["ntxent", "set_at_index", "short_loop", "other_position"])
def test_no_loop_reported_vectorized_fails_at_run_time(src, args, dtype):
    """Built without the runtime's fallback: a vectorized form that raised would fail here."""
    report = _same(src, args, dtype)
    expected = {OTHER_POSITION: "kept", SHORT_LOOP: "batched"}.get(src, "vmap")
    assert report.loops[0].strategy == expected, report.loops[0].reason


def test_loop_past_the_mask_raises_as_the_original():
    """A loop longer than the mask: past its end the original raises, and so does the
    loop as written behind the check."""
    original, rewritten, _, _ = build(SHORT_LOOP)
    sim = torch.randn(3, 3)
    with pytest.raises(IndexError):
        original(sim, 4)
    with pytest.raises(IndexError):
        rewritten(sim, 4)


# the index through a copy the body binds once (an inlined helper's parameter: `_h_k = i`)
COPIED_INDEX = '''
def f(sim, n):
    loss = 0
    for i in range(n):
        j = i
        keep = torch.ones(sim.shape[1], dtype=torch.bool)
        keep[j] = False
        loss += sim[i][keep].exp().sum().log()
    return loss
'''


def test_index_through_a_copy_golden():
    """Batched: the positions are one fixed tensor, the index next to them ``i[:, None]``."""
    assert_golden(COPIED_INDEX, '''
    def f(sim, n):
        loss = 0
        if n <= sim.shape[1] and isinstance(sim, torch.Tensor) and (n <= sim.shape[0]) and isinstance(n, int) and (n > 0):
            'optimize_loss: loop at line 3 vectorized'
            i = torch.arange(0, n, 1, device=sim.device)
            _sim_row = sim if n == sim.shape[0] else sim[0:n:1]
            _loss_part = 0
            j = i
            _pos = torch.arange(sim.shape[1])
            keep = _pos != i[:, None]
            _keep = keep.reshape(keep.shape[:1] + _mask_shape[keep.shape[1:], _sim_row.shape[1:]])
            _t = torch.where(_keep, torch.where(_keep, torch.where(_keep, _sim_row, False), 0).exp(), 0)
            _loss_part = (_t.sum(tuple(range(1, _t.dim()))) if _t.dim() > 1 else _t.reshape(len(_t), -1).sum(1)).log().sum(0)
            _outs = (_loss_part,)
            loss = _outs[0]
        else:
            for i in range(n):
                j = i
                keep = torch.ones(sim.shape[1], dtype=torch.bool)
                keep[j] = False
                loss += sim[i][keep].exp().sum().log()
        return loss
    ''', {3: "batched"})


def test_a_copy_bound_again_is_no_copy():
    src = COPIED_INDEX.replace("j = i", "j = i\n        j = n - 1 - j")
    assert_golden(src, src, {3: "kept"})


@pytest.mark.parametrize("dtype", DTYPES)
def test_index_through_a_copy_equivalent(dtype):
    original, rewritten, _, _ = build(COPIED_INDEX)
    sim = torch.randn(5, 7, dtype=dtype, requires_grad=True)
    assert_equivalent(original, rewritten, sim, 5)
