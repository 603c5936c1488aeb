"""The passes of optimize_loss: one pass per module; the pipelines are in ``passes.pipeline``."""
# Passes use rewrite's errors and report types, and rewrite's runtime runs the passes: importing
# the public package first gives one import order whichever package a user imports first.
import rewrite  # noqa: F401
