"""Step time and throughput of `ssseg train` with 1 process vs N gloo processes on the CPU.

    python benchmarks/ddp_scaling.py --recipe recipes/fixmatch.yaml --iters 60 --procs 1 2

Each process uses one thread and the recipe's per-process batch, so N processes train on N times
the images per step. Times come from the runs' metrics.jsonl (wall_s), skipping the first
``--warmup`` iterations.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml


def run(recipe: Path, procs: int, iters: int, out: Path) -> list[dict]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                str(procs)] if procs > 1 else [sys.executable]
    cmd = launcher + ["-m", "ssseg", "train", str(recipe), "--out", str(out),
                      "-o", f"optim.iters={iters}", "-o", "run.log_every=1", "-o", "run.threads=1",
                      "-o", f"eval.every={iters}", "-o", "eval.max_images=1",
                      "-o", f"run.checkpoint_every={iters}"]
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
            if r["event"] == "train"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", type=Path, default=Path("recipes/fixmatch.yaml"))
    p.add_argument("--iters", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()
    data = yaml.safe_load(subprocess.run([sys.executable, "-m", "ssseg", "explain", str(args.recipe)],
                                         capture_output=True, text=True, check=True)
                          .stdout.split("# resolved recipe\n", 1)[1])["data"]
    per_step = data["batch_labeled"] + data["batch_unlabeled"]
    print(f"| processes | step time (s) | images/s (labeled + unlabeled) | speed-up |")
    print("|---|---|---|---|")
    base = None
    for procs in args.procs:
        with tempfile.TemporaryDirectory() as tmp:
            records = run(args.recipe, procs, args.iters, Path(tmp) / "run")
        timed = [r for r in records if r["iteration"] > args.warmup]
        step = (timed[-1]["wall_s"] - records[args.warmup - 1]["wall_s"]) / len(timed)
        rate = procs * per_step / step
        base = base or rate
        print(f"| {procs} | {step:.3f} | {rate:.1f} | {rate / base:.2f}× |")


if __name__ == "__main__":
    main()
