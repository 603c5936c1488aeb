"""Calls that call the module they are handed: its ``forward`` runs rewritten there too.

``torch.func.functional_call(criterion, params, args)`` swaps the module's parameters and
buffers for ``params`` and calls ``criterion(*args)``, nothing else of it. With ``criterion`` a
module of one class of the user's module (``criterion = Cls(...)``) whose ``forward``
``optimize_called_helpers`` rewrites, the call becomes::

    torch.func.functional_call(criterion, params, (x, y))
    ->  _forward_during(torch.func.functional_call, criterion,
                        _module_forward(criterion, _forward_original, _forward))(
            criterion, params, (x, y))

``forward_during`` checks at run time that the callee is still one of ``MODULE_CALLERS`` and
that ``module_forward`` picked the rewrite (calling the module would run its class's ``forward``
and nothing else: no hooks, no own ``forward``, not compiled or traced); then it sets the rewritten
``forward``, bound to the module, in the module's own dict for the length of the call (the
module reads its swapped parameters through ``self``, as the original does). Else the call runs
as written. Taken: the module is the first positional argument and a plain name (it is read
twice), and the callee resolves here to one of ``MODULE_CALLERS``.
"""
from __future__ import annotations

import ast
import functools
import types
from typing import Any, Callable

import torch

# Functions that call the module handed as their first argument with the arguments they are
# given, after swapping its parameters and buffers, and do nothing else with it.
MODULE_CALLERS = (torch.func.functional_call, torch.nn.utils.stateless.functional_call)


def calls_module(call: ast.Call, module_globals: dict, local: set[str]) -> bool:
    """``call`` is a ``MODULE_CALLERS`` function (resolved through the module's globals) whose
    first positional argument is a plain name."""
    if not call.args or not isinstance(call.args[0], ast.Name):
        return False
    parts, func = [], call.func
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name) or func.id in local:
        return False
    obj = module_globals.get(func.id)
    for part in reversed(parts):
        if not isinstance(obj, types.ModuleType):
            return False
        obj = getattr(obj, part, None)
    return any(obj is caller for caller in MODULE_CALLERS)


def forward_during(caller: Callable, module: Any, picked: Callable) -> Callable:
    """``caller`` with ``module``'s ``forward`` set to ``picked`` while it runs, when ``caller``
    is one of ``MODULE_CALLERS`` and ``picked`` (what ``module_forward`` chose) is the rewrite;
    else ``caller`` itself."""
    if picked is module or not any(caller is c for c in MODULE_CALLERS):
        return caller
    return functools.partial(_with_forward, caller, module, picked)


def _with_forward(caller: Callable, module: Any, forward: Callable, *args: Any,
                  **kwargs: Any) -> Any:
    vars(module)["forward"] = forward
    try:
        return caller(*args, **kwargs)
    finally:
        # pop, not del: a nested call on the same module has already removed it (the rest of
        # this call then runs the class's forward, which computes the same)
        vars(module).pop("forward", None)
