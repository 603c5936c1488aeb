"""ast_tools: the fast stand-ins give exactly what the ``ast`` module's own functions give."""
from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest

from passes import ast_tools
from passes.ast_tools import Transformer, clone, fix_missing_locations, replace, walk

SOURCE = (Path(__file__).parent.parent / "passes" / "loops" / "vectorize_loops.py").read_text()


def _dump(node: ast.AST) -> str:
    return ast.dump(node, include_attributes=True)


def _unlocated() -> ast.Module:
    """A parsed tree, every third node without its location, some with end_lineno None."""
    tree = ast.parse(SOURCE)
    for k, n in enumerate(ast.walk(tree)):
        if n._attributes and k % 3 == 0:
            for attr in n._attributes:
                n.__dict__.pop(attr, None)
        elif n._attributes and k % 3 == 1:
            n.end_lineno = None
    return tree


def test_walk_is_ast_walk():
    tree = ast.parse(SOURCE)
    assert list(walk(tree)) == list(ast.walk(tree))


def test_fix_missing_locations_is_ast_fix_missing_locations():
    ours, theirs = _unlocated(), _unlocated()
    assert _dump(fix_missing_locations(ours)) == _dump(ast.fix_missing_locations(theirs))


def test_clone_copies_every_node():
    tree = ast.parse(SOURCE)
    copied = clone(tree)
    assert _dump(copied) == _dump(tree)
    originals = {id(n) for n in ast.walk(tree) if not isinstance(n, ast.expr_context)}
    assert not any(id(n) in originals for n in ast.walk(copied)
                   if not isinstance(n, ast.expr_context))


class _Reference(ast.NodeTransformer):
    """What ``replace`` did before it filled templates in one pass."""

    def __init__(self, subs: dict, torch_name: str):
        self.subs, self.torch_name = subs, torch_name

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in self.subs:
            new = self.subs[node.id]
            if isinstance(new, str):
                return ast.Name(id=new, ctx=node.ctx)
            new = copy.deepcopy(new)
            if hasattr(new, "ctx"):
                new.ctx = node.ctx
            return new
        if node.id == "torch" and self.torch_name != "torch":
            return ast.Name(id=self.torch_name, ctx=node.ctx)
        return node


def _reference_replace(template: str, loc: ast.AST | None, torch_name: str, **subs) -> object:
    tree = ast.parse(template)
    if loc is not None:
        for sub in ast.walk(tree):
            if "lineno" in sub._attributes:
                ast.copy_location(sub, loc)
                sub.end_lineno, sub.end_col_offset = loc.end_lineno, loc.end_col_offset
    body = ast.fix_missing_locations(_Reference(subs, torch_name).visit(tree)).body
    return body[0].value if len(body) == 1 and isinstance(body[0], ast.Expr) else body


@pytest.mark.parametrize("template", ["torch.where(c, a, b)", "acc = acc + x",
                                      "f(*args, k=x)\nif c:\n    acc += x.sum(0)"])
@pytest.mark.parametrize("located", [True, False])
@pytest.mark.parametrize("torch_name", ["torch", "_th"])
def test_replace_is_parse_locate_substitute_fix(template, located, torch_name):
    loc = ast.parse("\n\nif x:\n    y = 1").body[0].body[0] if located else None
    spliced = ast.parse("g(h(2), z)", mode="eval").body
    spliced.args[0].lineno = 7  # a located spliced node keeps its location
    del spliced.args[1].lineno  # a node without one takes its parent's
    spliced.args[1].end_lineno = None
    built = ast.BinOp(ast.Name("p", ast.Load()), ast.Add(), ast.Constant(1))  # no location at all
    subs = dict(c="cond", a=spliced, b=built, acc="total", x=spliced, args=built)
    ours = replace(template, loc=loc, torch_name=torch_name, **subs)
    theirs = _reference_replace(template, loc, torch_name, **subs)
    dump = (lambda r: [_dump(s) for s in r]) if isinstance(ours, list) else _dump
    assert dump(ours) == dump(theirs)
    assert not hasattr(spliced.args[1], "lineno")  # the given value is not modified


class _Doubler(ast.NodeTransformer):
    """Replaces, drops and splices nodes, as passes do."""

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if isinstance(node.value, int) and not isinstance(node.value, bool):
            return ast.copy_location(ast.Constant(node.value * 2), node)
        return node

    def visit_Pass(self, node: ast.Pass) -> None:
        return None

    def visit_Expr(self, node: ast.Expr) -> list:
        self.generic_visit(node)
        return [node, ast.Expr(ast.Constant("after"))]


class _FastDoubler(Transformer):
    visit_Constant = _Doubler.visit_Constant
    visit_Pass = _Doubler.visit_Pass
    visit_Expr = _Doubler.visit_Expr


def test_transformer_is_node_transformer():
    ours, theirs = ast.parse(SOURCE), ast.parse(SOURCE)
    assert _dump(_FastDoubler().visit(ours)) == _dump(_Doubler().visit(theirs))


def test_template_cache_is_not_modified():
    before = _dump(ast_tools._parse("a + b"))
    replace("a + b", a=ast.Name("x", ast.Load()), b="y")
    assert _dump(ast_tools._parse("a + b")) == before


def test_transformer_visits_fieldless_nodes_it_has_visitors_for():
    class Rewire(Transformer):  # `pass`, `continue` and `Load` have no fields
        def visit_Pass(self, node: ast.Pass) -> None:
            return None

        def visit_Continue(self, node: ast.Continue) -> ast.Break:
            return ast.Break()

    tree = Rewire().visit(ast.parse("for i in x:\n    pass\n    continue\n    y = i"))
    assert ast.unparse(tree) == "for i in x:\n    break\n    y = i"


@pytest.mark.parametrize("src, pure", [
    ("x", True), ("x.shape[0] - 1", True), ("len(x) // 2", True), ("a > b", True),
    ("x.size(0)", True), ("(n, m)", True), ("f(x)", False), ("x.sum()", False),
    ("[a, b]", False), ("a if c else b", False), ("a and b", False), ("(y := x)", False),
    ("lambda: x", False)])
def test_is_pure(src, pure):
    """Evaluated again before the loop: only what has no effect of its own, and shape calls."""
    assert ast_tools.is_pure(ast.parse(src, mode="eval").body) is pure


def test_is_pure_takes_the_calls_it_is_told():
    expr = ast.parse("x.sum() > len(x)", mode="eval").body
    assert ast_tools.is_pure(expr, lambda call: True)
    assert not ast_tools.is_pure(expr, lambda call: isinstance(call.func, ast.Name))
