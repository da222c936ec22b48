"""``ssseg data``: check a dataset on disk, draw a split, convert image-id lists.

    ssseg data check ROOT --dataset NAME [--split S] [--split-dir DIR]
    ssseg data split [--list FILE] [--root ROOT [--dataset NAME] [--split-dir DIR]]
                     --labeled N|FRACTION [--seed S] [--stratify] --out DIR
    ssseg data convert ROOT --dataset pascal_voc|cityscapes [--split-dir DIR] [--labeled IDS ...]
                       --out DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ssseg.errors import UserError
from ssseg.progress import track

if TYPE_CHECKING:  # the commands import numpy, torch and PIL when they run, not the parser
    import numpy as np

    from ssseg.data.folder import ListedSource
    from ssseg.data.splits import Pair


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` command (``check``, ``split``, ``convert``) to an argparse subparsers object."""
    data = subparsers.add_parser("data", help="check a dataset on disk, draw a split, convert id lists",
                                 description="Check a dataset on disk, draw a labeled subset, or "
                                             "convert image-id lists into a split directory.")
    commands = data.add_subparsers(dest="data_command", metavar="{check,split,convert}", required=True)

    check = commands.add_parser(
        "check", help="report missing, unreadable or inconsistent files",
        description="Read every file the split lists name and report missing files, unreadable "
                    "images, mask/image size mismatches, mask values outside the classes and "
                    "colour masks. Exit status 1 if there are problems.")
    check.add_argument("root", help="the dataset's root directory")
    check.add_argument("--dataset", required=True, help="pascal_voc, cityscapes, folder or mmseg")
    check.add_argument("--split", help="check only this split (and val); default: every split")
    check.add_argument("--split-dir", help="the split directory, relative to ROOT: pair lists, or "
                                           "image-id lists such as ImageSets/Segmentation (default: "
                                           "the dataset's: shipped for VOC/Cityscapes, splits/ for folder)")
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
    split.add_argument("--split-dir", help="the split directory whose pool to draw from, relative "
                                           "to --root (default: the dataset's)")
    split.add_argument("--labeled", required=True, metavar="N|FRACTION",
                       help="labeled images: a count (662) or a fraction (0.125 or 1/8)")
    split.add_argument("--seed", type=int, default=0, help="seed of the draw (default: 0)")
    split.add_argument("--stratify", action="store_true",
                       help="stratify by class presence (reads every mask; needs --root)")
    split.add_argument("--out", type=Path, required=True, help="directory for the two lists")
    split.set_defaults(func=run_split)

    convert = commands.add_parser(
        "convert", help="write a split directory of pair lists from image-id lists",
        description="Write a split directory in the UniMatch format (pool.txt, val.txt, "
                    "<split>/labeled.txt and unlabeled.txt, '<image path> <mask path>' per line) "
                    "from lists of image ids in the dataset's official layout: the id lists of "
                    "--split-dir (such as the VOC devkit's ImageSets/Segmentation) and each "
                    "--labeled file. Pool and val come from the id directory, else from the tree.")
    convert.add_argument("root", type=Path, help="the dataset's root directory")
    convert.add_argument("--dataset", required=True, help="pascal_voc, cityscapes or mmseg")
    convert.add_argument("--split-dir", help="a directory of id lists, relative to ROOT (default: "
                                             "none; pool and val from the tree)")
    convert.add_argument("--labeled", type=Path, action="append", default=[], metavar="IDS",
                         help="a file of labeled image ids: one more split, named after the file "
                              "(repeatable)")
    convert.add_argument("--out", type=Path, required=True, help="the split directory to write")
    convert.set_defaults(func=run_convert)


SHOWN_PROBLEMS = 20  # ``ssseg data check`` lists this many problems, then counts the rest
KNOWN_PARTS = {"SegmentationClassAug": "the SBD augmented masks (SegmentationClassAug) are not installed? "
                                       "they come with SBD; see docs/datasets.md"}


def run_check(args: argparse.Namespace) -> int:
    """``ssseg data check``: the first problems, how many more, and a diagnosis when most are
    files missing under one folder; 1 if any, else a summary with the counts and 0."""
    from ssseg.data.check import check_source
    from ssseg.data.registry import source_for

    report = check_source(source_for(args.dataset, args.root, _options(args)), args.split)
    problems = report.problems
    for problem in problems[:SHOWN_PROBLEMS]:
        print(problem)
    if len(problems) > SHOWN_PROBLEMS:
        print(f"... and {len(problems) - SHOWN_PROBLEMS} more")
    checked = f"{report.pairs} image-mask pairs and {report.images} unlabeled images checked"
    if problems:
        print(f"{len(problems)} problem(s) found; {checked}")
        missing = report.missing_under()
        if missing:
            folder, count = missing
            hint = next((h for part, h in KNOWN_PARTS.items() if Path(folder).name == part),
                        "is that part of the dataset installed, and --split-dir / --dataset right?")
            print(f"{count} of them are files missing under {folder}: {hint}")
        return 1
    print(f"{args.dataset} at {args.root}: {'split ' + args.split if args.split else 'all splits'} "
          f"OK: {checked} (every listed file exists and reads, masks match their images and classes)")
    return 0


def _options(args: argparse.Namespace) -> dict[str, str]:
    return {"split_dir": args.split_dir} if args.split_dir else {}


def class_presence(source: ListedSource, pool: list[Pair]) -> np.ndarray:
    """Bool ``[len(pool), classes]``: which classes each pool image's mask shows."""
    import numpy as np

    presence = np.zeros((len(pool), source.num_classes), dtype=bool)
    for i, pair in enumerate(track(pool, len(pool), "data split: reading masks", unit="masks")):
        listed = source.root / pair.mask
        found = source.find_mask(listed)
        if found is None:
            raise UserError(f"{listed}: missing (listed at {pair.where})")
        counts = np.bincount(source.read_mask(found).ravel(), minlength=256)
        presence[i] = counts[: source.num_classes] > 0
    return presence


def run_split(args: argparse.Namespace) -> int:
    """``ssseg data split``: write ``labeled.txt`` and ``unlabeled.txt`` into ``--out``."""
    from ssseg.data.registry import source_for
    from ssseg.data.splits import ALL, generate_split, parse_amount, read_list, write_list

    amount = parse_amount(args.labeled)
    if args.list is None and args.root is None:
        raise UserError("data split: give the pool with --list FILE or --root ROOT")
    source = source_for(args.dataset, args.root, _options(args)) if args.root is not None else None
    if args.stratify and source is None:
        raise UserError("data split: --stratify reads the masks; give the dataset's --root")
    pool = read_list(args.list) if args.list is not None else source.lists(ALL).labeled
    presence = class_presence(source, pool) if args.stratify else None
    labeled, unlabeled = generate_split(pool, amount, args.seed, presence)
    args.out.mkdir(parents=True, exist_ok=True)
    write_list(args.out / "labeled.txt", labeled)
    write_list(args.out / "unlabeled.txt", unlabeled)
    print(f"wrote {len(labeled)} labeled and {len(unlabeled)} unlabeled pairs to {args.out}")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    """``ssseg data convert``: write a pair-list split directory from image-id lists."""
    from ssseg.data.check import list_problems, locate
    from ssseg.data.registry import source_for
    from ssseg.data.splits import (ALL, SplitLists, holds_ids, id_pool_and_val, read_ids,
                                   write_split_dir)

    source = source_for(args.dataset, args.root, _options(args))
    if source.layout is None:
        raise UserError(f"data convert: dataset {args.dataset!r} has no official layout that "
                        "places image ids (pascal_voc, cityscapes and mmseg have)")
    if args.split_dir and not holds_ids(source.split_dir):
        raise UserError(f"data convert: {source.split_dir} holds no image-id lists (it is a "
                        "directory of pair lists already, or absent)")
    split_dir = source.split_dir if args.split_dir else None
    pool, val, _ = id_pool_and_val(split_dir, source.layout)
    labeled = {name: source.lists(name).labeled for name in source.split_names()
               if name != ALL} if split_dir else {}
    for file in args.labeled:
        if file.stem in labeled or file.stem == ALL:
            raise UserError(f"--labeled {file}: a split named {file.stem!r} exists already; "
                            "rename the file")
        labeled[file.stem] = read_ids(file, source.layout)
    problems = [problem for pairs in labeled.values()
                for problem in list_problems(SplitLists(labeled=pairs, unlabeled=None, val=val))]
    every = {pair.key: pair for pairs in (pool, val, *labeled.values()) for pair in pairs}
    problems += locate(source, list(every.values()), with_masks=True)[1]
    if problems:
        raise UserError(f"data convert: {len(problems)} problem(s) with the id lists or the files "
                        "they name:\n  " + "\n  ".join(str(p) for p in problems[:10]))
    write_split_dir(args.out, pool, val, labeled)
    out = args.out.resolve()
    use = out.relative_to(source.root.resolve()) if out.is_relative_to(source.root.resolve()) else out
    splits = ", ".join(f"{name} ({len(pairs)} labeled)" for name, pairs in labeled.items())
    print(f"wrote {args.out}: pool.txt ({len(pool)} pairs), val.txt ({len(val)} pairs)"
          f"{', splits ' + splits if splits else ''}; train with data.options.split_dir: {use}")
    return 0
