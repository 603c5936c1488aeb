"""Pass: a loss computed from an elementwise chain becomes the fused PyTorch loss, behind a guard.

Each idiom of ``RULES`` (anywhere in the function: the vectorizer's output or the user's code) is
converted to the fused loss when a cheap runtime guard proves both give the same value and the
same gradients, and runs as written otherwise::

    ((a - b) ** 2).mean()          ->  F.mse_loss(a, b) if <same shape, same float dtype> else ...
    torch.logsumexp(x, dim=1).sum(0) - x[torch.arange(len(x), device=x.device), y].sum(0)
                                   ->  _cross_entropy(x, _labels(y, C)).sum(0)
                                       if <x [N, C] float, y [N] int64/int32> else ...
    (<that difference>) / n        ->  _cross_entropy(x, _labels(y, C)).mean(0) if <the same, n == N>
                                       else ...
    w = cw[y]                          w = cw[y]
    (-w * lp[torch.arange(len(lp), device=lp.device), y]).sum(0)
                                   ->  F.nll_loss(lp, _labels(y, C), weight=cw, reduction='sum')
                                       if <the label guard, cw [C] of lp's dtype, no grad> else ...
    s = F.one_hot(y, C).to(x.dtype) * (1 - eps) + eps / C
    -(s * cw * F.log_softmax(x, dim=1)).sum(dim=1)
                                   ->  F.cross_entropy(x, _classes(y, C), weight=cw,
                                                       label_smoothing=eps, reduction='none')
                                       if <the label guard, int64 labels, C == x.shape[1],
                                           eps a float in [0, 1], the same for cw> else ...

(``F`` is spelled ``torch.nn.functional``: the user's module may not bind ``F``.) The squared
difference is matched as ``** 2``, ``.pow(2)`` and ``d * d``, also through a temporary assigned in
the statement just before (``d = (a - b) ** 2`` then ``d.mean()``).

``_cross_entropy`` (``passes/logsumexp_cross_entropy.py``) is ``F.cross_entropy(...,
reduction='none')`` with the original's value and gradients also at rows holding ``+inf`` (where
``cross_entropy`` is NaN), at about its cost. Only idioms whose fused form measured faster
(fwd+bwd, CPU) are rules: ``(a - b).abs().mean()`` -> ``F.l1_loss`` measured no faster and is
left as written.

Why the guards: ``mse_loss`` broadcasts (with a warning) and promotes dtypes differently
from ``a - b``; float16/bfloat16 reduce with another accumulation, so only float32/float64 fuse.
Indexing treats bool labels as a mask, so labels must be int64/int32; it wraps negative labels
and raises outside ``[-C, C)``, while ``cross_entropy`` raises on negative labels or ignores -100:
the fused losses read the labels through ``indexed_labels`` (bound into the generated code as
``LABELS__``), ``labels % C`` after a device-side check (``torch._assert_async``) that raises where
indexing raises. No host sync: the check never reads the labels back (on a GPU a bad label is a
device-side assert, as the original's indexing is). ``one_hot`` raises on any label outside
``[0, C)``: the smoothed cross entropy reads them through ``class_labels`` (``CLASSES__``), the
same check without wrapping. ``nll_loss`` has no gradient for
``weight``, so a weight that requires grad keeps the original. Operands are re-evaluated by the
guard, so they must be side-effect free (names, attributes, subscripts, ``.long()``,
``.detach()``); a temporary's definition is only trusted in the next statement, and only when
that statement calls nothing that could mutate the operands (torch functions, known methods).
The fused losses save their operands for backward where the idioms saved new tensors
(``mse_loss`` saves ``a`` and ``b``, ``(a - b) ** 2`` only the difference): an operand the body
may change in place (``passes/mutated_arguments.py``'s alias facts over every name: ``c =
centers[y[i]]`` and a later ``centers[y[i]] = ...``, a view of ``centers``) is left as written, or
the backward would fail where the original's runs.
The else branch keeps the original expression, so a second run leaves the result unchanged. A
temporary that only the original expression reads is computed only where that runs:
``t = None if <guard> else (a - b) ** 2`` (the guard sees the same values twice: nothing runs
between the two statements).
"""
from __future__ import annotations

import ast
import re
from collections import Counter
from dataclasses import dataclass, field

import torch

from . import ops
from .ast_tools import PassContext, Transformer, replace, walk
from .logsumexp_cross_entropy import logsumexp_cross_entropy
from .mutated_arguments import changed_in_place, function_node


@dataclass(frozen=True)
class Rule:
    pattern: str     # upper-case names are metavariables; ``torch`` is the function's torch name
    fused: str
    guard: str
    defs: dict = field(default_factory=dict)  # metavariable -> pattern of its assignment just before


_FLOATS = "(torch.float32, torch.float64)"
_LABELS = "(torch.int64, torch.int32)"
_SAME_FLOAT = (f"isinstance(A, torch.Tensor) and isinstance(B, torch.Tensor) and A.shape == B.shape"
               f" and A.dtype == B.dtype and A.dtype in {_FLOATS}")
# Labels of X [N, C] that index exactly as the fused losses read them.
_LABEL_GUARD = (f"isinstance(X, torch.Tensor) and isinstance(Y, torch.Tensor) and X.dtype in {_FLOATS}"
                f" and X.dim() == 2 and Y.dim() == 1 and Y.dtype in {_LABELS}"
                f" and Y.shape[0] == X.shape[0]")
_ROWS = "X[torch.arange(len(X), device=X.device), Y]"
_SQUARES = ["(A - B) ** 2", "(A - B).pow(2)", "(A - B) * (A - B)"]
_REDUCTIONS = ("mean", "sum")  # the method and its reduction= share the name

# A user's label-smoothed soft-target cross entropy, optionally class-weighted (``label_smoothing``
# and ``weight`` of ``cross_entropy`` are exactly these terms; fwd+bwd [8192, 100] about 2.5x faster).
_SMOOTH_GUARD = (_LABEL_GUARD.replace(f"Y.dtype in {_LABELS}", "Y.dtype == torch.int64")
                 + " and FN is torch.nn.functional and C == X.shape[1]"
                 " and isinstance(EPS, float) and 0.0 <= EPS <= 1.0")
_SMOOTHED = {"S": "FN.one_hot(Y, C).to(X.dtype) * (1 - EPS) + EPS / C"}
_CLASS_WEIGHT = (" and isinstance(CW, torch.Tensor) and not CW.requires_grad"
                 " and CW.dtype == X.dtype and CW.dim() == 1 and CW.shape[0] == X.shape[1]")
RULES: list[Rule] = [
    *[Rule(f"({sq}).{r}()", f"torch.nn.functional.mse_loss(A, B, reduction='{r}')", _SAME_FLOAT)
      for sq in _SQUARES for r in _REDUCTIONS],
    *[Rule(f"T.{r}()", f"torch.nn.functional.mse_loss(A, B, reduction='{r}')", _SAME_FLOAT,
           {"T": sq}) for sq in _SQUARES for r in _REDUCTIONS],
    # the mean over N = all rows (vectorize_loops' mean over a loop), before the sum matches
    Rule(f"(torch.logsumexp(X, dim=1).sum(0) - {_ROWS}.sum(0)) / N",
         "LOGSUMEXP_CE__(X, LABELS__(Y, X.shape[1])).mean(0)",
         _LABEL_GUARD + " and N == X.shape[0]"),
    Rule(f"torch.logsumexp(X, dim=1).sum(0) - {_ROWS}.sum(0)",
         "LOGSUMEXP_CE__(X, LABELS__(Y, X.shape[1])).sum(0)",
         _LABEL_GUARD),
    Rule(f"(-W * {_ROWS}).sum(0)",
         "torch.nn.functional.nll_loss(X, LABELS__(Y, X.shape[1]), weight=CW, reduction='sum')",
         _LABEL_GUARD + _CLASS_WEIGHT, {"W": "CW[Y]"}),
    *[Rule(f"-(S * CW * FN.log_softmax(X, dim=1)).{s}",
           "torch.nn.functional.cross_entropy(X, CLASSES__(Y, C), weight=CW, label_smoothing=EPS,"
           " reduction='none')", _SMOOTH_GUARD + _CLASS_WEIGHT, _SMOOTHED)
      for s in ("sum(dim=1)", "sum(1)")],
    *[Rule(f"-(S * FN.log_softmax(X, dim=1)).{s}",
           "torch.nn.functional.cross_entropy(X, CLASSES__(Y, C), label_smoothing=EPS,"
           " reduction='none')", _SMOOTH_GUARD, _SMOOTHED)
      for s in ("sum(dim=1)", "sum(1)")],
]
FUSED = frozenset({"mse_loss", "cross_entropy", "nll_loss"})

# Calls a statement may make while a temporary's definition stays trusted, none mutating its
# operands: torch functions, tensor methods and builtins without effects (``ops``).
# Statements evaluated once, before any store: a loop or if test may run again after its body.
SIMPLE = (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Return, ast.Expr)
# Allowed inside a re-evaluated operand, with the builtins without effects (``ops.is_builtin``).
PURE_METHODS = frozenset({"long", "detach"})


def indexed_labels(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """``labels`` as indexing a dim of size ``classes`` reads them (negative ones wrap), checked
    on the device where indexing raises."""
    torch._assert_async(((labels >= -classes) & (labels < classes)).all(),
                        f"index out of bounds for dimension 1 with size {classes}")
    return labels.long() % classes


def class_labels(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """``labels`` checked on the device where ``one_hot(labels, classes)`` raises."""
    torch._assert_async(((labels >= 0) & (labels < classes)).all(),
                        "Class values must be non-negative and smaller than num_classes.")
    return labels


def transform(tree: ast.Module, ctx: PassContext) -> ast.Module:
    reads = Counter(n.id for n in walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load))
    func = function_node(tree)
    changed = changed_in_place(func, ctx.globals) if func is not None else lambda node: False
    _Fuse(ctx, reads, changed).visit(tree)
    return tree


def _is_meta(name: str) -> bool:
    return name.isupper()


def _parsed_rules() -> dict[tuple, list]:
    """(pattern, rule, defs) by the pattern's ``_head``, parsed once: a node is matched only
    against rules of its own head (no pattern is a bare metavariable or calls one)."""
    by_head: dict[tuple, list] = {}
    for r in RULES:
        pattern = ast.parse(r.pattern, mode="eval").body
        defs = {k: ast.parse(v, mode="eval").body for k, v in r.defs.items()}
        by_head.setdefault(_head(pattern), []).append((pattern, r, defs))
    return by_head


def _head(node: ast.AST) -> tuple:
    """What a node shares with every pattern it matches: its type and a called method's name."""
    func = getattr(node, "func", None)
    return type(node), func.attr if isinstance(func, ast.Attribute) else None


_RULES_BY_HEAD = _parsed_rules()
# The fused forms' placeholders for label readers (and the cross entropy), and the stems of the names they are bound by.
_LABEL_READERS = {"LABELS__": indexed_labels, "CLASSES__": class_labels,
                  "LOGSUMEXP_CE__": logsumexp_cross_entropy}
_LABEL_READERS_STEM = {indexed_labels: "labels", class_labels: "classes",
                       logsumexp_cross_entropy: "cross_entropy"}
_FUSED_NAME = r"_cross_entropy(_\d+)?"  # the namer's names of that stem


class _Fuse(Transformer):
    def __init__(self, ctx: PassContext, reads: Counter, changed):
        self.ctx = ctx
        self.reads = reads  # name -> its reads in the module
        self.changed = changed  # expression -> whether the body may change its value in place
        self.temps: list[str] = []  # the temporaries (``defs``) the current match went through
        self.safe: dict[ast.stmt, bool] = {}  # statement -> _calls_are_safe
        self.previous: ast.stmt | None = None  # the statement just before the one being visited
        self.stmt: ast.stmt | None = None

    def generic_visit(self, node: ast.AST) -> ast.AST:
        # Walk statement lists in order so each statement knows the one just before it.
        for name in node._fields:
            value = getattr(node, name, None)
            if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                previous, out = None, []
                for stmt in value:
                    self.previous = previous
                    out.append(self.visit(stmt))
                    previous = stmt
                setattr(node, name, out)
                self.previous = None
            elif isinstance(value, list):
                setattr(node, name, [self.visit(v) if isinstance(v, ast.AST) else v for v in value])
            elif isinstance(value, ast.AST) and value._fields:  # not a leaf (ast.Load, ast.Add)
                setattr(node, name, self.visit(value))
        return node

    def visit_Lambda(self, node: ast.AST) -> ast.AST:
        return node  # its own scope: names inside need not be the statement's

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = visit_Lambda

    def visit_IfExp(self, node: ast.IfExp) -> ast.AST:
        if _fused_call(node.body, self.ctx):
            return node  # already fused by this pass: the else branch is the original
        return self.generic_visit(node)

    def visit(self, node: ast.AST) -> ast.AST:
        if isinstance(node, ast.stmt):
            self.stmt = node  # the statement whose expressions are being matched
        elif isinstance(node, ast.expr) and not isinstance(node, ast.IfExp):
            for pattern, rule, defs in _RULES_BY_HEAD.get(_head(node), ()):
                self.temps = []
                found = self._match(pattern, node, {}, defs)
                # the fused loss saves its operands for backward, where the idiom saved new
                # tensors: one the body changes in place later would fail the backward
                if found is not None and not any(map(self.changed, found.values())):
                    template = f"({rule.fused}) if ({rule.guard}) else ORIGINAL__"
                    bound = {k: self._bound(fn) for k, fn in _LABEL_READERS.items() if k in rule.fused}
                    if self.temps and self.reads[self.temps[0]] == 1:
                        self._defer_temporary(rule, found)
                    return replace(template, loc=node, torch_name=self.ctx.torch_name,
                                   ORIGINAL__=node, **bound, **found)
        return super().visit(node)

    def _match(self, pat: ast.AST, node: ast.AST, env: dict, defs: dict) -> dict | None:
        if isinstance(pat, ast.Name) and _is_meta(pat.id):
            if pat.id in defs:
                return self._match_def(pat.id, node, env, defs)
            if pat.id in env:
                return env if ast.dump(env[pat.id]) == ast.dump(node) else None
            return {**env, pat.id: node} if _pure(node) else None
        if isinstance(pat, ast.Name) and pat.id == "torch":
            return env if isinstance(node, ast.Name) and node.id == self.ctx.torch_name else None
        if type(pat) is not type(node):
            return None
        if isinstance(pat, ast.Constant):
            same = type(pat.value) is type(node.value) and pat.value == node.value
            return env if same else None
        for name, p in ast.iter_fields(pat):
            if name == "ctx":
                continue
            n = getattr(node, name)
            if isinstance(p, list):
                if not isinstance(n, list) or len(p) != len(n):
                    return None
                for pi, ni in zip(p, n):
                    env = self._match(pi, ni, env, defs) if isinstance(pi, ast.AST) else (
                        env if pi == ni else None)
                    if env is None:
                        return None
            elif isinstance(p, ast.AST):
                env = self._match(p, n, env, defs)
                if env is None:
                    return None
            elif p != n:
                return None
        return env

    def _bound(self, fn) -> str:
        """The name generated code calls ``fn`` (a label reader, the cross entropy) by."""
        return self.ctx.bind(fn, _LABEL_READERS_STEM[fn])

    def _safe(self, stmt: ast.stmt) -> bool:
        # once per statement: what this pass puts into it calls only safe functions
        if stmt not in self.safe:
            self.safe[stmt] = _calls_are_safe(stmt, self.ctx)
        return self.safe[stmt]

    def _defer_temporary(self, rule: Rule, found: dict) -> None:
        """The temporary just before, read only by the original expression, is computed only
        where that runs (the guard is evaluated twice on the same values: nothing between)."""
        prev = self.previous
        prev.value = replace(f"None if ({rule.guard}) else ORIGINAL__", loc=prev.value,
                             torch_name=self.ctx.torch_name, ORIGINAL__=prev.value, **found)

    def _match_def(self, meta: str, node: ast.AST, env: dict, defs: dict) -> dict | None:
        # ``node`` must be the name assigned by the statement just before, with ``defs[meta]``.
        prev = self.previous
        if not (isinstance(self.stmt, SIMPLE) and isinstance(node, ast.Name) and isinstance(prev, ast.Assign)
                and len(prev.targets) == 1 and isinstance(prev.targets[0], ast.Name)
                and prev.targets[0].id == node.id and self._safe(self.stmt)):
            return None
        found = self._match(defs[meta], prev.value, env, defs)
        if found is None or any(node.id in _names(v) for v in found.values()):
            return None  # `t = t - b` style: the operands are not what they were
        self.temps.append(node.id)
        return found


def _pure(node: ast.AST) -> bool:
    """Evaluating it again gives the same object and has no effect."""
    if isinstance(node, (ast.Name, ast.Constant)):
        return True
    if isinstance(node, ast.Attribute):
        return _pure(node.value)
    if isinstance(node, ast.Subscript):
        return _pure(node.value) and _pure(node.slice)
    if isinstance(node, ast.Slice):
        return all(_pure(p) for p in (node.lower, node.upper, node.step) if p is not None)
    if isinstance(node, ast.Tuple):
        return all(_pure(e) for e in node.elts)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):  # len(range(0, n, 1))
        return ops.is_builtin(node.func.id) and not node.keywords and all(map(_pure, node.args))
    if isinstance(node, ast.Call):
        return (isinstance(node.func, ast.Attribute) and node.func.attr in PURE_METHODS
                and not node.args and not node.keywords and _pure(node.func.value))
    return False


def _calls_are_safe(stmt: ast.stmt, ctx: PassContext) -> bool:
    for n in walk(stmt):
        if isinstance(n, ast.NamedExpr):
            return False
        if isinstance(n, ast.Call):
            f = n.func
            torch_fn = (isinstance(f, ast.Attribute) and _root(f) == ctx.torch_name
                        and not f.attr.endswith("_"))
            if not (torch_fn or (isinstance(f, ast.Attribute) and ops.is_pure_method(f.attr))
                    or (isinstance(f, ast.Name) and ops.is_builtin(f.id))):
                return False
    return True


def _root(node: ast.AST) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in walk(node) if isinstance(n, ast.Name)}


def _fused_call(node: ast.AST, ctx: PassContext) -> bool:
    """A fused loss: ``F.<fused>(...)``, or the bound cross entropy's ``(...).sum(0)`` (by the
    name's stem: a second run has not bound it)."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
        return False
    inner = node.func.value
    if isinstance(inner, ast.Call) and isinstance(inner.func, ast.Name):
        return re.fullmatch(_FUSED_NAME, inner.func.id) is not None
    return node.func.attr in FUSED and ast.unparse(inner) == f"{ctx.torch_name}.nn.functional"
