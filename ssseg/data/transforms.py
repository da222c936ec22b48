"""The weak (geometric) pipeline every training view goes through, as in UniMatch.

1. rescale by a factor drawn from U[scale] relative to the image's own size (aspect kept;
   image bilinear with antialiasing, mask nearest with pixel centres aligned to the image's,
   like PIL's NEAREST);
2. pad bottom and right up to the crop (image ``fill``: black by default, mask 255, ``valid``
   False);
3. random crop of ``crop`` x ``crop``;
4. horizontal flip with probability 0.5 when ``flip``.

Randomness: every draw takes an optional ``torch.Generator``; without one (what the datasets do)
it uses torch's global RNG, which ``DataLoader`` seeds per worker (and the training loop seeds the
loader), so workers never repeat each other's draws. Pass a generator for reproducible calls.
No mean/std normalisation here: the model normalises.
"""

from __future__ import annotations

import attrs
import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from ssseg.augment.draws import uniform
from ssseg.data.base import IGNORE_INDEX


# data.pad_color -> the padding colour in [0, 1]; iMAS pads with the ImageNet mean times 255
# cast to 8 bits (cv2 border value, then np.uint8): (123, 116, 103)
PAD_COLORS: dict[str, tuple[float, float, float]] = {
    "black": (0.0, 0.0, 0.0),
    "imagenet_mean": (123 / 255, 116 / 255, 103 / 255),
}


def _randint(hi_inclusive: int, generator: torch.Generator | None) -> int:
    return int(torch.randint(0, hi_inclusive + 1, (), generator=generator))


@attrs.frozen
class WeakPipeline:
    """Rescale, pad, crop and flip an image with its mask; see the module doc. ``fill``: the
    padding colour, one value per channel in [0, 1] (:data:`PAD_COLORS`)."""

    crop: int
    scale: tuple[float, float] = (0.5, 2.0)
    flip: bool = True
    fill: tuple[float, float, float] = PAD_COLORS["black"]

    def __call__(self, image: Tensor, mask: Tensor | None = None,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor | None, Tensor]:
        """Transform ``image`` (uint8 or float in [0, 1], ``[3, H, W]``) and ``mask`` (``[H, W]``
        class indices, or None for unlabeled images).

        Returns ``(image float32 [3, c, c] in [0, 1], mask int64 [c, c] or None, valid bool [c, c])``
        with ``c = crop``; ``valid`` is False on padding.
        """
        image = tv_tensors.Image(image)
        mask = tv_tensors.Mask(mask) if mask is not None else None
        h, w = image.shape[-2:]
        lo, hi = self.scale
        factor = lo + (hi - lo) * float(uniform(0.0, 1.0, (), generator))  # in double precision
        if factor != 1.0:
            h, w = max(1, round(h * factor)), max(1, round(w * factor))
            # antialiasing only matters when shrinking; torch's antialiased kernels break on
            # outputs one pixel wide, so those (never real images) go without
            image = F.resize(image, [h, w], antialias=factor < 1.0 and min(h, w) > 1)  # bilinear
            mask = (F.resize(mask, [h, w], interpolation=InterpolationMode.NEAREST_EXACT)
                    if mask is not None else None)
        pad_h, pad_w = max(self.crop - h, 0), max(self.crop - w, 0)
        valid = torch.ones(h, w, dtype=torch.bool)
        if pad_h or pad_w:
            padding = [0, 0, pad_w, pad_h]  # left, top, right, bottom
            fill = [round(255 * c) for c in self.fill] if image.dtype == torch.uint8 else list(self.fill)
            image = F.pad(image, padding, fill=fill)
            mask = F.pad(mask, padding, fill=IGNORE_INDEX) if mask is not None else None
            valid = torch.nn.functional.pad(valid, (0, pad_w, 0, pad_h), value=False)
        top = _randint(h + pad_h - self.crop, generator)
        left = _randint(w + pad_w - self.crop, generator)
        views = [F.crop(x, top, left, self.crop, self.crop) if x is not None else None
                 for x in (image, mask, valid)]
        if self.flip and float(torch.rand((), generator=generator)) < 0.5:
            views = [F.horizontal_flip(x) if x is not None else None for x in views]
        image, mask, valid = views
        image = F.to_dtype(image, torch.float32, scale=True).as_subclass(Tensor)
        mask = mask.as_subclass(Tensor).long() if mask is not None else None
        return image, mask, valid.as_subclass(Tensor)
