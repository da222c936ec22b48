"""Evaluation throughput on the CPU at the paper recipes' evaluation settings, images/s.

    python benchmarks/eval_throughput.py [--threads 2] [--images 2] [--batches 1 2 4 8] [--whole-images 10]

Sliding window as in ``recipes/paper/imas_cityscapes.yaml``: DeepLabV3+ ResNet-50, output stride
16, 19 classes, 1024x2048 images, window 769, stride 512 (8 windows per image), through
``sliding_probs`` with ``--batches`` windows per forward, then the argmax as ``predict`` does;
images/s and windows/s per batch size. Whole image as in ``recipes/paper/imas_voc.yaml``:
DeepLabV3+ ResNet-101, output stride 16, 21 classes, one 375x500 image (the model pads it to
384x512) through ``predict``. Random weights and random images in [0, 1], eval mode, no_grad (as
``evaluate`` runs). Each setting gets one untimed warm-up image, then ``--images`` (sliding) or
``--whole-images`` (whole) timed images; the median wall time per image is reported, with the
process's CPU time (all threads) beside it: on a shared machine their ratio shows the contention.
The sliding settings are interleaved image by image, in alternating order, so a drift in the
machine's load hits them alike. The defaults take 4 to 9 minutes on a shared 2-core CPU.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ssseg.engine.evaluate import predict, sliding_probs, window_starts  # noqa: E402
from ssseg.models import build_model  # noqa: E402
from ssseg.recipe.schema import EvalConfig, ModelConfig  # noqa: E402

DEEPLAB_OS16 = {"encoder_output_stride": 16, "decoder_atrous_rates": [6, 12, 18],
                "decoder_aspp_separable": False}
CITYSCAPES = {"size": (1024, 2048), "window": 769, "stride": 512, "classes": 19}
VOC = {"size": (375, 500), "crop": 513, "classes": 21}


def timed(fn) -> tuple[float, float]:
    """(wall seconds, process CPU seconds over all threads) of one call of ``fn``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def row(name: str, batch: int, forwards: int, times: list[tuple[float, float]], windows: int | None) -> str:
    """A table row from the timed images' (wall, CPU) seconds: medians, wall spread, rates."""
    walls = [wall for wall, _ in times]
    s, cpu = statistics.median(walls), statistics.median(c for _, c in times)
    rate = f"{windows / s:.2f}" if windows else "–"
    return (f"| {name} | {batch} | {forwards} | {s:.2f} ({min(walls):.2f}-{max(walls):.2f}) | {cpu:.2f} | "
            f"{1 / s:.3f} | {rate} |")


def sliding(images: int, batches: list[int]) -> list[str]:
    """Table rows for sliding-window evaluation at the Cityscapes setting, one per batch size."""
    h, w = CITYSCAPES["size"]
    window, stride, classes = CITYSCAPES["window"], CITYSCAPES["stride"], CITYSCAPES["classes"]
    model = build_model(ModelConfig(encoder="resnet50", options=DEEPLAB_OS16), classes).eval()
    windows = len(window_starts(h, window, stride)) * len(window_starts(w, window, stride))
    generator = torch.Generator().manual_seed(0)
    times: dict[int, list[tuple[float, float]]] = {b: [] for b in batches}
    for round_ in range(images + 1):  # round 0 is the warm-up
        image = torch.rand(3, h, w, generator=generator)
        for b in batches if round_ % 2 else batches[::-1]:  # alternate the order against load drift
            t = timed(lambda: sliding_probs(model, image, window, stride, classes, batch=b).argmax(0))
            if round_:
                times[b].append(t)
    name = "sliding, R50 os16, 1024x2048"
    return [row(name, b, math.ceil(windows / b), times[b], windows) for b in batches]


def whole(images: int) -> str:
    """The table row for whole-image evaluation at the VOC setting."""
    model = build_model(ModelConfig(encoder="resnet101", options=DEEPLAB_OS16), VOC["classes"]).eval()
    cfg = EvalConfig(mode="whole")
    generator = torch.Generator().manual_seed(0)
    times = []
    for round_ in range(images + 1):  # round 0 is the warm-up
        image = torch.rand(3, *VOC["size"], generator=generator)
        t = timed(lambda: predict(model, image, cfg, VOC["crop"], VOC["classes"]))
        if round_:
            times.append(t)
    return row("whole, R101 os16, 375x500", 1, 1, times, None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--images", type=int, default=2, help="timed images per sliding-window setting")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8], help="windows per forward")
    p.add_argument("--whole-images", type=int, default=10,
                   help="timed images for whole-image evaluation")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s); median of {args.images} sliding / "
          f"{args.whole_images} whole images after one warm-up each")
    print("| evaluation | windows per forward | forwards per image | s / image (min-max) | CPU s / image "
          "| images/s | windows/s |")
    print("|---|---|---|---|---|---|---|")
    for line in sliding(args.images, args.batches):
        print(line, flush=True)
    print(whole(args.whole_images))


if __name__ == "__main__":
    main()
