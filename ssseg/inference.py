"""Python inference: load a trained model once, then predict images in a loop (docs/inference.md).

    from ssseg.inference import Segmenter

    seg = Segmenter.from_run("runs/quickstart", device="cpu")   # recipe.yaml and last.pt
    mask = seg.predict("photo.png")                             # [H, W] class indices

The model is built from the recipe as ``ssseg predict`` builds it: no trainer, no dataset (only
the class names and palette), the checkpoint read with ``torch.load(weights_only=True)``. It
predicts with the recipe's ``eval`` settings (whole image or sliding windows, ``eval.tta``) and
``run.precision``, through the same function as training's evaluations, ``ssseg eval`` and
``ssseg predict``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ssseg.data.io import read_image
from ssseg.engine.evaluate import predict_scores
from ssseg.engine.evaluate import probabilities as class_probabilities
from ssseg.engine.precision import autocast
from ssseg.errors import UserError
from ssseg.recipe.load import load_recipe
from ssseg.recipe.schema import Recipe
from ssseg.run_files import LAST, RECIPE
from ssseg.engine.evaluator import load_model

ImageLike = Tensor | Image.Image | np.ndarray | str | Path
VALID_IMAGES = ("a float tensor [3, H, W] or [B, 3, H, W] in [0, 1], a PIL image, a uint8 numpy "
                "array [H, W, 3], or an image file's path")


class Segmenter:
    """A trained model ready to predict: ``recipe`` (a :class:`~ssseg.recipe.schema.Recipe` or a
    recipe file, with ``overrides`` such as ``"eval.tta.flip=true"``) and its ``checkpoint``,
    the evaluated ``model`` (``student``, or a name ``eval_models`` gives, e.g. ``teacher``), on
    ``device`` (default: the recipe's ``run.device``); at most ``batch_size`` images per forward.
    Besides the properties: ``module`` (that model, in eval mode), ``model_name`` and ``run``
    (the built :class:`~ssseg.engine.run.Run`, whose ``data`` holds no dataset)."""

    def __init__(self, recipe: Recipe | str | Path, checkpoint: str | Path, *, model: str = "student",
                 device: str | torch.device | None = None, overrides: Sequence[str] = (),
                 batch_size: int = 8):
        if isinstance(recipe, Recipe):
            if overrides:
                raise UserError("overrides apply to a recipe file; change a Recipe object with "
                                "attrs.evolve instead")
        else:
            recipe = load_recipe(recipe, list(overrides))
        if not Path(checkpoint).is_file():
            raise UserError(f"checkpoint not found: {checkpoint}")
        if not (isinstance(batch_size, int) and batch_size > 0):
            raise UserError(f"batch_size={batch_size!r}: valid: an integer > 0")
        if device is not None:
            recipe = attrs.evolve(recipe, run=attrs.evolve(recipe.run, device=str(device)))
        with torch.random.fork_rng(devices=[]):  # building seeds torch; the caller's CPU RNG stays
            self.run, self.module = load_model(recipe, Path(checkpoint), model)
        self.model_name, self.batch_size = model, batch_size

    @classmethod
    def from_run(cls, folder: str | Path, checkpoint: str = LAST, **options: Any) -> Segmenter:
        """The model of a run folder: its ``recipe.yaml`` and ``checkpoint`` (a file name in the
        folder: ``last.pt``, ``best.pt``, ``iter_<N>.pt``); ``options`` as for :class:`Segmenter`."""
        folder = Path(folder)
        if not folder.is_dir():
            raise UserError(f"run folder not found: {folder}")
        if not (folder / checkpoint).is_file():
            found = sorted(p.name for p in folder.glob("*.pt"))
            raise UserError(f"{folder} has no checkpoint {checkpoint}; it has "
                            f"{', '.join(found) if found else 'none (did the run save one?)'}")
        return cls(folder / RECIPE, folder / checkpoint, **options)

    @property
    def recipe(self) -> Recipe:
        """The recipe the model was built from (its ``eval`` section decides how it predicts)."""
        return self.run.recipe

    @property
    def device(self) -> torch.device:
        """Where the model runs."""
        return self.run.device

    @property
    def class_names(self) -> tuple[str, ...]:
        """The name of each class index."""
        return self.run.data.class_names

    @property
    def palette(self) -> tuple[tuple[int, int, int], ...]:
        """The RGB colour of each class index, as ``ssseg predict`` draws the masks."""
        return self.run.data.palette

    def predict(self, images: ImageLike | Sequence[ImageLike], *, probabilities: bool = False) -> Any:
        """Class indices (int64, on the CPU) of ``images``: ``[H, W]`` for one image (a float
        tensor ``[3, H, W]`` in [0, 1], a PIL image, a uint8 array ``[H, W, 3]`` or a path),
        ``[B, H, W]`` for a tensor ``[B, 3, H, W]``, a list of masks for a list. Same-size images
        share forwards (``batch_size`` at a time). With ``probabilities``: ``(masks, probs)``,
        the class probabilities ``[..., C, H, W]`` beside each mask."""
        batch = isinstance(images, Tensor) and images.dim() == 4
        listed = isinstance(images, (list, tuple))
        if listed and not images:
            raise UserError(f"predict: an empty list; give {VALID_IMAGES}, or a list of them")
        items = list(images) if batch or listed else [images]
        masks, probs = self._predict([to_tensor(item, f"images[{i}]" if batch or listed else "image")
                                      for i, item in enumerate(items)], probabilities)

        def shaped(results: list[Tensor]) -> Any:  # as the images came: a batch, a list or one
            return torch.stack(results) if batch else results if listed else results[0]

        return (shaped(masks), shaped(probs)) if probabilities else shaped(masks)

    def _predict(self, images: list[Tensor], with_probs: bool) -> tuple[list[Tensor], list[Tensor]]:
        """Masks and (``with_probs``, else Nones) probabilities of ``[3, H, W]`` images, the
        images of one size batched."""
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            by_size.setdefault(tuple(image.shape), []).append(i)
        masks: list[Any] = [None] * len(images)
        probs: list[Any] = [None] * len(images)
        r = self.recipe
        for indices in by_size.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start: start + self.batch_size]
                x = torch.stack([images[i] for i in chunk]).to(self.device)
                with autocast(self.device, r.run.precision):
                    scores = predict_scores(self.module, x, r.eval, r.data.crop, self.run.data.num_classes)
                for n, i in enumerate(chunk):
                    masks[i] = scores[n].argmax(0).cpu()
                    if with_probs:
                        probs[i] = class_probabilities(scores[n: n + 1], r.eval)[0].cpu()
        return masks, probs


def to_tensor(image: ImageLike, name: str = "image") -> Tensor:
    """``image`` as a float32 ``[3, H, W]`` tensor in [0, 1] (8-bit images divided by 255, as
    ``ssseg predict`` reads files); anything else is a :class:`UserError` naming ``name``."""
    if isinstance(image, (str, Path)):
        return read_image(image).float() / 255
    if isinstance(image, Image.Image):
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).float() / 255
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise UserError(f"{name}: a numpy array of {image.dtype} {list(image.shape)}; valid: uint8 "
                            "[H, W, 3] (RGB), or a float tensor [3, H, W] in [0, 1]")
        return torch.from_numpy(image).permute(2, 0, 1).float() / 255
    if isinstance(image, Tensor):
        if image.dim() != 3 or image.shape[0] != 3 or not image.is_floating_point():
            raise UserError(f"{name}: a {image.dtype} tensor {list(image.shape)}; valid: a float tensor "
                            "[3, H, W] or [B, 3, H, W] (RGB, channels first) in [0, 1]")
        low, high = image.aminmax()
        if low < 0 or high > 1:
            raise UserError(f"{name}: values in [{low:.3g}, {high:.3g}]; valid: [0, 1] (divide 8-bit "
                            "images by 255)")
        return image.float()
    raise UserError(f"{name}: a {type(image).__name__}; valid: {VALID_IMAGES}")
