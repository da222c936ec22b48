"""Throughput of the batched photometric augmentation vs per-image PIL, images/s.

    python benchmarks/photometric_throughput.py [--sizes 513 769] [--batch 8] [--repeats 5]
    python benchmarks/photometric_throughput.py --per-op --sizes 513 --threads 1
    python benchmarks/photometric_throughput.py --lut-kernels --sizes 513 --threads 1

Input and output of every variant is a float batch ``[B, 3, S, S]`` in [0, 1], as the training step
holds the weak view. "PIL" is the released code's way, per image: draw ops with ``random.choices``
and magnitudes with ``random.random()`` (the iMAS formulas, modifier 0.999), apply the PIL ops on
uint8 images. It is timed twice: ops only (PIL images prepared beforehand) and end to end (tensor
-> uint8 PIL -> ops -> tensor, what swapping it in for the batched version would cost). The
FixMatch/UniMatch colour view is timed the same way with torchvision's PIL ColorJitter,
RandomGrayscale and the PIL blur. Torch runs with ``--threads`` threads, PIL always in one.
On the CPU the batched views are timed on both paths of ``apply_plan``: float and uint8 levels
(the CPU default; quantize once, ops on levels, back to float once).
``--per-op`` instead times each of the 12 ops alone (magnitude 0.5) on the batch (float, and uint8
levels prepared beforehand as PIL's images are) and on the prepared PIL images, to show where the
batched view loses to PIL. ``--lut-kernels`` times the ways to apply per-sample tables and count
per-channel histograms on uint8 levels: one batched torch call against a loop over image planes.
"""

from __future__ import annotations

import argparse
import platform
import random
import time

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter, ImageOps
from torchvision import transforms

from ssseg.augment import OP_NAMES, apply_plan, sample_fixmatch_plan, sample_imas_plan
from ssseg.augment.levels import apply_tables, histograms, quantize
from ssseg.augment.photometric import _OPS

MODIFIER = 0.999  # what the released dataset passes to every op


def _reduce_factor(u: float) -> float:
    return 0.95 - 0.85 * u * MODIFIER


def _pil_hue(image: Image.Image, u: float) -> Image.Image:
    shift = 0.5 * u * MODIFIER * (-1 if np.random.random() < 0.5 else 1)
    hue, sat, val = image.convert("HSV").split()
    shifted = (np.asarray(hue, dtype=np.int64) + int(shift * 255)) % 256
    return Image.merge("HSV", (Image.fromarray(shifted.astype(np.uint8), "L"), sat, val)).convert("RGB")


PIL_OPS = (  # the released augment_list(): op(image, u) with u = random.random()
    lambda im, u: im,
    lambda im, u: ImageOps.autocontrast(im),
    lambda im, u: ImageOps.equalize(im),
    lambda im, u: ImageOps.invert(im),
    lambda im, u: im.filter(ImageFilter.GaussianBlur(radius=0.1 + 1.9 * u * MODIFIER)),
    lambda im, u: ImageEnhance.Contrast(im).enhance(_reduce_factor(u)),
    lambda im, u: ImageEnhance.Brightness(im).enhance(_reduce_factor(u)),
    lambda im, u: ImageEnhance.Color(im).enhance(_reduce_factor(u)),
    lambda im, u: ImageEnhance.Sharpness(im).enhance(_reduce_factor(u)),
    lambda im, u: ImageOps.posterize(im, 8 - max(1, int(np.ceil(4 * u * MODIFIER)))),
    lambda im, u: ImageOps.solarize(im, min(256, max(1, 256 - int(np.ceil(255 * u * MODIFIER))))),
    _pil_hue,
)


def pil_imas(image: Image.Image, n_ops: int = 2) -> Image.Image:
    """The released ``strong_img_aug``: ``n_ops`` ops drawn with replacement, each with its magnitude."""
    for op in random.choices(PIL_OPS, k=n_ops):
        image = op(image, random.random())
    return image


FIXMATCH_JITTER = transforms.ColorJitter(0.5, 0.5, 0.5, 0.25)
FIXMATCH_GRAY = transforms.RandomGrayscale(p=0.2)


def pil_fixmatch(image: Image.Image) -> Image.Image:
    """UniMatch's strong colour view on one PIL image."""
    if random.random() < 0.8:
        image = FIXMATCH_JITTER(image)
    image = FIXMATCH_GRAY(image)
    if random.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(radius=np.random.uniform(0.1, 2.0)))
    return image


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    levels = images.mul(255).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    return [Image.fromarray(level) for level in levels]


def from_pil(images: list[Image.Image]) -> torch.Tensor:
    levels = torch.from_numpy(np.stack([np.asarray(image) for image in images]))
    return levels.permute(0, 3, 1, 2).float().div_(255)


def images_per_second(run, batch: int, repeats: int, sync=lambda: None) -> float:
    """Best-of-``repeats`` throughput of ``run()`` processing one batch."""
    run()
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync()
        best = min(best, time.perf_counter() - start)
    return batch / best


def bench_size(size: int, batch: int, repeats: int, device: torch.device) -> dict[str, float]:
    generator = torch.Generator(device=device).manual_seed(0)
    images = torch.rand(batch, 3, size, size, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    paths = {"float": False, "uint8": True} if device.type == "cpu" else {"float": False}
    results = {
        f"{name} batched {path}": images_per_second(
            lambda: apply_plan(images, sampler(batch, generator), on_levels), batch, repeats, sync
        )
        for name, sampler in (("imas", sample_imas_plan), ("fixmatch", sample_fixmatch_plan))
        for path, on_levels in paths.items()
    }
    if device.type == "cpu":
        pil_images = to_pil(images)
        for name, view in (("imas", pil_imas), ("fixmatch", pil_fixmatch)):
            results[f"{name} PIL ops"] = images_per_second(
                lambda: [view(im) for im in pil_images], batch, repeats
            )
            results[f"{name} PIL end-to-end"] = images_per_second(
                lambda: from_pil([view(im) for im in to_pil(images)]), batch, repeats
            )
    return results


def per_op(size: int, batch: int, repeats: int) -> None:
    """Print ms per image of each op alone at magnitude 0.5: batched float and uint8 (CPU, inputs
    prepared) and PIL (ops only, images prepared); the three are timed in turn per op."""
    levels = torch.randint(256, (batch, 3, size, size), dtype=torch.uint8)
    images = levels.float() / 255
    pil_images = to_pil(images)
    half, plus = torch.full((batch,), 0.5), torch.ones(batch)
    print("| op | float ms/image | uint8 ms/image | PIL ms/image | float / PIL time | uint8 / PIL time |")
    print("|---|---|---|---|---|---|")
    for k, name in enumerate(OP_NAMES[1:], start=1):
        op = _OPS[name]
        param = op.full(half, plus)
        ms = [1000 / images_per_second(run, batch, repeats) for run in (
            lambda: op.apply(images, param), lambda: op.on_levels(levels, param),
            lambda: [PIL_OPS[k](im, 0.5) for im in pil_images])]
        print(f"| {name} | {ms[0]:.2f} | {ms[1]:.2f} | {ms[2]:.2f} | {ms[0] / ms[2]:.1f}x | {ms[1] / ms[2]:.1f}x |")
    for name, run in (("quantize (float -> uint8, once per view)", lambda: quantize(images)),
                      ("uint8 -> float (once per view)", lambda: levels.float().div_(255))):
        print(f"| {name} | | {1000 / images_per_second(run, batch, repeats):.2f} | | | |")


def lut_kernels(size: int, batch: int, repeats: int) -> None:
    """Print ms per image of applying per-sample, per-channel tables and of counting per-channel
    histograms on uint8 levels: one batched torch call (int64 indices) vs the per-plane loops."""
    levels = torch.randint(256, (batch, 3, size, size), dtype=torch.uint8)
    tables = torch.randint(256, (batch, 3, 256), dtype=torch.uint8)
    offsets = (torch.arange(batch * 3) * 256).view(batch, 3, 1, 1)
    kernels = {
        "tables, batched gather": lambda: tables.view(-1)[levels.long() + offsets],
        "tables, numpy take per plane (used)": lambda: apply_tables(levels, tables),
        "histograms, batched bincount": lambda: torch.bincount(
            (levels.long() + offsets).view(-1), minlength=batch * 3 * 256),
        "histograms, bincount per plane (used)": lambda: histograms(levels),
    }
    assert torch.equal(kernels["tables, batched gather"](), apply_tables(levels, tables))
    print("| kernel | ms/image |\n|---|---|")
    for name, run in kernels.items():
        print(f"| {name} | {1000 / images_per_second(run, batch, repeats):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[513, 769])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--per-op", action="store_true", help="time each op alone (CPU)")
    parser.add_argument("--lut-kernels", action="store_true", help="time table and histogram kernels (CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    random.seed(0)
    np.random.seed(0)
    if args.per_op or args.lut_kernels:
        for size in args.sizes:
            print(f"{size}x{size}, batch {args.batch}, torch {torch.__version__}, {args.threads} thread(s)")
            (per_op if args.per_op else lut_kernels)(size, args.batch, args.repeats)
        return
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    machine = platform.processor() or platform.machine()
    print(f"# {machine}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for device in devices:
        for size in args.sizes:
            for name, rate in bench_size(size, args.batch, args.repeats, device).items():
                print(f"{device.type:5s} {size}x{size} batch {args.batch}  {name:22s} {rate:8.1f} images/s")


if __name__ == "__main__":
    main()
