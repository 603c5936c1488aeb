"""Host round trips on loop-varying values become tensor ops, inside a loop body being vectorized.

Under ``torch.vmap`` a per-iteration value is a batched tensor: it cannot become a Python number.
Only expressions that vary with the loop index are rewritten (``OpSpec.host*`` facts)::

    int(labels[i])              ->  labels[i].long()
    float(w[i]) / t[i].item()   ->  w[i].detach() * 1.0 / t[i].detach()
    t[i].tolist()               ->  t[i].detach()
    math.log(p[i])              ->  torch.log(p[i].detach() * 1.0)
    min(a[i], b)  /  max(...)   ->  torch.where(b < a[i], b, a[i])   (Python's pick, ties too)
    max(int(c[i]), 1)           ->  torch.clamp_min(c[i].long(), 1)  (ints: one read of each)
    sum(x[i]) / min(x[i])       ->  x[i].sum(0) / x[i].amin(0)       (builtins iterate dim 0)

A builtin on a container the body builds (``parts = []; ...; sum(parts)``) iterates the
container, not a tensor: left as written (``sum`` adds per-iteration tensors;
``check_mapped_body`` refuses the ones that compare them, ``max(parts)``).

A host number as the first argument of a torch function that raises on a Python number there
(``torch.tanh(float(t[i]))``; ``OpSpec.number_first``) keeps the loop: it raises as written.

Values the original pulled to the host carried no gradient, hence ``detach``. ``abs(t)`` needs
no rewrite (it is ``t.abs()``).

Host numbers stay what they were in the original: arithmetic on them gives host numbers (marked
``HOST_NUMBER``, names bound to them too), and next to a tensor of the iteration a float is a weak
scalar (``loop_rules.HOST_WEAK``), its arithmetic computed in float64 as Python's double; sums of
them get a float64 twin (``plan.wide``, see ``fold_accumulators``). The loop index is one (a
Python int), and so are names the loop does not change in ``h / n`` and ``g ** h`` (behind the
check that they are no tensors, and Python floats for a power)::

    G = G + gamma ** t * r[t]      ->   G = G + (gamma ** t.double()).to(<r[t]'s weak dtype>) * r[t]

    s = s + x[i] * w[i].item()     ->   s = s + x[i] * w[i].detach().to(torch.result_type(x[i], ...))
    total += x[i].item()           ->   _total_wide = _total_wide + x[i].detach().double()
                                        total += x[i].detach()

Where the host function raises (``OpSpec.host_raises``: ``math.log`` of a non-positive number,
``math.exp`` overflowing, ``int()`` of NaN), a counter of such iterations goes before the
statement, and ``raise_on_empty_selections`` raises the original's exception after the loop,
located at the call (``plan.host_errors``). Reading the counter is a host sync: ``int()`` (which
raises on NaN/inf only) of the elements of a tensor the loop does not bind (``int(labels[i])``)
has none; the loop is vectorized when that tensor is not floating, and runs as written when it
is. Nor has ``int()`` of a count of a comparison's or boolean op's true elements
(``int((labels[i] != bg).sum())``, ``OpSpec.counts_true`` of ``OpSpec.boolean``): an integer::

    t += math.exp(s[i].item())     ->   _raises = _raises + torch.logical_and(
                                            <s[i] as float64 finite>, <its exp infinite>)
                                        t += torch.exp(s[i].detach().detach() * 1.0)
"""
from __future__ import annotations

import ast
import importlib

from .. import ast_marks
from .. import loop_rules as rules
from .. import loop_sums_keep_dtypes, ops
from ..ast_tools import (PassContext, Transformer, clone, is_name, replace, root_name, unparse,
                         walk)
from ..errors import Unsupported
from .loop_dataflow import (call_op, container_names, depends, method_name, reads_values,
                            resolve_call, stores, stores_in, variant_names)
from ..dtype_queries import opmath_type
from .plan import LoopPlan
from .runtime_checks import proven_tensors


def rewrite(stmts: list[ast.stmt], variant: set[str], ctx: PassContext,
            errors: dict[str, tuple[str, ast.AST]], wide: dict[str, str],
            seeds: set[str], not_floating: list[ast.expr] | None = None,
            no_tensors: list[ast.expr] | None = None,
            live_after: frozenset[str] = frozenset(),
            indices: frozenset[str] = frozenset(),
            floats: list[ast.expr] | None = None,
            tensors: frozenset[str] = frozenset()) -> list[ast.stmt]:
    """``stmts`` with every host round trip on a loop-varying value replaced (in place), the
    counters of iterations where the original raised (``errors`` gets each counter's exception
    source and location), the float64 twins of host-number sums (``wide``: sum -> twin) and the
    tensors the vectorized loop needs not floating (``not_floating``), and the names it needs
    not tensors (``no_tensors``) or Python floats (``floats``); ``indices``: the loop indices,
    Python ints in the original (host numbers); ``tensors``: the names (as source) checked to
    be tensors already (a selection's base).
    ``seeds``: the iteration's own names (index, elements); other names the body reads before
    binding them are carried from the last iteration."""
    tr = _HostToTensor(variant, ctx, errors, wide)
    tr.assigned |= seeds
    tr.numbers.update({i: "int" for i in indices})
    tr.stored = stores_in(stmts) | seeds
    tr.containers = container_names(ast.Module(stmts, []))
    tr.body, tr.live_after, tr.tensors = stmts, live_after, tensors
    if not_floating is not None:
        tr.not_floating = not_floating
    if no_tensors is not None:
        tr.no_tensors = no_tensors
    if floats is not None:
        tr.floats = floats
    return tr.block(stmts)


def raised(function: str, argument: float) -> str:
    """The exception ``function`` (``"math.log"``) raises on ``argument``, as
    source: the message is this Python's own."""
    module, _, name = function.rpartition(".")
    fn = getattr(importlib.import_module(module or "builtins"), name)
    try:
        fn(argument)
    except (ValueError, OverflowError) as exc:
        return f"{type(exc).__name__}({str(exc)!r})"
    raise AssertionError(f"{function}({argument!r}) does not raise")


# Comparisons that make a bool tensor of a tensor operand (``in``/``is`` make a Python bool)
_TENSOR_COMPARISONS = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)


class _HostToTensor(Transformer):
    def __init__(self, variant: set[str], ctx: PassContext,
                 errors: dict[str, tuple[str, ast.AST]], wide: dict[str, str]):
        self.variant, self.ctx, self.errors, self.wide = variant, ctx, errors, wide
        # Keyed by the nodes, not id(): a replaced node's freed id is reused by later nodes.
        self.double: dict[ast.expr, ast.expr] = {}  # a math call's tensor form -> in float64
        self.converted: set[ast.expr] = set()       # host calls' tensor forms made here
        # ops of a weak host number and a tensor to round once: (its kind, the number, tensor)
        self.rounded: dict[ast.BinOp, tuple[str, ast.expr, ast.expr]] = {}
        self.numbers: dict[str, str] = {}      # names bound to host numbers -> their kind
        self.assigned: set[str] = set()        # names bound so far in the iteration
        self.pre: list[ast.stmt] = []   # counters of raising iterations, before the statement
        self.stored: set[str] = set()   # names the loop binds
        self.body: list[ast.stmt] = []  # the loop body, and the names read after the loop
        self.live_after: frozenset[str] = frozenset()
        self.tensors: frozenset[str] = frozenset()  # names checked to be tensors, as source
        # tensors whose elements meet int(): the loop is vectorized when they are not floating
        # (integers: the common labels), so no counter of raising iterations (nor its host
        # sync) is needed
        self.not_floating: list[ast.expr] = []
        self.no_tensors: list[ast.expr] = []  # names compared with host floats in float64
        self.floats: list[ast.expr] = []  # ... and names raised to (or by) host numbers
        # names the body binds to lists, tuples, dicts: a builtin iterates them, not a tensor
        self.containers: set[str] = set()

    def block(self, stmts: list[ast.stmt]) -> list[ast.stmt]:
        out = []
        for s in stmts:
            if isinstance(s, ast.If):  # the test's counters before the `if`, the branches' inside
                s.test = self.visit(s.test)
                pre, self.pre = self.pre, []
                before = dict(self.numbers)
                s.body = self.block(s.body)
                taken, self.numbers = self.numbers, before
                s.orelse = self.block(s.orelse)
                self._join(taken, s)
            else:
                s = self.visit(s)
                self._bind(s)
                pre, self.pre = self.pre, self._twin(s)
            out += pre + self.pre + [s]
            self.pre = []
        return out

    def _join(self, taken: dict[str, str], node: ast.If) -> None:
        """The host numbers after an ``if``: a name a host number after one branch and maybe a
        tensor after the other (``s += w.abs() if c else a.item()``) is a tensor or a Python
        number depending on the data, and so is what it adds up to: refused."""
        mixed = sorted(n for n in taken.keys() ^ self.numbers.keys()
                       if not _branch_local(n, node, self.body, self.live_after))
        if mixed:
            raise Unsupported(f"`{mixed[0]}` is a Python number after one branch of this `if` "
                              "and may be a tensor after the other: its type depends on the data",
                              node.lineno)
        self.numbers.update(taken)

    def _bind(self, s: ast.stmt) -> None:
        """Names bound here now hold a host number (of its kind), or not."""
        kind = ast_marks.get(s.value, ast_marks.HOST_NUMBER) if isinstance(s, ast.Assign) \
            else None
        for name in stores(s):
            self.assigned.add(name)
            if kind is None:
                self.numbers.pop(name, None)
            else:
                self.numbers[name] = kind

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if isinstance(node.ctx, ast.Load) and node.id in self.numbers:
            ast_marks.put(node, ast_marks.HOST_NUMBER, self.numbers[node.id])
        return node

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        """Host numbers' arithmetic makes a host number; next to a tensor, a weak scalar."""
        self.generic_visit(node)
        left = node.left
        node.left, node.right = self._operands(node, [node.left, node.right])
        out = _reciprocal_times(node, left, self.ctx)
        return _rounded_once(node, out, self.rounded.pop(node, None), self.ctx)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        """``-h`` of a host number is a host number of its kind (the user's, when ``h`` is)."""
        self.generic_visit(node)
        kind = ast_marks.get(node.operand, ast_marks.HOST_NUMBER)
        if kind and isinstance(node.op, (ast.USub, ast.UAdd)):
            ast_marks.put(node, ast_marks.HOST_NUMBER, kind)
            if node.operand in self.converted:
                self.converted.add(node)
        return node

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        node.left, *node.comparators = self._operands(None, [node.left, *node.comparators])
        if len(node.comparators) == 1:
            node.left, node.comparators[0] = self._in_double(node.left, node.comparators[0])
        return node

    def _in_double(self, a: ast.expr, b: ast.expr) -> tuple[ast.expr, ast.expr]:
        """Python compares a host float with a number in double precision: ``l.item() > 0.1``
        is False for the float32 ``l = 0.1`` only as a float32 comparison. So host floats
        compared with numbers are compared as float64 (exact for every float and every int
        below 2**53); a name the loop does not bind must then be no tensor (the loop's check:
        a float next to a tensor compares in the tensor's dtype, as written), unless the loop
        reads its items or checks it is a tensor (``_likely_tensor``): then the host number is
        compared in float64 only when it is none
        (``rules.HOST_COMPARED``: next to a tensor it is a weak scalar, as written)."""
        kinds = [_number(a), _number(b)]
        if not any(k in rules.HOST_WEAK for k in kinds) or not all(
                k is not None or (isinstance(x, (ast.Name, ast.Attribute))
                                  and not depends(x, self.variant, self.ctx))
                for x, k in zip((a, b), kinds)):
            return a, b
        out = []
        for (x, k), (other, kind) in zip(((a, kinds[0]), (b, kinds[1])),
                                         ((b, kinds[1]), (a, kinds[0]))):
            double = self.double.get(x) or self._sub("h.double()", x, h=x)
            if k in rules.HOST_WEAK and kind is None \
                    and _likely_tensor(other, self.body, self.tensors):
                double = self._sub(rules.HOST_COMPARED, x, d=double, t=other,
                                   w=self._sub(rules.HOST_WEAK[k], x, h=x, t=other))
            elif k is None and not _likely_tensor(x, self.body, self.tensors):
                self.no_tensors.append(x)
            out.append(double if k in rules.HOST_WEAK else x)
        return out[0], out[1]

    def _operands(self, node: ast.BinOp | None, operands: list[ast.expr]) -> list[ast.expr]:
        kinds = [_number(x) for x in operands]
        if node is not None and None in kinds:
            kinds = self._fixed_numbers(node, operands, kinds)
        if None not in kinds:  # all numbers: so is the result (a Python float after `/`)
            if node is not None and any(k not in _LITERALS for k in kinds):
                ast_marks.put(node, ast_marks.HOST_NUMBER, _result_kind(node, operands, kinds))
            return operands
        # values of the iteration, not carried from the last one (`s` in `s + h` may be a
        # number): tensors under the loop's check; and what a torch function makes
        # (`torch.arange(T) < h`: an int64 tensor next to a float compares in float32)
        tensors = [x for x, k in zip(operands, kinds)
                   if k is None and (_made_by_torch(x, self.ctx) or (
                       depends(x, self.variant, self.ctx)
                       and not any(isinstance(n, ast.Name) and n.id in self.variant
                                   and n.id not in self.assigned for n in ast.walk(x))))]
        if not tensors:  # with values of unknown type (numbers or tensors): left as they are
            return operands
        # Python computes arithmetic of host numbers in double precision, then the tensor's
        # dtype takes it: in float64 here too (`gamma ** i`, `(i + 1) / n` of the index)
        held = [self._float64(x) if isinstance(x, (ast.BinOp, ast.UnaryOp)) or x in self.double
                else x for x in operands]
        return _weak_operands(node, operands, held, kinds, tensors[0], self.rounded, self.ctx)

    def _fixed_numbers(self, node: ast.BinOp, operands: list[ast.expr],
                       kinds: list[str | None]) -> list[str | None]:
        """``kinds`` with the operands of ``h / n`` and ``g ** h`` (``h`` a host number, the
        loop index among them) that the loop does not change, names or attributes of unknown
        type, taken as Python numbers ("fixed"; the loop's check: no tensors, and Python floats
        for a power, which is a float then), or, divisors, sizes (``len(x)``, ``x.shape[0]``:
        ints), so the result is a host number too: a Python float made in double precision, not
        an index tensor's float32 quotient or power. Other kinds unchanged."""
        div = isinstance(node.op, ast.Div)
        if not (div or isinstance(node.op, ast.Pow)) or set(kinds) <= {None, "const"}:
            return kinds
        named = [k is None and isinstance(x, (ast.Name, ast.Attribute))
                 and not depends(x, self.variant, self.ctx)
                 and not (root_name(x) or "") in self.stored for x, k in zip(operands, kinds)]
        sizes = [div and k is None and not reads_values(x, self.ctx)
                 for x, k in zip(operands, kinds)]
        if not all(n or s or k is not None for n, s, k in zip(named, sizes, kinds)):
            return kinds
        for x, n, s in zip(operands, named, sizes):
            if n:
                (self.no_tensors if div else self.floats).append(x)
            if n or s:
                ast_marks.put(x, ast_marks.HOST_NUMBER, "fixed")
        fixed = [n or s for n, s in zip(named, sizes)]
        return ["fixed" if f else k for f, k in zip(fixed, kinds)]

    def _twin(self, s: ast.stmt) -> list[ast.stmt]:
        """``s += <host number>`` (``-=``, ``s = s + a.item() - b.item()``): Python sums those
        in float64; so does a twin sum ``_s_wide`` of the values as float64, which the fold
        returns."""
        if isinstance(s, ast.AugAssign):
            target, terms = s.target, [(s.op, s.value)]
        elif isinstance(s, ast.Assign) and len(s.targets) == 1:
            target, terms = s.targets[0], _terms_after(s.value, getattr(s.targets[0], "id", None))
        else:
            return []
        kinds = [_number(v) for _, v in terms]
        if not (isinstance(target, ast.Name) and terms
                and all(isinstance(op, (ast.Add, ast.Sub)) for op, _ in terms)
                and all(k in rules.NUMBER_FOLD_WIDE or k == "const" for k in kinds)
                and any(k in rules.NUMBER_FOLD_WIDE for k in kinds)):
            return []
        twin = self.wide.setdefault(target.id, self.ctx.namer.new(f"{target.id}_wide"))
        signs = "".join(f" {'+' if isinstance(op, ast.Add) else '-'} v{k}"
                        for k, (op, _) in enumerate(terms))
        return self._sub(f"w = w{signs}", s, w=twin,
                         **{f"v{k}": self._float64(v) for k, (_, v) in enumerate(terms)})

    def _float64(self, x: ast.expr) -> ast.expr:
        return _in_float64(x, self.double, self.ctx.torch_name)

    def _count_raises(self, node: ast.Call, op: ops.OpSpec, function: str,
                      e: ast.expr) -> None:
        """A counter of the iterations where ``function`` raises on ``e``."""
        source = self._dtype_source(e) if op.host_number == "int" else None
        if source is not None:  # int() raises on NaN/inf only: a check before the loop
            self.not_floating.append(source)
            return
        if op.host_number == "int" and self._counts_booleans(e):
            return  # an integer count: never NaN/inf
        for condition, argument in op.host_raises:
            counter = self.ctx.namer.new("raises")
            self.errors[counter] = (raised(function, argument), node)
            self.pre += self._sub(f"c = c + ({condition})", node, c=counter,
                                  e=self._sub("e.detach().double()", node, e=e))

    def _counts_booleans(self, e: ast.expr) -> bool:
        """``e`` (also after ``.detach()``) counts the true elements of a comparison or a boolean
        op's result (``(m != bg).sum()``), or an inner loop's ``count += 1``: an integer."""
        while isinstance(e, ast.Call) and not e.args and method_name(e, self.ctx) == "detach":
            e = e.func.value
        if not (isinstance(e, ast.Call) and call_op(e, self.ctx).counts_true and not e.keywords):
            return bool(ast_marks.get(e, ast_marks.INTEGER_FOLD))
        method = method_name(e, self.ctx) is not None
        if len(e.args) != (0 if method else 1):
            return False
        counted = e.func.value if method else e.args[0]
        if isinstance(counted, ast.Compare):
            return len(counted.ops) == 1 and isinstance(counted.ops[0], _TENSOR_COMPARISONS)
        return isinstance(counted, ast.Call) and call_op(counted, self.ctx).boolean

    def _dtype_source(self, e: ast.expr) -> ast.expr | None:
        """A name the loop does not bind whose elements ``e`` is (``labels`` for ``labels[i]``,
        also after ``.item()``): its dtype is ``e``'s; else None."""
        while isinstance(e, ast.Subscript) or (
                isinstance(e, ast.Call) and not e.args and isinstance(e.func, ast.Attribute)
                and e.func.attr == "detach"):
            e = e.value if isinstance(e, ast.Subscript) else e.func.value
        root = e
        while isinstance(root, ast.Attribute):  # ``self.labels``
            root = root.value
        if not isinstance(root, ast.Name) or root.id in self.variant | self.stored:
            return None
        return e

    def _sub(self, template: str, node: ast.AST, **subs: ast.AST) -> ast.expr:
        return replace(template, loc=node, torch_name=self.ctx.torch_name, **subs)

    def visit_Assign(self, node: ast.Assign) -> ast.AST:
        # `s = max(s, e)` is a running max the vectorizer folds with amax: keep the builtin.
        value, target = node.value, node.targets[0]
        if (isinstance(value, ast.Call) and isinstance(target, ast.Name)
                and ops.by_call(resolve_call(value.func, self.ctx), None).host_pair
                and any(isinstance(a, ast.Name) and a.id == target.id for a in value.args)):
            value.args = [self.visit(a) for a in value.args]
            return node
        return self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)  # innermost first: int(t[j].item())
        if node.keywords or not depends(node, self.variant, self.ctx):
            return node
        args, op = node.args, call_op(node, self.ctx)
        if method_name(node, self.ctx) is not None:
            if op.host is None or args:
                return node
            found = _kind(self._sub(op.host, node, e=node.func.value), op)
            self.converted.add(found)
            return found
        function = resolve_call(node.func, self.ctx)
        # (a host call of the user's, converted here: not generated code's operands)
        if args and args[0] in self.converted and function is not None \
                and function.startswith("torch.") and not op.number_first:
            raise Unsupported(f"a Python number as the first argument of `{function}`, which "
                              "raises on it as written (`OpSpec.number_first`)", node.lineno)
        math = ops.by_host_math(function)
        if math.functions and len(args) == 1:
            self._count_raises(node, math, function, args[0])
            fn = self._sub(math.functions[0], node)
            found = _kind(self._sub("fn(e.detach() * 1.0)", node, fn=fn, e=args[0]), math)
            self.double[found] = self._sub("fn(e.detach())", node, fn=fn,
                                               e=self._float64(args[0]))
            self.converted.add(found)
            return found
        if op.host is not None and len(args) == 1 and not isinstance(
                args[0], (ast.List, ast.Tuple, ast.GeneratorExp, ast.ListComp)) \
                and not (isinstance(args[0], ast.Name) and args[0].id in self.containers):
            self._count_raises(node, op, function, args[0])
            # Python's `sum(x[i])` adds from 0: a loop sum (``loop_sums_keep_dtypes``)
            found = _kind(loop_sums_keep_dtypes.mark(self._sub(op.host, node, e=args[0])), op)
            self.converted.add(found)
            return found
        if op.host_pair is not None and len(args) == 2:
            ints = [k for k, a in enumerate(args) if _number(a) == "int"]
            if ints and all(_python_int(a) for a in args):  # the same value whichever is first
                a, b = args[ints[0]], args[1 - ints[0]]
                return self._sub(op.host_int_pair, node, a=a, b=b)
            return self._sub(op.host_pair, node, a=args[0], b=args[1])
        return node


def _weak_operands(node: ast.BinOp | None, operands: list[ast.expr], held: list[ast.expr],
                   kinds: list[str | None], t: ast.expr, rounded: dict,
                   ctx: PassContext) -> list[ast.expr]:
    """``operands``, the host numbers among them (``held``: as computed) weak scalars next to
    the tensor ``t``; in ``*`` and ``/`` in the op's opmath dtype (``_in_opmath``, ``node``
    then in ``rounded``), not next to a tensor a call makes (each dtype query of it would
    compute it again)."""
    weak = [(k, h) for h, k in zip(held, kinds) if k in rules.HOST_WEAK]
    if weak and isinstance(getattr(node, "op", None), _OPMATH) \
            and not any(isinstance(n, ast.Call) for n in walk(t)):
        rounded[node] = (weak[0][0], clone(weak[0][1]), clone(t))
        return _in_opmath(node, operands, held, kinds, t, weak[0], ctx)
    return [replace(rules.HOST_WEAK[k], loc=x, torch_name=ctx.torch_name, t=t, h=h)
            if k in rules.HOST_WEAK else x for x, h, k in zip(operands, held, kinds)]


def _in_opmath(node: ast.BinOp, operands: list[ast.expr], held: list[ast.expr],
               kinds: list[str | None], t: ast.expr, weak: tuple[str, ast.expr],
               ctx: PassContext) -> list[ast.expr]:
    """The operands of ``node`` (a host number and a tensor ``t``) in the op's opmath dtype
    (``rules.HOST_WEAK_OPMATH``; a divisor ``t`` is not: ``Tensor.__rtruediv__`` takes its
    reciprocal in its own dtype, ``_rounded_once``), its result to be rounded once."""
    divisor = isinstance(node.op, ast.Div) and operands[1] is t
    return [replace(rules.HOST_WEAK_OPMATH[k], loc=x, torch_name=ctx.torch_name, t=clone(t),
                    h=h, o=_opmath(ctx)) if k in rules.HOST_WEAK else
            replace(rules.HOST_WEAK_OPMATH_TENSOR[weak[0]], loc=x, torch_name=ctx.torch_name,
                    x=x, t=clone(t), h=clone(weak[1]), o=_opmath(ctx))
            if x is t and not divisor else x
            for x, h, k in zip(operands, held, kinds)]


def _rounded_once(node: ast.BinOp, out: ast.expr, weak: tuple | None,
                  ctx: PassContext) -> ast.expr:
    """``out`` (``node``'s form), rounded once to the original op's dtype when ``_in_opmath``
    made its operands (``weak``: the number's kind, the number, the tensor)."""
    if weak is None:
        return out
    kind, h, t = weak
    if out is not node:  # the 16-bit reciprocal, times the number in the opmath dtype
        out.left = replace(rules.HOST_WEAK_OPMATH_TENSOR[kind], loc=out.left,
                           torch_name=ctx.torch_name, x=out.left, h=clone(h), t=clone(t),
                           o=_opmath(ctx))
    return replace(rules.HOST_WEAK_ROUNDED[kind], loc=node, torch_name=ctx.torch_name, r=out,
                   h=h, t=t)


def _opmath(ctx: PassContext) -> ast.Name:
    return ast.Name(ctx.bind(opmath_type, "opmath_type"), ast.Load())


def _reciprocal_times(node: ast.BinOp, left: ast.expr, ctx: PassContext) -> ast.expr:
    """``node`` (its operands done), or, for a host number ``left`` the rewrite made a weak
    scalar divided by a tensor, ``Tensor.__rtruediv__`` as Python calls it: the tensor's
    reciprocal times the number (two roundings, where a division rounds once)."""
    if isinstance(node.op, ast.Div) and node.left is not left \
            and _number(left) in rules.HOST_WEAK and _number(node.right) is None:
        return replace("t.reciprocal() * h", loc=node, torch_name=ctx.torch_name,
                       t=node.right, h=node.left)
    return node


# The ops whose kernels compute with a Python number in their opmath dtype (float32 for 16 bits;
# ``+`` and ``-`` round the number to the tensor's dtype first: torch 2.13's CPU kernels)
_OPMATH = (ast.Mult, ast.Div)
# Python's float arithmetic that float64 tensors compute alike (one IEEE operation each; the
# power, as libm's ``pow``)
_IN_FLOAT64 = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow)
# Kinds of operands whose value the rewrite leaves as written: literals, fixed Python numbers
_LITERALS = ("const", "fixed")


def _result_kind(node: ast.BinOp, operands: list[ast.expr], kinds: list[str]) -> str:
    """The kind of Python number ``node`` of host numbers makes: a float after ``/``, of a
    float, or of a fixed operand of a power (a Python float: the loop's check)."""
    found = {k for k in kinds if k not in _LITERALS}
    if isinstance(node.op, ast.Div) or "float" in found \
            or any(isinstance(x, ast.Constant) and type(x.value) is float for x in operands) \
            or isinstance(node.op, ast.Pow) and "fixed" in kinds:
        return "float"
    return "item" if "item" in found else "int"


def _branch_local(name: str, node: ast.If, body: list[ast.stmt],
                  live_after: frozenset[str]) -> bool:
    """``name`` is bound in one branch of ``node`` (at its top level) and read only after
    that, in that branch (of the loop ``body``): what it holds after the ``if`` is never
    read."""
    if name in live_after:
        return False
    for branch in (node.body, node.orelse):
        first = next((k for k, s in enumerate(branch) if name in stores(s)), None)
        if first is None:
            continue
        after = {id(n) for s in branch[first + 1:] for n in walk(s)}
        value = branch[first].value if isinstance(branch[first], ast.Assign) else None
        reads = [n for s in body for n in walk(s) if isinstance(n, ast.Name)
                 and n.id == name and isinstance(n.ctx, ast.Load)]
        return value is not None and all(id(n) in after for n in reads)
    return False


def _in_float64(x: ast.expr, double: dict[ast.expr, ast.expr], torch_name: str) -> ast.expr:
    """A host number's value as Python computes it, in float64: the operands of its
    arithmetic widened first (``a.item() + b.item()`` adds two doubles, ``0.9 ** i`` is a
    double power); ``double``: the float64 forms of converted ``math`` calls."""
    def wide(e: ast.expr) -> ast.expr:
        return _in_float64(e, double, torch_name)

    if x in double:
        return double[x]
    if _number(x) in _LITERALS:  # a Python number: Python's own arithmetic with it
        return clone(x)
    if isinstance(x, ast.BinOp) and isinstance(x.op, _IN_FLOAT64) and _number(x):
        return ast.copy_location(ast.BinOp(wide(x.left), x.op, wide(x.right)), x)
    if isinstance(x, ast.UnaryOp) and isinstance(x.op, ast.USub) and _number(x):
        return ast.copy_location(ast.UnaryOp(ast.USub(), wide(x.operand)), x)
    return replace("v.double()", loc=x, torch_name=torch_name, v=x)


def _terms_after(value: ast.expr, name: str | None) -> list[tuple[ast.operator, ast.expr]]:
    """``[(op, t), ...]`` of ``name op t op t ...`` (left to right), or []."""
    terms = []
    while isinstance(value, ast.BinOp) and isinstance(value.op, (ast.Add, ast.Sub)):
        terms.insert(0, (value.op, value.right))
        value = value.left
    return terms if is_name(value, name) else []


def _number(x: ast.expr) -> str | None:
    """The kind of Python number ``x`` is in the original ("const" for a literal, "fixed" for
    a name the loop does not change, checked to be no tensor), or None."""
    if isinstance(x, ast.Constant) and type(x.value) in (int, float, bool):
        return "const"
    return ast_marks.get(x, ast_marks.HOST_NUMBER)


def _likely_tensor(x: ast.expr, body: list[ast.stmt], tensors: frozenset[str]) -> bool:
    """The loop reads items of ``x`` (``target[j]``): most likely a tensor, which a check that
    it is none would send to the loop as written; or it is checked to be one (``tensors``, a
    selection's base: ``c`` in ``m = c > lo.item()``, ``c[m].mean()``), which that check would
    contradict."""
    text = ast.dump(x)
    return unparse(x) in tensors or any(isinstance(n, ast.Subscript) and ast.dump(n.value) == text
                                        for s in body for n in walk(s))


def _python_int(x: ast.expr) -> bool:
    """``x`` is a Python int in the original: ``int(...)`` (an integer tensor here) or a literal."""
    return _number(x) == "int" or isinstance(x, ast.Constant) and type(x.value) is int


def _kind(node: ast.expr, op: ops.OpSpec) -> ast.expr:
    """Remember which Python number the original produced here (``NUMBER_FOLD``): a float for
    ``math`` functions."""
    ast_marks.put(node, ast_marks.HOST_NUMBER, op.host_number or "float" if op.host_math
                  else op.host_number)
    return node


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    """Finds the names that vary with the iteration (``plan.variant``), then rewrites."""
    it = plan.iteration
    seeds = {it.index} | {name for name, _ in it.elements}
    plan.variant = variant_names(plan.body, seeds, ctx)
    not_floating: list[ast.expr] = []
    no_tensors: list[ast.expr] = []
    floats: list[ast.expr] = []
    plan.body = rewrite(plan.body, plan.variant, ctx, plan.host_errors, plan.wide, seeds,
                        not_floating, no_tensors, frozenset(plan.live_after),
                        frozenset({it.index} if it.index_is_user else ()), floats,
                        frozenset(unparse(x) for g in plan.selection_checks
                                  for x in proven_tensors(g)))
    for x in not_floating:
        plan.check("not (isinstance(x, torch.Tensor) and x.is_floating_point())", x=x)
    for x in no_tensors:
        plan.check("not isinstance(x, torch.Tensor)", x=x)
    for x in floats:
        plan.check("isinstance(x, float)", x=x)
    plan.zeros |= set(plan.wide.values())  # the twins start at 0
    return plan


def _made_by_torch(x: ast.expr, ctx: PassContext) -> bool:
    """``x`` is a call of a ``torch`` function the op registry lists: a tensor, whatever the
    loop binds."""
    name = resolve_call(x.func, ctx) if isinstance(x, ast.Call) else None
    return bool(name) and name.startswith("torch.") and ops.by_call(name, None) is not ops.UNKNOWN
