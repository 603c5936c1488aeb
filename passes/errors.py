"""The one exception users see from optimize_loss."""
from __future__ import annotations


class RewriteError(Exception):
    """A rewrite was refused or failed; carries the user's file:line and the pass at fault.

    Raised only with ``strict=True``; otherwise the same message is a warning and the original
    function runs.
    """

    def __init__(self, message: str, filename: str | None = None, lineno: int | None = None,
                 pass_name: str | None = None):
        self.message = message
        self.filename = filename
        self.lineno = lineno
        self.pass_name = pass_name
        super().__init__(str(self))

    @property
    def location(self) -> str:
        if self.filename is None:
            return "<unknown>"
        return f"{self.filename}:{self.lineno}" if self.lineno else self.filename

    def __str__(self) -> str:
        where = f" [pass {self.pass_name}]" if self.pass_name else ""
        return f"{self.location}: {self.message}{where}"


class Unsupported(Exception):
    """Raised by the checker and by passes for a construct they refuse; ``lineno`` is the user's."""

    def __init__(self, reason: str, lineno: int | None = None):
        self.reason = reason
        self.lineno = lineno
        super().__init__(reason)
