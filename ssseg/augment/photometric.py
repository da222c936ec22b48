"""Batched, per-sample photometric augmentation: iMAS's 12 intensity ops and the FixMatch colour view.

Images are float ``[B, 3, H, W]`` in [0, 1]. Every op reproduces the PIL operation the reference
code applies per image (see ``docs/augmentation.md``); here each sample carries its own op and
parameter, drawn as tensors from an explicit ``torch.Generator`` and applied without any loop over
the batch: per op slot, the samples that share an op id are gathered and transformed together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # PIL's "L" conversion (ITU-R 601-2 luma)
_SMOOTH_KERNEL = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
_BLUR_PASSES = 3  # PIL's GaussianBlur = 3 extended box blurs per axis


# ----------------------------------------------------------------------------------------------
# Batched ops: images [N, 3, H, W], one parameter per sample [N].
# ----------------------------------------------------------------------------------------------


def _per_sample(values: Tensor, images: Tensor) -> Tensor:
    """View a ``[N]`` parameter so that it broadcasts against ``[N, ...]`` images."""
    return values.view(-1, *([1] * (images.dim() - 1)))


def _to_levels(images: Tensor) -> Tensor:
    """Nearest 0..255 level of each value, as float."""
    return (images * 255.0).round_().clamp_(0.0, 255.0)


def grayscale(images: Tensor) -> Tensor:
    """PIL's luma ``L = 0.299 R + 0.587 G + 0.114 B`` as ``[N, 1, H, W]``."""
    weights = images.new_tensor(GRAY_WEIGHTS).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def _enhance(degenerate: Tensor, images: Tensor, factor: Tensor) -> Tensor:
    """PIL ``ImageEnhance``: ``Image.blend(degenerate, image, factor)``, clipped to [0, 1]."""
    return torch.lerp(degenerate.expand_as(images), images, _per_sample(factor, images)).clamp_(0.0, 1.0)


def _toward(images: Tensor, transformed: Tensor, weight: Tensor) -> Tensor:
    """Interpolate from the input (weight 0) to a parameter-free op's output (weight 1)."""
    return torch.lerp(images, transformed, _per_sample(weight, images))


def identity(images: Tensor, _: Tensor) -> Tensor:
    """Return the images unchanged."""
    return images


def autocontrast(images: Tensor, weight: Tensor) -> Tensor:
    """PIL ``ImageOps.autocontrast`` (cutoff 0): stretch each channel's [min, max] to [0, 1]."""
    low = images.amin(dim=(-2, -1), keepdim=True)
    high = images.amax(dim=(-2, -1), keepdim=True)
    spread = high - low
    stretched = torch.where(spread > 0, (images - low) / spread.clamp(min=1e-12), images)
    return _toward(images, stretched, weight)


def equalize(images: Tensor, weight: Tensor) -> Tensor:
    """PIL ``ImageOps.equalize``: per-channel histogram equalisation on 256 levels (PIL's LUT)."""
    n, c, h, w = images.shape
    levels = _to_levels(images).long().reshape(n * c, h * w)
    rows = torch.arange(n * c, device=images.device).unsqueeze(1)
    hist = torch.bincount((levels + rows * 256).view(-1), minlength=n * c * 256).view(n * c, 256)
    last_used = 255 - (hist > 0).flip(1).int().argmax(dim=1, keepdim=True)
    step = (hist.sum(dim=1, keepdim=True) - hist.gather(1, last_used)) // 256
    before = hist.cumsum(dim=1) - hist
    lut = ((step // 2 + before) // step.clamp(min=1)).clamp(max=255)
    lut = torch.where(step > 0, lut, torch.arange(256, device=images.device))
    equalized = lut.gather(1, levels).view(n, c, h, w).to(images.dtype) / 255.0
    return _toward(images, equalized, weight)


def invert(images: Tensor, weight: Tensor) -> Tensor:
    """PIL ``ImageOps.invert``: ``1 - x``."""
    return _toward(images, 1.0 - images, weight)


def _box_blur_kernels(sigma: Tensor, passes: int = _BLUR_PASSES) -> Tensor:
    """PIL's extended box of radius ``l + a`` whose ``passes``-fold repetition has std ``sigma``.

    Returns ``[N, K]`` weights: 1 on ``|k| <= l``, ``a`` on ``|k| = l + 1``, normalised by ``2(l+a)+1``.
    """
    sigma2 = sigma.double() ** 2 / passes
    whole = torch.floor((torch.sqrt(12.0 * sigma2 + 1.0) - 1.0) / 2.0)
    frac = (2 * whole + 1) * (whole * (whole + 1) - 3 * sigma2) / (6 * (sigma2 - (whole + 1) ** 2))
    reach = int(whole.max()) + 1
    offsets = torch.arange(-reach, reach + 1, device=sigma.device).abs().unsqueeze(0)
    taps = torch.where(offsets <= whole.unsqueeze(1), 1.0, torch.where(offsets == whole.unsqueeze(1) + 1, frac.unsqueeze(1), 0.0))
    return (taps / (2 * (whole + frac) + 1).unsqueeze(1)).to(sigma.dtype)


def _depthwise_pass(images: Tensor, kernels: Tensor, vertical: bool) -> Tensor:
    """Convolve each sample with its own 1-D kernel along one axis, replicating the edges."""
    n, c, h, w = images.shape
    reach = kernels.shape[1] // 2
    weight = kernels.repeat_interleave(c, dim=0).view(n * c, 1, -1, 1) if vertical else kernels.repeat_interleave(c, dim=0).view(n * c, 1, 1, -1)
    padding = (0, 0, reach, reach) if vertical else (reach, reach, 0, 0)
    padded = F.pad(images.reshape(1, n * c, h, w), padding, mode="replicate")
    return F.conv2d(padded, weight, groups=n * c).view(n, c, h, w)


def gaussian_blur(images: Tensor, sigma: Tensor) -> Tensor:
    """PIL ``ImageFilter.GaussianBlur(radius=sigma)``: 3 extended box blurs per axis, edges replicated."""
    kernels = _box_blur_kernels(sigma)
    for vertical in (False, True):
        for _ in range(_BLUR_PASSES):
            images = _depthwise_pass(images, kernels, vertical)
    return images


def contrast(images: Tensor, factor: Tensor) -> Tensor:
    """PIL ``ImageEnhance.Contrast``: blend with the mean of the grayscale image."""
    return _enhance(grayscale(images).mean(dim=(-3, -2, -1), keepdim=True), images, factor)


def brightness(images: Tensor, factor: Tensor) -> Tensor:
    """PIL ``ImageEnhance.Brightness``: blend with black."""
    return _enhance(torch.zeros_like(images[:, :1, :1, :1]), images, factor)


def color(images: Tensor, factor: Tensor) -> Tensor:
    """PIL ``ImageEnhance.Color`` (saturation): blend with the grayscale image; factor 0 = grayscale."""
    return _enhance(grayscale(images), images, factor)


def _smooth(images: Tensor) -> Tensor:
    """PIL ``ImageFilter.SMOOTH`` (3x3, centre 5, /13); the 1-pixel border is copied unfiltered."""
    if min(images.shape[-2:]) < 3:
        return images
    kernel = _SMOOTH_KERNEL.to(images).expand(3, 1, 3, 3)
    smoothed = images.clone()
    smoothed[..., 1:-1, 1:-1] = F.conv2d(images, kernel, groups=3)
    return smoothed


def sharpness(images: Tensor, factor: Tensor) -> Tensor:
    """PIL ``ImageEnhance.Sharpness``: blend with the SMOOTH-filtered image."""
    return _enhance(_smooth(images), images, factor)


def posterize(images: Tensor, bits: Tensor) -> Tensor:
    """PIL ``ImageOps.posterize``: keep the ``bits`` high bits of each 0..255 level."""
    step = torch.exp2(8.0 - _per_sample(bits, images))
    return torch.floor(_to_levels(images) / step) * step / 255.0


def solarize(images: Tensor, threshold: Tensor) -> Tensor:
    """PIL ``ImageOps.solarize``: invert every level ``>= threshold`` (0..255 scale; 256 = identity)."""
    above = images * 255.0 >= _per_sample(threshold, images) - 0.5
    return torch.where(above, 1.0 - images, images)


def hue_shift(images: Tensor, shift: Tensor) -> Tensor:
    """Rotate the HSV hue by ``shift`` turns (fraction of the hue circle), keeping S and V."""
    red, green, blue = images.unbind(dim=1)
    high, argmax = images.max(dim=1)
    delta = high - images.min(dim=1).values
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    sextant = torch.stack(((green - blue) / safe, (blue - red) / safe + 2.0, (red - green) / safe + 4.0), dim=1)
    hue6 = sextant.gather(1, argmax.unsqueeze(1)) + 6.0 * _per_sample(shift, images)
    channel_phase = images.new_tensor([5.0, 3.0, 1.0]).view(1, 3, 1, 1)
    k = torch.remainder(channel_phase + hue6, 6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)
    return high.unsqueeze(1) - delta.unsqueeze(1) * ramp


# ----------------------------------------------------------------------------------------------
# Op table and plans.
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Op:
    """An op, its parameter at which it is the identity, and its full-strength parameter."""

    apply: Callable[[Tensor, Tensor], Tensor]
    neutral: float
    full: Callable[[Tensor, Tensor], Tensor]  # (magnitude in [0, 1), sign +-1) -> parameter
    discrete: bool = False


def _weight_one(u: Tensor, _: Tensor) -> Tensor:
    return torch.ones_like(u)


def _reducing_factor(u: Tensor, _: Tensor) -> Tensor:
    return 0.95 - 0.85 * u  # (0.1, 0.95]


_OPS: dict[str, _Op] = {
    "identity": _Op(identity, 0.0, lambda u, s: torch.zeros_like(u)),
    "autocontrast": _Op(autocontrast, 0.0, _weight_one),
    "equalize": _Op(equalize, 0.0, _weight_one),
    "invert": _Op(invert, 0.0, _weight_one),
    "blur": _Op(gaussian_blur, 0.0, lambda u, s: 0.1 + 1.9 * u),  # sigma in [0.1, 2.0)
    "contrast": _Op(contrast, 1.0, _reducing_factor),
    "brightness": _Op(brightness, 1.0, _reducing_factor),
    "color": _Op(color, 1.0, _reducing_factor),
    "sharpness": _Op(sharpness, 1.0, _reducing_factor),
    "posterize": _Op(posterize, 8.0, lambda u, s: 7.0 - torch.floor(4.0 * u), discrete=True),  # 7..4 bits
    "solarize": _Op(solarize, 256.0, lambda u, s: 256.0 - torch.floor(255.0 * u), discrete=True),  # 256..2
    "hue": _Op(hue_shift, 0.0, lambda u, s: 0.5 * u * s),  # +-[0, 0.5) turn
}
OP_NAMES: tuple[str, ...] = tuple(_OPS)  # op id = position; the order of the official augment_list
_OP_LIST = tuple(_OPS.values())
IDENTITY = OP_NAMES.index("identity")


def op_id(name: str) -> int:
    """The id of the op called ``name`` (see ``OP_NAMES``)."""
    return OP_NAMES.index(name)


@dataclass(frozen=True)
class PhotometricPlan:
    """Per-sample op sequence: ``ops[b, j]`` (id into ``OP_NAMES``) with parameter ``params[b, j]``.

    Ops apply left to right. ``magnitudes`` (iMAS plans only) holds the drawn strength in [0, 1)
    before ``magnitude_scale``; ``params`` is what is applied.
    """

    ops: Tensor
    params: Tensor
    magnitudes: Tensor | None = None


def _resolve_params(ops: Tensor, magnitudes: Tensor, signs: Tensor, scale: Tensor) -> Tensor:
    """Concrete parameter of every slot: ``neutral + scale * (full(magnitude) - neutral)``."""
    candidates = []
    for op in _OP_LIST:
        value = op.neutral + scale * (op.full(magnitudes, signs) - op.neutral)
        candidates.append(torch.round(value) if op.discrete else value)
    return torch.stack(candidates).gather(0, ops.unsqueeze(0)).squeeze(0)


def sample_imas_plan(
    batch_size: int, generator: torch.Generator, n_ops: int = 2, magnitude_scale: Tensor | None = None
) -> PhotometricPlan:
    """Draw iMAS's strong view: ``n_ops`` ops per image, uniformly with replacement from the 12.

    ``magnitude_scale`` (``[B]`` in [0, 1], default 1) moves every parameter linearly toward the op's
    identity value (0: every op is the identity; 1: the drawn magnitude). Tensors live on the
    generator's device.
    """
    device = generator.device
    shape = (batch_size, n_ops)
    ops = torch.randint(len(OP_NAMES), shape, generator=generator, device=device)
    magnitudes = torch.rand(shape, generator=generator, device=device)
    signs = torch.where(torch.rand(shape, generator=generator, device=device) < 0.5, -1.0, 1.0)
    scale = torch.ones(batch_size, device=device) if magnitude_scale is None else magnitude_scale.to(device, torch.float32)
    params = _resolve_params(ops, magnitudes, signs, scale.view(-1, 1))
    return PhotometricPlan(ops=ops, params=params, magnitudes=magnitudes)


def _uniform(low: float, high: float, size: int, generator: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(size, generator=generator, device=generator.device)


def _chance(p: float, size: int, generator: torch.Generator) -> Tensor:
    return torch.rand(size, generator=generator, device=generator.device) < p


def sample_fixmatch_plan(
    batch_size: int,
    generator: torch.Generator,
    jitter: tuple[float, float, float, float] = (0.5, 0.5, 0.5, 0.25),
    p_jitter: float = 0.8,
    p_gray: float = 0.2,
    p_blur: float = 0.5,
    blur_sigma: tuple[float, float] = (0.1, 2.0),
) -> PhotometricPlan:
    """Draw FixMatch/UniMatch's strong colour view as a 6-slot plan per image.

    Slots 0-3: ColorJitter(brightness, contrast, saturation, hue = ``jitter``) with probability
    ``p_jitter``, in a random order per sample (as torchvision's ``randperm(4)``); slot 4: grayscale
    with ``p_gray`` (saturation factor 0); slot 5: PIL Gaussian blur, sigma U[``blur_sigma``], with
    ``p_blur``. Slots that do not fire hold the identity.
    """
    b_range, c_range, s_range, h_range = jitter
    jitter_ops = torch.tensor([op_id("brightness"), op_id("contrast"), op_id("color"), op_id("hue")], device=generator.device)
    jitter_params = torch.stack(
        (
            _uniform(1 - b_range, 1 + b_range, batch_size, generator),
            _uniform(1 - c_range, 1 + c_range, batch_size, generator),
            _uniform(1 - s_range, 1 + s_range, batch_size, generator),
            _uniform(-h_range, h_range, batch_size, generator),
        ),
        dim=1,
    )
    order = torch.rand((batch_size, 4), generator=generator, device=generator.device).argsort(dim=1)
    jittered = _chance(p_jitter, batch_size, generator).unsqueeze(1)
    gray = _chance(p_gray, batch_size, generator)
    blurred = _chance(p_blur, batch_size, generator)
    sigma = _uniform(*blur_sigma, batch_size, generator)
    ops = torch.cat(
        (
            torch.where(jittered, jitter_ops[order], IDENTITY),
            torch.where(gray, op_id("color"), IDENTITY).unsqueeze(1),
            torch.where(blurred, op_id("blur"), IDENTITY).unsqueeze(1),
        ),
        dim=1,
    )
    params = torch.cat((jitter_params.gather(1, order), torch.zeros(batch_size, 1, device=generator.device), sigma.unsqueeze(1)), dim=1)
    return PhotometricPlan(ops=ops, params=params)


def _apply_slot(images: Tensor, ops: Tensor, params: Tensor) -> Tensor:
    """Apply one op per sample, transforming the samples that share an op id together."""
    out = None
    for op in ops.unique().tolist():
        if op == IDENTITY:
            continue
        chosen = (ops == op).nonzero().squeeze(1)
        if out is None:
            out = images.clone()
        out[chosen] = _OP_LIST[op].apply(images[chosen], params[chosen])
    return images if out is None else out


@torch.no_grad()
def apply_plan(images: Tensor, plan: PhotometricPlan) -> Tensor:
    """Apply a ``PhotometricPlan`` (iMAS or FixMatch) to float images ``[B, 3, H, W]`` in [0, 1]."""
    ops = plan.ops.to(images.device)
    params = plan.params.to(images.device, images.dtype)
    for slot in range(ops.shape[1]):
        images = _apply_slot(images, ops[:, slot], params[:, slot])
    return images


def blend(weak: Tensor, strong: Tensor, easiness: Tensor) -> Tensor:
    """iMAS's adaptive view ``e_i * strong_i + (1 - e_i) * weak_i`` per sample (``easiness`` is ``[B]``)."""
    return torch.lerp(weak, strong, _per_sample(easiness.to(weak), weak))
