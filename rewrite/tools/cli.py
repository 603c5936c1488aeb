"""``optimize-loss`` / ``python -m rewrite``: offline inspection, verification and benchmarks.

Each subcommand lives in its own module with ``add_arguments(parser)`` and ``run(args) -> int``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module implementing it, one-line help)
COMMANDS = {
    "inspect": ("rewrite.tools.inspection", "loop decisions, rewritten source, classified graph, timings"),
    "verify": ("rewrite.tools.inspection", "compare values and gradients of original and optimized"),
    "lint": ("rewrite.tools.inspection", "gradient-flow lint: inputs whose gradient is cut, and where"),
    "bench": ("rewrite.tools.bench", "naive vs torch.compile vs optimize_loss vs expert, on examples/"),
}


def _not_implemented(args: argparse.Namespace) -> int:
    print(f"optimize-loss {args.command}: not implemented yet", file=sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="optimize-loss", description="Offline inspection, verification and benchmarks of optimize_loss rewrites.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            cmd.set_defaults(run=_not_implemented)
            continue
        getattr(module, f"add_{name}_arguments")(cmd)
        cmd.set_defaults(run=getattr(module, f"run_{name}"))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.run is not _not_implemented:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args.run(args)
