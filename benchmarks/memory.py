"""Peak memory of iMAS training steps at the paper's model and crop, and the largest batch that fits.

    python benchmarks/memory.py --config voc --batch 1 2 4 --steps 2 --threads 2 --verify
    python benchmarks/memory.py --config cityscapes --batch 1 2 3 4 --steps 2 --threads 2 --verify

``voc`` is recipes/paper/imas_voc.yaml (DeepLabV3+ ResNet-101 os 16, crop 513), ``cityscapes`` is
recipes/paper/imas_cityscapes.yaml (DeepLabV3+ ResNet-50 os 16, crop 769, aux head, OHEM), both
run on the embedded synthetic dataset (4 classes, images of min(crop, 512) px padded to the crop)
with random initialisation and ``--batch B`` labeled + B unlabeled images per step.

Each batch size runs in a fresh subprocess (so peaks do not mix) that builds the run, records its
RSS, does ``--steps`` training steps (the first allocates the optimiser state) and reports the
peak RSS (``ru_maxrss``) after each step, the step times and, on CUDA, the peak of
``torch.cuda.max_memory_allocated``. A watchdog kills a subprocess whose RSS passes ``--max-gib``
or when the machine's MemAvailable falls under ``--min-free-gib`` (other jobs share the machine).

With two or more batch sizes measured, peak RSS is fitted as a + b·B (least squares) and the
largest B under each ``--budget-gib`` is predicted. Further batch sizes are run only if their
predicted peak is at most ``--max-gib`` and fits in MemAvailable less ``--headroom-gib``.
``--verify`` runs the largest unmeasured B that passes the same test and compares it with the
prediction.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

RECIPES = {"voc": "recipes/paper/imas_voc.yaml", "cityscapes": "recipes/paper/imas_cityscapes.yaml"}
CROPS = {"voc": 513, "cityscapes": 769}
GIB = 1024 ** 3


def mem_available() -> int:
    """The machine's MemAvailable in bytes."""
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))


def current_rss(pid: int | str = "self") -> int:
    """Resident set size of a process in bytes (0 once it has gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return 0


def measure(config: str, batch: int, steps: int, threads: int, extra: list[str]) -> dict:
    """Build the run and do ``steps`` steps in this process; return the memory figures."""
    import resource

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from ssseg.engine.run import build_run
    from ssseg.engine.trainer import Trainer
    from paper_size import embedded_at
    from ssseg.recipe.load import load_recipe

    torch.set_num_threads(threads)
    trainer = Trainer(build_run(load_recipe(RECIPES[config], embedded_at(CROPS[config], batch) + extra)))
    run = trainer.run
    cuda = run.device.type == "cuda"
    result = {"config": config, "batch": batch, "crop": run.recipe.data.crop,
              "rss_built": current_rss(), "peak_built": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
              "peaks": [], "step_s": [], "cuda_peak": None}
    batches = trainer.batches()
    for _ in range(steps):
        labeled, unlabeled = next(batches)
        t = time.perf_counter()
        trainer.step(labeled, unlabeled)
        if cuda:
            torch.cuda.synchronize()
        result["step_s"].append(time.perf_counter() - t)
        result["peaks"].append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    if cuda:
        result["cuda_peak"] = torch.cuda.max_memory_allocated()
    return result


def spawn(config: str, batch: int, steps: int, threads: int, max_gib: float, min_free_gib: float,
          extra: list[str]) -> dict | None:
    """Run :func:`measure` in a fresh interpreter; kill it if its RSS passes ``max_gib`` or the
    machine's MemAvailable falls under ``min_free_gib``.

    The parent stays free of torch: on Linux a child's ``ru_maxrss`` starts from the RSS of the
    process it was forked from."""
    cmd = [sys.executable, __file__, "--child", "--config", config, "--batch", str(batch),
           "--steps", str(steps), "--threads", str(threads)] + [a for o in extra for a in ("-o", o)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    watched = 0
    while child.poll() is None:
        watched = max(watched, current_rss(child.pid))
        free = mem_available()
        if watched > max_gib * GIB or free < min_free_gib * GIB:
            child.kill()
            child.wait()
            print(f"  B={batch}: killed at RSS {watched / GIB:.1f} GiB, MemAvailable {free / GIB:.1f} GiB")
            return None
        time.sleep(0.2)
    out = child.stdout.read()
    if child.returncode:
        print(f"  B={batch}: failed with exit status {child.returncode}")
        return None
    return json.loads(out.strip().splitlines()[-1])


def fit(points: dict[int, float]) -> tuple[float, float]:
    """Least-squares a, b of peak = a + b·B over {B: peak}."""
    n = len(points)
    mx, my = sum(points) / n, sum(points.values()) / n
    b = sum((x - mx) * (y - my) for x, y in points.items()) / sum((x - mx) ** 2 for x in points)
    return my - b * mx, b


def room(max_gib: float, headroom_gib: float) -> float:
    """The largest predicted peak allowed to run now, in bytes."""
    return min(max_gib * GIB, mem_available() - headroom_gib * GIB)


def row(r: dict) -> str:
    """One Markdown table row of a measurement."""
    cuda = f"{r['cuda_peak'] / GIB:.2f}" if r["cuda_peak"] is not None else "–"
    peaks = " / ".join(f"{p / GIB:.2f}" for p in r["peaks"])
    steps = " / ".join(f"{s:.1f}" for s in r["step_s"])
    return (f"| {r['config']} | {r['batch']} + {r['batch']} | {r['crop']} | {r['rss_built'] / GIB:.2f} | "
            f"{peaks} | {steps} | {cuda} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=sorted(RECIPES), default="voc")
    p.add_argument("--batch", type=int, nargs="+", default=[4], help="labeled = unlabeled images per step")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-gib", type=float, default=18.0,
                   help="never run a batch predicted above this; kill a run whose RSS passes it")
    p.add_argument("--min-free-gib", type=float, default=1.0,
                   help="kill a run when the machine's MemAvailable falls under this")
    p.add_argument("--headroom-gib", type=float, default=2.0,
                   help="a predicted run must fit in MemAvailable less this")
    p.add_argument("--budget-gib", type=float, nargs="+", default=[24.0, 22.0])
    p.add_argument("--verify", action="store_true",
                   help="run the largest unmeasured B predicted to fit (see --max-gib, --headroom-gib)")
    p.add_argument("-o", "--override", action="append", default=[],
                   help="extra recipe override, e.g. run.precision=bf16")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args.config, args.batch[0], args.steps, args.threads, args.override)))
        return

    print(f"{args.config}: {RECIPES[args.config]} {' '.join(args.override)}, {args.steps} steps, {args.threads} thread(s)")
    print("| config | batch | crop | RSS built (GiB) | peak RSS after each step (GiB) | step s | CUDA peak (GiB) |")
    print("|---|---|---|---|---|---|---|")
    peaks: dict[int, float] = {}
    for batch in args.batch:
        if len(peaks) >= 2:
            a, b = fit(peaks)
            limit = room(args.max_gib, args.headroom_gib)
            if a + b * batch > limit:
                print(f"  B={batch}: skipped, predicted peak {(a + b * batch) / GIB:.1f} GiB > "
                      f"{limit / GIB:.1f} GiB allowed now")
                continue
        r = spawn(args.config, batch, args.steps, args.threads, args.max_gib, args.min_free_gib, args.override)
        if r is not None:
            print(row(r), flush=True)
            peaks[batch] = r["peaks"][-1]
    if len(peaks) < 2:
        return
    a, b = fit(peaks)
    print(f"\nfit over B = {sorted(peaks)}: peak RSS ≈ {a / GIB:.2f} GiB + {b / GIB:.2f} GiB · B")
    for budget in args.budget_gib:
        largest = int((budget * GIB - a) // b)
        print(f"budget {budget:g} GiB: largest B = {largest} ({largest} + {largest} images), "
              f"predicted peak {(a + b * largest) / GIB:.2f} GiB")
    if args.verify:
        limit = room(args.max_gib, args.headroom_gib)
        safe = int((limit - a) // b)
        if safe in peaks or safe < 1:
            print(f"verify: the largest B under {limit / GIB:.1f} GiB allowed now is {safe}, nothing new to run")
            return
        print(f"verify: B={safe}, the largest under {limit / GIB:.1f} GiB allowed now")
        r = spawn(args.config, safe, args.steps, args.threads, args.max_gib, args.min_free_gib, args.override)
        if r is not None:
            print(row(r))
            print(f"verify B={safe}: predicted {(a + b * safe) / GIB:.2f} GiB, measured "
                  f"{r['peaks'][-1] / GIB:.2f} GiB")


if __name__ == "__main__":
    main()
