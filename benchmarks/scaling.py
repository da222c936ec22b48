"""Training step time of the iMAS paper recipe (DeepLabV3+ ResNet-50 os 16) as batch and crop grow.

    python benchmarks/scaling.py --steps 3 --batches 1 2 4 --crops 161 241 321 513 --threads 1 --check

recipes/paper/imas_voc.yaml with ``model.encoder=resnet50`` on the embedded synthetic dataset
(4 classes, images of min(crop, 512) px padded to the crop), random initialisation, B labeled + B
unlabeled images per step. Two sweeps: B in ``--batches`` at crop ``--batch-crop``, and crop in
``--crops`` at B = ``--crop-batch``. Each point builds the run afresh, does one warm-up step and
reports the median of ``--steps`` timed steps (data loading excluded), per image (labeled +
unlabeled) and per megapixel (2·B·crop²), and the median CPU seconds of the process (all threads),
which other jobs on a shared machine disturb less than the wall time.

Wall and CPU step times are each fitted as t ≈ c0 + c1·P and t ≈ c·P, P = 2·B·crop² in
megapixels, to predict ``--predict`` (B x crop, default 4x513: the paper's 4 + 4 per process) and
the hours of ``--iters`` iterations (default 45,520: VOC 1464). ``--check`` also measures that
point (not used in the fits). The plot (two panels: time vs batch, time vs crop, measured medians
and the affine fits) goes to ``--plot``.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ssseg.engine.run import build_run  # noqa: E402
from ssseg.engine.trainer import Trainer  # noqa: E402
from ssseg.recipe.load import load_recipe  # noqa: E402
from paper_size import embedded_at  # noqa: E402

RECIPE = "recipes/paper/imas_voc.yaml"


def time_steps(batch: int, crop: int, steps: int) -> tuple[float, float]:
    """Median wall and CPU (all threads) seconds per training step over ``steps`` steps after one
    warm-up step."""
    trainer = Trainer(build_run(load_recipe(RECIPE, ["model.encoder=resnet50"] + embedded_at(crop, batch))))
    run = trainer.run
    batches = trainer.batches()
    wall, cpu = [], []
    for i in range(1 + steps):
        labeled, unlabeled = next(batches)
        t, c = time.perf_counter(), time.process_time()
        trainer.step(labeled, unlabeled)
        if i:
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    del trainer, run, batches
    gc.collect()
    return statistics.median(wall), statistics.median(cpu)


def megapixels(batch: int, crop: int) -> float:
    """Pixels per step (labeled + unlabeled images), in millions."""
    return 2 * batch * crop * crop / 1e6


def fit(points: dict[tuple[int, int], float]) -> tuple[float, float, float]:
    """Least squares over {(B, crop): seconds}: (c0, c1) of t = c0 + c1·P, and c of t = c·P."""
    xs = [megapixels(*k) for k in points]
    ys = list(points.values())
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    c1 = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    c = sum(x * y for x, y in zip(xs, ys)) / sum(x * x for x in xs)
    return my - c1 * mx, c1, c


def plot(series: dict[str, dict[tuple[int, int], float]], args: argparse.Namespace) -> None:
    """Two panels, step time vs batch (at ``--batch-crop``) and vs crop (at ``--crop-batch``):
    each series' medians and its affine fit."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, xs, key, xlabel, title in (
            (left, args.batches, lambda b: (b, args.batch_crop), "B (labeled = unlabeled images per step)",
             f"crop {args.batch_crop}"),
            (right, args.crops, lambda c: (args.crop_batch, c), "crop (px)",
             f"B = {args.crop_batch} + {args.crop_batch}")):
        xs = sorted(xs)
        dense = [xs[0] + (xs[-1] - xs[0]) * i / 50 for i in range(51)]
        for (name, points), marker, colour in zip(series.items(), "ox", ("C0", "C1")):
            c0, c1, _ = fit(points)
            ax.plot(xs, [points[key(x)] for x in xs], marker, color=colour, label=f"{name} (median)")
            ax.plot(dense, [c0 + c1 * megapixels(*key(x)) for x in dense], "-", color=colour,
                    label=f"fit {c0:.2f} s + {c1:.2f} s/Mpx")
        ax.set(xlabel=xlabel, ylabel="seconds per step", title=f"iMAS DeepLabV3+ R50, {title}")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{torch.get_num_threads()} CPU thread(s), torch {torch.__version__}")
    fig.tight_layout()
    os.makedirs(os.path.dirname(args.plot) or ".", exist_ok=True)
    fig.savefig(args.plot, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3, help="timed steps per point, after one warm-up step")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--batch-crop", type=int, default=321, help="crop of the batch sweep")
    p.add_argument("--crops", type=int, nargs="+", default=[161, 241, 321, 513])
    p.add_argument("--crop-batch", type=int, default=2, help="B of the crop sweep")
    p.add_argument("--threads", type=int, default=1,
                   help="intra-op threads; with other jobs on the cores, 2 threads can be several times slower")
    p.add_argument("--predict", default="4x513", help="B x crop to predict from the fit")
    p.add_argument("--iters", type=int, default=45520, help="iterations of the predicted schedule")
    p.add_argument("--check", action="store_true", help="also measure the --predict point")
    p.add_argument("--plot", default="docs/results/scaling.png")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    configs = [(b, args.batch_crop) for b in args.batches] + [(args.crop_batch, c) for c in args.crops]
    series: dict[str, dict[tuple[int, int], float]] = {"wall": {}, "CPU": {}}
    print(f"{RECIPE} with ResNet-50; median of {args.steps} steps after 1 warm-up; {args.threads} thread(s)")
    print("| config | median s/step | s per image | s per megapixel | CPU s/step (all threads) |")
    print("|---|---|---|---|---|")
    start = time.perf_counter()
    for batch, crop in dict.fromkeys(configs):
        t, cpu = time_steps(batch, crop, args.steps)
        series["wall"][batch, crop], series["CPU"][batch, crop] = t, cpu
        print(f"| B = {batch} + {batch}, crop {crop} | {t:.2f} | {t / (2 * batch):.2f} | "
              f"{t / megapixels(batch, crop):.2f} | {cpu:.2f} |", flush=True)

    batch, crop = map(int, args.predict.split("x"))
    size = megapixels(batch, crop)
    print(f"\nfits over {len(series['wall'])} configs, P = 2·B·crop² in Mpx; predicted B = {batch} + {batch}, "
          f"crop {crop} ({size:.2f} Mpx) and {args.iters} iterations:")
    for name, points in series.items():
        c0, c1, c = fit(points)
        worst = max(abs(c0 + c1 * megapixels(*k) - t) / t for k, t in points.items())
        pred = c0 + c1 * size
        print(f"{name:>4}: t ≈ {c0:.2f} s + {c1:.2f} s/Mpx · P (largest residual {100 * worst:.0f} %), "
              f"through the origin t ≈ {c:.2f} s/Mpx · P; predicted {pred:.1f} s/step "
              f"(proportional {c * size:.1f}), {pred * args.iters / 3600:.0f} h ({pred * args.iters / 86400:.1f} days)")
    if args.check:
        measured, cpu = time_steps(batch, crop, args.steps)
        print(f"check: measured {measured:.1f} s/step wall, {cpu:.1f} s/step CPU")
    plot(series, args)
    print(f"plot: {args.plot}; total {(time.perf_counter() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
