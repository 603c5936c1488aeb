"""``optimize-loss`` / ``python -m rewrite``: offline inspection, verification and benchmarks.

Each subcommand NAME lives in a module with ``add_NAME_arguments(parser)`` and
``run_NAME(args) -> int`` (the exit code).
"""
from __future__ import annotations

import argparse

from . import bench, inspection

# name -> (module implementing it, one-line help)
COMMANDS = {
    "inspect": (inspection, "loop decisions, rewritten source, classified graph, timings"),
    "verify": (inspection, "compare values and gradients of original and optimized"),
    "lint": (inspection, "gradient-flow lint: inputs whose gradient is cut, and where"),
    "bench": (bench, "naive vs torch.compile vs optimize_loss vs expert, on examples/"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="optimize-loss", description="Offline inspection, verification and benchmarks of optimize_loss rewrites.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        getattr(module, f"add_{name}_arguments")(cmd)
        cmd.set_defaults(run=getattr(module, f"run_{name}"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)
