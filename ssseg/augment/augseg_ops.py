"""AugSeg's augmentations (Zhao et al., CVPR 2023; ZhenZHAO/AugSeg ``augs_TIBA.py``, ``augs_ALIA.py``,
``train_semi.py``), batched on tensors with every draw from an explicit ``torch.Generator``.

- :func:`sample_augseg_plan`: the random intensity view, k ~ U{1..3} ops per image drawn with
  replacement from 11, as a :class:`~ssseg.augment.photometric.PhotometricPlan` of the shared ops
  (applied with :func:`~ssseg.augment.photometric.apply_plan`).
- :func:`augseg_boxes`: the released ``rand_bbox``, one λ per batch, one centre per image.
- :func:`beta_integer`: λ ~ Beta(a, b) for integer a, b from a generator.
- :func:`image_confidence`: ρ_b = mean_p[(1 − H(P)/log C) · max_c P].
- :func:`injection_fires`, :func:`label_injecting_mixes`: the adaptive label-injecting CutMix as
  two sequential in-batch mixes (see there).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ssseg.augment.cutmix import box_masks
from ssseg.augment.photometric import IDENTITY, PhotometricPlan, op_id

# the released get_augment_list(flag_using_wide=False), in its order
AUGSEG_OPS: tuple[str, ...] = ("identity", "autocontrast", "equalize", "blur", "contrast", "brightness",
                               "color", "sharpness", "posterize", "solarize", "hue")
ENHANCE = ("contrast", "brightness", "color", "sharpness")
ENTROPY_EPS = 1e-10  # released: log(P + 1e-10)


def _augseg_params(names: tuple[str, ...], u: Tensor, negative: Tensor) -> Tensor:
    """The applied parameter of each op of ``names`` for uniforms ``u`` ∈ [0, 1) and hue signs,
    stacked ``[len(names), ...]`` (each formula restates the released ``img_aug_*``)."""
    enhance = 0.95 - 0.9 * u                                     # (0.05, 0.95]: always weakening
    posterize = 8.0 - torch.ceil(4.0 * u).clamp_min(1.0)           # 8 − max(1, ⌈4u⌉): 4..7 bits
    solarize = 256.0 - torch.ceil(255.0 * u).clamp_min(1.0)        # 256 − max(1, ⌈255u⌉): 1..255
    levels = torch.floor(127.5 * u)                                # uint8(±0.5u · 255) hue levels
    hue = torch.where(negative, -levels, levels) / 255.0           # in turns of the hue circle
    by_name = {"identity": torch.zeros_like(u), "autocontrast": torch.ones_like(u),
               "equalize": torch.ones_like(u), "blur": 0.1 + 1.9 * u, "posterize": posterize,
               "solarize": solarize, "hue": hue, **{name: enhance for name in ENHANCE}}
    return torch.stack([by_name[name] for name in names])


def sample_augseg_plan(batch_size: int, generator: torch.Generator, max_ops: int = 3,
                       random_count: bool = True) -> PhotometricPlan:
    """The random intensity view: per image k ~ U{1, …, ``max_ops``} (k = ``max_ops`` without
    ``random_count``), k ops uniformly **with replacement** from :data:`AUGSEG_OPS`, applied in draw
    order; ``max_ops`` slots, the slots after the k-th hold the identity.

    Parameters, u ~ U[0, 1) per slot: blur σ = 0.1 + 1.9u; contrast, brightness, colour,
    sharpness f = 0.95 − 0.9u ∈ (0.05, 0.95]; posterize to 8 − max(1, ⌈4u⌉) bits (4–7);
    solarize at 256 − max(1, ⌈255u⌉) (1–255); hue ±⌊127.5u⌋/255 of a turn (sign by a coin),
    the released uint8 shift of PIL's hue channel. Tensors live on the generator's device."""
    device = generator.device
    shape = (batch_size, max_ops)
    if random_count:
        count = torch.randint(1, max_ops + 1, (batch_size,), generator=generator, device=device)
    else:
        count = torch.full((batch_size,), max_ops, device=device)
    choice = torch.randint(len(AUGSEG_OPS), shape, generator=generator, device=device)
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
    negative = torch.rand(shape, generator=generator, device=device) < 0.5
    params = _augseg_params(AUGSEG_OPS, u, negative).gather(0, choice.unsqueeze(0)).squeeze(0)
    ids = torch.tensor([op_id(name) for name in AUGSEG_OPS], device=device)[choice]
    used = torch.arange(max_ops, device=device) < count.unsqueeze(1)
    return PhotometricPlan(ops=torch.where(used, ids, IDENTITY), params=torch.where(used, params, 0.0).float())


def beta_integer(a: int, b: int, generator: torch.Generator) -> float:
    """One draw of λ ~ Beta(a, b) for integers a, b ≥ 1: the a-th smallest of a + b − 1 uniforms
    (an order statistic of U(0, 1) is Beta-distributed), so the draw comes from ``generator``."""
    u = torch.rand(a + b - 1, generator=generator, device=generator.device, dtype=torch.float64)
    return float(u.sort().values[a - 1])


def augseg_boxes(batch_size: int, size: tuple[int, int], lam: float, generator: torch.Generator) -> Tensor:
    """The released ``rand_bbox`` as masks ``[B, H, W]``: one λ for the batch, sides
    c_H = ⌊H·√(1 − λ)⌋ and c_W = ⌊W·√(1 − λ)⌋; per image a centre uniform in the integers
    [⌊H/8⌋, H) × [⌊W/8⌋, W); the box spans [centre − ⌊c/2⌋, centre + ⌊c/2⌋) on each axis,
    clipped to the crop (so boxes near the bottom/right are cut)."""
    h, w = size
    device = generator.device
    side = math.sqrt(1.0 - lam)
    half_h, half_w = int(h * side) // 2, int(w * side) // 2
    centre_y = torch.randint(h // 8, h, (batch_size,), generator=generator, device=device)
    centre_x = torch.randint(w // 8, w, (batch_size,), generator=generator, device=device)
    height = torch.full_like(centre_y, 2 * half_h)
    width = torch.full_like(centre_x, 2 * half_w)
    return box_masks(centre_y - half_h, centre_x - half_w, height, width, size)


def image_confidence(probs: Tensor) -> Tensor:
    """ρ_b = (1/HW) Σ_p (1 − H(P_p)/log C) · max_c P_p,c with H(P) = −Σ_c P_c log(P_c + 1e-10),
    from the teacher's softmax ``[B, C, H, W]``; ``[B]`` in [0, 1], over every pixel (padding
    included, as released)."""
    probs = probs.float()
    entropy = -(probs * torch.log(probs + ENTROPY_EPS)).sum(1) / math.log(probs.shape[1])
    return ((1.0 - entropy) * probs.amax(1)).mean((1, 2))


def injection_fires(rho: Tensor, generator: torch.Generator) -> Tensor:
    """Per image i, whether its copy receives labeled pixels: U(0, 1) > ρ_i (probability 1 − ρ_i)."""
    u = torch.rand(rho.shape, generator=generator, device=generator.device, dtype=torch.float64)
    return u.to(rho.device) > rho.double()


def label_injecting_mixes(mix_box: Tensor, label_box: Tensor, partner: Tensor,
                          fires: Tensor) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """The adaptive label-injecting CutMix as two in-batch mixes applied in order.

    Released: the copy ũ_i of u_i takes, if ``fires[i]``, the labeled x_π(i) inside
    ``label_box[i]``; then u_j takes ũ_π(j) inside ``mix_box[j]`` (u_j itself stays un-injected).
    Equivalently: (1) u_j takes u_π(j) inside M_j = ``mix_box[j]``; (2) u_j takes the labeled
    x_π(π(j)) inside M_j ∩ L_π(j), where L_i = ``label_box[i]`` if ``fires[i]`` else ∅.
    Returns ((box₁, partner₁), (box₂, partner₂)): box₁ = M, partner₁ = π over the view itself;
    box₂, partner₂ = π∘π over the labeled batch."""
    injected = label_box & fires.to(label_box.device).view(-1, 1, 1)
    return (mix_box, partner), (mix_box & injected[partner], partner[partner])
