"""A grammar of random loss functions for the differential fuzzer (tests/test_fuzz_programs.py).

Every program is ``def loss(x, y, w, t)`` with ``x``, ``y`` of shape [B, D], ``w`` of shape [D]
and integer labels ``t`` of shape [B]; it is built from the loop patterns README's "Loop
vectorization" section claims, over ops drawn from the tables below, and returns a tuple. A
program drawn with ``keep=`` carries one construct that must keep its loop as written.

``python -m tests.fuzz_programs <stats file>`` summarises a long run (tests/test_fuzz_programs.py).
"""
from __future__ import annotations

import collections
import json
import sys
from dataclasses import dataclass

import torch
from hypothesis import strategies as st

# Ops over one row (shape [D]) giving a row. Several give NaN/inf off their domain.
ROW_UNARY = ["torch.exp({})", "torch.log({})", "torch.sqrt({})", "{}.abs()", "torch.sigmoid({})",
             "torch.tanh({})", "F.relu({})", "torch.reciprocal({})", "torch.log1p({})",
             "torch.acos({})", "{}.pow(2)", "({} * 0.5)", "-{}", "torch.clamp({}, min=0.1)",
             "F.softmax({}, dim=-1)", "F.log_softmax({}, dim=-1)", "torch.softmax({}, 0)"]
ROW_BINARY = ["({} - {})", "({} + {})", "({} * {})", "({} / {})", "torch.maximum({}, {})",
              "torch.where({0} > {1}, {0}, {1})"]
# Row -> 0-d tensor.
REDUCE = ["{}.sum()", "{}.mean()", "{}.amax()", "{}.max()", "{}.min()", "{}.norm()",
          "torch.logsumexp({}, dim=-1)", "{}.sum(dim=0)", "{}.prod()", "{}.std()",
          "{}.mean(dim=-1, keepdim=True).squeeze(-1)"]
# Two rows -> 0-d tensor: F.* losses, matmul, similarity.
PAIR = ["F.mse_loss({}, {})", "F.l1_loss({}, {}, reduction='sum')", "F.smooth_l1_loss({}, {})",
        "F.binary_cross_entropy_with_logits({}, torch.sigmoid({}))", "torch.dot({}, {})",
        "F.cosine_similarity({}, {}, dim=0)", "({} @ {})", "F.huber_loss({}, {})",
        "F.kl_div(F.log_softmax({}, -1), F.softmax({}, -1), reduction='sum')"]
# A row and the iteration's label -> 0-d tensor: gathers, `.item()`/`int()`, class losses.
LABELLED = ["F.cross_entropy({}.unsqueeze(0), t[i].unsqueeze(0))", "{}[t[i]]", "{}[int(t[i])]",
            "{}[t[i].item()]", "-F.log_softmax({}, dim=-1)[t[i]]",
            "F.nll_loss(F.log_softmax({}, -1)[None], t[i:i + 1])"]
# 0-d tensor -> 0-d tensor.
SCALAR_UNARY = ["torch.exp({})", "torch.log({})", "torch.sqrt({})", "{}.abs()", "({}) ** 2",
                "torch.tanh({})", "(1 / {})", "float({})", "{}.item()"]
# Element ops for nested `for j` loops over x[i, j], y[i, j], w[j].
ELEMENT = ["(x[i, j] - y[i, j]) ** 2", "x[i, j] * w[j]", "torch.exp(x[i, j])",
           "torch.log(y[i, j])", "(x[i, j] - y[i, j]).abs()", "torch.sqrt(x[i, j])",
           "x[i, j] / y[i, j]", "torch.sigmoid(x[i, j]) * y[i, j]"]

# Must-keep constructs, by name: statements that go first in the loop body.
KEEPS = {
    "recurrence": ["h = torch.tanh(h * 0.5 + {s})", "s = s + h"],
    "side_effect": ["STATE['last'] = float({s})"],
    "print": ["print(float({s}), file=STREAM)"],
    "random": ["s = s + F.dropout({r}, 0.5).sum()"],
    "random_like": ["s = s + (torch.rand_like({r}) * {r}).sum()"],
    "break": ["if {c}:", "    break", "s = s + {s}"],
}


@dataclass
class Program:
    source: str      # the whole module
    patterns: tuple  # pattern names used, for the report of the long run
    keep: str | None  # the must-keep construct, if any
    loop_line: int   # the line of the outer loop in the module


HEADER = '''import io
import math

import torch
import torch.nn.functional as F

STATE = {}
STREAM = io.StringIO()


def helper(a, b):
    d = a - b
    return (d * d).sum() + b.abs().mean()


'''


class _Builder:
    """Draws expressions; ``rows`` are the names of the current iteration's rows."""

    def __init__(self, draw, rows: list[str], labels: bool):
        self.draw, self.rows, self.labels = draw, rows, labels

    def pick(self, table: list[str]) -> str:
        return self.draw(st.sampled_from(table))

    def row(self, depth: int = 2) -> str:
        kind = self.draw(st.integers(0, 3)) if depth else 0
        if kind == 0:
            return self.pick(self.rows + ["w"])
        if kind == 3:
            return self.pick(ROW_BINARY).format(self.row(depth - 1), self.row(depth - 1))
        return self.pick(ROW_UNARY).format(self.row(depth - 1))

    def scalar(self, depth: int = 1) -> str:
        kinds = ["reduce", "pair", "helper"] + (["label"] if self.labels else [])
        kinds += ["unary", "binary"] if depth else []
        kind = self.pick(kinds)
        if kind == "reduce":
            return self.pick(REDUCE).format(self.row())
        if kind == "pair":
            return self.pick(PAIR).format(self.row(1), self.row(1))
        if kind == "label":
            return self.pick(LABELLED).format(self.row(1))
        if kind == "helper":
            return f"helper({self.row(1)}, {self.row(0)})"
        if kind == "unary":
            return self.pick(SCALAR_UNARY).format(self.scalar(depth - 1))
        op = self.pick(["+", "-", "*"])
        return f"({self.scalar(depth - 1)} {op} {self.scalar(depth - 1)})"

    def cond(self) -> str:
        forms = [f"{self.pick(REDUCE).format(self.row(0))} > 0",
                 f"{self.scalar(0)} < 0.5", f"{self.row(0)}[0] > {self.row(0)}[-1]"]
        if self.labels:
            forms += ["t[i] == 0", "t[i] != 1"]
        return self.pick(forms)


def _statement(b: _Builder, nested_ok: bool) -> tuple[str, list[str]]:
    """(pattern name, lines) of one body statement."""
    kinds = ["sum", "sub", "mul", "combo", "max", "min", "count", "append", "write", "if",
             "ifelse", "ifexp", "continue", "masked", "local"]
    kinds += ["nested", "write2"] if nested_ok else []
    kind = b.pick(kinds)
    s = b.scalar
    lines = {
        "sum": lambda: [f"s += {s()}"],
        "sub": lambda: [f"s -= {s()}"],
        "mul": lambda: [f"p = p * (1 + torch.tanh({s()}) * 0.1)"],
        "combo": lambda: [f"s = s + {s()} - {s()}"],
        "max": lambda: [f"m = torch.maximum(m, {s()})"],
        "min": lambda: [f"lo = min(lo, {s()})"],
        "count": lambda: [f"if {b.cond()}:", "    n += 1"],
        "append": lambda: [f"lst.append({b.pick([s(), b.row()])})"],
        "write": lambda: [f"out[i] = {b.row()}"],
        "if": lambda: [f"if {b.cond()}:", f"    s += {s()}"],
        "ifelse": lambda: [f"if {b.cond()}:", f"    s += {s()}", f"elif {b.cond()}:",
                           f"    s -= {s()}", "else:", f"    s += {s()}"],
        "ifexp": lambda: [f"s += {s()} if {b.cond()} else {s()}"],
        "continue": lambda: [f"if {b.cond()}:", "    continue"],
        "masked": lambda: [f"sel = {b.row(0)} > {b.pick(['0', '0.5'])}",
                           f"s += {b.pick(MASKED).format(b.row(0), b.row(0))}"],
        "local": lambda: [f"v = {s()}", "s = s + v * v"],
        "nested": lambda: ["for j in range(x.shape[1]):", f"    s += {b.pick(ELEMENT)}"],
        "write2": lambda: ["for j in range(x.shape[1]):", f"    out[i, j] = {b.pick(ELEMENT)}"],
    }[kind]()
    return kind, lines


MASKED = ["({0}[sel] - {1}[sel]).pow(2).sum()", "{0}[sel].mean()", "{0}[sel].max()",
          "({0}[sel] * 2).abs().sum()", "len({0}[sel])"]

# Loop headers: (header, the row names inside, whether `i` and so `t[i]` exist, nested allowed).
HEADERS = [
    ("for i in range(x.shape[0]):", ["x[i]", "y[i]"], True, True),
    ("for i in range(len(x)):", ["x[i]", "y[i]"], True, True),
    ("for i, (a, b) in enumerate(zip(x, y)):", ["a", "b", "x[i]"], True, True),
    ("for a, b in zip(x, y):", ["a", "b"], False, False),
    ("for a in x:", ["a"], False, False),
]

INIT = ["s = 0", "p = torch.ones(())", "m = torch.tensor(float('-inf'), dtype=x.dtype)",
        "lo = float('inf')", "n = 0", "lst = []", "out = torch.zeros_like(x)"]


@st.composite
def programs(draw, keep: bool = False) -> Program:
    """A random loss function module; ``keep=True`` adds one must-keep construct."""
    if not keep and draw(st.integers(0, 5)) == 0:
        return _comprehension(draw)
    header, rows, labels, nested_ok = draw(st.sampled_from(HEADERS))
    b = _Builder(draw, rows, labels)
    patterns, body = [header.split(" in ")[-1].split("(")[0]], []
    keep_name = None
    if keep:
        keep_name = draw(st.sampled_from(sorted(KEEPS)))
        body += [line.format(s=b.scalar(0), r=b.row(0), c=b.cond()) for line in KEEPS[keep_name]]
    for _ in range(draw(st.integers(1, 3))):
        kind, lines = _statement(b, nested_ok)
        patterns.append(kind)
        body += lines
    uses_list = "lst.append" in "\n".join(body)
    ret = draw(st.sampled_from(["s", "s / x.shape[0]", "s / max(n, 1)"]))
    stacked = "torch.stack(lst)" if uses_list else "None"
    init = INIT + (["h = torch.zeros(())"] if keep_name == "recurrence" else [])
    lines = ["def loss(x, y, w, t):"] + ["    " + s for s in init] + ["    " + header]
    loop_line = HEADER.count("\n") + len(lines)
    lines += ["        " + s for s in body]
    lines.append(f"    return {ret}, p, m, lo, n, {stacked}, out")
    return Program(HEADER + "\n".join(lines) + "\n", tuple(patterns), keep_name, loop_line)


COMPREHENSIONS = ["sum({s} for i in range(x.shape[0]))",
                  "torch.stack([{s} for i in range(len(x))]).sum()",
                  "torch.stack([{r} for i in range(x.shape[0])])",
                  "torch.cat([{r} for i in range(x.shape[0])])",
                  "torch.tensor([float({s}) for i in range(x.shape[0])])"]


def _comprehension(draw) -> Program:
    b = _Builder(draw, ["x[i]", "y[i]"], True)
    expr = draw(st.sampled_from(COMPREHENSIONS)).format(s=b.scalar(0), r=b.row(1))
    src = f"def loss(x, y, w, t):\n    return {expr}\n"
    return Program(HEADER + src, ("comprehension",), None, HEADER.count("\n") + 2)


SPECIALS = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"), "zero": 0.0}


@st.composite
def inputs(draw, dtype: torch.dtype) -> tuple:
    """(x, y, w, t): sizes from {0, 1, 2, 3, 5}; values with ties, NaN, inf and zeros."""
    B = draw(st.sampled_from([0, 1, 2, 3, 5]))
    D = draw(st.sampled_from([1, 2, 3, 5]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))

    def tensor(*shape):
        v = torch.randn(*shape, generator=g, dtype=torch.float64)
        mode = draw(st.sampled_from(["plain", "plain", "ties", "nan", "inf", "-inf", "zero"]))
        if mode == "ties":
            v = (v * 2).round() / 2
        elif mode != "plain" and v.numel():
            v.view(-1)[torch.randint(v.numel(), (1,), generator=g)] = SPECIALS[mode]
        return v.to(dtype).requires_grad_()

    labels = torch.randint(D, (B,), generator=g)
    return tensor(B, D), tensor(B, D), tensor(D), labels


MUST_KEEP_OUTCOMES = {"vectorized": "distributed", "kept": "kept whole"}


def summarize(path: str) -> str:
    """The figures of a long run's ``OL_FUZZ_STATS`` file (or several runs' appended): programs by
    kind (claimed patterns or must-keep, eager or compiled by a backend) and outcome, where a
    must-keep program that vectorized is one distributed; known bugs hit."""
    outcomes, known = collections.defaultdict(collections.Counter), collections.Counter()
    with open(path) as f:
        for entry in map(json.loads, f):
            if entry.get("outcome") == "known":
                known[entry["bug"]] += 1
            elif "outcome" in entry:
                kind = (("must-keep" if entry["keep"] else "claimed patterns") + ", "
                        + (entry["compiled"] or "eager"))
                outcome = entry["outcome"]
                if entry["keep"]:
                    outcome = MUST_KEEP_OUTCOMES.get(outcome, outcome)
                outcomes[kind][outcome] += 1
    total = sum(sum(counts.values()) for counts in outcomes.values())
    lines = [f"{total} programs"]
    lines += [f"  {kind}: {sum(counts.values())}: "
              + ", ".join(f"{n} {o}" for o, n in counts.most_common())
              for kind, counts in sorted(outcomes.items())]
    lines.append(f"{sum(known.values())} draws not run because they hit a known bug:")
    return "\n".join(lines + [f"  {n} {bug}" for bug, n in known.most_common()])


if __name__ == "__main__":
    print(summarize(sys.argv[1]))
