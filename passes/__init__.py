"""The passes of optimize_loss: one pass per module; the pipelines are in ``passes.pipeline``."""
