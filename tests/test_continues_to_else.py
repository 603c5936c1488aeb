"""continues_to_else: a top-level ``if`` whose branch ends with ``continue`` holds the statements
after it in its other branch; a filter picks which such ``if`` is rewritten. Golden before/after
on statement lists, with no-change cases (the statements given are not changed)."""
from __future__ import annotations

import ast

import pytest

from passes.ast_tools import unparse
from passes.loops.continues_to_else import continues_to_else
from tests.loop_helpers import dedent, normalise

BODY = """
    if c:
        a.append(1)
        continue
    if d:
        b.append(2)
    else:
        continue
    a.append(3)
    """


def rewritten(src: str, wanted=None) -> str:
    stmts = ast.parse(dedent(src)).body
    before = ast.dump(ast.Module(stmts, []))
    out = continues_to_else(stmts) if wanted is None else continues_to_else(stmts, wanted)
    assert ast.dump(ast.Module(stmts, [])) == before  # new nodes, the input as it was
    return unparse(ast.Module(out, []))


@pytest.mark.parametrize("wanted, golden", [
    # every such `if`, from the innermost out (the `else` that continues too)
    (None, """
        if c:
            a.append(1)
        elif d:
            b.append(2)
            a.append(3)
        """),
    # only the `if` whose branch appends to `a`: the second stays as written
    (lambda s, rest: ast.unparse(s.body[0]).startswith("a."), """
        if c:
            a.append(1)
        else:
            if d:
                b.append(2)
            else:
                continue
            a.append(3)
        """),
    # none wanted: no change
    (lambda s, rest: False, BODY),
])
def test_golden(wanted, golden):
    assert rewritten(BODY, wanted) == normalise(golden)


def test_continue_elsewhere_is_left():
    src = """
        for j in y:
            continue
        if c:
            a.append(1)
        """
    assert rewritten(src) == normalise(src)
