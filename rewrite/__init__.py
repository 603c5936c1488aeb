"""optimize-loss: makes naive PyTorch loss functions fast, with verified rewrites.

    from rewrite import optimize_loss

    @optimize_loss
    def loss(pred, target): ...
"""
from passes.errors import RewriteError
from passes.report import Fallback, LoopReport, Report

from .decorator import OptimizedModule, explain, optimize_loss
# The factory shadows its module's name here: ``torch.compile(fn, backend=rewrite.backend())``;
# ``from rewrite.backend import ...`` still reaches the module.
from .backend import backend
from .offline_split import split
from .lint import Finding, GradientFlowWarning, lint
from .runtime import OptimizedFunction, RewriteWarning
from .testing import assert_equivalent

__all__ = [
    "optimize_loss", "explain", "backend", "assert_equivalent", "RewriteError", "RewriteWarning",
    "Report", "LoopReport", "Fallback", "OptimizedFunction", "OptimizedModule",
    "lint", "Finding", "GradientFlowWarning", "split",
]
