"""iMAS's own work per training step, as a share of the step time.

    python benchmarks/imas_cost.py --recipe recipes/imas.yaml --steps 40 [-o key=value ...]

Times every hook call (pluggy's hook-call monitoring) and the core's building of the views from
their plans, over ``--steps`` steps after ``--warmup``. iMAS's own work is: ``estimate_hardness``
(of which the student's extra eval-mode forward is reported apart, since it is a model forward),
``plan_views``, ``schedule_augmentation`` plus building the views (photometric ops, blend,
CutMix) and ``weight_loss``. Everything else is the teacher's pseudo-labelling forward, the
student's forward and backward, the optimiser and the EMA update.

``--profile`` also runs ``torch.profiler`` over the measured steps (data loading left out) and
prints the top ops by self CPU time after the table; step times then include the profiler's
overhead.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile, record_function

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ssseg.engine import step as step_module  # noqa: E402
from ssseg.engine.run import build_run  # noqa: E402
from ssseg.engine.trainer import Trainer  # noqa: E402
from ssseg.recipe.load import load_recipe  # noqa: E402

IMAS_HOOKS = ("estimate_hardness", "plan_views", "schedule_augmentation", "weight_loss")
STEP_LABEL = "imas_cost.step"


def step_ops_table(profiler: profile, rows: int = 15) -> str:
    """The top ops by self CPU time among the profiled events that lie inside a measured step."""
    events = profiler.events()
    steps = [e.time_range for e in events if e.name == STEP_LABEL]
    events[:] = [e for e in events  # in place: the list keeps the profiler's column settings
                 if any(s.start <= e.time_range.start and e.time_range.end <= s.end for s in steps)]
    return events.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="recipes/imas.yaml")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("-o", "--override", action="append", default=[])
    p.add_argument("--profile", action="store_true",
                   help="profile the measured steps and print the top ops by self CPU time")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    trainer = Trainer(build_run(load_recipe(args.recipe, args.override)))
    run = trainer.run
    spent: collections.Counter[str] = collections.Counter()
    started: dict[str, float] = {}

    call = trainer.plugins.call

    def timed_call(hook, default=None, **kwargs):
        started[hook] = time.perf_counter()
        try:
            return call(hook, default, **kwargs)
        finally:
            spent[hook] += time.perf_counter() - started.pop(hook)

    trainer.plugins.call = timed_call
    build_views = step_module.view_image

    def timed_view_image(*a, **k):
        t = time.perf_counter()
        out = build_views(*a, **k)
        spent["build views (photometric, blend, CutMix)"] += time.perf_counter() - t
        return out

    step_module.view_image = timed_view_image
    student_forward = run.student.forward

    def timed_student(*a, **k):
        t = time.perf_counter()
        out = student_forward(*a, **k)
        if "estimate_hardness" in started:
            spent["  of which: student eval forward"] += time.perf_counter() - t
        return out

    run.student.forward = timed_student
    profiler = None
    if args.profile:
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        profiler = profile(activities=activities)
    step_scope = (lambda: record_function(STEP_LABEL)) if args.profile else contextlib.nullcontext
    steps, batches = [], trainer.batches()
    for i in range(args.warmup + args.steps):
        labeled, unlabeled = next(batches)
        if i == args.warmup:
            spent.clear()
            if profiler is not None:
                profiler.start()
        t = time.perf_counter()
        with step_scope():
            trainer.step(labeled, unlabeled)
        if i >= args.warmup:
            steps.append(time.perf_counter() - t)
    if profiler is not None:
        profiler.stop()
    total = sum(steps)
    rows = [(name, spent[name]) for name in IMAS_HOOKS]
    rows.insert(1, ("  of which: student eval forward", spent["  of which: student eval forward"]))
    rows.append(("build views (photometric, blend, CutMix)", spent["build views (photometric, blend, CutMix)"]))
    own = sum(v for k, v in rows if not k.startswith("  "))
    print(f"recipe {args.recipe} {' '.join(args.override)}; {args.steps} steps, median step "
          f"{statistics.median(steps) * 1000:.1f} ms, {args.threads} thread(s)")
    print("| part | ms / step | share of step |")
    print("|---|---|---|")
    for name, value in rows:
        print(f"| {name} | {value / args.steps * 1000:.2f} | {100 * value / total:.1f} % |")
    extra = spent["  of which: student eval forward"]
    print(f"| **iMAS's own work** | {own / args.steps * 1000:.2f} | {100 * own / total:.1f} % |")
    print(f"| **the same without the student's eval forward** | {(own - extra) / args.steps * 1000:.2f} | "
          f"{100 * (own - extra) / total:.1f} % |")
    if profiler is not None:
        print(f"\nTop ops by self CPU time over the {args.steps} measured steps (under the profiler; mean "
              f"step {total / args.steps * 1000:.1f} ms, the ops' times sum over all steps):")
        print(step_ops_table(profiler))


if __name__ == "__main__":
    main()
