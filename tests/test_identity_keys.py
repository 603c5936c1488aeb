"""Invariant: no mapping in passes/ or rewrite/ is keyed by ``id()`` unless its reason is listed.

An ``id`` names an object only while that object lives: once it is freed (a node a transformer
replaced, a temporary, a copy's node the rewrite dropped) a new object may get the same id and
read the freed one's entry. ``host_roundtrips_to_tensor_ops`` read ``math.log(p[i])``'s float64
form for ``float(w[i])`` that way in about one build in ten. AST nodes hash by identity, so a
mapping keys by the node itself (which keeps it alive). Each ``id(`` left is listed below, per
function with its count, and the reason its key's object outlives every lookup; a new one fails
here until it is keyed by the object or its reason is added."""
from __future__ import annotations

import ast
import builtins
import sys
import weakref
from collections import Counter
from pathlib import Path

import pytest

from tests.loop_helpers import namespace, rewrite_source
from tests.test_vectorize_loops import CASES, helper

ROOT = Path(__file__).parent.parent
FILES = sorted([*(ROOT / "passes").rglob("*.py"), *(ROOT / "rewrite").rglob("*.py")])

# The walked tree is unchanged while the set or dict is read, in the same call: every node it
# keys is alive, so no other object has its id.
_LOCAL = "local, read in the same call while the walked tree is unchanged"
_PARENTS = "parents map over a tree nothing rewrites while it is read"

ALLOWED: dict[tuple[str, str], tuple[int, str]] = {
    ("passes/instance_attribute_calls.py", "bound_values"): (2, _LOCAL),
    ("passes/loops/distribute_loops.py", "_attributes"): (2, _LOCAL),
    ("passes/loops/distribute_loops.py", "_residual"): (
        1, "the statements keyed are held by ``split`` for the whole call"),
    ("passes/loops/distribute_loops.py", "_rows_only"): (4, _LOCAL),
    ("passes/loops/divisions_by_counters.py", "sole_divisors"): (2, _LOCAL),
    ("passes/loops/gather_keyed_reads.py", "_only_indexed"): (2, _LOCAL),
    ("passes/loops/hoist_invariant_checks.py", "_Hoist.invariant"): (3, _LOCAL),
    ("passes/loops/host_roundtrips_to_tensor_ops.py", "_branch_local"): (2, _LOCAL),
    ("passes/loops/index_tensor_parameters.py", "_compared_with_index"): (
        1, "ids of the function's nodes, read by _takes_tensor over the same unchanged tree"),
    ("passes/loops/index_tensor_parameters.py", "_cut_bounds"): (
        1, "ids of the function's nodes, read by _takes_tensor over the same unchanged tree"),
    ("passes/loops/index_tensor_parameters.py", "_takes_tensor"): (2, _LOCAL),
    ("passes/loops/index_tests_to_selected_indices.py", "_reads_whole_names"): (2, _LOCAL),
    ("passes/loops/index_tests_to_selected_indices.py", "index_entries_only"): (2, _LOCAL),
    ("passes/loops/index_tuples_to_tensors.py", "_read_as_indices"): (4, _LOCAL),
    ("passes/loops/index_value_checks_to_ranges.py", "_value_check"): (2, _LOCAL),
    ("passes/loops/inline_helper_calls.py", "_Inliner._order_kept"): (
        6, "local; the list ``order`` holds every node keyed"),
    ("passes/loops/invariant_values_take_no_grad.py", "_under_masks"): (
        1, "ids of the body's nodes, read by stage over the same unchanged body"),
    ("passes/loops/invariant_values_take_no_grad.py", "stage"): (
        2, "local; only nodes of ``body`` are keyed (not the temporary Module around it)"),
    ("passes/loops/iteration.py", "_numpy_index"): (2, _LOCAL),
    ("passes/loops/linear_recurrences_to_scans.py", "_rest_loop"): (
        2, "keys held by ``steps``, lookups of ``loop.body``'s statements (unchanged: the copy "
           "is rewritten)"),
    ("passes/loops/list_mean_helpers.py", "_built_lists"): (2, _LOCAL),
    ("passes/loops/loop_dataflow.py", "_check_accumulator_reads"): (9, _LOCAL),
    ("passes/loops/loop_dataflow.py", "_check_calls"): (2, _LOCAL),
    ("passes/loops/loop_dataflow.py", "_check_effect_reads"): (3, _LOCAL),
    ("passes/loops/loop_dataflow.py", "_divided_names"): (2, _LOCAL),
    ("passes/loops/loop_dataflow.py", "variant_names.visit"): (3, _LOCAL),
    ("passes/loops/normalize_comprehensions.py", "_bound_reason"): (2, _PARENTS),
    ("passes/loops/normalize_comprehensions.py", "_reads_some_items"): (1, _PARENTS),
    ("passes/loops/normalize_comprehensions.py", "kept_reason"): (2, _PARENTS),
    ("passes/loops/normalize_comprehensions.py", "lists_built_by_loops"): (1, _PARENTS),
    ("passes/loops/normalize_comprehensions.py", "lists_built_by_loops.reads_ok"): (1, _PARENTS),
    ("passes/loops/normalize_comprehensions.py", "lists_read_in_part"): (1, _PARENTS),
    ("passes/loops/normalize_comprehensions.py", "stackable_lists"): (2, _PARENTS),
    ("passes/loops/number_list_operands.py", "_Operands.visit_BinOp"): (
        1, "_Operands only reads; stage compares the sets before _ToNumberOps rewrites"),
    ("passes/loops/number_list_operands.py", "_found"): (
        1, "compared with _Operands' ids before anything is rewritten"),
    ("passes/loops/promoting_folds_run_as_written.py", "stage"): (
        2, "the statements keyed are held by ``plan.folds``"),
    ("passes/loops/sorts_read_at_ends.py", "_Reads.__init__"): (
        1, "parents map of the copied body, read by ok() before stage rewrites it"),
    ("passes/loops/sorts_read_at_ends.py", "_Reads._in_comparison"): (2, _PARENTS),
    ("passes/loops/sorts_read_at_ends.py", "_Reads.read"): (4, _PARENTS),
    ("passes/loops/stack_tensor_lists.py", "_only_items_read"): (2, _LOCAL),
    ("passes/loops/stack_tensor_lists.py", "index_only"): (2, _LOCAL),
    ("passes/mapped_writes_to_functional.py", "fresh_names"): (3, _LOCAL),
    ("passes/share_common_subexpressions.py", "_confined_names"): (2, _PARENTS),
    ("passes/share_common_subexpressions.py", "_consumed"): (4, _PARENTS),
    ("passes/share_common_subexpressions.py", "_finite_without_grad"): (2, _LOCAL),
    ("passes/share_common_subexpressions.py", "_nested_pair_call"): (1, _PARENTS),
    ("passes/share_common_subexpressions.py", "_pair_call"): (2, _LOCAL),
    ("rewrite/hoist.py", "_key"): (
        1, "each entry holds a weakref per input; _still_valid refuses a new tensor's reused id"),
    ("rewrite/lint.py", "_Tracker.__torch_function__"): (
        1, "known_leaves: ids of the inputs, which lint holds (``wrt``) for the whole run"),
    ("rewrite/lint.py", "_Tracker._check_flow"): (
        3, "known_leaves as above; ``fresh`` is local, its tensors held by ``new_leaves``"),
    ("rewrite/lint.py", "_leaves"): (
        2, "compared only with ids of the inputs, alive for the whole run: no other has them"),
    ("rewrite/lint.py", "_storage"): (
        1, "a storage-less tensor's key in ``saved``, whose entry holds the tensor"),
    ("rewrite/lint.py", "lint"): (2, "ids of ``wrt``'s tensors, which lint holds throughout"),
    ("rewrite/loop_choice.py", "_arguments"): (
        1, "looks up tensors of ``values``, alive since the ids were taken (closures hold it)"),
    ("rewrite/loop_choice.py", "_written_tensors"): (
        1, "read by _arguments only for tensors of ``values``, alive since the ids were taken"),
    ("rewrite/loop_choice.py", "aliases_kept.copied"): (
        3, "each memo entry holds the tensor with its copy"),
    ("rewrite/loop_choice.py", "region_steps"): (
        1, "ids of tensors of ``values``, which the step closures hold"),
    ("rewrite/runtime.py", "_Saved.__init__"): (
        2, "``seen`` of one walk of the call's arguments, all reachable (alive) during it"),
    ("rewrite/runtime.py", "_leaf_key"): (
        1, "a module's id selects a cached choice among forms right for any module: a reused "
           "id only shares that choice"),
}


def _id_calls(source: str) -> Counter:
    """``id(...)`` calls per enclosing function or class (dotted), ``<module>`` at the top."""
    found: Counter = Counter()

    def visit(node: ast.AST, qual: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = qual
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = f"{qual}.{child.name}" if qual else child.name
            if isinstance(child, ast.Call) and isinstance(child.func, ast.Name) \
                    and child.func.id == "id":
                found[qual or "<module>"] += 1
            visit(child, inner)

    visit(ast.parse(source), "")
    return found


def _all_id_calls() -> dict[tuple[str, str], int]:
    return {(str(p.relative_to(ROOT)), where): n for p in FILES
            for where, n in _id_calls(p.read_text()).items()}


def test_every_id_key_has_a_listed_reason():
    unlisted = {k: n for k, n in _all_id_calls().items() if ALLOWED.get(k, (None,))[0] != n}
    assert not unlisted, (
        "id() used where ALLOWED does not list it (or with another count): key the mapping by "
        f"the object (AST nodes hash by identity), or add a one-line reason: {unlisted}")


def test_the_list_has_no_stale_entries():
    stale = sorted(set(ALLOWED) - set(_all_id_calls()))
    assert not stale, f"no id() there any more: drop from ALLOWED: {stale}"


def test_the_scan_finds_an_id_key():
    assert _id_calls("class C:\n    def f(self, ns):\n        return {id(n): n for n in ns}\n"
                     "print(id(C))\n") == {"C.f": 1, "<module>": 1}
    assert all(reason and "\n" not in reason for _, reason in ALLOWED.values())


class _ReusedIds:
    """``id`` for AST nodes as small numbers, a dead node's number handed to the next node
    asked: the reuse CPython's allocator does now and then, done every time (other objects keep
    their own ids). Stricter than the allocator: a node made before the death but first asked
    after it takes the number too."""

    def __init__(self):
        self.numbers: dict[int, tuple[weakref.ref, int]] = {}  # builtin id -> (node, number)
        self.free: list[int] = []
        self.made = 0

    def __call__(self, obj: object) -> int:
        key = builtins.id(obj)
        if not isinstance(obj, ast.AST):
            return key
        known = self.numbers.get(key)
        if known is not None and known[0]() is obj:
            return known[1]
        if not self.free:
            self.made += 1
            self.free.append(self.made)
        number = self.free.pop()

        def died(ref: weakref.ref, key: int = key, number: int = number) -> None:
            if self.numbers.get(key, (None,))[0] is ref:
                del self.numbers[key]
            self.free.append(number)
        self.numbers[key] = (weakref.ref(obj, died), number)
        return number


# A loop replaced inside an `if`, then a kept loop whose inner loop is planned again in a copy
# (vectorize_loops._twin): the copy's nodes are made after the first loop's nodes died.
KEPT_AFTER_REPLACED = """
    def f(x, w, n, flag):
        total = 0.0
        if flag:
            for i in range(n):
                total += x[i].sum()
            total = total / n
        out = []
        for k in range(w.shape[0]):
            for j in range(n):
                total = total + (x[j] * w[k]).sum()
            print(total)
            out.append(total)
        return out
    """
SOURCES = {**{name: case[0] for name, case in CASES.items()},
           "kept_after_replaced": KEPT_AFTER_REPLACED}


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_the_rewrite_is_the_same_when_ids_are_reused(monkeypatch, name):
    """With every pass's ``id`` handing a dead node's number to the next node, the rewrite is
    the one made with the allocator's ids: no mapping reads an entry of a node that died.
    (host_round_trips differs so before the fix of host_roundtrips_to_tensor_ops' memos.)"""
    expected = rewrite_source(SOURCES[name], namespace(helper=helper))[0]
    reused = _ReusedIds()
    for module in [m for n, m in sys.modules.items() if n.split(".")[0] == "passes" and m]:
        monkeypatch.setattr(module, "id", reused, raising=False)
    assert rewrite_source(SOURCES[name], namespace(helper=helper))[0] == expected

