"""The embedded default dataset: small procedurally generated "shapes" scenes.

Every image is a textured, low-saturation background (smooth noise, oriented stripes, pixel noise)
with 2-4 overlapping objects in one saturated colour. An object's class is its **shape** (disc,
cross, ring); the objects of one image show distinct shapes in the same random hue (per-object
brightness differs), and size, rotation and position are random, so colour says "object or not"
but never "which object". Later objects occlude earlier ones (the mask shows the visible class;
a ring's hole and the space between a cross's arms are background).

The data are generated in memory (vectorised numpy, 1-3 s for the defaults), seeded by
``options.seed`` (the *dataset* seed, independent of the recipe seed, so every run of every recipe
sees the same images), and the labeled subset is fixed by ``options.split_seed``: the first ``k`` of
one seeded permutation, so subsets are nested (the 20 labeled images are among the 50) and runs
at the same budget share their labeled images. ``unlabeled = train - labeled``.

Recipe::

    data: {dataset: embedded, split: "100", crop: 32, batch_labeled: 8, batch_unlabeled: 8,
           options: {size: 32, train: 2000, val: 500, seed: 0, split_seed: 0}}

``split`` is the number of labeled training images, or ``"all"`` (no unlabeled set). ``crop``
smaller than ``size`` random-crops the training views; larger pads them (image in
``data.pad_color``, mask 255, ``valid`` False on the padding). ``flip`` flips training views
horizontally at random. The val set is always at full size. ``root`` and ``scale`` are not used
(nothing is read from disk; the objects are already drawn at many sizes, and a 0.5x rescale of a
32 px image would erase shapes).
See docs/embedded-dataset.md for the design and the measured label-budget gap.
"""

from __future__ import annotations

import functools

import attrs
import numpy as np
import torch
from torch.utils.data import Dataset

from ssseg.data.base import IGNORE_INDEX, DataBundle
from ssseg.data.transforms import PAD_COLORS
from ssseg.recipe.structure import ConfigError, structure
from ssseg.recipe.validators import in_range, positive

CLASS_NAMES = ("background", "disc", "cross", "ring")
PALETTE = ((0, 0, 0), (230, 25, 75), (0, 130, 200), (245, 130, 48))
NUM_CLASSES = len(CLASS_NAMES)
RADIUS = (0.17, 0.28)  # object radius range, as a fraction of the image side


@attrs.frozen
class EmbeddedOptions:
    """``data.options`` for ``dataset: embedded``."""

    size: int = attrs.field(default=32, validator=in_range(16, 512))  # image side, pixels
    train: int = attrs.field(default=2000, validator=positive)  # training images (labeled + unlabeled)
    val: int = attrs.field(default=500, validator=in_range(NUM_CLASSES - 1))  # validation images
    seed: int = attrs.field(default=0, validator=in_range(0))  # dataset seed (images)
    split_seed: int = attrs.field(default=0, validator=in_range(0))  # which images are labeled
    min_objects: int = attrs.field(default=2, validator=in_range(1, 8))
    max_objects: int = attrs.field(default=4, validator=in_range(1, 8))
    noise: float = attrs.field(default=0.04, validator=in_range(0, 0.5))  # per-pixel Gaussian sigma

    def __attrs_post_init__(self) -> None:
        if self.max_objects < self.min_objects:
            raise ConfigError("data.options.max_objects",
                              f"{self.max_objects} must be >= min_objects ({self.min_objects})")


# ----------------------------------------------------------------------------------- generator


def _shape_masks(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-masks of every shape class at local coordinates (u, v) in object radii.

    Returns bool ``[NUM_CLASSES - 1, *u.shape]`` in class order 1..3 (disc, cross, ring). Areas
    are matched (disc 2.27 r^2, cross 2.04 r^2, ring 2.19 r^2), so size says nothing about the class.
    """
    r2 = u * u + v * v
    au, av = np.abs(u), np.abs(v)
    disc = r2 <= 0.85**2
    cross = ((au <= 0.3) & (av <= 1.0)) | ((av <= 0.3) & (au <= 1.0))
    ring = (r2 <= 1.0) & (r2 >= 0.55**2)
    return np.stack([disc, cross, ring])


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV (all in [0, 1]) to RGB ``[..., 3]``."""
    k = (np.array([5.0, 3.0, 1.0]) + h[..., None] * 6) % 6
    return v[..., None] - v[..., None] * s[..., None] * np.clip(np.minimum(k, 4 - k), 0, 1)


def _smooth_noise(rng: np.random.Generator, n: int, ch: int, cells: int, size: int) -> np.ndarray:
    """Low-frequency noise ``[n, ch, size, size]`` (bicubic upsampling of a random grid), ~N(0, 1)."""
    grid = torch.from_numpy(rng.standard_normal((n, ch, cells, cells)).astype(np.float32))
    up = torch.nn.functional.interpolate(grid, size=(size, size), mode="bicubic", align_corners=False)
    return up.numpy()


def generate(n: int, size: int, seed: int, stream: int, *, min_objects: int = 2,
             max_objects: int = 4, noise: float = 0.04) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``n`` scenes: images uint8 ``[n, 3, size, size]`` and masks uint8 ``[n, size, size]``.

    ``stream`` separates independent sets drawn from one dataset seed (0 = train, 1 = val).
    The top (last drawn) object of image ``i`` has class ``i % 3 + 1``, so every set of at least 3
    consecutive images contains every class, visible.
    """
    rng = np.random.default_rng([seed, stream])
    k = max_objects
    # --- background: a low-saturation base colour, a smooth (mostly luminance) texture, and thin
    # oriented stripes. Objects are saturated, so "object or not" is easy; "which object" is shape.
    grey = rng.uniform(0.25, 0.75, (n, 1, 1, 1))
    base = (grey + rng.uniform(-0.05, 0.05, (n, 3, 1, 1))).astype(np.float32)
    tex = 0.10 * _smooth_noise(rng, n, 1, 5, size) + 0.03 * _smooth_noise(rng, n, 3, 5, size)
    yy, xx = np.meshgrid(np.arange(size, dtype=np.float32) + 0.5,
                         np.arange(size, dtype=np.float32) + 0.5, indexing="ij")
    theta = rng.uniform(0, np.pi, (n, 1, 1))
    period = rng.uniform(3.0, 8.0, (n, 1, 1))
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    stripes = np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * 2 * np.pi / period + phase)
    stripe_amp = rng.uniform(0.0, 0.08, (n, 1, 1))
    image = base + tex + (stripe_amp * stripes)[:, None].astype(np.float32)
    mask = np.zeros((n, size, size), dtype=np.uint8)

    # --- objects: slot 0 is drawn first; slot k-1 (always present) is drawn last, on top
    count = rng.integers(min_objects, max_objects + 1, n)
    present = np.arange(k)[None, :] >= (k - count)[:, None]  # [n, k], the last `count` slots
    # classes: each image's slots take distinct classes (a random permutation, repeated if there
    # are more slots than classes), so one image shows several shapes in one colour; the top slot
    # has class i % 3 + 1, so every set of >= 3 images shows every class
    nfg = NUM_CLASSES - 1
    perm = np.argsort(rng.uniform(size=(n, nfg)), axis=1) + 1
    perm = np.tile(perm, (1, -(-k // nfg)))[:, :k]
    top = np.arange(n) % nfg + 1
    at = np.argmax(perm == top[:, None], axis=1)
    rows = np.arange(n)
    perm[rows, at] = perm[rows, k - 1]
    perm[:, k - 1] = top
    cls = perm
    radius = rng.uniform(RADIUS[0], RADIUS[1], (n, k)) * size
    margin = 0.5 * radius
    cx = margin + rng.uniform(0, 1, (n, k)) * (size - 2 * margin)
    cy = margin + rng.uniform(0, 1, (n, k)) * (size - 2 * margin)
    ang = rng.uniform(0, 2 * np.pi, (n, k))
    # colours: one random saturated hue per image shared by all its objects (small per-object hue
    # jitter, random brightness), so within an image colour never tells the classes apart
    hue = (rng.uniform(0, 1, (n, 1)) + rng.uniform(-0.04, 0.04, (n, k))) % 1.0
    colour = _hsv_to_rgb(hue, rng.uniform(0.6, 1.0, (n, k)), rng.uniform(0.45, 1.0, (n, k)))
    shade = rng.uniform(-0.06, 0.06, (n, k, 3))  # a mild linear shading gradient across the object
    for j in range(k):
        dx = (xx[None] - cx[:, j, None, None]) / radius[:, j, None, None]
        dy = (yy[None] - cy[:, j, None, None]) / radius[:, j, None, None]
        c, s = np.cos(ang[:, j])[:, None, None], np.sin(ang[:, j])[:, None, None]
        u, v = c * dx + s * dy, -s * dx + c * dy
        inside = _shape_masks(u, v)  # [NUM_CLASSES - 1, n, H, W]
        sel = inside[cls[:, j] - 1, np.arange(n)] & present[:, j, None, None]  # [n, H, W]
        fill = colour[:, j, :, None, None] + shade[:, j, :, None, None] * u[:, None]
        image = np.where(sel[:, None], fill.astype(np.float32), image)
        mask = np.where(sel, cls[:, j, None, None].astype(np.uint8), mask)
    image = image + noise * rng.standard_normal(image.shape).astype(np.float32)
    image = np.clip(image, 0.0, 1.0)
    return np.round(image * 255).astype(np.uint8), mask


@functools.lru_cache(maxsize=8)
def _cached(n: int, size: int, seed: int, stream: int, min_objects: int, max_objects: int,
            noise: float) -> tuple[torch.Tensor, torch.Tensor]:
    img, msk = generate(n, size, seed, stream, min_objects=min_objects, max_objects=max_objects,
                        noise=noise)
    return torch.from_numpy(img), torch.from_numpy(msk)


# ----------------------------------------------------------------------------------- datasets


def _weak(image: torch.Tensor, mask: torch.Tensor, crop: int, flip: bool,
          fill: tuple[float, float, float] = PAD_COLORS["black"]):
    """Random crop (or pad to) ``crop`` and random horizontal flip; uses torch's global RNG."""
    _, h, w = image.shape
    valid = torch.ones(h, w, dtype=torch.bool)
    if crop > h or crop > w:  # pad bottom/right: image ``fill``, mask ignore, not valid
        ph, pw = max(crop - h, 0), max(crop - w, 0)
        image = torch.nn.functional.pad(image, (0, pw, 0, ph), value=0.0)
        color = torch.tensor(fill, dtype=image.dtype).view(3, 1, 1)
        image[:, h:, :] = color
        image[:, :, w:] = color
        mask = torch.nn.functional.pad(mask, (0, pw, 0, ph), value=IGNORE_INDEX)
        valid = torch.nn.functional.pad(valid, (0, pw, 0, ph), value=False)
        _, h, w = image.shape
    if crop < h or crop < w:
        top = int(torch.randint(0, h - crop + 1, ()))
        left = int(torch.randint(0, w - crop + 1, ()))
        image = image[:, top:top + crop, left:left + crop]
        mask = mask[top:top + crop, left:left + crop]
        valid = valid[top:top + crop, left:left + crop]
    if flip and bool(torch.rand(()) < 0.5):
        image, mask, valid = image.flip(-1), mask.flip(-1), valid.flip(-1)
    return image, mask, valid


class EmbeddedDataset(Dataset):
    """One role (``labeled``, ``unlabeled`` or ``val``) over a subset of generated images.

    ``images`` uint8 ``[N, 3, H, W]``, ``masks`` uint8 ``[N, H, W]``, ``indices`` the rows used.
    :meth:`target` gives the hidden ground truth of a sample (for benchmarks that measure
    pseudo-label accuracy on the unlabeled set); training code must not use it.
    """

    def __init__(self, images: torch.Tensor, masks: torch.Tensor, indices: torch.Tensor,
                 role: str, crop: int | None = None, flip: bool = False, prefix: str = "img",
                 fill: tuple[float, float, float] = PAD_COLORS["black"]):
        self.images, self.masks, self.indices = images, masks, indices
        self.role, self.crop, self.flip, self.prefix, self.fill = role, crop, flip, prefix, fill

    def __len__(self) -> int:
        return len(self.indices)

    def target(self, i: int) -> torch.Tensor:
        """The full-size ground-truth mask of sample ``i`` (int64), for every role."""
        return self.masks[self.indices[i]].long()

    def image_id(self, i: int) -> str:
        """The identity of sample ``i``'s image (a file-name-safe string, unique in the dataset)."""
        return f"{self.prefix}_{int(self.indices[i]):05d}"

    def full_image(self, i: int) -> torch.Tensor:
        """Sample ``i``'s image at its own size, float ``[3,H,W]`` in [0, 1], not augmented."""
        return self.images[int(self.indices[i])].float().div_(255.0)

    def weak_pair(self, i: int, mask: torch.Tensor) -> dict:
        """Sample ``i``'s image with ``mask`` (``[H,W]``, e.g. a stored pseudo-label) through the
        weak pipeline: ``{"image", "mask"}`` like a labeled sample (padding 255)."""
        image, mask, _ = _weak(self.full_image(i), mask, self.crop or mask.shape[-1], self.flip, self.fill)
        return {"image": image, "mask": mask}

    def __getitem__(self, i: int) -> dict:
        row = int(self.indices[i])
        image = self.images[row].float().div_(255.0)
        mask = self.masks[row].long()
        if self.role == "val":
            return {"image": image, "mask": mask, "name": f"{self.prefix}_{row:05d}"}
        image, mask, valid = _weak(image, mask, self.crop or image.shape[-1], self.flip, self.fill)
        if self.role == "labeled":
            return {"image": image, "mask": mask}
        return {"image": image, "valid": valid}


def labeled_indices(train: int, split: str, split_seed: int) -> torch.Tensor:
    """The labeled rows for ``split``: the first ``k`` of a permutation seeded by ``split_seed``."""
    if split == "all":
        return torch.arange(train)
    try:
        k = int(split)
    except (TypeError, ValueError):
        raise ConfigError("data.split", f"{split!r} is not a number of labeled images or 'all'") from None
    if not 1 <= k <= train:
        raise ConfigError("data.split", f"{k} labeled images is out of range; valid: [1, {train}] "
                                        "(data.options.train) or 'all'")
    perm = np.random.default_rng([split_seed, 7]).permutation(train)
    return torch.from_numpy(np.sort(perm[:k]))


def build_embedded(cfg, needs: str = "train") -> DataBundle:
    """Build the embedded dataset's :class:`DataBundle` from a ``DataConfig``, generating only
    the images ``needs`` asks for (``train``: all, ``val``: the val set, ``classes``: none)."""
    opt = structure(EmbeddedOptions, dict(cfg.options or {}), "data.options")
    gen = dict(min_objects=opt.min_objects, max_objects=opt.max_objects, noise=opt.noise)
    labeled = unlabeled = val = None
    if needs == "train":
        tr_img, tr_msk = _cached(opt.train, opt.size, opt.seed, 0, **gen)
        lab = labeled_indices(opt.train, str(cfg.split), opt.split_seed)
        is_lab = torch.zeros(opt.train, dtype=torch.bool)
        is_lab[lab] = True
        unl = torch.nonzero(~is_lab).flatten()
        fill = PAD_COLORS[cfg.pad_color]
        labeled = EmbeddedDataset(tr_img, tr_msk, lab, "labeled", cfg.crop, cfg.flip, "train", fill)
        unlabeled = (EmbeddedDataset(tr_img, tr_msk, unl, "unlabeled", cfg.crop, cfg.flip, "train", fill)
                     if len(unl) else None)
    if needs != "classes":
        va_img, va_msk = _cached(opt.val, opt.size, opt.seed, 1, **gen)
        val = EmbeddedDataset(va_img, va_msk, torch.arange(opt.val), "val", prefix="val")
    return DataBundle(labeled=labeled, unlabeled=unlabeled, val=val, num_classes=NUM_CLASSES,
                      class_names=CLASS_NAMES, palette=PALETTE, ignore_index=IGNORE_INDEX)
