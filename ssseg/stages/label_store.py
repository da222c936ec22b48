"""Pseudo-label sets on disk: one PNG label map per unlabeled image, ``<set folder>/<id>.png``
(8-bit, class indices, 255 = ignore), each written atomically (temporary file, then rename) so a
killed pass leaves only whole files; a rerun writes only the missing ids, and leftover temporary
files are removed. PNG holds pixels only: reading one can never run code."""

from __future__ import annotations

import io
from pathlib import Path
import torch
from PIL import Image
from torch import Tensor

from ssseg.data.io import BadFile, read_index_mask
from ssseg.errors import UserError
from ssseg.files import TMP_SUFFIX, write_atomically

SUFFIX = ".png"


def label_path(folder: Path, image_id: str) -> Path:
    """The file of image ``image_id``'s pseudo-label in set ``folder``."""
    return folder / f"{image_id}{SUFFIX}"


def written_ids(folder: Path) -> set[str]:
    """The ids whose pseudo-label file is complete (temporary leftovers are not)."""
    return {p.name[: -len(SUFFIX)] for p in folder.glob(f"*{SUFFIX}")} if folder.is_dir() else set()


def write_label(folder: Path, image_id: str, labels: Tensor) -> None:
    """Write one label map ``[H,W]`` (class indices 0-255) as ``<id>.png``, atomically."""
    if labels.min() < 0 or labels.max() > 255:
        raise ValueError(f"pseudo-label of {image_id!r} holds values outside 0-255")
    buffer = io.BytesIO()
    Image.fromarray(labels.to("cpu", torch.uint8).numpy(), mode="L").save(buffer, format="PNG")
    folder.mkdir(parents=True, exist_ok=True)
    write_atomically(label_path(folder, image_id), lambda file: file.write(buffer.getvalue()))


def remove_leftovers(folder: Path) -> None:
    """Delete temporary files a killed write left in ``folder``."""
    for tmp in folder.glob(f"*{TMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)


def read_label(folder: Path, image_id: str, size: tuple[int, int] | None = None) -> Tensor:
    """Image ``image_id``'s pseudo-label, int64 ``[H,W]``; a missing or damaged file, or one of
    another size than the image's ``size`` (H, W), is a :class:`UserError` naming it."""
    path = label_path(folder, image_id)
    if not path.is_file():
        raise UserError(f"pseudo-label file missing: {path}; the set holds {len(written_ids(folder))} "
                        "labels; delete the stage's done.json to run its pass again")
    try:
        labels = torch.from_numpy(read_index_mask(path)).long()
    except BadFile as err:
        raise UserError(f"damaged pseudo-label file {path} ({err.reason}); delete it and run the same "
                        "command again to rewrite it (and the writing stage's done.json)") from None
    if size is not None and tuple(labels.shape) != tuple(size):
        raise UserError(f"pseudo-label file {path} is {labels.shape[0]}x{labels.shape[1]}, but its image "
                        f"is {size[0]}x{size[1]}; delete it and run the same command again")
    return labels
