"""Stage: a loop that writes into a numpy array runs as written, decided here (not by a run-time
check that could never hold).

The vectorized form writes the stacked values of every iteration into the written tensor at
once, behind a check that it is a tensor. A name bound to a new numpy array before the loop
(``loop_dataflow.host_arrays_before_loops``: PathomicFusion's Cox loss fills its risk set
``R_mat = np.zeros([n, n])`` with ``R_mat[i, j] = survtime[j] >= survtime[i]`` in two loops
before ``torch.FloatTensor(R_mat)``) is no tensor: the check would be false on every call, and
the report would call vectorized a loop that never runs so::

    for i in range(n):
        for j in range(n):                  ->  kept: it writes into `R_mat`, a numpy array
            R_mat[i, j] = t[j] >= t[i]          (`np.zeros([n, n])`, line 3), not a tensor
"""
from __future__ import annotations

import ast

from ..ast_tools import PassContext, root_name, unparse, walk
from ..errors import Unsupported
from .plan import LoopPlan


def stage(plan: LoopPlan, ctx: PassContext) -> LoopPlan:
    if not plan.host_arrays:
        return plan
    # (a name the body binds again may hold a tensor where it is written)
    rebound = {n.id for stmt in plan.body for n in walk(stmt)
               if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
    for s in (s for stmt in plan.body for s in walk(stmt)
              if isinstance(s, (ast.Assign, ast.AugAssign))):
        for target in s.targets if isinstance(s, ast.Assign) else [s.target]:
            # (``R[i, j]``, ``R[i][j]``: a write into ``R``; a bare name is a binding)
            root = root_name(target) if isinstance(target, ast.Subscript) else None
            made = None if root in rebound else plan.host_arrays.get(root)
            if made is not None:
                raise Unsupported(f"it writes into `{root}`, a numpy array (`{unparse(made)}`, "
                                  f"line {made.lineno}), not a tensor", s.lineno)
    return plan

