"""Pass: a smoothed one-hot target, filled with ``lo``, written ``hi`` at each row's label and read
once in a row sum of its product with log-probabilities, becomes the sum's two terms, behind a
guard::

    s = torch.full((n, c), lo, dtype=d)              if <guard>:
    for i in range(n):                                   return (-_label_terms(F.log_softmax(x, dim=1),
        s[i, int(y[i])] = hi                  ->             _labels(y[:n], c), lo, hi)).sum(...)
    return (-s * F.log_softmax(x, dim=1)).sum(dim=1)  else:
                                                         <the three statements as written>

``label_terms(l, labels, lo, hi)`` is ``lo * l.sum(1) + (hi - lo) * l[rows, labels]``: the target
matrix is never made, written or read. The three statements are ``FILLS``, ``WRITES`` and
``USES`` (with the log-probabilities of ``LOG_PROBS``), consecutive in one block; the write is
the loop over the rows (``y[i]``, ``int(y[i])``, ``y[i].item()``) or its vectorized form
``s[torch.arange(n), y] = hi``. The else branch keeps the statements (its loop is vectorized by
``vectorize_loops``, which runs next).

Taken only when nothing else can see the target or the loop index: ``s`` is read by the use
alone, the index nowhere after the loop (the fast branch binds neither), ``lo``, ``hi`` and the
labels do not depend on either, every operand is side-effect free (evaluated again by the guard),
and the use's statement calls nothing that could change them (``fuse_loss_idioms.calls_are_safe``).

Eager only (``torch.compiler.is_compiling()`` takes the else branch): compiled, the target is
target-only work that ``hoist_target_subgraph`` caches across calls, and the gather's backward
is a zero-filled [n, c] buffer scattered into, which Inductor does not fuse; fwd+bwd at
[4096, 1000] (``label_smoothing_rows``, paired CPU time) the terms measured 0.78x eager but
0.95-1.10x compiled in three runs: no gain there.

The guard (``GUARD`` with the write's and the log-probabilities' own conditions) holds where the
terms are the original's values and gradients: integer labels ``[N]`` of at least ``n`` rows,
log-probabilities ``[n, c]`` of the fill's float32/float64 dtype and device, ``lo`` and ``hi``
Python numbers with ``0 < lo < hi``. Then every product ``t * l`` has the sign of ``l``, so an
``-inf`` or NaN log-probability gives the row the same ``-inf`` or NaN in both forms (with
``lo == hi`` or ``lo == 0`` the second term would be NaN at an ``-inf`` label where the
original's sum is ``-inf``). Labels are read as the write's indexing reads them
(``fuse_loss_idioms.indexed_labels``: negative ones wrap, one outside ``[-c, c)`` raises on the
device). The values differ from the original's by rounding (``hi - lo`` is one rounding, the sum
another order).
"""
from __future__ import annotations

import ast
import re
from collections import Counter

import torch

from .ast_tools import PassContext, Transformer, clone, is_pure, match, replace, walk
from .fuse_loss_idioms import SIMPLE, calls_are_safe, indexed_labels


def label_terms(values: torch.Tensor, labels: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """``[N]``: ``(t * values).sum(1)`` for ``t`` ``lo`` everywhere but ``hi`` at each row's label
    (``values`` [N, C], int64 ``labels`` [N] in ``[0, C)``)."""
    return lo * values.sum(1) + (hi - lo) * values.gather(1, labels[:, None])[:, 0]


_FLOATS = "(torch.float32, torch.float64)"
# The fill, with the device its target is made on.
FILLS = [("S = torch.full((N, C), LO, dtype=D)", "torch.empty(0).device"),
         ("S = torch.full((N, C), LO, dtype=D, device=DEV)", "DEV")]
# The write of ``hi`` at each row's label: its labels (as the write reads them) and their check.
_ROW_LABELS = ("Y[:N]", "Y.shape[0] >= N")
WRITES = [(f"for I in range(N):\n    S[I, {label}] = HI", *_ROW_LABELS)
          for label in ("Y[I]", "int(Y[I])", "Y[I].item()")] + [
    ("S[torch.arange(N), Y] = HI", "Y", "Y.shape[0] == N")]
# The use: the row sum of the target times log-probabilities ``L``, and its value in terms.
_SUMS = ("sum(dim=1)", "sum(1)", "sum(dim=-1)", "sum(-1)")
USES = [(f"{use}.{s}", value) for s in _SUMS for use, value in (
    ("(-S * L)", "-TERMS"), ("-(S * L)", "-TERMS"), ("(S * L)", "TERMS"), ("(L * S)", "TERMS"),
    ("(-L * S)", "-TERMS"))]
# Log-probabilities: an expression of ``P`` [n, c] of the same dtype, and what it needs.
LOG_PROBS = [*[(f"FN.log_softmax(P, {dim})", "FN is torch.nn.functional")
               for dim in ("dim=1", "dim=-1", "1", "-1")],
             *[(f"torch.log_softmax(P, {dim})", None) for dim in ("dim=1", "dim=-1")],
             *[(f"P.log_softmax({dim})", None) for dim in ("dim=1", "dim=-1", "1", "-1")],
             ("P", None)]  # any tensor: the terms are the sum for every value
# With the write's and the log-probabilities' conditions after the first line.
GUARD = [f"not torch.compiler.is_compiling() and isinstance(Y, torch.Tensor) and Y.dtype in (torch.int64, torch.int32) and Y.dim() == 1"
         f" and isinstance(N, int) and isinstance(C, int)",
         f"isinstance(P, torch.Tensor) and P.dim() == 2 and P.shape[0] == N and P.shape[1] == C"
         f" and P.dtype == D and P.dtype in {_FLOATS} and P.device == DEVICE",
         "isinstance(LO, (int, float)) and isinstance(HI, (int, float)) and 0 < LO < HI"]
_TERMS_NAME = r"_label_terms(_\d+)?"  # the namer's names of the terms' stem (a second run has not bound it)
_NAMES = frozenset({"S", "I", "FN"})  # metavariables bound to names, not expressions


def _parse(patterns: list[tuple]) -> list[tuple]:
    return [(ast.parse(p).body[0], *rest) for p, *rest in patterns]


_FILLS, _WRITES = _parse(FILLS), _parse(WRITES)
_USES = [(ast.parse(p, mode="eval").body, v) for p, v in USES]
_LOG_PROBS = [(ast.parse(p, mode="eval").body, g) for p, g in LOG_PROBS]


def transform(tree: ast.Module, ctx: PassContext) -> ast.Module:
    names = Counter(n.id for n in walk(tree) if isinstance(n, ast.Name))
    _Blocks(ctx, names).visit(tree)
    return tree


class _Blocks(Transformer):
    """Every statement list, its (fill, write, use) runs replaced."""

    def __init__(self, ctx: PassContext, names: Counter):
        self.ctx, self.names = ctx, names

    def visit_If(self, node: ast.If) -> ast.AST:
        if any(isinstance(n, ast.Name) and re.fullmatch(_TERMS_NAME, n.id)
               for s in node.body for n in walk(s)):
            return node  # this pass's guard (a second run): its else branch is the original
        return self.generic_visit(node)

    def generic_visit(self, node: ast.AST) -> ast.AST:
        super().generic_visit(node)
        for field in ("body", "orelse", "finalbody"):
            stmts = getattr(node, field, None)
            if isinstance(stmts, list) and stmts and isinstance(stmts[0], ast.stmt):
                setattr(node, field, self._block(stmts))
        return node

    def _block(self, stmts: list[ast.stmt]) -> list[ast.stmt]:
        out, k = [], 0
        while k < len(stmts):
            new = self._rewritten(*stmts[k:k + 3]) if k + 3 <= len(stmts) else None
            out += [new] if new else stmts[k:k + 1]
            k += 3 if new else 1
        return out

    def _rewritten(self, fill: ast.stmt, write: ast.stmt, use: ast.stmt) -> ast.stmt | None:
        found = self._match_fill_write(fill, write)
        if found is None or not (isinstance(use, SIMPLE) and calls_are_safe(use, self.ctx)):
            return None
        env, device, labels, write_guard = found
        for node in walk(use):
            for pattern, value in _USES:
                got = match(pattern, node, env, self.ctx.torch_name, self._bind)
                if got is not None and self.names[got["S"].id] == 3:
                    return self._guarded(fill, write, use, node, value, got,
                                         device=device, labels=labels, write_guard=write_guard)
        return None

    def _match_fill_write(self, fill: ast.stmt, write: ast.stmt) -> tuple | None:
        for fill_pattern, device in _FILLS:
            env = match(fill_pattern, fill, {}, self.ctx.torch_name, self._bind)
            for write_pattern, labels, write_guard in _WRITES if env else ():
                got = match(write_pattern, write, env, self.ctx.torch_name, self._bind)
                if got is not None and self._private(got):
                    return got, device, labels, write_guard
        return None

    def _private(self, env: dict) -> bool:
        """The target and the loop index are seen by these statements alone; the values written
        and their labels depend on neither."""
        index = env.get("I")
        if index is not None and self.names[index.id] != 3:  # the loop's target, two reads
            return False
        own = {env["S"].id} | ({index.id} if index is not None else set())
        return not any(isinstance(n, ast.Name) and n.id in own
                       for k in ("N", "C", "LO", "HI", "Y", "D") if k in env for n in walk(env[k]))

    def _bind(self, meta: str, node: ast.AST, env: dict) -> dict | None:
        if meta == "L":
            return self._bind_log_probs(node, env)
        ok = isinstance(node, ast.Name) if meta in _NAMES else is_pure(node)
        return {**env, meta: node} if ok else None

    def _bind_log_probs(self, node: ast.AST, env: dict) -> dict | None:
        for pattern, guard in _LOG_PROBS:
            got = match(pattern, node, env, self.ctx.torch_name, self._bind)
            if got is not None:
                return {**got, "L": node, "log_probs_guard": guard}
        return None

    def _guarded(self, fill, write, use, node, value, env, device, labels, write_guard) -> ast.stmt:
        """``if <guard>: <use with the terms> else: <fill, write, use>``."""
        subs = {k: v for k, v in env.items() if k.isupper() and k not in ("S", "I", "L")}
        subs["DEVICE"] = replace(device, torch_name=self.ctx.torch_name, **subs)
        parts = [GUARD[0], write_guard, *GUARD[1:], env["log_probs_guard"]]
        guard = replace(" and ".join(p for p in parts if p), loc=fill,
                        torch_name=self.ctx.torch_name, **subs)
        terms = replace(f"TERMS__(L, LABELS__({labels}, C), LO, HI)", loc=node,
                        torch_name=self.ctx.torch_name,
                        TERMS__=self.ctx.bind(label_terms, "label_terms"),
                        LABELS__=self.ctx.bind(indexed_labels, "labels"), L=env["L"], **subs)
        written = [clone(fill), clone(write), clone(use)]
        guarded = replace("if GUARD:\n    pass\nelse:\n    pass", loc=fill, GUARD=guard)[0]
        guarded.body = [_Swap(node, replace(value, loc=node, TERMS=terms)).visit(use)]
        guarded.orelse = written
        self.ctx.report.notes.append(
            f"{self.ctx.where(fill)}: `{env['S'].id}`, a smoothed one-hot target read once at line "
            f"{use.lineno}, is not made: its row sum is its label terms (where the guard holds)")
        return guarded


class _Swap(Transformer):
    """A statement with one of its nodes (by identity) replaced."""

    def __init__(self, old: ast.AST, new: ast.AST):
        self.old, self.new = old, new

    def visit(self, node: ast.AST) -> ast.AST:
        return self.new if node is self.old else super().visit(node)
