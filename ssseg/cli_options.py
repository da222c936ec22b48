"""Command-line options shared by several ``ssseg`` subcommands."""

from __future__ import annotations

import argparse


def add_overrides(p: argparse.ArgumentParser, scope: str = "") -> None:
    """``-o/--override KEY=VALUE`` (repeatable) into ``args.override``; ``scope`` says where
    the overrides apply (for example "in every run")."""
    where = f" {scope}" if scope else ""
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override a recipe value{where}, e.g. -o optim.iters=50 (repeatable)")
