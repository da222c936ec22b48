"""The student's one training forward as an explicit object: which named parts are concatenated
in which order, which feature-perturbed copies follow them, and how the output rows split back."""

from __future__ import annotations

import attrs
import torch
from torch import Tensor

LABELED, WEAK = "labeled", "weak"  # the core's parts; views may not use these names


@attrs.frozen
class ForwardBatch:
    """Image ``parts`` (name, images) concatenated in order, then one copy of the ``WEAK`` part's
    rows per ``perturbed`` (name, dropout) entry, decoded from Dropout2d of its encoder features."""

    parts: tuple[tuple[str, Tensor], ...]
    perturbed: tuple[tuple[str, float], ...] = ()

    def images(self) -> Tensor:
        """The forward's input: every part's images, concatenated."""
        return torch.cat([images for _, images in self.parts])

    def rows(self, name: str) -> int:
        """How many rows part ``name`` has."""
        return dict(self.parts)[name].shape[0]

    def perturbation(self) -> tuple[int, int, tuple[float, ...]] | None:
        """``SegModel.forward``'s ``perturb`` argument: the WEAK part's row range and the dropouts."""
        if not self.perturbed:
            return None
        start = 0
        for name, images in self.parts:
            if name == WEAK:
                return start, start + images.shape[0], tuple(p for _, p in self.perturbed)
            start += images.shape[0]
        raise ValueError("feature views need the weak batch in the forward")

    def split(self, output: Tensor) -> dict[str, Tensor]:
        """The forward's output rows by part name (perturbed copies under their view's name)."""
        names = [name for name, _ in self.parts] + [name for name, _ in self.perturbed]
        sizes = [images.shape[0] for _, images in self.parts]
        if self.perturbed:
            sizes += [self.rows(WEAK)] * len(self.perturbed)
        return dict(zip(names, output.split(sizes), strict=True))
