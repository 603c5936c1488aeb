"""Stage: conditional expressions on values that vary per iteration become ``if`` statements.

``a if c else b`` needs one Python truth value of ``c``; when ``c`` varies with the iteration it
is a batched tensor once vectorized. The expression is taken out of its statement into an
``if`` binding a fresh name, which ``tensor_branches_to_where`` then turns into masks (both
branches computed, risky operands made safe where deselected), so the pick is
``torch.where(c, a, b)`` with the gradient flowing only into the picked branch::

    loss += (p[i].log() if t[i] > 0           if t[i] > 0:
             else (1 - p[i]).log())     ->        _pick = p[i].log()
                                              else:
                                                  _pick = (1 - p[i]).log()
                                              loss += _pick

Python numbers picked per item (both branches numbers: literals, or expressions of names the
body does not bind) stay what they were in the original, weak scalars whose exact value the
tensor they meet rounds: each becomes a tensor shaped like the condition (known ranks for the
batched form), float64 for floats, marked ``HOST_NUMBER`` so that
``host_roundtrips_to_tensor_ops`` casts the pick to the dtype of the tensor it meets; the loop's
runtime check requires the names to hold floats (``plan.pick_checks``; else the loop runs as
written)::

    w = alpha if t[i] > 0.5 else 1 - alpha   ->   _test = t[i] > 0.5
                                                  if _test:
                                                      _pick = torch.full_like(_test, alpha, dtype=torch.float64)
                                                  else:
                                                      _pick = torch.full_like(_test, 1 - alpha, dtype=torch.float64)
                                                  w = _pick       (check: isinstance(alpha, float)
                                                                   and isinstance(1 - alpha, float))

An accumulator update adding a conditional expression one arm of which is the int 0 is the
update under the condition (``s += a if c else 0`` -> ``if c: s += a``): adding 0 changes no
sum, and a number accumulator only ``a`` makes a tensor then stays the original's number when no
iteration picks ``a`` (``fold_accumulators``).

Int literals on both sides are int64 (as ``.item()`` of an int is, ``loop_rules.HOST_WEAK``);
an int literal next to a float one is left as written (Python's pick would change the dtype).

Nested conditional expressions are taken out outermost first, each inner one then in its
branch's statement. Conditions that do not vary stay conditional expressions (Python picks once
per iteration, the same for all), and so does what their branches hold. Left as written, and
refused later by ``check_mapped_body`` with the user's line: conditional expressions inside
lambdas, comprehensions and nested functions (evaluated per call or per item, not once per
statement), inside a ``while`` or an inner ``for``, in an assignment's target, in a statement
whose other parts could observe the order of evaluation (``and``/``or``, walrus, ``yield``,
``await``: the pick runs first once taken out), and number picks of other kinds.
"""
from __future__ import annotations

import ast

from .. import ast_marks
from ..ast_tools import PassContext, is_name, replace, walk
from .loop_dataflow import depends, loads, stores, variant_names
from .plan import LoopPlan

# Nodes a conditional expression is not taken out of: evaluated per item or per call, or their
# evaluation order is visible to the rest of the statement.
_OPAQUE = (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.BoolOp,
           ast.NamedExpr, ast.Yield, ast.YieldFrom, ast.Await)
_SIMPLE = (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr, ast.Return)
_ARITHMETIC = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.USub, ast.UAdd)

_BRANCHES = "if c:\n    v = a\nelse:\n    v = b"
# Python numbers as 0-d tensors: kind (``HOST_NUMBER``) -> template
_NUMBER = {"float": "torch.full_like(t, e, dtype=torch.float64)",
           "int": "torch.full_like(t, e, dtype=torch.int64)"}


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    seeds = {plan.iteration.index} | {name for name, _ in plan.iteration.elements}
    bound = {n for s in plan.body for n in stores(s)}
    _Picks(variant_names(plan.body, seeds, ctx), bound, plan, ctx).block(plan.body)
    return plan


class _Picks:
    def __init__(self, variant: set[str], bound: set[str], plan: LoopPlan, ctx: PassContext):
        self.variant, self.bound, self.plan, self.ctx = variant, bound, plan, ctx

    def block(self, stmts: list[ast.stmt]) -> None:
        out: list[ast.stmt] = []
        for s in stmts:
            if isinstance(s, ast.If):
                s.test, pre = self.take_out(s.test)
                self.block(s.body)
                self.block(s.orelse)
                out += pre + [s]
            elif (update := self._one_arm_update(s)) is not None:
                self.block([update])
                out.append(update)
            elif isinstance(s, _SIMPLE) and s.value is not None:  # targets stay as written
                s.value, pre = self.take_out(s.value)
                out += pre + [s]
            else:
                out.append(s)
        stmts[:] = out

    def _one_arm_update(self, s: ast.stmt) -> ast.If | None:
        """``s += a if c else 0`` (or ``s = s + ...``, ``-``; the 0 either arm) as ``if c: s += a``:
        adding the int 0 changes no sum, and an accumulator only ``a`` makes a tensor then stays
        the original's Python number when no iteration picks ``a`` (``fold_accumulators``)."""
        pick = _added(s)
        if pick is None or not depends(pick.test, self.variant, self.ctx):
            return None
        zero = [_literal(x) is int and ast.literal_eval(x) == 0 for x in (pick.body, pick.orelse)]
        if zero.count(True) != 1:
            return None
        update = _Swap(pick, pick.orelse if zero[0] else pick.body).visit(s)
        node = ast.If(pick.test, [ast.Pass()], [update]) if zero[0] else \
            ast.If(pick.test, [update], [])
        return ast.fix_missing_locations(ast.copy_location(node, s))

    def take_out(self, e: ast.expr) -> tuple[ast.expr, list[ast.stmt]]:
        """``e`` with its varying conditional expressions replaced by fresh names, outermost
        first, and the ``if`` statements binding them."""
        found = self._outermost(e)
        if found is None:
            return e, []
        pick = self.ctx.namer.new("pick")
        test, a, b, pre = found.test, found.body, found.orelse, []
        if not (depends(a, self.variant, self.ctx) or depends(b, self.variant, self.ctx)):
            test = self.ctx.namer.new("test")  # the numbers take its shape
            pre = replace("t = c", loc=found, t=test, c=found.test)
            a, b = self._numbers(a, b, test)
        branches = pre + replace(_BRANCHES, loc=found, torch_name=self.ctx.torch_name, c=test,
                                 v=pick, a=a, b=b)
        self.variant.add(pick)
        self.block(branches)
        name = ast.copy_location(ast.Name(pick, ast.Load()), found)
        rest, more = self.take_out(name if e is found else _Swap(found, name).visit(e))
        return rest, branches + more

    def _outermost(self, e: ast.expr) -> ast.IfExp | None:
        if any(isinstance(n, _OPAQUE) for n in walk(e)):
            return None
        todo = [e]
        while todo:  # breadth first: the outermost conditional expression
            n = todo.pop(0)
            if isinstance(n, ast.IfExp):
                if depends(n.test, self.variant, self.ctx):
                    if self._pickable(n):
                        return n
                    return None
                todo.append(n.test)  # the branch Python does not pick is never evaluated
                continue
            todo += list(ast.iter_child_nodes(n))
        return None

    def _pickable(self, n: ast.IfExp) -> bool:
        """Tensors of the iteration on a side, or Python numbers of one kind on both."""
        if depends(n.body, self.variant, self.ctx) or depends(n.orelse, self.variant, self.ctx):
            return True
        if isinstance(n.test, ast.Compare) and len(n.test.ops) > 1:
            return False  # `a < x < b` calls bool(): only an `if` test gets tensor logic
        kinds = {_literal(x) for x in (n.body, n.orelse)}
        return kinds == {int} or int not in kinds and all(
            self._number_expression(x) for x in (n.body, n.orelse))

    def _number_expression(self, e: ast.expr) -> bool:
        """Arithmetic of literals and of names the body does not bind (checked to be floats)."""
        return all(isinstance(n, (ast.Name, ast.Attribute, ast.Load, ast.BinOp, ast.UnaryOp,
                                  *_ARITHMETIC)) or _literal(n) for n in walk(e)) \
            and not loads(e) & self.bound

    def _numbers(self, a: ast.expr, b: ast.expr, test: str) -> tuple[ast.expr, ast.expr]:
        """The Python-number branches as marked tensors shaped like the condition ``test``."""
        kind = "int" if {_literal(a), _literal(b)} == {int} else "float"
        out = []
        for x in (a, b):
            if kind == "float" and _literal(x) is None:
                self.plan.pick_checks.append(replace("isinstance(e, float)", loc=x, e=x))
            value = replace(_NUMBER[kind], loc=x, torch_name=self.ctx.torch_name, e=x, t=test)
            ast_marks.put(value, ast_marks.HOST_NUMBER, kind)
            out.append(value)
        return out[0], out[1]


def _added(s: ast.stmt) -> ast.IfExp | None:
    """The conditional expression ``s`` adds to or subtracts from a name: ``n += e``,
    ``n = n - e``."""
    if isinstance(s, ast.AugAssign) and isinstance(s.target, ast.Name) \
            and isinstance(s.op, (ast.Add, ast.Sub)):
        value = s.value
    elif isinstance(s, ast.Assign) and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name) \
            and isinstance(s.value, ast.BinOp) and isinstance(s.value.op, (ast.Add, ast.Sub)) \
            and is_name(s.value.left, s.targets[0].id):
        value = s.value.right
    else:
        return None
    return value if isinstance(value, ast.IfExp) else None


def _literal(e: ast.expr) -> type | None:
    """``int`` or ``float`` for a number literal (signed), else None."""
    while isinstance(e, ast.UnaryOp) and isinstance(e.op, (ast.USub, ast.UAdd)):
        e = e.operand
    return type(e.value) if isinstance(e, ast.Constant) and type(e.value) in (int, float) \
        else None


class _Swap(ast.NodeTransformer):
    def __init__(self, old: ast.AST, new: ast.AST):
        self.old, self.new = old, new

    def visit(self, node: ast.AST) -> ast.AST:
        return self.new if node is self.old else self.generic_visit(node)
