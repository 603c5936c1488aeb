"""The mutated-arguments fact: which parameters a function may change in place."""
from __future__ import annotations

import ast
import textwrap

import pytest

from passes.mutated_arguments import function_node, mutated_parameters


def _mutated(source: str, globals_: dict | None = None) -> list[str]:
    return sorted(mutated_parameters(function_node(ast.parse(textwrap.dedent(source))), globals_))


@pytest.mark.parametrize("body, expected", [
    # nothing changed in place: accumulators, rebinding, results of calls
    ("loss = 0\nfor i in range(3):\n    loss += (pred[i] - target[i]).sum()\nreturn loss", []),
    ("target = target / 10\ntarget += 1\nreturn (pred - target).sum()", ["target"]),  # flow-insensitive
    ("loss = F.mse_loss(pred, target)\nloss *= 2\nreturn loss", []),
    ("p = pred.clone()\np /= 2\nreturn p.sum()", []),
    # stores and augmented assignment
    ("target /= 10.0\nreturn pred.sum()", ["target"]),
    ("target[0] = 1\nreturn pred.sum()", ["target"]),
    ("del target[0]\nreturn pred.sum()", ["target"]),
    ("pred.data = pred.data * 2\nreturn pred.sum()", ["pred"]),
    # through aliases: locals, views, loop variables, containers
    ("t = target\nt /= 10.0\nreturn pred.sum()", ["target"]),
    ("v = target.view(-1)\nv[0] = 1\nreturn pred.sum()", ["target"]),
    ("for t in target:\n    t.mul_(2)\nreturn pred.sum()", ["target"]),
    ("pair = (pred, target)\npair[1].zero_()\nreturn pred.sum()", ["pred", "target"]),  # any item
    ("a = target\nb = a[0]\nb += 1\nreturn pred.sum()", ["target"]),
    # in-place methods and functions
    ("target.clamp_(min=0)\nreturn pred.sum()", ["target"]),
    ("target.append(1)\nreturn pred.sum()", ["target"]),
    ("torch.relu_(pred)\nreturn pred.sum()", ["pred"]),
    ("F.relu(target, inplace=True)\nreturn pred.sum()", ["target"]),
    ("torch.add(pred, 1, out=target)\nreturn pred.sum()", ["target"]),
    # new tensors from constructors, written at indices read from a parameter
    ("s = torch.full(pred.shape, 0.1, dtype=pred.dtype)\ns[0, int(target[0])] = 1\n"
     "return (s * pred).sum()", []),
    ("c = pred.new_zeros(3)\nfor t in target:\n    c[t] += 1\nreturn (c * pred).sum()", []),
    ("s = torch.zeros_like(pred)\ns[target[0]] = 1.0\nreturn (s * pred).sum()", []),
    ("a, target[0] = 1, 2\nreturn pred.sum() * a", ["target"]),
    ("*a, target[pred.argmax()] = 1, 2\nreturn pred.sum()", ["target"]),
    ("v = pred.view(-1)\nv[target[0]] = 1\nreturn pred.sum()", ["pred"]),
    # a method of an object other than a tensor or a container: a module called, which may
    # update its buffers (BatchNorm's running statistics), or a method, which may set state
    ("return target.bn(pred).sum()", ["target"]),
    ("target.update_center(pred)\nreturn pred.sum()", ["target"]),
    ("return pred.gather(1, target).masked_fill(target == 0, 0).argmax().float()", []),
    ("return F.cross_entropy(pred.unbind(0)[0], target.get('y'))", []),
])
def test_mutated_parameters(body, expected):
    source = "def loss(pred, target):\n" + textwrap.indent(body, "    ") + "\n"
    assert _mutated(source) == expected


def test_attribute_of_self_and_lambda():
    assert _mutated("def forward(self, pred):\n    self.calls += 1\n    return pred\n") == ["self"]
    assert _mutated("fn = optimize_loss(lambda pred, target: pred.add_(1))\n") == ["pred"]
    assert _mutated("def f(*preds, **named):\n    preds[0].zero_()\n    named['a'].zero_()\n") == [
        "named", "preds"]


def _scale(t, k):
    t /= k
    return t


def _reads(t, k):
    return t / k


def test_helpers_of_the_globals_are_followed():
    source = "def loss(pred, target):\n    return (pred - helper(target, 10.0)).sum()\n"
    assert _mutated(source, {"helper": _scale}) == ["target"]
    assert _mutated(source, {"helper": _reads}) == []
    assert _mutated(source.replace("target, 10.0", "k=10.0, t=target"), {"helper": _scale}) == [
        "target"]


class _Returns:
    """A helper object as RL losses make one (``ppo = PPO()``) and hand the rollout lists."""

    def gae(self, rewards, masks):
        return [r * m for r, m in zip(rewards, masks)]

    def append_to(self, rewards, value):
        rewards.append(value)
        return rewards


def test_methods_of_a_local_object_of_the_module_are_read_from_their_source():
    # ppo may hold the lists it is handed, but its method changes none of them: no copy of the
    # rollout lists per call (a 2.5 ms copy made the whole-call trial pick the original)
    globals_ = {"Returns": _Returns, "__name__": __name__}
    source = ("def loss(rewards, masks, v):\n    ppo = Returns()\n"
              "    return ppo.{}.sum()\n")
    assert _mutated(source.format("gae(rewards, masks)[0]"), globals_) == []
    assert _mutated(source.format("append_to(rewards, v)[0]"), globals_) == ["rewards"]
    # an object of no class of the module: its method may change it, and what it holds
    assert _mutated("def loss(model, x):\n    model.update(x)\n    return x.sum()\n") == ["model"]
