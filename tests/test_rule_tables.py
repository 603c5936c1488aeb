"""Checks of the rule tables and the passes that read them which the mutation score
(tests/mutation_score.py) found missing: each test kills mutants that every other fast test let
survive."""
from __future__ import annotations

import ast
import operator

import torch.fx

from passes import op_facts
from tests.test_fuse_loss_idioms import _run_pass


def _call(target, *args, **kwargs) -> torch.fx.Node:
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    return graph.call_function(target, (x, *args), kwargs)


def test_is_mutating_sees_writes_by_operator_by_name_and_by_keyword():
    assert op_facts.is_mutating(_call(operator.setitem, 0, 1.0))
    assert op_facts.is_mutating(_call(torch.relu_))
    assert op_facts.is_mutating(_call(torch.nn.functional.relu, inplace=True))
    assert not op_facts.is_mutating(_call(operator.getitem, 0))
    assert not op_facts.is_mutating(_call(torch.nn.functional.relu, inplace=False))


def test_a_temporary_is_not_trusted_next_to_an_in_place_torch_function():
    """``torch.relu_(b)`` changes an operand after the temporary was computed: the guard would
    re-read another ``b``, so the idiom stays as written."""
    source = "def f(a, b):\n    t = (a - b) ** 2\n    return t.mean() + torch.relu_(b).sum()\n"
    assert _run_pass(ast.parse(source)) == ast.unparse(ast.parse(source))
