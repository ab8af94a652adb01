"""`drover replay`: (being built for issue 4)."""

from __future__ import annotations

import argparse

from drover.errors import UsageError


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="(not implemented yet)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    raise UsageError("not implemented yet")
