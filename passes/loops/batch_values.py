"""What the batcher (``batch_loop_bodies``) knows about values: per-item ranks as expressions of
the inputs' ranks, the facts of each value of the body, and literals."""
from __future__ import annotations

import ast
from dataclasses import dataclass


@dataclass(frozen=True)
class Rank:
    """A per-item rank: ``const + sum(coeff * term)``; terms are rank expressions of the inputs
    (``"pred.dim()"``), which the runtime check may compare."""
    terms: tuple[tuple[str, int], ...] = ()
    const: int = 0

    @staticmethod
    def of(term: str, const: int = 0) -> "Rank":
        return Rank(((term, 1),), const)

    def __add__(self, other: "Rank | int") -> "Rank":
        if isinstance(other, int):
            return Rank(self.terms, self.const + other)
        coeffs = dict(self.terms)
        for term, c in other.terms:
            coeffs[term] = coeffs.get(term, 0) + c
        return Rank(tuple(sorted((t, c) for t, c in coeffs.items() if c)),
                    self.const + other.const)

    def __sub__(self, other: "Rank | int") -> "Rank":
        if isinstance(other, int):
            return self + -other
        return self + Rank(tuple((t, -c) for t, c in other.terms), -other.const)


@dataclass(frozen=True)
class Param:
    """A parameter of the outlined body: its name, what it is bound to with the loop dim in
    front, its per-item rank, and the conditions making it an integer tensor (None: unknown)."""
    name: str
    batched: ast.expr
    rank: Rank
    integer: tuple[str, ...] | None
    index: bool = False                       # the loop's index: a Python int per item


@dataclass(frozen=True)
class Val:
    """What the rewrite knows about a value of the body."""
    batched: bool                             # carries the loop dim in front
    rank: Rank | None = None                  # batched: per-item rank (None: unknown)
    integer: tuple[str, ...] | None = None    # conditions making it an integer tensor
    # Not batched: the free names it is computed from by elementwise ops, reductions and fixed
    # indexing (so its rank is at most theirs); None when other ops are involved.
    leaves: frozenset[str] | None = frozenset()
    # Batched rows of a loop input: source the runtime check can evaluate (dtype, last dim).
    source: str | None = None
    # Not batched: a loop input itself (its source), a set of the rows the body is given.
    whole: str | None = None
    # Batched: a tensor in the original too (rows of a loop input, their parts, what elementwise
    # ops make of them), never a Python number (the index, ``x.item()``); False: not known.
    tensor: bool = False
    # Not batched: a tensor of this rank in every call (``torch.arange(n)`` of int sizes: 1);
    # None: not known.
    fixed_rank: int | None = None


CONSTANT = Val(False)


def condition(diff: Rank, op: str) -> str | bool:
    """``diff <op> 0`` as Python source, or its truth when no input rank is involved."""
    if not diff.terms:
        return diff.const == 0 if op == "==" else diff.const >= 0
    left = [_times(t, c) for t, c in diff.terms if c > 0] + ([str(diff.const)] if diff.const > 0 else [])
    right = [_times(t, -c) for t, c in diff.terms if c < 0] + ([str(-diff.const)] if diff.const < 0 else [])
    return f"{' + '.join(left) or '0'} {op} {' + '.join(right) or '0'}"


def highest(a: Rank, b: Rank) -> Rank:
    """The larger of two per-item ranks: one of them when that is known (a rank is never
    negative, so 0 is the least), else ``max(...)`` of their sources, which the runtime check
    may compare like any rank term."""
    if condition(a - b, ">=") is True or b == Rank():
        return a
    if condition(b - a, ">=") is True or a == Rank():
        return b
    low = min(a.const, b.const)
    return Rank.of(f"max({source_of(a - low)}, {source_of(b - low)})", low)


def source_of(rank: Rank) -> str:
    """``rank`` as Python source (``x.dim() - t.dim() + 1``)."""
    parts = [(f" - {_times(t, -c)}" if c < 0 else f" + {_times(t, c)}")
             for t, c in sorted(rank.terms, key=lambda term: term[1] < 0)]
    if rank.const:
        parts.append(f" - {-rank.const}" if rank.const < 0 else f" + {rank.const}")
    text = "".join(parts) or " + 0"
    return text[3:] if text.startswith(" + ") else "-" + text[3:]


def _times(term: str, c: int) -> str:
    return term if c == 1 else f"{c} * {term}"


UNKNOWN = object()


def literal(node: ast.expr) -> object:
    """The value of a literal (``-1``, ``(0, 2)``, ``None``); ``UNKNOWN`` for anything else."""
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError):
        return UNKNOWN


def number_literal(e: ast.expr) -> bool:
    """A number literal, signed."""
    return type(literal(e)) in (int, float, bool)


def integer(operands: list[tuple[ast.expr, Val]]) -> tuple[str, ...] | None:
    """Conditions making the result of integer-preserving ops an integer tensor; None: unknown.
    Python int constants keep the dtype."""
    conds: list[str] = []
    for node, val in operands:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            continue
        if not val.batched or val.integer is None:
            return None
        conds += val.integer
    return tuple(dict.fromkeys(conds))


def ints(nodes: list[ast.expr]) -> tuple[int, ...] | None:
    """The values of int literals (``(2,)`` for ``[2]``); None when one is anything else."""
    values = tuple(literal(n) for n in nodes)
    return values if all(type(v) is int for v in values) else None
