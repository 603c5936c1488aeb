"""Per-sample loop losses over PyTorch's own op database, for the op sweep (tests/test_op_sweep.py).

For every differentiable op of ``torch.testing._internal.common_methods_invocations.op_db`` that
runs on float64 and every one of its first sample inputs whose input is a tensor, the batch is
``x = torch.stack([input, 0.9 * input])``, so each iteration applies the op to exactly the shape
its sample was made for, and two programs are built, one accumulating and one stacking::

    def loss(x, a0):                          def loss(x, a0):
        total = 0                                 outs = []
        for i in range(x.shape[0]):               for i in range(x.shape[0]):
            total = total + torch.op(x[i], a0, dim=1).sum()     outs.append(torch.op(x[i], a0, dim=1))
        return total                              return torch.stack(outs)

Python constants of the sample (numbers, dims, dtypes, strings) are written into the source, as a
user writes them; tensors and anything else become parameters. ``[0]`` picks the first result of
ops returning several. ``python -m tests.op_sweep <stats file>`` summarises a run.
"""
from __future__ import annotations

import collections
import json
import math
import re
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Where an op's function is found, as the source spells the module.
NAMESPACES = [("torch", torch), ("F", F), ("torch.linalg", torch.linalg),
              ("torch.special", torch.special), ("torch.fft", torch.fft),
              ("torch.masked", torch.masked)]
SAMPLES_PER_OP = 3

HEADER = "import math\n\nimport torch\nimport torch.nn.functional as F\n\n\n"
TEMPLATES = {
    "sum": ("total = 0", "total = total + {call}.sum()", "total"),
    "stack": ("outs = []", "outs.append({call})", "torch.stack(outs)"),
}


@dataclass
class Case:
    op: str          # op_db name, with its variant
    variant: str     # a TEMPLATES key
    source: str      # the whole module
    args: tuple      # x, then the sample's non-literal arguments


def differentiable_ops() -> list:
    """The op_db entries the sweep tries: autograd support and a float64 CPU kernel."""
    from torch.testing._internal.common_methods_invocations import op_db
    return [op for op in op_db
            if op.supports_autograd and torch.float64 in op.supported_dtypes("cpu")]


def op_id(op) -> str:
    return op.name + (f".{op.variant_test_name}" if op.variant_test_name else "")


def spelling(op) -> str | None:
    """``torch.xxx`` / ``F.xxx`` / ... naming ``op.op``, ``.xxx`` for a method, or None."""
    names = {op.name.split(".")[-1], op.aten_name, getattr(op.op, "__name__", None)} - {None}
    for prefix, module in NAMESPACES:
        for name in sorted(names):
            if getattr(module, name, None) is op.op:
                return f"{prefix}.{name}"
    method = getattr(op.method_variant, "__name__", None)
    return f".{method}" if method and hasattr(torch.Tensor, method) else None


def literal(value) -> str | None:
    """Source for a Python constant, or None when the value must be passed as an argument."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"float('{value}')"
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    if isinstance(value, torch.dtype):
        return str(value)
    if isinstance(value, (tuple, list)):
        items = [literal(v) for v in value]
        if None in items:
            return None
        inner = ", ".join(items) + ("," if isinstance(value, tuple) and len(items) == 1 else "")
        return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
    return None


def cases(op, samples: int = SAMPLES_PER_OP) -> tuple[list[Case], list[str]]:
    """The programs of one op, and the reasons its other samples were not tried."""
    name = spelling(op)
    if name is None:
        return [], ["op has no torch.*/F.*/method spelling (a lambda or a private wrapper)"]
    built, skipped = [], []
    for sample in op.sample_inputs("cpu", torch.float64, requires_grad=True):
        if len(built) >= 2 * samples:
            break
        case_or_reason = _cases_of(op, name, sample)
        if isinstance(case_or_reason, str):
            skipped.append(case_or_reason)
        else:
            built += case_or_reason
    return built, skipped


def _cases_of(op, name: str, sample) -> list[Case] | str:
    inp = sample.input
    if not isinstance(inp, torch.Tensor) or not inp.is_floating_point():
        return "sample input is not a float tensor"
    if inp.layout != torch.strided:
        return "sample input is sparse"
    params, args, parts = [], [], []
    for k, value in [(None, a) for a in sample.args] + list(sample.kwargs.items()):
        text = literal(value)
        if text is None:
            text = f"a{len(params)}"
            params.append(text)
            args.append(value)
        parts.append(text if k is None else f"{k}={text}")
    try:
        out = op.op(inp, *sample.args, **sample.kwargs)
    except Exception:  # noqa: BLE001 - a sample that raises is not a case
        return "sample raises on its own input"
    pick = "[0]" if isinstance(out, (tuple, list)) else ""
    first = out[0] if pick else out
    if not isinstance(first, torch.Tensor) or not first.is_floating_point() or first.is_sparse:
        return "result is not a dense float tensor"
    call = (f"x[i]{name}({', '.join(parts)})" if name.startswith(".")
            else f"{name}({', '.join(['x[i]'] + parts)})") + pick
    x = torch.stack([inp.detach(), 0.9 * inp.detach()]).requires_grad_()
    return [Case(op_id(op), variant, _module(params, call, variant), (x, *args))
            for variant in TEMPLATES]


def _module(params: list[str], call: str, variant: str) -> str:
    init, step, result = TEMPLATES[variant]
    return HEADER + "\n".join([
        f"def loss({', '.join(['x'] + params)}):",
        f"    {init}",
        "    for i in range(x.shape[0]):",
        f"        {step.format(call=call)}",
        f"    return {result}",
    ]) + "\n"


def reason_group(reason: str) -> str:
    """A refusal reason without its particulars (names, lines, numbers), for counting."""
    reason = re.sub(r"`[^`]*`", "`…`", reason)
    reason = re.sub(r"\S+\.py:\d+:?", "", reason)
    return re.sub(r"\d+", "N", reason).strip()[:160]


def summarize(path: str) -> str:
    """The figures of a sweep's ``OL_OPSWEEP_STATS`` file."""
    outcomes, reasons, ops = collections.Counter(), collections.Counter(), collections.defaultdict(set)
    with open(path) as f:
        for entry in map(json.loads, f):
            outcomes[entry["outcome"]] += 1
            ops[entry["outcome"]].add(entry["op"])
            if entry["outcome"] != "vectorized":
                reasons[(entry["outcome"], reason_group(entry.get("reason", "")))] += 1
    total_ops = len(set().union(*ops.values()))
    lines = [f"{total_ops} ops, {sum(outcomes.values())} programs: "
             + ", ".join(f"{n} {o} ({len(ops[o])} ops)" for o, n in outcomes.most_common())]
    return "\n".join(lines + [f"  {n:5d} {o}: {r}" for (o, r), n in reasons.most_common()])


if __name__ == "__main__":
    print(summarize(sys.argv[1]))
