"""inline_helper_calls: small same-module helpers called in a loop body are inlined there."""
from __future__ import annotations

import ast
import importlib
import inspect
import sys
from pathlib import Path

import pytest
import torch

from passes.loops import inline_helper_calls, vectorize_loops
from passes.ast_tools import Namer, PassContext, unparse
from rewrite import Report, assert_equivalent, optimize_loss
from rewrite.frontend import parse_function
from tests.helpers import FRONTEND, load_module

def _example_helpers() -> str:
    """``dice`` and ``tversky`` as examples/dice_tversky.py has them, with their constants."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))
    try:
        ex = importlib.import_module("dice_tversky")
    finally:
        sys.path.pop(0)
    return (f"SMOOTH = {ex.SMOOTH!r}\nALPHA, BETA = {ex.ALPHA!r}, {ex.BETA!r}\n\n\n"
            + "\n\n".join(inspect.getsource(f) for f in (ex.dice, ex.tversky)) + "\n\n")


SOURCE = "import torch\n\n" + _example_helpers() + '''
def focal(p, t, gamma=2.0, *, eps=1e-6):
    """Docstrings are skipped."""
    q = p.clamp(eps, 1 - eps)
    return -(t * (1 - q) ** gamma * q.log()).sum()


def sq_err(p, t):
    return ((p - t) ** 2).mean()


def nested(p, t):
    d = sq_err(p, t)
    return d + dice(p, t)


def looped(p, t):
    s = 0
    for k in range(p.shape[0]):
        s = s + p[k].sum()
    return s


COUNT = 0


def with_global(p, t):
    global COUNT
    return (p * t).sum()


def recursive(p, t):
    return recursive(p, t) if p.numel() > 10 ** 9 else (p * t).sum()


def branchy(p, t):
    if t.sum() > 0:
        return p.sum()
    return t.sum()


def starry(*ps):
    return ps[0].sum()


def tensor_default(p, t, w=torch.ones(1)):
    return (p * t * w).sum()


def bumps(p, t):
    p.add_(0)
    return (p * t).sum()


def noted(p):
    global COUNT
    COUNT += 1
    return p


@torch.no_grad()
def decorated(p, t):
    return (p * t).sum()


square = lambda p, t: (p * t).sum()  # noqa: E731


class Scorer:
    def score(self, p, t):
        return (p * t).sum()


score = Scorer().score


def uses_helpers(probs, onehot):
    loss = 0
    for c in range(probs.shape[1]):
        loss += dice(probs[:, c], onehot[:, c]) + tversky(probs[:, c], onehot[:, c])
    return loss / probs.shape[1]


def keywords(probs, onehot):
    loss = 0
    for c in range(probs.shape[1]):
        loss += focal(t=onehot[:, c], p=probs[:, c])
    return loss


def two_levels(probs, onehot):
    loss = 0
    for c in range(probs.shape[1]):
        loss += nested(probs[:, c], onehot[:, c])
    return loss


def shadows(probs, onehot):
    SMOOTH = 0.5
    loss = 0
    for c in range(probs.shape[1]):
        loss += dice(probs[:, c], onehot[:, c]) * SMOOTH
    return loss


def side_effect_first(probs, onehot):
    loss = 0
    for c in range(probs.shape[1]):
        loss += noted(probs[:, c]).sum() + dice(probs[:, c], onehot[:, c])
    return loss


def random_first(probs, onehot):
    loss = 0
    for c in range(probs.shape[1]):
        loss += torch.rand_like(probs[:, c]).sum() + dice(probs[:, c], onehot[:, c])
    return loss


def conditional(probs, onehot, flag):
    loss = 0
    for c in range(probs.shape[1]):
        loss += dice(probs[:, c], onehot[:, c]) if flag else 0
    return loss


def make_caller(name):
    src = (f"def caller(probs, onehot):\\n    loss = 0\\n    for c in range(probs.shape[1]):\\n"
           f"        loss += {name}(probs[:, c], onehot[:, c])\\n    return loss\\n")
    return src
'''

REFUSED = ["looped", "with_global", "recursive", "branchy", "tensor_default", "bumps",
           "decorated", "square", "score"]


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    return load_module(tmp_path_factory.mktemp("inline"), SOURCE)


@pytest.fixture(scope="module")
def callers(tmp_path_factory, user):
    """One caller per refused helper, in a module that imports the helpers' module (so the
    helpers are its globals... of another module: refused too); and in the same module."""
    directory = tmp_path_factory.mktemp("callers")
    src = Path(user.__file__).read_text() + "".join(
        user.make_caller(n).replace("def caller", f"def caller_{n}") for n in REFUSED + ["starry"])
    return load_module(directory, src)


def _context(fn) -> tuple[ast.Module, PassContext]:
    parsed = parse_function(fn)
    code = fn.__code__
    ctx = PassContext(parsed.filename, fn.__name__, Namer.for_tree(parsed.tree, set(fn.__globals__)),
                      Report(fn.__name__, parsed.filename, parsed.lineno), fn.__globals__,
                      rewriting=frozenset({fn}),
                      local_names=frozenset(code.co_varnames + code.co_cellvars + code.co_freevars),
                      **FRONTEND)
    return parsed.tree, ctx


def _inline(fn) -> tuple[str, list[str], PassContext]:
    """The first loop's body after the pass (normalised), its runtime checks, the context."""
    tree, ctx = _context(fn)
    loop = next(n for n in ast.walk(tree) if isinstance(n, ast.For))
    body, guards = inline_helper_calls.rewrite(loop, loop.body, ctx)
    return unparse(ast.Module(body, [])), [unparse(g) for g in guards], ctx


def _golden(src: str) -> str:
    return ast.unparse(ast.parse(src))


# ---- golden before/after -----------------------------------------------------------------------

def test_dice_and_tversky_are_inlined_in_order(user):
    body, guards, ctx = _inline(user.uses_helpers)
    assert body == _golden("""
_dice_p = probs[:, c]
_dice_t = onehot[:, c]
_dice_inter = (_dice_p * _dice_t).sum()
_dice = 1 - (2 * _dice_inter + SMOOTH) / (_dice_p.sum() + _dice_t.sum() + SMOOTH)
_tversky_p = probs[:, c]
_tversky_t = onehot[:, c]
_tversky_tp = (_tversky_p * _tversky_t).sum()
_tversky_fp = (_tversky_p * (1 - _tversky_t)).sum()
_tversky_fn = ((1 - _tversky_p) * _tversky_t).sum()
_tversky = 1 - (_tversky_tp + SMOOTH) / (_tversky_tp + ALPHA * _tversky_fp + BETA * _tversky_fn + SMOOTH)
loss += _dice + _tversky
""")
    assert guards == ["dice is _dice_inlined", "tversky is _tversky_inlined"]
    assert ctx.bindings == {"_dice_inlined": user.dice, "_tversky_inlined": user.tversky}


def test_keywords_in_call_order_then_constant_defaults(user):
    body, guards, _ = _inline(user.keywords)
    assert body == _golden("""
_focal_t = onehot[:, c]
_focal_p = probs[:, c]
_focal_gamma = 2.0
_focal_eps = 1e-06
_focal_q = _focal_p.clamp(_focal_eps, 1 - _focal_eps)
_focal = -(_focal_t * (1 - _focal_q) ** _focal_gamma * _focal_q.log()).sum()
loss += _focal
""")
    assert guards == ["focal is _focal_inlined"]


def test_a_helper_calling_a_helper_is_inlined_recursively(user):
    body, guards, _ = _inline(user.two_levels)
    assert body == _golden("""
_nested_p = probs[:, c]
_nested_t = onehot[:, c]
_sq_err_p = _nested_p
_sq_err_t = _nested_t
_sq_err = ((_sq_err_p - _sq_err_t) ** 2).mean()
_nested_d = _sq_err
_dice_p = _nested_p
_dice_t = _nested_t
_dice_inter = (_dice_p * _dice_t).sum()
_dice = 1 - (2 * _dice_inter + SMOOTH) / (_dice_p.sum() + _dice_t.sum() + SMOOTH)
_nested = _nested_d + _dice
loss += _nested
""")
    assert guards == ["nested is _nested_inlined", "sq_err is _sq_err_inlined", "dice is _dice_inlined"]


def test_inlined_statements_keep_the_helpers_lines(user):
    tree, ctx = _context(user.uses_helpers)
    loop = next(n for n in ast.walk(tree) if isinstance(n, ast.For))
    body, _ = inline_helper_calls.rewrite(loop, loop.body, ctx)
    dice_line = user.dice.__code__.co_firstlineno
    assert [s.lineno for s in body[:4]] == [loop.body[0].lineno] * 2 + [dice_line + 1, dice_line + 2]
    assert body[-1].lineno == loop.body[0].lineno


@pytest.mark.parametrize("name", REFUSED + ["starry"])
def test_refused_helpers_come_back_unchanged(callers, name):
    fn = getattr(callers, f"caller_{name}")
    tree, _ = _context(fn)
    before = unparse(next(n for n in ast.walk(tree) if isinstance(n, ast.For)))
    body, guards, ctx = _inline(fn)
    assert body == _golden(before.split("\n", 1)[1].replace("\n    ", "\n").strip())
    assert guards == []
    if name not in ("square", "score", "decorated"):  # not functions of this module: no note
        assert any(f"helper {name} is not inlined" in n for n in ctx.report.notes), ctx.report.notes


@pytest.mark.parametrize("name", ["shadows", "side_effect_first", "random_first", "conditional"])
def test_calls_the_caller_context_forbids_come_back_unchanged(user, name):
    fn = getattr(user, name)
    tree, _ = _context(fn)
    loop = next(n for n in ast.walk(tree) if isinstance(n, ast.For))
    body, guards, _ = _inline(fn)
    assert body == unparse(ast.Module(loop.body, [])) and guards == []


def test_helpers_of_another_module_are_not_inlined(tmp_path, user):
    other = load_module(tmp_path, f"from {user.__name__} import dice\n" + user.make_caller("dice"))
    body, guards, _ = _inline(other.caller)
    assert "dice(" in body and guards == []


def test_unknown_local_names_inline_nothing(user):
    tree, ctx = _context(user.uses_helpers)
    ctx.local_names = None
    loop = next(n for n in ast.walk(tree) if isinstance(n, ast.For))
    assert inline_helper_calls.rewrite(loop, loop.body, ctx) == (loop.body, [])


# ---- invariants --------------------------------------------------------------------------------

def test_second_run_changes_nothing(user):
    tree, ctx = _context(user.uses_helpers)
    once = unparse(vectorize_loops.transform(tree, ctx))
    assert unparse(vectorize_loops.transform(tree, ctx)) == once
    assert [loop.strategy for loop in ctx.report.loops] == ["batched"]  # reported once


def test_the_loop_as_written_stays_the_else(user):
    tree, ctx = _context(user.uses_helpers)
    guard = next(s for s in vectorize_loops.transform(tree, ctx).body[0].body
                 if isinstance(s, ast.If))
    assert vectorize_loops.is_vectorized_guard(guard)
    assert "dice(probs[:, c], onehot[:, c])" in unparse(guard.orelse[0])
    assert "dice is _dice_inlined" in unparse(guard.test)


# ---- equivalence -------------------------------------------------------------------------------

def _inputs(dtype, seed=0, classes=4):
    g = torch.Generator().manual_seed(seed)
    probs = torch.randn(2, classes, 5, 5, generator=g, dtype=dtype).softmax(1).requires_grad_()
    onehot = torch.nn.functional.one_hot(torch.randint(0, classes, (2, 5, 5), generator=g),
                                         classes).permute(0, 3, 1, 2).to(dtype).requires_grad_()
    return probs, onehot


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["uses_helpers", "keywords", "two_levels", "shadows",
                                  "side_effect_first"])
def test_value_and_every_gradient_are_equivalent(user, name, dtype):
    fn = getattr(user, name)
    assert_equivalent(fn, optimize_loss(fn, compile=False), *_inputs(dtype))


def test_rebinding_the_helper_or_its_globals_later_is_followed(user):
    opt = optimize_loss(user.uses_helpers, compile=False)
    assert [loop.strategy for loop in opt.report.loops] == ["batched"]
    dice, smooth = user.dice, user.SMOOTH
    try:
        user.SMOOTH = 3.0  # an annealed constant: read at call time, not frozen
        assert_equivalent(user.uses_helpers, opt, *_inputs(torch.float64))
        user.dice = user.sq_err  # the helper rebound: the loop runs as written
        assert_equivalent(user.uses_helpers, opt, *_inputs(torch.float64))
    finally:
        user.dice, user.SMOOTH = dice, smooth


def test_dice_tversky_example_takes_the_batched_form():
    mod = sys.modules["dice_tversky"]  # imported by _example_helpers
    opt = optimize_loss(mod.naive, compile=False)
    assert [loop.strategy for loop in opt.report.loops] == ["batched"]
    assert opt.report.loops[0].lineno == mod.naive.__code__.co_firstlineno + 5
    for dtype in (torch.float32, torch.float64):
        assert_equivalent(mod.naive, opt, *mod.make_inputs("small", dtype))


TESTING_HELPERS = '''
import torch


def dice(p, t, w=None, eps=1e-6):
    if t.sum() == 0:  # an absent class
        return 1 - (1 - p).mean()
    if w is not None and isinstance(w, float):
        p = p * w
    return 1 - (2 * (p * t).sum() + eps) / (p.sum() + t.sum() + eps)


def normalized_l1(p, t, mean=True):
    n = t.sum().item()
    if mean:  # a Python flag: mapped, but for the `.item()`
        return (p - t).abs().sum() / max(n, 1.0)
    return (p - t).abs().sum()


def per_class_normalized(probs, target, mean):
    total = 0
    for c in range(probs.shape[1]):
        total = total + normalized_l1(probs[:, c], target[:, c], mean)
    return total


def per_class_normalized_mean(probs, target):
    total = 0
    for c in range(probs.shape[1]):
        total = total + normalized_l1(probs[:, c], target[:, c])
    return total


def scaled_dice(p, t, scale=True):
    if scale:  # a Python flag: not inlined; the tensor test is in `dice`, one call deeper
        return 2 * dice(p, t)
    return dice(p, t)


def per_class_scaled(probs, target):
    total = 0
    for c in range(probs.shape[1]):
        total = total + scaled_dice(probs[:, c], (target == c).float())
    return total


def weighted(p, t, w=None):
    if w is not None:
        p = p * w
    return ((p - t) ** 2).mean()


def per_class(probs, target):
    total = 0
    for c in range(probs.shape[1]):
        total = total + dice(probs[:, c], (target == c).float())
    return total / probs.shape[1]


def per_class_weighted(probs, target, w):
    total = 0
    for c in range(probs.shape[1]):
        total = total + weighted(probs[:, c], target[:, c], w)
    return total


class DiceLoss(torch.nn.Module):
    def _dice(self, p, t):
        if t.sum() == 0:
            return p.sum() * 0
        return 1 - 2 * (p * t).sum() / (p.sum() + t.sum() + 1e-5)

    def forward(self, probs, target):
        loss = 0
        for c in range(probs.shape[1]):
            loss = loss + self._dice(probs[:, c], (target == c).to(probs.dtype))
        return loss
'''


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_helper_testing_a_varying_value_keeps_the_loop(tmp_path, dtype):
    # `dice` is not inlined (it branches) and mapped with vmap its `if t.sum() == 0` raised on
    # every call (a fallback warning): the loop runs as written, with the reason at the test
    mod = load_module(tmp_path, TESTING_HELPERS)
    probs = torch.rand(3, 3, 3, 3, dtype=dtype, requires_grad=True)
    target = torch.randint(0, 2, (3, 3, 3))
    opt = optimize_loss(mod.per_class, compile=False, strict=True)
    assert_equivalent(mod.per_class, opt, probs, target)
    (loop,) = opt.report.loops
    line = inspect.getsourcelines(mod.dice)[1] + 1
    assert not loop.vectorized and not loop.failed_runs and not opt.report.fallbacks
    assert loop.reason.startswith("`dice(...)` is mapped with vmap, and `dice` tests "
                                  "in Python "
                                  f"`t.sum() == 0` (line {line}), a value that varies")


def test_helper_testing_only_python_facts_is_still_mapped(tmp_path):
    # `w is not None` holds for a batched tensor as for each of its items: no refusal
    mod = load_module(tmp_path, TESTING_HELPERS)
    x, t = torch.rand(3, 3, 3, dtype=torch.float64, requires_grad=True), torch.rand(3, 3, 3)
    for w in (None, 2.0, torch.rand(3, dtype=torch.float64)):
        opt = optimize_loss(mod.per_class_weighted, compile=False, strict=True)
        assert_equivalent(mod.per_class_weighted, opt, x, t.double(), w)
        assert opt.report.loops[0].vectorized and not opt.report.loops[0].failed_runs


def test_method_testing_a_varying_value_keeps_the_loop(tmp_path):
    # the same through a method of the loss module (`self._dice(...)`)
    mod = load_module(tmp_path, TESTING_HELPERS)
    probs = torch.rand(3, 3, 3, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 2, (3, 3))
    loss = mod.DiceLoss()
    opt = optimize_loss(loss, compile=False, strict=True)
    assert_equivalent(loss, opt, probs, target)
    (loop,) = opt.report.loops
    assert not loop.vectorized and not opt.report.fallbacks
    assert loop.reason.startswith("`self._dice(...)` is mapped with vmap, and `_dice` tests "
                                  "in Python `t.sum() == 0`")


def test_helper_making_a_python_number_of_a_varying_value_keeps_the_loop(tmp_path):
    # `.item()` of a value of the mapped arguments raised under vmap on every call (the flag
    # an argument of the caller: the helper is not inlined)
    mod = load_module(tmp_path, TESTING_HELPERS)
    x, t = torch.rand(3, 3, dtype=torch.float64, requires_grad=True), torch.rand(3, 3).double()
    opt = optimize_loss(mod.per_class_normalized, compile=False, strict=True)
    assert_equivalent(mod.per_class_normalized, opt, x, t, True)
    (loop,) = opt.report.loops
    assert not loop.vectorized and not opt.report.fallbacks
    assert loop.reason.startswith("`normalized_l1(...)` is mapped with vmap, and `normalized_l1` "
                                  "makes a Python number of `t.sum().item()`")
    # its default flag decides its branch: inlined, the `.item()` becomes tensor ops
    opt = optimize_loss(mod.per_class_normalized_mean, compile=False, strict=True)
    assert_equivalent(mod.per_class_normalized_mean, opt, x, t)
    (loop,) = opt.report.loops
    assert loop.vectorized and loop.vectorized_runs and not loop.original_runs


def test_helper_calling_a_testing_helper_keeps_the_loop(tmp_path):
    mod = load_module(tmp_path, TESTING_HELPERS)
    probs = torch.rand(3, 3, 3, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 2, (3, 3))
    opt = optimize_loss(mod.per_class_scaled, compile=False, strict=True)
    assert_equivalent(mod.per_class_scaled, opt, probs, target)
    (loop,) = opt.report.loops
    assert not loop.vectorized and not opt.report.fallbacks
    assert loop.reason.startswith("`scaled_dice(...)` is mapped with vmap, and `dice` tests in "
                                  "Python `t.sum() == 0`")


MATCHING = '''import torch


def match(overlaps, labels, conf_t, idx):
    best, best_idx = overlaps.max(0)
    best.squeeze_(0)
    best_idx.squeeze_(0)
    for j in range(overlaps.size(0)):
        best_idx[j] = j
    conf_t[idx] = labels[best_idx]


def caller(overlaps, labels, conf_t):
    for idx in range(conf_t.shape[0]):
        match(overlaps[idx], labels[idx], conf_t, idx)
    return conf_t
'''


def test_a_refused_helper_names_every_statement_it_would_need_changed(tmp_path):
    # the first refused statement alone hid the second in-place call and the loop: the reason
    # lists each kind with the user's lines (the tuple unpacked before them is inlined)
    module = load_module(tmp_path, MATCHING)
    _, _, ctx = _inline(module.caller)
    first = module.match.__code__.co_firstlineno + 2
    note, = [n for n in ctx.report.notes if "helper match is not inlined" in n]
    assert note.endswith(
        f"line {first}: only assignments to plain names or tuples of them (and to items of "
        "tensors it made) before the row writes (no loops, branches on values, global, "
        f"try/with, nested defs); a call for its effect at lines {first}, {first + 1}; "
        f"a `for` loop at line {first + 2}"), note


UNPACKING = '''import torch


def nearest(d, dim=0):
    values, indices = d.min(dim=dim)
    return values.mean()


def starred(d):
    first, *rest = d.unbind(0)
    return first.sum()


def caller(dists):
    loss = 0
    for i in range(dists.shape[0]):
        loss = loss + nearest(dists[i], dim=1) + starred(dists[i])
    return loss
'''


def test_a_helper_unpacking_a_tuple_into_names_is_inlined(tmp_path):
    module = load_module(tmp_path, UNPACKING)
    body, guards, ctx = _inline(module.caller)
    assert body == _golden("""
_nearest_d = dists[i]
_nearest_dim = 1
_nearest_values, _nearest_indices = _nearest_d.min(dim=_nearest_dim)
_nearest = _nearest_values.mean()
loss = loss + _nearest + starred(dists[i])
""")
    assert guards == ["nearest is _nearest_inlined"]
    assert any("helper starred is not inlined" in n and "a tuple unpacked" in n
               for n in ctx.report.notes), ctx.report.notes
    dists = torch.rand(3, 4, 5, dtype=torch.float64, requires_grad=True)
    assert_equivalent(module.caller, optimize_loss(module.caller, compile=False), dists)


GRAM = """
import torch


def gram(y):
    b, ch, h, w = y.size()
    f = y.view(b, ch, w * h)
    return f.bmm(f.transpose(1, 2)) / (ch * h * w)


def loss(feats, grams):
    s = 0.
    for fy, gs in zip(feats, grams):
        s += torch.nn.functional.mse_loss(gram(fy), gs)
    return s
"""


def test_a_reason_quotes_an_inlined_statement_in_the_helpers_names(tmp_path):
    # the inlined statement binds `_gram_b, ...`: the report spells the helper's own code,
    # not "a value the rewrite computes"
    fast = optimize_loss(load_module(tmp_path, GRAM).loss, compile=False)
    reason = fast.report.loops[0].reason
    assert "vmap: `b, ch, h, w = y.size()` has no batched form" in reason, reason


STATEFUL = """
import torch

CALLS = [0]


def counted(p):
    CALLS[0] += 1
    return p.sum() * CALLS[0]


def per_row(x):
    total = 0
    for i in range(x.shape[0]):
        total = total + counted(x[i])
    return total


class Rotating:
    def __init__(self, idc):
        self.idc = idc

    def rotate(self):
        self.idc.append(self.idc.pop(0))
        return 0.0

    def per_class(self, x):
        parts = []
        for c in self.idc:
            parts.append(x[:, c].sum() + self.rotate())
        return torch.stack(parts).sum()


class Counter:
    def __init__(self):
        self.n = 0

    def tick(self):
        self.n += 1
        return 0.0


class Counting:
    def __init__(self):
        self.counter = Counter()

    def per_row(self, x):
        total = 0
        for i in range(x.shape[0]):
            total = total + x[i].sum() + self.counter.tick()
        return total + self.counter.n
"""


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("grad", [True, False])
def test_helpers_that_change_state_are_called_in_every_iteration(tmp_path, dtype, grad):
    """A helper counting its calls, a method rotating the list the loop iterates, a method of an
    object the loss holds: the vectorized form called each once for all iterations (under
    no_grad, where no gradient check kept the methods' loops as written, other values, lists
    and counts)."""
    module = load_module(tmp_path, STATEFUL)
    x = torch.randn(4, 6, dtype=dtype)
    with torch.set_grad_enabled(grad):
        want = module.per_row(x)
        module.CALLS[0] = 0
        got = optimize_loss(module.per_row, compile=False, keep_faster=False)(x)
        assert module.CALLS[0] == 4
        torch.testing.assert_close(got, want)
        mine, theirs = module.Rotating([1, 2, 5]), module.Rotating([1, 2, 5])
        want = theirs.per_class(x)
        got = optimize_loss(mine.per_class, compile=False, keep_faster=False)(x)
        assert mine.idc == theirs.idc
        torch.testing.assert_close(got, want)
        mine, theirs = module.Counting(), module.Counting()  # a method of an object it holds
        want = theirs.per_row(x)
        got = optimize_loss(mine.per_row, compile=False, keep_faster=False)(x)
        assert mine.counter.n == theirs.counter.n == 4
        torch.testing.assert_close(got, want)


ARGUMENT_OBJECTS = """
import torch


class Counter:
    def __init__(self):
        self.n = 0

    def tick(self):
        self.n += 1
        return float(self.n)


def per_row(x, counter):
    total = 0
    for i in range(x.shape[0]):
        total = total + x[i].sum() + counter.tick()
    return total


class Held:
    def __init__(self, counter):
        self.counter = counter

    def per_row(self, x):
        total = 0
        for i in range(x.shape[0]):
            total = total + x[i].sum() * self.counter.tick()
        return total


def weighted(x, weights):
    total = 0
    for i in range(x.shape[0]):
        total = total + x[i].sum() * weights.get("w", 1.0)
    return total
"""


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("grad", [True, False])
def test_methods_of_objects_handed_in_are_called_in_every_iteration(tmp_path, dtype, grad):
    """`counter.tick()` of an argument, or of an attribute set from one, is no tensor op and its
    source is not read: the vectorized form called it once for 4 rows (under no_grad a count of 1
    and another value). A method dicts have (`weights.get`) reads only: still vectorized."""
    module = load_module(tmp_path, ARGUMENT_OBJECTS)
    for held in (False, True):
        mine, theirs = module.Counter(), module.Counter()
        loss, fast = (module.Held(theirs).per_row, optimize_loss(
            module.Held(mine).per_row, compile=False, keep_faster=False)) if held else (
            module.per_row, optimize_loss(module.per_row, compile=False, keep_faster=False))
        x = torch.randn(4, 6, dtype=dtype, requires_grad=grad)
        with torch.set_grad_enabled(grad):
            want, got = (loss(x), fast(x)) if held else (loss(x, theirs), fast(x, mine))
        assert mine.n == theirs.n == 4
        assert got.dtype == want.dtype == dtype
        torch.testing.assert_close(got, want)
        if grad:
            torch.testing.assert_close(*(torch.autograd.grad(v, x) for v in (got, want)))
    fast = optimize_loss(module.weighted, compile=False, keep_faster=False)
    assert fast.report.loops[0].vectorized
    x = torch.randn(4, 6, dtype=dtype, requires_grad=grad)
    assert_equivalent(module.weighted, fast, x, {"w": 0.5})


LOVASZ = '''
import torch
import torch.nn.functional as F


def hinge_flat(logits, labels):
    if len(labels) == 0:
        return logits.sum() * 0.
    errors = 1. - logits * (2. * labels.float() - 1.)
    errors_sorted, perm = torch.sort(errors, dim=0, descending=True)
    gt_sorted = labels[perm.data]
    return torch.dot(F.relu(errors_sorted), gt_sorted.to(errors.dtype))


def hinge(logits, labels):
    losses = []
    for log, lab in zip(logits, labels):
        losses.append(hinge_flat(log.reshape(-1), lab.reshape(-1)))
    return sum(losses) / len(losses)
'''


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_helper_reading_data_of_a_varying_value_keeps_the_loop(tmp_path, dtype):
    # Lovasz hinge per image: `labels[perm.data]` in the helper; vmap refuses `.data` ("accessing
    # `data` under vmap transform is not allowed") on every call: the loop was reported vectorized
    # and fell back with a warning per batch size
    mod = load_module(tmp_path, LOVASZ)
    opt = optimize_loss(mod.hinge, compile=False, strict=True)
    for rows in (4, 3):
        logits = torch.randn(rows, 5, 5, dtype=dtype, requires_grad=True)
        assert_equivalent(mod.hinge, opt, logits, (torch.rand(rows, 5, 5) > 0.5).long())
    (loop,) = opt.report.loops
    assert not loop.vectorized and not opt.report.fallbacks
    assert "`hinge_flat` reads `.data` (which vmap refuses) of `perm`" in loop.reason, loop
