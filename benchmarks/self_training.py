"""ST and ST++ against supervised training and FixMatch on the embedded data, seed by seed (or any
other set of embedded recipes, under another ``--name``).

Each (recipe, seed) trains with ``ssseg train`` into ``runs/<name>/<recipe>_s<seed>``
(a finished run is read, not retrained; an unfinished one continues: staged recipes skip their
finished stages), and one JSON line per run goes to ``benchmarks/<name>.jsonl``: the final
and best val mIoU of the student (for a staged recipe, of its last stage) and the wall time of
this invocation. Then a markdown table of mean ± std per recipe.

    nice python benchmarks/self_training.py --recipes quickstart fixmatch st st_plus_plus --seeds 0 1 2
    nice python benchmarks/self_training.py --name corrmatch --recipes unimatch corrmatch --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def metrics_file(run: Path) -> Path:
    """The metrics of a run's final model: the last stage's for a staged recipe."""
    stages = (yaml.safe_load((run / "recipe.yaml").read_text()) or {}).get("stages") or []
    return run / "stages" / stages[-1]["name"] / "metrics.jsonl" if stages else run / "metrics.jsonl"


def final_scores(run: Path) -> tuple[float, float]:
    """(last, best) student val mIoU of a finished run."""
    evals = [r for r in map(json.loads, metrics_file(run).read_text().splitlines()) if "student/miou" in r]
    return evals[-1]["student/miou"], max(r["student/miou"] for r in evals)


def main() -> int:
    """Train what is missing, log every run, print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", nargs="+", default=["quickstart", "fixmatch", "st", "st_plus_plus"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--name", default="self_training", help="runs/<name>/ and benchmarks/<name>.jsonl")
    args = p.parse_args()
    out, log_file = ROOT / "runs" / args.name, ROOT / "benchmarks" / f"{args.name}.jsonl"
    rows: dict[str, list[float]] = {}
    for name in args.recipes:
        for seed in args.seeds:
            run = out / f"{name}_s{seed}"
            cmd = [sys.executable, "-m", "ssseg", "train", f"recipes/{name}.yaml",
                   "--out", str(run.relative_to(ROOT)), "-o", f"seed={seed}"]
            if (run / "last.pt").exists():  # an interrupted single-stage run continues
                cmd.append("--resume")
            started = time.perf_counter()
            if not (run / "done.json").exists():
                subprocess.run(cmd, check=True, cwd=ROOT)
                (run / "done.json").write_text(json.dumps({"wall_s": time.perf_counter() - started}))
            last, best = final_scores(run)
            wall = json.loads((run / "done.json").read_text())["wall_s"]
            record = {"recipe": name, "seed": seed, "last": last, "best": best, "wall_s": round(wall),
                      "command": "python " + " ".join(cmd[1:])}
            with log_file.open("a") as log:
                log.write(json.dumps(record) + "\n")
            print(json.dumps(record), flush=True)
            rows.setdefault(name, []).append(100 * last)
    print("| recipe | seeds | final val mIoU, mean ± std | per seed |\n|---|---|---|---|")
    for name, values in rows.items():
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"| {name} | {len(values)} | {statistics.mean(values):.1f} ± {std:.1f} | "
              f"{', '.join(f'{v:.1f}' for v in values)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
