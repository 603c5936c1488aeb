"""Frontend: parse, rebuild, the torch alias, staleness; property-based round trips."""
from __future__ import annotations

import ast

import pytest
import torch
from hypothesis import given, settings, strategies as st

from passes.ast_tools import replace, unparse
from rewrite import frontend
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
