"""CorrMatch's region propagation: its time (``propagate_regions``, a loop over the M sampled
regions batched over images, against the released loop over images × regions, on CPU) and, with
``--quality RUN``, what it does to the pseudo-labels of a trained embedded run: the unlabeled
images go through the step runner up to ``relabel`` with the run's last checkpoint, and the
relabelled pixels (outside the CutMix boxes) are compared with the hidden ground truth.

    python benchmarks/corrmatch_propagation.py
    python benchmarks/corrmatch_propagation.py --quality runs/corrmatch/corrmatch_s0
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path[:0] = [str(TESTS), str(TESTS / "strategies")]  # the test module and its support package
from test_plugin_corrmatch import released_propagation  # noqa: E402  the released loop, restated
from ssseg.api import UnlabeledBatch  # noqa: E402
from ssseg.engine import checkpoint  # noqa: E402
from ssseg.engine.run import build_run  # noqa: E402
from ssseg.engine.trainer import Trainer  # noqa: E402
from ssseg.recipe.load import load_recipe  # noqa: E402
from ssseg_plugins.corrmatch import mixed_box, propagate_regions  # noqa: E402


def timed(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def quality(run_dir: Path, images: int) -> None:
    """Pseudo-label accuracy before and after region propagation on ``images`` unlabeled images."""
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(build_run(load_recipe(run_dir / "recipe.yaml"), Path(out)))
        checkpoint.restore(trainer, run_dir / "last.pt")
        plugin, data = trainer.plugins["corrmatch"], trainer.run.data.unlabeled
        batch = trainer.run.recipe.data.batch_unlabeled
        sums = dict.fromkeys(("outside", "relabelled", "admitted", "confident", "confident_right",
                              "before_right", "after_right", "admitted_right"), 0.0)
        for start in range(0, images, batch):
            rows = range(start, start + batch)
            image = torch.stack([data.full_image(i) for i in rows])
            truth = torch.stack([data.target(i) for i in rows])
            unlabeled = UnlabeledBatch(image=image, valid=torch.ones(truth.shape, dtype=torch.bool))
            labeled, _ = next(trainer.batches())
            result = trainer.step(labeled, unlabeled, until="relabel")
            before, after = result.pseudo, result.views["s1"].pseudo
            outside = ~mixed_box(result.views["s1"])
            relabelled = outside & (after.conf == 1) & (before.conf < 1)
            confident = outside & (before.conf >= plugin.tau)
            admitted = relabelled & ~confident
            for name, mask, right in (("outside", outside, None), ("confident", confident, before.labels),
                                      ("relabelled", relabelled, None), ("admitted", admitted, after.labels)):
                sums[name] += float(mask.sum())
                if right is not None:
                    sums[f"{name}_right"] += float((mask & (right == truth)).sum())
            sums["before_right"] += float((relabelled & (before.labels == truth)).sum())
            sums["after_right"] += float((relabelled & (after.labels == truth)).sum())
    share = lambda a, b: 100 * sums[a] / max(sums[b], 1)  # noqa: E731
    print(f"\n{run_dir}, {images} unlabeled images, τ = {float(plugin.tau):.3f}, pixels outside the CutMix boxes:\n")
    print("| quantity | value |\n|---|---|")
    print(f"| confident (conf ≥ τ) | {share('confident', 'outside'):.1f} % of the pixels, "
          f"{share('confident_right', 'confident'):.1f} % of them right |")
    print(f"| relabelled by a region | {share('relabelled', 'outside'):.1f} % of the pixels |")
    print(f"| right before / after relabelling | {share('before_right', 'relabelled'):.1f} % / "
          f"{share('after_right', 'relabelled'):.1f} % |")
    print(f"| admitted to the loss (relabelled, not confident) | {share('admitted', 'outside'):.1f} % of the pixels, "
          f"{share('admitted_right', 'admitted'):.1f} % of them right |")


def main() -> int:
    """One row per size: batched and released seconds per call, and their ratio; then the
    quality table of each ``--quality`` run."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quality", nargs="*", type=Path, default=[], help="trained corrmatch run folders")
    p.add_argument("--images", type=int, default=400, help="unlabeled images per quality run")
    args = p.parse_args()
    print("| images × crop, regions M, classes | batched (s) | released loop (s) | ratio |\n|---|---|---|---|")
    for b, side, m, c, repeats in ((8, 32, 128, 5, 5), (4, 321, 128, 21, 3)):
        g = torch.Generator().manual_seed(0)
        regions = torch.rand(b, m, side, side, generator=g) < 0.3
        labels = torch.randint(0, c, (b, side, side), generator=g)
        confident = torch.rand(b, side, side, generator=g) < 0.7
        tau = torch.tensor(0.5)
        ours = timed(lambda: propagate_regions(regions, labels, confident, tau, c), repeats)
        released = timed(lambda: released_propagation(regions, labels, confident, 0.5), repeats)
        print(f"| {b} × {side}², {m}, {c} | {ours:.4f} | {released:.4f} | {released / ours:.1f} |")
    for run_dir in args.quality:
        quality(run_dir, args.images)
    return 0


if __name__ == "__main__":
    sys.exit(main())
