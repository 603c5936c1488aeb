"""``stacked_views.stack_items``: ``torch.stack`` of a loop's items, a view of the tensor they
view when they are evenly spaced views of it, with torch.stack's values and gradients."""
from __future__ import annotations

import pytest
import torch

from passes.stacked_views import stack_items

DTYPES = [torch.float32, torch.float64]


def _grads(make_items, dtype):
    """Value and input gradient of a weighted sum over the stack of ``make_items(x)``, through
    ``stack_items`` and through ``torch.stack``."""
    results = []
    for stack in (stack_items, torch.stack):
        x = torch.arange(2 * 5 * 6, dtype=dtype).reshape(2, 5, 6).clone().requires_grad_()
        stacked = stack(tuple(make_items(x)))
        weights = torch.linspace(-1, 1, stacked.numel(), dtype=dtype).reshape(stacked.shape)
        (stacked * weights).sum().backward()
        results.append((stacked.detach().clone(), x.grad, stacked))
    return results


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("make_items", [
    lambda x: x.split(1, 1),                  # a chunk per joint: views of x along dim 1
    lambda x: x.unbind(0),
    lambda x: x.reshape(2, 5, -1).chunk(5, 1),
    lambda x: [x[:, k] for k in range(0, 5, 2)],  # every other row
], ids=["split", "unbind", "chunk", "strided"])
def test_views_of_one_tensor_stack_as_a_view_with_the_same_values_and_gradients(make_items, dtype):
    (view, view_grad, stacked), (copy, copy_grad, _) = _grads(make_items, dtype)
    assert stacked._base is not None  # no copy
    assert view.dtype == copy.dtype == dtype
    torch.testing.assert_close(view, copy, rtol=0, atol=0)
    torch.testing.assert_close(view_grad, copy_grad, rtol=0, atol=0)


@pytest.mark.parametrize("make_items", [
    lambda x: [x[0], x[1].detach()],           # a detached chunk takes no gradient
    lambda x: [x[:, 2], x[:, 0], x[:, 1]],     # not evenly spaced in order
    lambda x: [x[:, 1], x[:, 0]],              # spaced backwards
    lambda x: [x[0] * 1, x[1] * 1],            # copies: nothing to view
    lambda x: [x[0], x[1] + 0, x[0]],
    lambda x: [x[:, k:k + 3] for k in range(3)],  # overlapping windows: gradients summed otherwise
], ids=["detached", "unordered", "backwards", "copies", "mixed", "windows"])
def test_other_items_are_stacked_as_before(make_items):
    (view, view_grad, stacked), (copy, copy_grad, _) = _grads(make_items, torch.float64)
    assert stacked._base is None
    torch.testing.assert_close(view, copy, rtol=0, atol=0)
    torch.testing.assert_close(view_grad, copy_grad, rtol=0, atol=0)


def test_reinterpreted_dtype_and_conjugate_views_stack_equal():
    x = torch.randn(4, 3)
    as_ints = x.view(torch.int32).unbind(0)
    assert torch.equal(stack_items(as_ints), torch.stack(as_ints))
    z = torch.randn(4, 3, dtype=torch.complex64)
    conj = [r.conj() for r in z.unbind(0)]
    assert torch.equal(stack_items(tuple(conj)), torch.stack(conj))


def test_a_single_item_and_batched_or_traced_items_are_stacked():
    x = torch.randn(3, 4, 5)
    assert torch.equal(stack_items(x.unbind(0)[:1]), x[:1])
    inside = torch.func.vmap(lambda r: stack_items(r.unbind(0)))(x)
    assert torch.equal(inside, x)
    compiled = torch.compile(lambda t: stack_items(t.split(1, 1)) * 2, backend="eager", fullgraph=True)
    assert torch.equal(compiled(x), torch.stack(x.split(1, 1)) * 2)


@pytest.mark.parametrize("make_items, whole", [
    (lambda x: x.split(1, 1), True),
    (lambda x: x.unbind(0), True),
    (lambda x: x.reshape(2, 5, -1).chunk(5, 1), True),
    (lambda x: x.unbind(2), True),
    (lambda x: [x[:, k] for k in range(0, 5, 2)], False),  # not all of x
    (lambda x: x[:, 1:].split(1, 1), False),
], ids=["split", "unbind", "chunk", "unbind-last", "strided", "part"])
def test_chunks_covering_all_of_a_tensor_stack_as_its_dims_reordered(make_items, whole):
    """Their backward reshapes the gradient (as_strided's zero-fills a full-size one and copies
    into it); the layout is the one as_strided would give, up to the strides of size-1 dims."""
    x = torch.randn(2, 5, 6, dtype=torch.float64, requires_grad=True)
    items = tuple(make_items(x))
    stacked = stack_items(items)
    assert (type(stacked.grad_fn).__name__ != "AsStridedBackward0") == whole
    spaced = (items[1].storage_offset() - items[0].storage_offset(), *items[0].stride())
    assert [s for n, s in zip(stacked.shape, stacked.stride()) if n != 1] == \
        [s for n, s in zip(stacked.shape, spaced) if n != 1]
    assert torch.equal(stacked, torch.stack(items))
    weights = torch.randn(stacked.shape, dtype=torch.float64)
    grad, = torch.autograd.grad((stacked * weights).sum(), x)
    want, = torch.autograd.grad((torch.stack(items) * weights).sum(), x)
    assert torch.equal(grad, want)
