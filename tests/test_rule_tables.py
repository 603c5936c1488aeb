"""Checks of the rule tables and the passes that read them which the mutation score
(tests/mutation_score.py) found missing: each test kills mutants that every other fast test let
survive."""
from __future__ import annotations

import operator

import torch.fx

from passes import op_facts


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
