"""Reading dataset files: RGB images and class-index masks, with one error type for a file that
cannot be used. Datasets, the data checker and prediction all read through these functions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ssseg.errors import UserError

INDEX_MODES = ("L", "P")
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # 16-bit (and 32-bit integer) single-channel


class BadFile(UserError):
    """A dataset file that cannot be used; ``path`` and ``reason`` make up the message."""

    def __init__(self, path: str | Path, reason: str = ""):
        # one-argument form: DataLoader re-raises worker errors as ``type(err)(message)``
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}" if reason else str(path))


def read_image(path: str | Path) -> torch.Tensor:
    """An RGB image as uint8 ``[3, H, W]`` (grey and palette images are converted; a 16-bit grey
    image is scaled to 8 bits, round(v / 257), so its grey levels survive)."""
    try:
        with Image.open(path) as img:
            if img.mode in WIDE_MODES:
                wide = np.asarray(img, dtype=np.int64)
                if wide.min() < 0 or wide.max() > 65535:
                    raise BadFile(path, f"image values {wide.min()}..{wide.max()} do not fit 16 bits; "
                                        "save it as an 8- or 16-bit PNG")
                grey = np.round(wide / 257).astype(np.uint8)
                array = np.repeat(grey[..., None], 3, axis=2)
            else:
                array = np.array(img.convert("RGB"))
    except (OSError, ValueError) as err:
        raise BadFile(path, f"unreadable image ({err})") from None
    return torch.from_numpy(array).permute(2, 0, 1)


def image_header(path: str | Path) -> tuple[tuple[int, int], str]:
    """((width, height), mode) of an image from its header, without decoding its pixels."""
    try:
        with Image.open(path) as img:
            return img.size, img.mode
    except (OSError, ValueError) as err:
        raise BadFile(path, f"unreadable image ({err})") from None


def read_index_mask(path: str | Path) -> np.ndarray:
    """A mask of class indices, uint8 ``[H, W]``, from a single-channel or palette image.

    A palette ("P") PNG, such as VOC's ``SegmentationClass``, reads as its indices, never as
    colours (255, the border, stays 255). Colour masks are rejected.
    """
    try:
        with Image.open(path) as img:
            if img.mode in WIDE_MODES:
                wide = np.asarray(img, dtype=np.int64)
                if wide.min() < 0 or wide.max() > 255:
                    raise BadFile(path, f"16-bit mask with values up to {wide.max()}; masks hold class "
                                        "indices 0-254 and 255 (ignore): save it as an 8-bit PNG")
                return wide.astype(np.uint8)
            if img.mode not in INDEX_MODES:
                raise BadFile(path, f"mask is a colour image (mode {img.mode!r}); masks must hold "
                                    "class indices: a single-channel ('L') or palette ('P') PNG")
            return np.array(img, dtype=np.uint8)
    except OSError as err:
        raise BadFile(path, f"unreadable mask ({err})") from None
