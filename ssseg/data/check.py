"""Reporting what is wrong with a dataset's lists and files, file by file.

:func:`check_source` (``ssseg data check``) reads every listed file. :func:`preflight` is what
dataset builders run before training, with the same messages: no list is empty, names an image
twice or puts one image in two roles, every listed file exists, and every labeled and val pair is
checked (sizes and modes from the images' headers, every mask decoded: its size and values), so
bad data fails before the first step instead of silently or mid-training.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import attrs
import numpy as np

from ssseg.data.base import IGNORE_INDEX
from ssseg.data.io import BadFile, image_header, read_image
from ssseg.data.splits import SHIPPED_DIR, Pair, SplitLists, repeats
from ssseg.errors import UserError
from ssseg.progress import Progress

if TYPE_CHECKING:
    from ssseg.data.folder import ListedSource

MAX_REPORTED = 10


@attrs.frozen
class Problem:
    """One thing wrong with one file."""

    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"

    @classmethod
    def of(cls, err: BadFile) -> Problem:
        """The problem a :class:`BadFile` error reports."""
        return cls(err.path, err.reason)


Sample = tuple[str, str | None]  # absolute image path, absolute mask path (None: not needed)


def list_problems(lists: SplitLists) -> list[Problem]:
    """Empty list files, images a list names twice (at ``file:line``, with the first line), and
    training images that are also val images."""
    problems = [Problem(str(file), "empty list: it names no images")
                for role, file in lists.files.items() if not getattr(lists, role)]
    for pairs in (lists.labeled, lists.unlabeled or [], lists.val):
        problems += [Problem(again.where, f"{again.image} is listed twice (first at line "
                                          f"{first.where.rsplit(':', 1)[1]}); remove the repeat")
                     for again, first in repeats(pairs)]
    labeled_at = {pair.image: pair.where for pair in lists.labeled}
    problems += [Problem(pair.where, f"{pair.image} is also a labeled image (at {labeled_at[pair.image]}); "
                                     "an image is labeled or unlabeled in a split, not both")
                 for pair in lists.unlabeled or [] if pair.image in labeled_at]
    val_at = {pair.image: pair.where for pair in lists.val}
    problems += [Problem(pair.where, f"{pair.image} is also a val image (at {val_at[pair.image]}); "
                                     "training must not see the images it is evaluated on")
                 for pair in [*lists.labeled, *(lists.unlabeled or [])] if pair.image in val_at]
    return problems


def locate(source: ListedSource, pairs: Sequence[Pair],
           with_masks: bool) -> tuple[list[Sample], list[Problem]]:
    """Absolute paths of the listed files (masks via ``source.find_mask``) and the missing ones."""
    samples, problems = [], []
    for pair in pairs:
        image = source.root / pair.image
        if not image.is_file():
            problems.append(Problem(str(image), f"missing (listed at {pair.where})"))
        mask = None
        if with_masks:
            listed = source.root / pair.mask
            mask = source.find_mask(listed)
            if mask is None:
                problems.append(Problem(str(listed), f"missing (listed at {pair.where})"))
        samples.append((str(image), None if mask is None else str(mask)))
    return samples, problems


def check_pair(source: ListedSource, image_path: str, mask_path: str, full_image: bool = True) -> list[Problem]:
    """An image and its mask: readable, same size, mask values within the classes. The mask is
    always decoded; the image in full with ``full_image``, else only its header (its size)."""
    problems = []
    size = mask = None
    try:
        size = tuple(read_image(image_path).shape[-2:]) if full_image else image_header(image_path)[0][::-1]
    except BadFile as err:
        problems.append(Problem.of(err))
    try:
        mask = source.read_mask(Path(mask_path))
    except BadFile as err:
        problems.append(Problem.of(err))
    if mask is None:
        return problems
    if size is not None and size != mask.shape:
        (ih, iw), (mh, mw) = size, mask.shape
        problems.append(Problem(mask_path, f"mask is {mw}x{mh} (WxH) but its image {image_path} "
                                           f"is {iw}x{ih}"))
    counts = np.bincount(mask.ravel(), minlength=256)
    counts[IGNORE_INDEX] = 0
    bad = np.flatnonzero(counts[source.num_classes:])
    if bad.size:
        values = ", ".join(str(v) for v in (bad + source.num_classes)[:10])
        problems.append(Problem(mask_path, f"mask values {values} are outside the "
                                           f"{source.num_classes} classes (0-{source.num_classes - 1}) "
                                           f"and {IGNORE_INDEX} (ignore)"))
    return problems


def sample_problems(source: ListedSource, sample: Sample) -> list[Problem]:
    """Read one located sample in full: the image alone (no mask needed), or image and mask."""
    image, mask = sample
    if not Path(image).is_file():
        return []  # reported as missing (a missing mask is None here)
    if mask is not None:
        return check_pair(source, image, mask)
    try:
        read_image(image)
    except BadFile as err:
        return [Problem.of(err)]
    return []


def preflight(source: ListedSource, lists: SplitLists) -> dict[str, list[Sample]]:
    """Check the lists (none empty, no image twice, none in two roles), locate every file of
    ``lists`` and check every labeled and val pair (:func:`check_pair` on the image's header and
    the decoded mask).

    Returns the located samples per role (``labeled``, ``unlabeled``, ``val``); raises
    :class:`UserError` listing the problems (the same messages as :func:`check_source`).
    """
    located, problems = {}, list_problems(lists)
    for role, pairs in (("labeled", lists.labeled), ("unlabeled", lists.unlabeled or []),
                        ("val", lists.val)):
        located[role], missing = locate(source, pairs, with_masks=role != "unlabeled")
        problems += missing
    if not problems:
        pairs = [sample for role in ("labeled", "val") for sample in located[role]]
        with Progress(len(pairs), "data check before training", unit="pairs") as progress:
            for image, mask in pairs:
                problems += check_pair(source, image, mask, full_image=False)
                progress.update()
    if problems:
        raise UserError(_summary(source, problems))
    return located


def _summary(source: ListedSource, problems: list[Problem]) -> str:
    shown = "\n  ".join(str(p) for p in problems[:MAX_REPORTED])
    more = f"\n  ... and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
    shipped = source.split_dir.is_relative_to(SHIPPED_DIR)
    relative = source.split_dir.relative_to(source.root) if source.split_dir.is_relative_to(source.root) \
        else source.split_dir  # --split-dir is read relative to ROOT
    split_dir = "" if shipped else f" --split-dir {relative}"
    return (f"dataset {source.name!r} at {source.root}: {len(problems)} problem(s) with the split "
            f"lists or the files they name (a full report: ssseg data check {source.root} "
            f"--dataset {source.name}{split_dir}):\n  {shown}{more}")


def _lists_to_check(source: ListedSource,
                    split: str | None) -> tuple[list[Pair], list[Pair], list[Problem]]:
    """(pairs whose masks are needed, pairs needing only the image, problems of the lists
    themselves) for one split or all."""
    names = [split] if split is not None else source.split_names()
    if split is None and not names:
        raise UserError(f"{source.split_dir}: no split lists (<split>/labeled.txt or pool.txt, or "
                        "image-id lists <split>.txt)")
    with_masks, images_only, problems = {}, {}, {}
    for name in names:
        lists = source.lists(name)
        problems |= dict.fromkeys(list_problems(lists))  # pool.txt and val.txt serve every split
        for pair in [*lists.labeled, *lists.val]:
            with_masks.setdefault(pair.key, pair)
        for pair in lists.unlabeled or []:
            images_only.setdefault(pair.key, pair)
    labeled_images = {image for image, _ in with_masks}
    return (list(with_masks.values()),
            [p for p in images_only.values() if p.image not in labeled_images], list(problems))


@attrs.frozen
class CheckReport:
    """What ``ssseg data check`` found: the ``problems``, and how many image-mask ``pairs`` and
    mask-less ``images`` were checked."""

    problems: list[Problem]
    pairs: int
    images: int

    def missing_under(self) -> tuple[str, int] | None:
        """(folder, count) when most problems are missing files under one folder (a part of the
        dataset not installed), else None."""
        folders = [str(Path(p.file).parent) for p in self.problems if p.message.startswith("missing")]
        if not folders:
            return None
        top = max(set(folders), key=folders.count)
        return (top, folders.count(top)) if folders.count(top) * 2 > len(self.problems) else None


def check_source(source: ListedSource, split: str | None = None) -> CheckReport:
    """Every problem with the lists and files of ``split`` (all splits and the pool when None);
    reading the files shows progress (:mod:`ssseg.progress`)."""
    with_masks, images_only, problems = _lists_to_check(source, split)
    labeled, missing = locate(source, with_masks, with_masks=True)
    unlabeled, missing_images = locate(source, images_only, with_masks=False)
    problems += missing + missing_images
    samples = [*labeled, *unlabeled]
    with Progress(sum(1 + (mask is not None) for _, mask in samples), "data check: reading",
                  unit="files") as progress:
        for sample in samples:
            problems += sample_problems(source, sample)
            progress.update(1 + (sample[1] is not None))
    return CheckReport(problems, pairs=len(labeled), images=len(unlabeled))
