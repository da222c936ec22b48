"""``ssseg data``: check a dataset on disk, generate a split.

    ssseg data check ROOT --dataset NAME [--split S] [--split-dir DIR]
    ssseg data split [--list FILE] [--root ROOT [--dataset NAME]] --labeled N|FRACTION
                     [--seed S] [--stratify] --out DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ssseg.errors import UserError

if TYPE_CHECKING:  # the commands import numpy, torch and PIL when they run, not the parser
    import numpy as np

    from ssseg.data.folder import ListedSource
    from ssseg.data.splits import Pair


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` command (``check``, ``split``) to an argparse subparsers object."""
    data = subparsers.add_parser("data", help="check a dataset on disk, generate a split",
                                 description="Check a dataset on disk or generate a split.")
    commands = data.add_subparsers(dest="data_command", metavar="{check,split}", required=True)

    check = commands.add_parser(
        "check", help="report missing, unreadable or inconsistent files",
        description="Read every file the split lists name and report missing files, unreadable "
                    "images, mask/image size mismatches, mask values outside the classes and "
                    "colour masks. Exit status 1 if there are problems.")
    check.add_argument("root", help="the dataset's root directory")
    check.add_argument("--dataset", required=True, help="pascal_voc, cityscapes or folder")
    check.add_argument("--split", help="check only this split (and val); default: every split")
    check.add_argument("--split-dir", help="the split directory, relative to ROOT (default: the "
                                           "dataset's: shipped for VOC/Cityscapes, splits/ for folder)")
    check.set_defaults(func=run_check)

    split = commands.add_parser(
        "split", help="draw a labeled subset: writes labeled.txt and unlabeled.txt",
        description="Draw a seeded labeled subset of a pool of training pairs. --stratify reads "
                    "the masks and balances the subset by the rarest class each image shows.")
    split.add_argument("--list", type=Path, help="the pool: a split list file")
    split.add_argument("--root", type=Path,
                       help="the dataset root (needed by --stratify); without --list the pool "
                            "is its split directory's pool.txt")
    split.add_argument("--dataset", default="folder",
                       help="how to read the dataset at --root (default: folder)")
    split.add_argument("--labeled", required=True, metavar="N|FRACTION",
                       help="labeled images: a count (662) or a fraction (0.125 or 1/8)")
    split.add_argument("--seed", type=int, default=0, help="seed of the draw (default: 0)")
    split.add_argument("--stratify", action="store_true",
                       help="stratify by class presence (reads every mask; needs --root)")
    split.add_argument("--out", type=Path, required=True, help="directory for the two lists")
    split.set_defaults(func=run_split)


def run_check(args: argparse.Namespace) -> int:
    """``ssseg data check``: print every problem; 1 if any, else a summary and 0."""
    from ssseg.data.check import check_dataset

    options = {"split_dir": args.split_dir} if args.split_dir else {}
    problems = check_dataset(args.root, args.dataset, args.split, options)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s) found")
        return 1
    print(f"{args.dataset} at {args.root}: {'split ' + args.split if args.split else 'all splits'} "
          "OK (every listed file exists and reads, masks match their images and classes)")
    return 0


def class_presence(source: ListedSource, pool: list[Pair]) -> np.ndarray:
    """Bool ``[len(pool), classes]``: which classes each pool image's mask shows."""
    import numpy as np

    presence = np.zeros((len(pool), source.num_classes), dtype=bool)
    for i, pair in enumerate(pool):
        listed = source.root / pair.mask
        found = source.find_mask(listed)
        if found is None:
            raise UserError(f"{listed}: missing (listed at {pair.where})")
        counts = np.bincount(source.read_mask(found).ravel(), minlength=256)
        presence[i] = counts[: source.num_classes] > 0
    return presence


def run_split(args: argparse.Namespace) -> int:
    """``ssseg data split``: write ``labeled.txt`` and ``unlabeled.txt`` into ``--out``."""
    from ssseg.data.folder import source_for
    from ssseg.data.splits import POOL_FILE, generate_split, parse_amount, read_list, write_list

    amount = parse_amount(args.labeled)
    if args.list is None and args.root is None:
        raise UserError("data split: give the pool with --list FILE or --root ROOT")
    source = source_for(args.dataset, args.root, {}) if args.root is not None else None
    if args.stratify and source is None:
        raise UserError("data split: --stratify reads the masks; give the dataset's --root")
    pool = read_list(args.list if args.list is not None else source.split_dir / POOL_FILE)
    presence = class_presence(source, pool) if args.stratify else None
    labeled, unlabeled = generate_split(pool, amount, args.seed, presence)
    args.out.mkdir(parents=True, exist_ok=True)
    write_list(args.out / "labeled.txt", labeled)
    write_list(args.out / "unlabeled.txt", unlabeled)
    print(f"wrote {len(labeled)} labeled and {len(unlabeled)} unlabeled pairs to {args.out}")
    return 0
