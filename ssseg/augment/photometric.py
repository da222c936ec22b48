"""Batched, per-sample photometric augmentation: iMAS's 12 intensity ops and the FixMatch colour view.

Images are float ``[B, 3, H, W]`` in [0, 1]. Every op reproduces the PIL operation the reference
code applies per image (see ``docs/augmentation.md``); here each sample carries its own op and
parameter, drawn as tensors from an explicit ``torch.Generator`` and applied without any loop over
the batch: per op slot, the samples that share an op id are gathered and transformed together.
On a CPU, ``apply_plan`` runs the lookup-table ops that a benchmark measured faster that way
(equalize, posterize, solarize) on uint8 levels (``ssseg.augment.levels``), as PIL does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ssseg.augment.draws import uniform
from ssseg.augment.levels import apply_tables, histograms, quantize, ramp

GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # PIL's "L" conversion (ITU-R 601-2 luma)
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
    return torch.lerp(degenerate, images, _per_sample(factor, images)).clamp_(0.0, 1.0)


def identity(images: Tensor, _: Tensor) -> Tensor:
    """Return the images unchanged."""
    return images


def autocontrast(images: Tensor, weight: Tensor) -> Tensor:
    """PIL ``ImageOps.autocontrast`` (cutoff 0): stretch each channel's [min, max] to [0, 1]."""
    low, high = images.flatten(2).aminmax(dim=2)
    spread = high - low
    flat = spread <= 0  # a constant channel is left alone
    gain = torch.where(flat, 1.0, 1.0 / spread.clamp(min=1e-12))
    low = torch.where(flat, 0.0, low)
    # x + w * (gain * (x - low) - x), folded into one affine map per channel
    weight = weight.unsqueeze(1)
    slope = 1.0 + weight * (gain - 1.0)
    offset = -weight * gain * low
    return torch.addcmul(offset[..., None, None], images, slope[..., None, None]).clamp_(0.0, 1.0)


def equalize(images: Tensor, weight: Tensor) -> Tensor:
    """PIL ``ImageOps.equalize``: per-channel histogram equalisation on 256 levels (PIL's LUT)."""
    n, c, h, w = images.shape
    levels = _to_levels(images).long().reshape(n * c, h * w)
    rows = torch.arange(n * c, device=images.device).unsqueeze(1)
    hist = torch.bincount((levels + rows * 256).reshape(-1), minlength=n * c * 256).view(n * c, 256)
    lut = _equalizing_tables(hist).to(images.dtype) / 255.0
    equalized = lut.gather(1, levels).view(n, c, h, w)
    return torch.lerp(images, equalized, _per_sample(weight, images))


def _equalize_table(levels: Tensor, weight: Tensor) -> Tensor:
    equalized = _equalizing_tables(histograms(levels)).float() / 255.0
    return torch.lerp(ramp(len(levels)).flatten(2), equalized, weight.view(-1, 1, 1))


def _equalizing_tables(hist: Tensor) -> Tensor:
    """PIL's equalize tables (levels, int64 ``[..., 256]``) from histograms ``[..., 256]``."""
    last_used = 255 - (hist > 0).flip(-1).int().argmax(dim=-1, keepdim=True)
    step = (hist.sum(dim=-1, keepdim=True) - hist.gather(-1, last_used)) // 256
    before = hist.cumsum(dim=-1) - hist
    lut = ((step // 2 + before) // step.clamp(min=1)).clamp(max=255)
    return torch.where(step > 0, lut, torch.arange(256, device=hist.device))


def invert(images: Tensor, weight: Tensor) -> Tensor:
    """PIL ``ImageOps.invert``: ``1 - x`` (``x + w (1 - 2x)`` at weight ``w``)."""
    weight = _per_sample(weight, images)
    return torch.addcmul(weight, images, 1.0 - 2.0 * weight)


def _box_blur_kernels(sigma: Tensor, passes: int = _BLUR_PASSES) -> Tensor:
    """Half-kernels ``[N, R + 1]`` (offsets 0..R) of PIL's extended box blur for std ``sigma``.

    PIL repeats ``passes`` times a box of radius ``l + a`` (weight 1 on ``|k| <= l``, ``a`` on
    ``|k| = l + 1``, normalised by ``2(l + a) + 1``) chosen so the repetition has variance ``sigma^2``.
    """
    sigma2 = sigma.double() ** 2 / passes
    whole = torch.floor((torch.sqrt(12.0 * sigma2 + 1.0) - 1.0) / 2.0)
    frac = (2 * whole + 1) * (whole * (whole + 1) - 3 * sigma2) / (6 * (sigma2 - (whole + 1) ** 2))
    offsets = torch.arange(int(whole.max()) + 2, device=sigma.device).unsqueeze(0)
    whole, frac = whole.unsqueeze(1), frac.unsqueeze(1)
    taps = torch.where(offsets <= whole, 1.0, torch.where(offsets == whole + 1, frac, 0.0))
    return (taps / (2 * (whole + frac) + 1)).to(sigma.dtype)


def _symmetric_pass(images: Tensor, half_kernels: Tensor, dim: int) -> Tensor:
    """Convolve each sample with its own symmetric 1-D kernel along ``dim``, replicating edges."""
    reach = half_kernels.shape[1] - 1
    size = images.shape[dim]
    padding = (0, 0, reach, reach) if dim == -2 else (reach, reach, 0, 0)
    padded = F.pad(images, padding, mode="replicate")
    taps = half_kernels.view(-1, 1, 1, 1, reach + 1)
    out = images * taps[..., 0]
    for offset in range(1, reach + 1):
        pair = padded.narrow(dim, reach - offset, size) + padded.narrow(dim, reach + offset, size)
        out.addcmul_(pair, taps[..., offset])
    return out


def gaussian_blur(images: Tensor, sigma: Tensor) -> Tensor:
    """PIL ``ImageFilter.GaussianBlur(radius=sigma)``: 3 extended box blurs per axis, edges replicated."""
    half_kernels = _box_blur_kernels(sigma)
    for dim in (-1, -2):
        for _ in range(_BLUR_PASSES):
            images = _symmetric_pass(images, half_kernels, dim)
    return images.clamp_(0.0, 1.0)


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
    """PIL ``ImageFilter.SMOOTH`` (3x3 ones, centre 5, /13); the 1-pixel border is copied unfiltered."""
    if min(images.shape[-2:]) < 3:
        return images
    rows = images[..., :-2, :] + images[..., 1:-1, :] + images[..., 2:, :]
    box = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]
    smoothed = images.clone()
    inner = smoothed[..., 1:-1, 1:-1]
    inner.mul_(4.0).add_(box).div_(13.0)
    return smoothed


def sharpness(images: Tensor, factor: Tensor) -> Tensor:
    """PIL ``ImageEnhance.Sharpness``: blend with the SMOOTH-filtered image."""
    return _enhance(_smooth(images), images, factor)


def posterize(images: Tensor, bits: Tensor) -> Tensor:
    """PIL ``ImageOps.posterize``: keep the ``bits`` high bits of each 0..255 level (8 = identity)."""
    step = torch.exp2(8.0 - _per_sample(bits, images))
    return (images - torch.remainder(_to_levels(images), step) / 255.0).clamp_(min=0.0)


def _posterize_levels(levels: Tensor, bits: Tensor) -> Tensor:
    """``posterize`` on uint8 levels: a bit mask (faster than a table lookup on a CPU)."""
    return levels & (256 - torch.exp2(8 - bits)).to(torch.uint8).view(-1, 1, 1, 1)


def solarize(images: Tensor, threshold: Tensor) -> Tensor:
    """PIL ``ImageOps.solarize``: invert every level ``>= threshold`` (0..255 scale; 256 = identity)."""
    above = images * 255.0 >= _per_sample(threshold, images) - 0.5
    return torch.where(above, 1.0 - images, images)


def hue_shift(images: Tensor, shift: Tensor) -> Tensor:
    """Rotate the HSV hue by ``shift`` turns (fraction of the hue circle), keeping S and V.

    HSV -> RGB uses ``c = V - V S clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + 6 H) mod 6`` and
    ``n = 5, 3, 1`` for R, G, B; ``V S`` is the chroma ``max - min``, so S and V are never formed.
    """
    red, green, blue = images.unbind(dim=1)
    low, high = torch.aminmax(images, dim=1)
    chroma = high - low
    from_green_or_blue = torch.where(green == high, blue - red + 2 * chroma, red - green + 4 * chroma)
    hue6 = torch.where(red == high, green - blue, from_green_or_blue)
    hue6 = hue6.div_(torch.where(chroma > 0, chroma, torch.ones_like(chroma))).unsqueeze(1)
    phase = images.new_tensor([5.0, 3.0, 1.0]).view(1, 3, 1, 1) + 6.0 * _per_sample(shift, images)
    k = torch.remainder(hue6 + phase, 6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return torch.addcmul(high.unsqueeze(1), chroma.unsqueeze(1), ramp, value=-1.0)


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
    # for the ops measured faster on uint8 levels on a CPU, one of: (levels [N, C, H, W] uint8,
    # parameter) -> a table per sample [N, C or 1, 1, 256] in [0, 1], or -> the result levels
    table: Callable[[Tensor, Tensor], Tensor] | None = None
    levels: Callable[[Tensor, Tensor], Tensor] | None = None

    def on_levels(self, images: Tensor, param: Tensor) -> Tensor:
        """The op on float images through uint8 levels: quantize, look up (or uint8 arithmetic),
        back to float; within half a level of ``apply``."""
        levels = quantize(images)
        if self.levels is not None:
            levels = self.levels(levels, param)
        else:
            levels = apply_tables(levels, quantize(self.table(levels, param)).flatten(2))
        return levels.to(images.dtype).div_(255.0)


def _weight_one(u: Tensor, _: Tensor) -> Tensor:
    return torch.ones_like(u)


def _reducing_factor(u: Tensor, _: Tensor) -> Tensor:
    return 0.95 - 0.85 * u  # (0.1, 0.95]


_OPS: dict[str, _Op] = {
    "identity": _Op(identity, 0.0, lambda u, s: torch.zeros_like(u)),
    "autocontrast": _Op(autocontrast, 0.0, _weight_one),
    "equalize": _Op(equalize, 0.0, _weight_one, table=_equalize_table),
    "invert": _Op(invert, 0.0, _weight_one),
    "blur": _Op(gaussian_blur, 0.0, lambda u, s: 0.1 + 1.9 * u),  # sigma in [0.1, 2.0)
    "contrast": _Op(contrast, 1.0, _reducing_factor),
    "brightness": _Op(brightness, 1.0, _reducing_factor),
    "color": _Op(color, 1.0, _reducing_factor),
    "sharpness": _Op(sharpness, 1.0, _reducing_factor),
    "posterize": _Op(posterize, 8.0, lambda u, s: 7.0 - torch.floor(4.0 * u), discrete=True,  # 7..4 bits
                     levels=_posterize_levels),
    "solarize": _Op(solarize, 256.0, lambda u, s: 256.0 - torch.floor(255.0 * u), discrete=True,  # 256..2
                    table=lambda levels, threshold: solarize(ramp(len(levels)), threshold)),
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

    Ops apply left to right; ``params`` is what is applied.
    """

    ops: Tensor
    params: Tensor


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
    if magnitude_scale is None:
        magnitude_scale = torch.ones(batch_size)
    scale = magnitude_scale.to(device, torch.float32).view(-1, 1)
    params = _resolve_params(ops, magnitudes, signs, scale)
    return PhotometricPlan(ops=ops, params=params)


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
    device = generator.device
    jitter_names = ("brightness", "contrast", "color", "hue")
    jitter_ops = torch.tensor([op_id(name) for name in jitter_names], device=device)
    jitter_params = torch.stack(
        (
            uniform(1 - b_range, 1 + b_range, batch_size, generator),
            uniform(1 - c_range, 1 + c_range, batch_size, generator),
            uniform(1 - s_range, 1 + s_range, batch_size, generator),
            uniform(-h_range, h_range, batch_size, generator),
        ),
        dim=1,
    )
    order = torch.rand((batch_size, 4), generator=generator, device=device).argsort(dim=1)
    jittered = _chance(p_jitter, batch_size, generator).unsqueeze(1)
    gray = _chance(p_gray, batch_size, generator)
    blurred = _chance(p_blur, batch_size, generator)
    sigma = uniform(*blur_sigma, batch_size, generator)
    ops = torch.cat(
        (
            torch.where(jittered, jitter_ops[order], IDENTITY),
            torch.where(gray, op_id("color"), IDENTITY).unsqueeze(1),
            torch.where(blurred, op_id("blur"), IDENTITY).unsqueeze(1),
        ),
        dim=1,
    )
    gray_params = torch.zeros(batch_size, 1, device=device)
    params = torch.cat((jitter_params.gather(1, order), gray_params, sigma.unsqueeze(1)), dim=1)
    return PhotometricPlan(ops=ops, params=params)


def _apply_slot(images: Tensor, ops: Tensor, params: Tensor, on_levels: bool) -> Tensor:
    """Apply one op per sample in place, transforming the samples that share an op id together."""
    for op in ops.unique().tolist():
        if op == IDENTITY:
            continue
        spec = _OP_LIST[op]
        apply = spec.on_levels if on_levels and (spec.table or spec.levels) else spec.apply
        chosen = (ops == op).nonzero().squeeze(1)
        if len(chosen) == len(ops):
            return apply(images, params)
        images[chosen] = apply(images[chosen], params[chosen])
    return images


@torch.no_grad()
def apply_plan(images: Tensor, plan: PhotometricPlan, on_levels: bool | None = None) -> Tensor:
    """Apply a ``PhotometricPlan`` (iMAS or FixMatch) to float images ``[B, 3, H, W]`` in [0, 1].

    ``on_levels`` (default: on a CPU) runs equalize, posterize and solarize on uint8 levels (CPU
    only); each of them is then within half a level of its float version.
    """
    on_levels = images.device.type == "cpu" if on_levels is None else on_levels
    ops = plan.ops.to(images.device)
    params = plan.params.to(images.device, images.dtype)
    out = images.clone()
    for slot in range(ops.shape[1]):
        out = _apply_slot(out, ops[:, slot], params[:, slot], on_levels)
    return out


def blend(weak: Tensor, strong: Tensor, easiness: Tensor) -> Tensor:
    """iMAS's adaptive view ``e_i * strong_i + (1 - e_i) * weak_i`` per sample (``easiness`` is ``[B]``)."""
    return torch.lerp(weak, strong, _per_sample(easiness.to(weak), weak))
