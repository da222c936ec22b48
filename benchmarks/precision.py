"""Step time of the numerics options against fp32: ``run.precision`` (bf16, fp16), ``run.channels_last``
and ``run.compile``, one trainer per option, stepped in turn on the same batches.

    python benchmarks/precision.py --steps 30                       # iMAS at the quickstart scale
    python benchmarks/precision.py --steps 6 --warmup 1 --threads 2 --paper   # DeepLabV3+ R50 321², 2+2
    python benchmarks/precision.py --options fp32 compile --steps 30           # inductor (minutes to compile)

Every trainer is built from the same recipe and seed (same weights, same random draws) and steps on
the same batches, the options rotating within each round so that load on the machine hits them
alike. Reported per option: median step time, its ratio to fp32, and the loss's relative difference
from fp32 at the first step (same weights, same batch) and over all steps (trajectories drift apart).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ssseg.engine.run import build_run  # noqa: E402
from ssseg.engine.trainer import Trainer  # noqa: E402
from ssseg.recipe.load import load_recipe  # noqa: E402
from paper_size import embedded_at  # noqa: E402

OPTIONS = {
    "fp32": [],
    "bf16": ["run.precision=bf16"],
    "fp16": ["run.precision=fp16"],
    "channels_last": ["run.channels_last=true"],
    "bf16+channels_last": ["run.precision=bf16", "run.channels_last=true"],
    "compile": ["run.compile=inductor"],
}
PAPER = ["model.encoder=resnet50"] + embedded_at(321, 2)  # DeepLabV3+ R50 321², 2 + 2


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default=None, help="default: recipes/imas.yaml, or the iMAS VOC recipe with --paper")
    p.add_argument("--paper", action="store_true", help="DeepLabV3+ ResNet-50 at 321², 2 + 2 (embedded data)")
    p.add_argument("--options", nargs="+", choices=sorted(OPTIONS),
                   default=["fp32", "bf16", "fp16", "channels_last", "bf16+channels_last"])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3, help="untimed first steps (compilation happens here)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("-o", "--override", action="append", default=[])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    recipe = args.recipe or ("recipes/paper/imas_voc.yaml" if args.paper else "recipes/imas.yaml")
    base = (PAPER if args.paper else []) + args.override + [f"run.threads={args.threads}"]
    names = ["fp32"] + [n for n in args.options if n != "fp32"]
    trainers = {n: Trainer(build_run(load_recipe(recipe, base + OPTIONS[n]))) for n in names}
    source = trainers["fp32"].batches()
    times: dict[str, list[float]] = {n: [] for n in names}
    losses: dict[str, list[float]] = {n: [] for n in names}
    for i in range(args.warmup + args.steps):
        labeled, unlabeled = next(source)
        for n in names[i % len(names):] + names[: i % len(names)]:  # rotate who goes first
            trainer = trainers[n]
            t = time.perf_counter()
            logs = trainer.step(labeled, unlabeled).logs
            if i >= args.warmup:
                times[n].append(time.perf_counter() - t)
            losses[n].append(logs.get("loss", float("nan")))
    fp32 = statistics.median(times["fp32"])
    print(f"recipe {recipe} {' '.join(base)}\n{args.steps} timed steps after {args.warmup}, "
          f"{args.threads} thread(s), torch {torch.__version__}")
    print("| option | median s/step | vs fp32 | loss Δ at step 1 | mean loss Δ over all steps |")
    print("|---|---|---|---|---|")
    for n in names:
        med = statistics.median(times[n])
        first = abs(losses[n][0] - losses["fp32"][0]) / abs(losses["fp32"][0])
        drift = statistics.fmean(abs(a - b) / abs(b) for a, b in zip(losses[n], losses["fp32"]))
        print(f"| {n} | {med:.4f} | {med / fp32:.2f}x | {first:.1e} | {drift:.1e} |")


if __name__ == "__main__":
    main()
