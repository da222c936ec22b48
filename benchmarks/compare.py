"""Train recipes × seeds with `ssseg train` and tabulate final and best val mIoU (mean ± std).

    python benchmarks/compare.py recipes/quickstart.yaml recipes/fixmatch.yaml --seeds 0 1 2 \
        --jobs 2 --out runs/compare [-o optim.iters=600]

Finished runs (a final eval in metrics.jsonl) are reused; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def finished(out: Path, iters: int | None) -> bool:
    evals = read_evals(out)
    return bool(evals) and (iters is None or evals[-1]["iteration"] >= iters)


def read_evals(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    if not path.is_file():
        return []
    return [r for r in map(json.loads, path.read_text().splitlines()) if r.get("event") == "eval"]


def train(recipe: Path, seed: int, out: Path, overrides: list[str], threads: int) -> float:
    cmd = [sys.executable, "-m", "ssseg", "train", str(recipe), "--out", str(out),
           "-o", f"seed={seed}", "-o", f"run.threads={threads}"]
    for o in overrides:
        cmd += ["-o", o]
    if (out / "last.pt").exists():
        cmd.append("--resume")
    log = out.with_suffix(".log")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=True)
    return 0.0


def summarize(values: list[float]) -> str:
    if not values:
        return "-"
    mean = 100 * statistics.mean(values)
    std = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {std:.1f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipes", nargs="+", type=Path)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", type=Path, default=Path("runs/compare"))
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("-o", "--override", action="append", default=[])
    args = p.parse_args()
    threads = max(1, 2 // args.jobs)
    todo = [(r, s, args.out / f"{r.stem}-s{s}") for r in args.recipes for s in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(lambda t: finished(t[2], None) or train(*t, args.override, threads), todo))
    print("| recipe | iters | student last | student best | teacher last | teacher best | seeds |")
    print("|---|---|---|---|---|---|---|")
    for recipe in args.recipes:
        rows = [read_evals(args.out / f"{recipe.stem}-s{s}") for s in args.seeds]
        cells = []
        for model in ("student", "teacher"):
            last = [r[-1][f"{model}/miou"] for r in rows if r and f"{model}/miou" in r[-1]]
            best = [max(e[f"{model}/miou"] for e in r) for r in rows if r and f"{model}/miou" in r[-1]]
            cells += [summarize(last), summarize(best)]
        iters = rows[0][-1]["iteration"] if rows and rows[0] else "-"
        print(f"| {recipe.stem} | {iters} | {' | '.join(cells)} | {len(args.seeds)} |")


if __name__ == "__main__":
    main()
