"""Split lists: reading and writing them, the shipped standard splits, and a split generator.

A split list (the UniMatch format) holds one ``<image path> <mask path>`` per line, both relative
to the dataset root and separated by one space; blank lines are ignored and the last line may lack
its newline. An unlabeled list may give the image path alone.

A split directory of pair lists holds::

    pool.txt               every training pair (the pool the splits are drawn from)
    val.txt                the validation pairs
    <split>/labeled.txt    the labeled pairs of one split
    <split>/unlabeled.txt  optional: without it, unlabeled = pool - labeled

A split directory of **image-id lists** (the VOC devkit's ``ImageSets/Segmentation``) holds one
image id per line in ``<name>.txt`` files instead; a dataset with an official layout places each id
(an :class:`IdLayout`: :mod:`ssseg.data.voc`, :mod:`ssseg.data.cityscapes`)::

    <split>.txt            the labeled ids of split <split> (unlabeled = pool - labeled)
    val.txt                optional: without it, the val images of the dataset's tree
    pool.txt               optional: without it, the training images of the dataset's tree
    trainval.txt           ignored: the devkit's train + val, not a split

A directory holds id lists when it has ``*.txt`` lists but no ``<split>/labeled.txt``, and the
first entry of its ``pool.txt`` and ``val.txt`` (where present) is one field.

The standard VOC and Cityscapes splits ship in this compact form (``ssseg/data/standard_splits``): in every
one of them the unlabeled list is exactly the pool minus the labeled list, so only the labeled
lists are stored. The split ``all`` labels the whole pool (no unlabeled set).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Protocol, Sequence

import attrs
import numpy as np

from ssseg.errors import UserError

SHIPPED_DIR = Path(__file__).parent / "standard_splits"
POOL_FILE, VAL_FILE = "pool.txt", "val.txt"
LABELED_FILE, UNLABELED_FILE = "labeled.txt", "unlabeled.txt"
ALL = "all"
NOT_ID_SPLITS = (POOL_FILE, VAL_FILE, "trainval.txt")  # id lists that are not splits


class Pair(NamedTuple):
    """One list entry: image and mask paths relative to the root, and ``where`` = ``file:line``."""

    image: str
    mask: str | None
    where: str

    @property
    def key(self) -> tuple[str, str | None]:
        """The entry without its location, for comparing lists."""
        return self.image, self.mask


@attrs.frozen
class SplitLists:
    """The pairs of one split: labeled, unlabeled (None for ``all``) and val. ``files`` maps a
    role to the list file it was read from (``unlabeled`` only when read from its own file)."""

    labeled: list[Pair]
    unlabeled: list[Pair] | None
    val: list[Pair]
    files: dict[str, Path] = attrs.field(factory=dict)


def parse_list(text: str, source: str) -> list[Pair]:
    """Parse split-list text; a line with no or more than two fields raises :class:`UserError`
    naming ``source`` and the line."""
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) > 2:
            raise UserError(f"{source}:{number}: expected '<image path> <mask path>' "
                            f"(paths without spaces), got {len(fields)} fields: {line.strip()!r}")
        pairs.append(Pair(fields[0], fields[1] if len(fields) == 2 else None, f"{source}:{number}"))
    return pairs


class IdLayout(Protocol):
    """How a dataset's official layout names its files after an image id."""

    def pair(self, image_id: str, where: str) -> Pair:
        """The image and mask paths (relative to the root) of ``image_id``, listed at ``where``."""

    def tree(self, role: str) -> list[Pair]:
        """The ``pool`` or ``val`` pairs the dataset's tree holds (for an id directory without
        that list); raises :class:`UserError` when it holds none."""


def _read_text(path: Path) -> str:
    """A split list's text; a byte-order mark at its start (Windows editors write one) is dropped."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise UserError(f"{path}: cannot read split list ({err.strerror or err})") from None


def read_list(path: str | Path, *, masks: bool = True) -> list[Pair]:
    """Read a split list; with ``masks`` every line must name a mask too."""
    path = Path(path)
    pairs = parse_list(_read_text(path), str(path))
    if masks:
        for pair in pairs:
            if pair.mask is None:
                raise UserError(f"{pair.where}: expected '<image path> <mask path>', "
                                f"got the image path alone")
    return pairs


def read_ids(path: str | Path, layout: IdLayout) -> list[Pair]:
    """Read a list of image ids (one per line, blank lines ignored) as the pairs ``layout``
    places them at; a line that is not one id raises :class:`UserError` naming file and line."""
    pairs = []
    for number, line in enumerate(_read_text(Path(path)).splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{number}"
        if len(fields) > 1 or any(c in fields[0] for c in "/\\."):
            raise UserError(f"{where}: expected one image id per line (a file name without folder "
                            f"or extension, e.g. 2007_000032), got {line.strip()!r}")
        pairs.append(layout.pair(fields[0], where))
    return pairs


def write_list(path: str | Path, pairs: Sequence[Pair]) -> None:
    """Write pairs as a split list (one ``image mask`` per line, newline-terminated)."""
    lines = [p.image if p.mask is None else f"{p.image} {p.mask}" for p in pairs]
    Path(path).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def subtract(pool: Sequence[Pair], labeled: Sequence[Pair]) -> list[Pair]:
    """The pool entries not in ``labeled``, in pool order."""
    taken = {p.key for p in labeled}
    return [p for p in pool if p.key not in taken]


def repeats(pairs: Sequence[Pair]) -> list[tuple[Pair, Pair]]:
    """(entry, its first occurrence) for every image listed again in ``pairs``."""
    first: dict[str, Pair] = {}
    found = []
    for pair in pairs:
        if pair.image in first:
            found.append((pair, first[pair.image]))
        first.setdefault(pair.image, pair)
    return found


def holds_ids(split_dir: str | Path) -> bool:
    """Whether ``split_dir`` holds image-id lists rather than pair lists (see the module doc)."""
    split_dir = Path(split_dir)
    if not any(split_dir.glob("*.txt")) or any(split_dir.glob(f"*/{LABELED_FILE}")):
        return False
    return not any(len(_first_entry(split_dir / name)) > 1 for name in (POOL_FILE, VAL_FILE)
                   if (split_dir / name).is_file())


def _first_entry(path: Path) -> list[str]:
    with open(path, encoding="utf-8-sig", errors="replace") as file:
        return next((fields for fields in map(str.split, file) if fields), [])


def split_names(split_dir: str | Path) -> list[str]:
    """The split names a directory offers: subdirectories with a labeled list (id lists: the
    lists besides val, pool and trainval), and ``all`` if it has a pool (id lists: always)."""
    split_dir = Path(split_dir)
    if holds_ids(split_dir):
        return sorted(f.stem for f in split_dir.glob("*.txt") if f.name not in NOT_ID_SPLITS) + [ALL]
    names = sorted(d.name for d in split_dir.iterdir() if (d / LABELED_FILE).is_file()) \
        if split_dir.is_dir() else []
    return names + [ALL] if (split_dir / POOL_FILE).is_file() else names


def load_split(split_dir: str | Path, split: str, layout: IdLayout | None = None) -> SplitLists:
    """The labeled, unlabeled and val pairs of ``split`` in ``split_dir`` (see the module doc);
    ``layout`` places the ids of an id directory."""
    split_dir = _existing(split_dir)
    valid = split_names(split_dir)
    if split not in valid:
        meant = [name for name in valid if name.replace("_", "") == split]
        hint = (f" (YAML reads an unquoted {meant[0]} as the number {split}: write "
                f"split: \"{meant[0]}\")" if meant else "")
        raise UserError(f"data.split: unknown split {split!r} in {split_dir}; "
                        f"valid: {', '.join(valid) or '(none: no <split>/labeled.txt there)'}{hint}")
    if holds_ids(split_dir):
        return _load_id_split(split_dir, split, _placing(layout, split_dir))
    files = {"labeled": split_dir / (POOL_FILE if split == ALL else f"{split}/{LABELED_FILE}"),
             "val": split_dir / VAL_FILE}
    val, labeled = read_list(files["val"]), read_list(files["labeled"])
    if split == ALL:
        return SplitLists(labeled=labeled, unlabeled=None, val=val, files=files)
    unlabeled_file = split_dir / split / UNLABELED_FILE
    if unlabeled_file.is_file():
        files["unlabeled"] = unlabeled_file
        unlabeled = read_list(unlabeled_file, masks=False)
    else:
        unlabeled = subtract(read_list(split_dir / POOL_FILE), labeled)
    return SplitLists(labeled=labeled, unlabeled=unlabeled or None, val=val, files=files)


def load_val(split_dir: str | Path, layout: IdLayout | None = None) -> SplitLists:
    """Only the val pairs of ``split_dir`` (all that evaluation reads)."""
    split_dir = _existing(split_dir)
    if holds_ids(split_dir):
        files: dict[str, Path] = {}
        val = _ids_or_tree(split_dir, VAL_FILE, "val", _placing(layout, split_dir), files)
        return SplitLists(labeled=[], unlabeled=None, val=val, files=files)
    file = split_dir / VAL_FILE
    return SplitLists(labeled=[], unlabeled=None, val=read_list(file), files={"val": file})


def id_pool_and_val(split_dir: Path | None, layout: IdLayout) -> tuple[list[Pair], list[Pair], dict[str, Path]]:
    """(pool, val, the list files read) of an id directory, or of the dataset's tree alone when
    ``split_dir`` is None: ``pool.txt`` and ``val.txt`` where present, else the tree's (its
    pool without the val images)."""
    files: dict[str, Path] = {}
    val = _ids_or_tree(split_dir, VAL_FILE, "val", layout, files)
    if split_dir is not None and (split_dir / POOL_FILE).is_file():
        return read_ids(split_dir / POOL_FILE, layout), val, files | {"pool": split_dir / POOL_FILE}
    val_images = {p.image for p in val}
    return [p for p in layout.tree("pool") if p.image not in val_images], val, files


def _ids_or_tree(split_dir: Path | None, name: str, role: str, layout: IdLayout,
                 files: dict[str, Path]) -> list[Pair]:
    if split_dir is not None and (split_dir / name).is_file():
        files[role] = split_dir / name
        return read_ids(files[role], layout)
    return layout.tree(role)


def _load_id_split(split_dir: Path, split: str, layout: IdLayout) -> SplitLists:
    pool, val, read = id_pool_and_val(split_dir, layout)
    files = {"val": read["val"]} if "val" in read else {}
    if split == ALL:
        return SplitLists(labeled=pool, unlabeled=None, val=val,
                          files=files | ({"labeled": read["pool"]} if "pool" in read else {}))
    files["labeled"] = split_dir / f"{split}.txt"
    labeled = read_ids(files["labeled"], layout)
    return SplitLists(labeled=labeled, unlabeled=subtract(pool, labeled) or None, val=val, files=files)


def _placing(layout: IdLayout | None, split_dir: Path) -> IdLayout:
    if layout is None:
        raise UserError(f"{split_dir} holds lists of image ids, and this dataset has no official "
                        "layout to place them in (pascal_voc, cityscapes and mmseg have): give lists of "
                        "'<image path> <mask path>' (pool.txt, val.txt, <split>/labeled.txt)")
    return layout


def write_split_dir(out: Path, pool: Sequence[Pair], val: Sequence[Pair],
                    labeled: dict[str, Sequence[Pair]]) -> None:
    """Write a pair-list split directory: ``pool.txt``, ``val.txt``, and per split
    ``<name>/labeled.txt`` and ``<name>/unlabeled.txt`` (the pool without the labeled pairs)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_list(out / POOL_FILE, pool)
        write_list(out / VAL_FILE, val)
        for name, pairs in labeled.items():
            (out / name).mkdir(exist_ok=True)
            write_list(out / name / LABELED_FILE, pairs)
            write_list(out / name / UNLABELED_FILE, subtract(pool, pairs))
    except OSError as err:
        raise UserError(f"{out}: cannot write the split directory ({err.strerror or err})") from None


def _existing(split_dir: str | Path) -> Path:
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise UserError(f"data.options.split_dir: {split_dir} is not a directory")
    return split_dir


def parse_amount(text: str) -> int | float:
    """``"662"`` -> 662 images; ``"0.125"`` or ``"1/8"`` -> the fraction 0.125."""
    try:
        if "/" in text:
            num, den = text.split("/")
            return int(num) / int(den)
        return float(text) if any(c in text for c in ".eE") else int(text)
    except (ValueError, ZeroDivisionError):
        raise UserError(f"--labeled: {text!r} is neither a count (662) nor a fraction "
                        "(0.125 or 1/8)") from None


def labeled_count(amount: int | float, total: int) -> int:
    """The number of labeled images ``amount`` (a count, or a fraction in (0, 1)) asks for."""
    if isinstance(amount, float):
        if not 0.0 < amount < 1.0:
            raise UserError(f"labeled fraction {amount:g} is out of range; valid: (0, 1)")
        return max(1, round(amount * total))
    if not 1 <= amount <= total:
        raise UserError(f"labeled count {amount} is out of range; valid: [1, {total}] (the pool size)")
    return amount


def generate_split(pool: Sequence[Pair], amount: int | float, seed: int,
                   presence: np.ndarray | None = None) -> tuple[list[Pair], list[Pair]]:
    """Draw a labeled subset of ``pool``; returns ``(labeled, unlabeled)``, both in pool order.

    ``amount`` is a count or a fraction in (0, 1). The draw is a permutation seeded by ``seed``.
    With ``presence`` (bool ``[len(pool), classes]``: which classes each image shows) the draw is
    stratified: every image joins the group of the rarest class it shows (images showing no class
    form one more group), the labeled count is shared among the groups in proportion to their sizes
    (largest remainders), and each group gives its first images in the permutation.
    """
    n = len(pool)
    k = labeled_count(amount, n)
    order = np.random.default_rng(seed).permutation(n)
    if presence is None:
        chosen = order[:k]
    else:
        group = rarest_present_class(np.asarray(presence, dtype=bool))[order]
        groups, sizes = np.unique(group, return_counts=True)
        quota = apportion(sizes, k)
        chosen = np.concatenate([order[group == g][:q] for g, q in zip(groups, quota)])
    is_labeled = np.zeros(n, dtype=bool)
    is_labeled[chosen] = True
    return ([p for p, lab in zip(pool, is_labeled) if lab],
            [p for p, lab in zip(pool, is_labeled) if not lab])


def rarest_present_class(presence: np.ndarray) -> np.ndarray:
    """Per image, the class it shows that the fewest images show (``-1`` if it shows none)."""
    frequency = presence.sum(axis=0)
    cost = np.where(presence, frequency[None, :], np.iinfo(np.int64).max)
    return np.where(presence.any(axis=1), cost.argmin(axis=1), -1)


def apportion(sizes: np.ndarray, k: int) -> np.ndarray:
    """Split ``k`` among groups in proportion to ``sizes`` by largest remainders (sums to ``k``)."""
    exact = sizes * (k / sizes.sum())
    quota = np.floor(exact).astype(np.int64)
    short = k - int(quota.sum())
    quota[np.argsort(-(exact - quota), kind="stable")[:short]] += 1
    return quota


def shipped_split_dir(name: str) -> Path:
    """The directory of a shipped standard split family (``pascal`` or ``cityscapes``)."""
    return SHIPPED_DIR / name

