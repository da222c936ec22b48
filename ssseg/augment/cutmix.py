"""Batched CutMix: box masks (FixMatch/UniMatch and iMAS), iMAS's hard<->easy pairing, and mixing.

Boxes are boolean masks ``[B, H, W]`` built from per-sample coordinates by broadcasting; all draws
come from an explicit ``torch.Generator`` and are made on its device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ssseg.augment.draws import uniform


def box_masks(top: Tensor, left: Tensor, height: Tensor, width: Tensor, size: tuple[int, int]) -> Tensor:
    """Boolean masks ``[B, H, W]``, true on rows ``[top, top + height)`` x columns ``[left, left + width)``.

    Coordinates are ``[B]`` integer tensors; parts of a box outside the image are clipped away.
    """
    rows = torch.arange(size[0], device=top.device)
    cols = torch.arange(size[1], device=top.device)
    in_rows = (rows >= top.unsqueeze(1)) & (rows < (top + height).unsqueeze(1))
    in_cols = (cols >= left.unsqueeze(1)) & (cols < (left + width).unsqueeze(1))
    return in_rows.unsqueeze(2) & in_cols.unsqueeze(1)


def fixmatch_boxes(
    batch_size: int,
    size: tuple[int, int],
    generator: torch.Generator,
    p: float = 0.5,
    area: tuple[float, float] = (0.02, 0.4),
    aspect: tuple[float, float] = (0.3, 1 / 0.3),
) -> Tensor:
    """FixMatch/UniMatch CutMix boxes ``[B, H, W]``: each sample gets a box with probability ``p``.

    As UniMatch's ``obtain_cutmix_box``: the box area is U[``area``] x H x W, drawn once; then
    aspect r ~ U[``aspect``], width int(sqrt(area / r)), height int(sqrt(area * r)) and a top-left
    corner uniform over the whole image are redrawn until the box lies fully inside. The rejection
    runs in rounds over the samples still waiting, never per sample.
    """
    height_px, width_px = size
    device = generator.device
    target = uniform(*area, batch_size, generator, torch.float64) * height_px * width_px
    waiting = torch.rand(batch_size, generator=generator, device=device) < p
    top, left, height, width = (torch.zeros(batch_size, dtype=torch.long, device=device) for _ in range(4))
    while bool(waiting.any()):
        ratio = uniform(*aspect, batch_size, generator, torch.float64)
        box_w = torch.sqrt(target / ratio).long()
        box_h = torch.sqrt(target * ratio).long()
        x = torch.randint(width_px, (batch_size,), generator=generator, device=device)
        y = torch.randint(height_px, (batch_size,), generator=generator, device=device)
        accept = waiting & (x + box_w <= width_px) & (y + box_h <= height_px)
        top, left = torch.where(accept, y, top), torch.where(accept, x, left)
        height, width = torch.where(accept, box_h, height), torch.where(accept, box_w, width)
        waiting &= ~accept
    return box_masks(top, left, height, width, size)


def imas_boxes(
    batch_size: int, size: tuple[int, int], generator: torch.Generator, side: tuple[float, float] = (0.1, 0.9)
) -> Tensor:
    """iMAS CutMix boxes ``[B, H, W]`` (released ``rand_bbox_by_v``).

    One side ratio v ~ U[``side``) for the whole batch; the box is int(H v) x int(W v); per sample a
    centre with row in [int(H / 16), H) and column in [int(W / 16), W) (integers); the box spans
    ``[centre - extent // 2, centre - extent // 2 + extent)`` on each axis, clipped at the border.
    """
    height_px, width_px = size
    device = generator.device
    v = uniform(*side, 1, generator, torch.float64)
    box_h = (height_px * v).long().expand(batch_size)
    box_w = (width_px * v).long().expand(batch_size)
    centre_y = torch.randint(height_px // 16, height_px, (batch_size,), generator=generator, device=device)
    centre_x = torch.randint(width_px // 16, width_px, (batch_size,), generator=generator, device=device)
    return box_masks(centre_y - box_h // 2, centre_x - box_w // 2, box_h, box_w, size)


def hard_easy_partners(easiness: Tensor) -> Tensor:
    """iMAS pairing: with the batch sorted by easiness ascending (stable), rank k receives from rank B-1-k.

    Returns ``partner`` ``[B]`` (an involution: the hardest and the easiest swap; with odd B the middle
    sample pairs with itself).
    """
    order = torch.sort(easiness, stable=True).indices
    partner = torch.empty_like(order)
    partner[order] = order.flip(0)
    return partner


def _box_like(box: Tensor, tensor: Tensor) -> Tensor:
    """View ``[B, H, W]`` boxes so that they broadcast against ``[B, ..., H, W]``."""
    return box.to(tensor.device).view(box.shape[0], *([1] * (tensor.dim() - 3)), *box.shape[1:])


def mix_from(box: Tensor, donors: Sequence[Tensor], receivers: Sequence[Tensor]) -> tuple[Tensor, ...]:
    """Paste each donor into its receiver inside ``box`` (same location); outside, keep the receiver.

    Donors and receivers are paired position by position; each is ``[B, H, W]`` or ``[B, C, H, W]``
    (images, pseudo-labels, confidences, validity), so one box moves all of them together.
    """
    pairs = zip(donors, receivers, strict=True)
    return tuple(torch.where(_box_like(box, receiver), donor, receiver) for donor, receiver in pairs)


def mix(box: Tensor, partner: Tensor, *tensors: Tensor) -> tuple[Tensor, ...]:
    """CutMix inside the batch: inside ``box[i]``, every tensor takes sample ``partner[i]``'s values."""
    return mix_from(box, [tensor[partner.to(tensor.device)] for tensor in tensors], tensors)
