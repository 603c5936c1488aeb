"""Frontend: parse, rebuild, the torch alias, staleness; property-based round trips."""
from __future__ import annotations

import ast
import dis
import linecache
import os

import pytest
import torch
from hypothesis import given, settings, strategies as st

from passes.ast_tools import replace, unparse
import rewrite
from rewrite import frontend
from rewrite.testing import assert_equivalent
from passes.errors import Unsupported
from rewrite.runtime import signature_key
from tests.helpers import load_module


def _roundtrip(fn):
    parsed = frontend.parse_function(fn)
    return parsed, frontend.build_function(parsed.tree, parsed)


def test_alias_when_torch_is_not_bound_as_torch(tmp_path):
    module = load_module(tmp_path, """
        import torch as th
        def loss(pred, torch=None):
            return (pred * 2).sum()
    """)
    parsed = frontend.parse_function(module.loss)
    assert parsed.torch_name == frontend.TORCH_ALIAS
    # Generated code that names torch through the alias works although `torch` is a parameter.
    ret = parsed.tree.body[0].body[-1]
    ret.value = replace("torch.sum(x)", torch_name=parsed.torch_name, x=ret.value)
    rebuilt = frontend.build_function(parsed.tree, parsed)
    pred = torch.randn(3)
    assert torch.allclose(rebuilt(pred), (pred * 2).sum())


def test_future_annotations_docstrings_and_nested_functions(tmp_path):
    module = load_module(tmp_path, '''
        from __future__ import annotations
        import torch

        class Box:
            def loss(self, pred: torch.Tensor, k: int = 2) -> torch.Tensor:
                """Multi-line
                docstring keeps its indentation."""
                text = """
                    literal"""
                def helper(x):
                    return x * k
                return helper(pred).sum() + len(text)
    ''')
    parsed, rebuilt = _roundtrip(module.Box.loss)
    assert rebuilt.__doc__ == module.Box.loss.__doc__
    pred = torch.randn(4)
    assert torch.equal(rebuilt(None, pred), module.Box.loss(None, pred))
    assert parsed.lineno == 6 and parsed.tree.body[0].lineno == 6


def test_lambda_in_a_file(tmp_path):
    module = load_module(tmp_path, "import torch\nloss = (\n    lambda p, t: (p - t).abs().sum()\n)\n")
    parsed, rebuilt = _roundtrip(module.loss)
    assert parsed.lineno == 3
    p, t = torch.randn(3), torch.randn(3)
    assert torch.equal(rebuilt(p, t), module.loss(p, t))


def test_recursion_and_class_references_stay_global(tmp_path):
    module = load_module(tmp_path, """
        class Loss:
            scale = 2.0
            def forward(self, x, n):
                return Loss.scale * self.forward(x, n - 1) if n else x.sum()

        def countdown(x, n):
            return countdown(x + 1, n - 1) if n else x
    """)
    for fn, args in ((module.Loss.forward, (module.Loss(), torch.ones(2), 3)),
                     (module.countdown, (torch.zeros(1), 4))):
        parsed, rebuilt = _roundtrip(fn)  # parse_function checks the code matches
        assert rebuilt.__code__.co_freevars == ()
        assert torch.equal(rebuilt(*args), fn(*args))


def test_two_lambdas_on_one_line_are_refused(tmp_path):
    module = load_module(tmp_path, "pair = (lambda a: a + 1, lambda a: a + 2)\n")
    with pytest.raises(Unsupported, match="other lambdas"):
        frontend.parse_function(module.pair[0])


def test_signature_key_distinguishes_what_selects_code():
    a = torch.randn(2, 3)
    base = signature_key((a, "mean"), {})
    assert signature_key((torch.randn(2, 3), "mean"), {}) == base
    assert signature_key((a.double(), "mean"), {}) != base
    assert signature_key((a.requires_grad_(), "mean"), {}) != base
    assert signature_key((torch.randn(3, 3), "mean"), {}) != base
    assert signature_key((torch.randn(2, 3), "sum"), {}) != base
    with torch.no_grad():
        assert signature_key((torch.randn(2, 3), "mean"), {}) != base


# Expressions over two tensors from a small grammar: the rebuilt function must compute exactly
# what the original computes, wherever its source came from.
_leaves = st.sampled_from(["a", "b", "(a * 2.0)", "a.exp()", "b.abs()", "torch.tanh(a)"])
_exprs = st.recursive(_leaves, lambda inner: st.one_of(
    st.tuples(inner, st.sampled_from(["+", "-", "*"]), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
    inner.map(lambda e: f"torch.sigmoid({e})"),
    inner.map(lambda e: f"{e}.sum(0, keepdim=True)"),
), max_leaves=6)


@settings(max_examples=40, deadline=None)
@given(expr=_exprs, indent=st.booleans())
def test_rebuilt_function_equals_original(tmp_path_factory, expr, indent):
    body = f"def loss(a, b):\n    out = {expr}\n    return out.sum()\n"
    source = "import torch\n" + ("class C:\n" + "".join("    " + l + "\n" for l in body.splitlines())
                                 if indent else body)
    module = load_module(tmp_path_factory.mktemp("fuzz"), source)
    fn = module.C.loss if indent else module.loss
    parsed, rebuilt = _roundtrip(fn)
    assert unparse(parsed.tree).startswith("def loss(a, b):")
    a, b = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    assert torch.equal(rebuilt(a, b), fn(a, b))
    assert ast.dump(ast.parse(unparse(parsed.tree))) == ast.dump(ast.parse(unparse(parsed.tree)))


def _long_loop(n: int, padding: int = 0, in_class: bool = False) -> str:
    # Each `pass` is a NOP kept for its line: it moves every later jump without changing behaviour.
    body = "".join("        pass\n" for _ in range(padding)) + "".join(
        f"        acc = acc + x[i] * {k} + x[i] / {k + 1}\n" for k in range(n))
    src = f"def loss(x):\n    acc = 0\n    for i in range(x.shape[0]):\n{body}    return acc\n"
    return "class L:\n" + "".join("    " + line for line in src.splitlines(True)) if in_class else src


@pytest.mark.parametrize("in_class", [False, True])
def test_long_loop_bodies_are_the_same_code(tmp_path, in_class):
    # Jump offsets past 256 code units take EXTENDED_ARG prefixes: layout, never a mismatch.
    for n in range(2, 80, 7):
        module = load_module(tmp_path, _long_loop(n, in_class=in_class))
        fn = module.L.loss if in_class else module.loss
        parsed, rebuilt = _roundtrip(fn)
        x = torch.randn(3)
        assert torch.equal(rebuilt(x), fn(x))


def test_fingerprint_ignores_jump_layout_but_not_behaviour():
    def code(src):
        return next(c for c in compile(src, "f.py", "exec").co_consts if hasattr(c, "co_code"))

    def high_bits(c):
        return [i.arg for i in dis.get_instructions(c) if i.opname == "EXTENDED_ARG"]
    # The NOPs of `pass` lines push a jump's high bits to the next value at some body length.
    crossing = [n for n in range(10, 60) if high_bits(code(_long_loop(n))) != high_bits(
        code(_long_loop(n, padding=3)))]
    assert crossing
    for n in crossing:
        assert frontend._fingerprint(code(_long_loop(n))) == frontend._fingerprint(
            code(_long_loop(n, padding=3)))
        changed = code(_long_loop(n).replace("x[i] * 1 ", "x[i] * 2 "))
        assert frontend._fingerprint(code(_long_loop(n))) != frontend._fingerprint(changed)


@pytest.mark.parametrize("in_class", [False, True])
def test_a_long_loop_edited_on_disk_is_still_refused(tmp_path, in_class):
    module = load_module(tmp_path, _long_loop(40, in_class=in_class))
    fn = module.L.loss if in_class else module.loss
    path = module.__file__
    with open(path, "w") as f:
        f.write(_long_loop(40, in_class=in_class).replace("x[i] * 39", "x[i] * 38"))
    os.utime(path, (1, 1))  # seen even within the same mtime tick
    linecache.checkcache(path)
    with pytest.raises(Unsupported, match="does not match the loaded code"):
        frontend.parse_function(fn)


def test_alias_inside_a_method_of_a_module_without_torch(tmp_path):
    # the generated code names torch through the alias; in a method, a name starting with two
    # underscores would be mangled to `_Cls__...` and raise NameError (the original then ran)
    module = load_module(tmp_path, """
        import torch as th
        class Loss(th.nn.Module):
            def forward(self, x, y):
                s = 0
                for i in range(x.shape[0]):
                    s = s + ((x[i] - y[i]) ** 2).sum()
                return s
    """)
    loss = module.Loss()
    fast = rewrite.optimize_loss(loss, compile=False, strict=True)
    x, y = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3)
    assert_equivalent(loss, fast, x, y)
    assert fast.report.loops[0].vectorized_runs == 1 and not fast.report.fallbacks
