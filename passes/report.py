"""What optimize_loss did to a function, and why: ``fn.report`` / ``rewrite.explain(fn)``."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LoopReport:
    """One loop of the user's source. ``strategy`` is "kept" exactly when not vectorized."""
    filename: str
    lineno: int
    vectorized: bool
    strategy: str   # "batched", "vmap", "cumsum", "cumprod", or "kept"
    reason: str     # why this strategy, or why the loop was kept

    def __str__(self) -> str:
        verdict = f"vectorized ({self.strategy})" if self.vectorized else "kept"
        return f"{self.filename}:{self.lineno}: loop {verdict}: {self.reason}"


@dataclass
class Fallback:
    """The original function runs (for ``signature``, or for every call when it is None)."""
    reason: str
    filename: str
    lineno: int | None
    pass_name: str | None = None
    signature: str | None = None

    def __str__(self) -> str:
        where = f"{self.filename}:{self.lineno}" if self.lineno else self.filename
        scope = f" for inputs {self.signature}" if self.signature else ""
        by = f" (pass {self.pass_name})" if self.pass_name else ""
        return f"{where}: original function runs{scope}{by}: {self.reason}"


@dataclass
class Report:
    function: str
    filename: str
    lineno: int
    loops: list[LoopReport] = field(default_factory=list)
    target_only: list[str] = field(default_factory=list)  # hoisted / target-only FX nodes
    fallbacks: list[Fallback] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)        # e.g. why FX tracing was skipped
    passes_run: list[str] = field(default_factory=list)
    original_source: str = ""
    rewritten_source: str = ""

    def add_loop(self, lineno: int, vectorized: bool, strategy: str, reason: str) -> LoopReport:
        loop = LoopReport(self.filename, lineno, vectorized, strategy if vectorized else "kept", reason)
        self.loops.append(loop)
        return loop

    def __str__(self) -> str:
        lines = [f"optimize_loss report for {self.function} ({self.filename}:{self.lineno})"]
        if self.passes_run:
            lines.append("  passes: " + ", ".join(self.passes_run))
        lines += [f"  {loop}" for loop in sorted(self.loops, key=lambda l: l.lineno)]
        if not self.loops:
            lines.append("  no loops")
        if self.target_only:
            lines.append("  target-only (hoisted, no autograd): " + ", ".join(self.target_only))
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  fallback: {f}" for f in self.fallbacks]
        return "\n".join(lines)
