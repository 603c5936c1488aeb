"""Objects made in the loss, ``Cls(...)``: their ``__init__`` runs rewritten when it reaches a loop.

Losses written as modules often build a constant in the constructor with a loop (SimCLR's
negatives mask, ``mask[i, n + i] = 0`` for every pair), and the loss makes the module on every
call. With ``Cls`` a class of the user's module whose ``__init__`` ``optimize_called_helpers``
rewrites, the call becomes::

    NT_Xent(n, t, 1)(z_i, z_j)  ->  _constructed(NT_Xent, _init_original, _init)(n, t, 1)(z_i, z_j)

``constructed`` checks at run time that making an object of ``cls`` would run ``object.__new__``
and then the class's ``__init__`` as it was (``type.__call__``: no metaclass of its own, no
``__new__`` of its own, ``__init__`` not replaced), and then makes the object the same way with
the rewritten ``__init__``. Else ``cls`` itself is called, as written.
"""
from __future__ import annotations

import functools
from typing import Any, Callable


def constructed(cls: Any, original: Callable, rewritten: Callable) -> Callable:
    """What ``cls(...)`` runs in rewritten code: ``cls`` made with ``rewritten`` as its
    ``__init__`` when calling ``cls`` would run ``object.__new__`` and ``original``; else
    ``cls``."""
    plain = (isinstance(cls, type) and type(cls).__call__ is type.__call__
             and cls.__new__ is object.__new__ and cls.__init__ is original)
    return functools.partial(_make, cls, rewritten) if plain else cls


def _make(cls: type, init: Callable, *args: Any, **kwargs: Any) -> Any:
    obj = object.__new__(cls)
    init(obj, *args, **kwargs)
    return obj
