"""Running a suite: decide which runs need training (skip finished ones, resume unfinished ones,
refuse folders of another recipe), write each run's recipe, hand the runs to a launcher and show
their progress. Training itself is ``ssseg train``, never re-implemented here."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable

import attrs

from ssseg.errors import UserError
from ssseg.files import write_text
from ssseg.progress import Progress
from ssseg.recipe.load import build_recipe, dump_recipe, read_yaml
from ssseg.recipe.schema import Recipe
from ssseg.run_files import LAST, RECIPE
from ssseg.suite.folder import MANIFEST, asked_slurm, is_finished, run_status, write_json
from ssseg.suite.results import counted
from ssseg.suite.spec import Job, LoadedSuite


def _comparable(recipe: Recipe | None) -> Recipe | None:
    return recipe and attrs.evolve(recipe, run=attrs.evolve(recipe.run, threads=None))


def _recorded_recipe(run_dir: Path) -> Recipe | None:
    try:
        return build_recipe(read_yaml(run_dir / RECIPE))
    except UserError:
        return None


def job_state(job: Job, run_dir: Path) -> str:
    """``done``, ``partial`` (a checkpoint to resume), ``new``, or ``stale`` (the folder holds a
    run of another recipe, apart from ``run.threads``: the suite changed since it started)."""
    finished = is_finished(run_dir, job.recipe.optim.iters)
    started = (run_dir / LAST).exists()
    if (finished or started) and _comparable(_recorded_recipe(run_dir)) != _comparable(job.recipe):
        return "stale"
    return "done" if finished else "partial" if started else "new"


def write_manifest(suite: LoadedSuite, out: Path) -> None:
    """``<out>/suite.json``: what ``ssseg suite report`` and ``ssseg suite status`` need to read
    the folder (variants, axis, seeds, runs, the reference named by the suite if any, and the
    supervised-only variants the report picks the reference among otherwise)."""
    out.mkdir(parents=True, exist_ok=True)
    axis = suite.spec.axis
    write_json(out / MANIFEST, {
        "suite": str(suite.path), "reference": suite.spec.reference,
        "supervised": list(suite.supervised_variants), "variants": list(suite.spec.variants),
        "axis": axis and {"key": axis.key, "label": axis.title, "values": list(suite.spec.points())},
        "seeds": list(suite.spec.seeds), "runs": [job.name for job in suite.jobs]})


class SuiteProgress:
    """What ``ssseg suite run`` shows while its runs train: a line when a run starts and when it
    ends (its state from its folder), and a :class:`~ssseg.progress.Progress` of runs ended,
    with how many are running and have failed, and the ETA."""

    def __init__(self, total: int, out: Path, say: Callable[[str], None]):
        self.out, self.say, self.failed = out, say, 0
        self.progress = Progress(total, "suite", "runs")
        self.running: dict[str, float] = {}
        self.lock = threading.Lock()

    def note(self, line: str) -> None:
        """Tell the user ``line``."""
        with self.lock:
            self.say(line)

    def started(self, name: str, run_dir: Path) -> None:
        """Run ``name`` began training (or resuming from its ``last.pt``)."""
        with self.lock:
            self.running[name] = time.perf_counter()
            self.say(f"{name}: {'resuming' if (run_dir / LAST).exists() else 'training'}")
            self.progress.note(running=len(self.running), failed=self.failed)

    def finished(self, name: str) -> None:
        """Run ``name`` ended; its folder says how."""
        state, detail = run_status(self.out / name)
        with self.lock:
            began = self.running.pop(name, None)
            if state == "done":
                took = f" in {time.perf_counter() - began:.0f} s" if began is not None else ""
                self.say(f"{name}: done{took}")
            else:
                self.failed += state == "failed"
                self.say(f"{name}: {state} ({detail})")
            self.progress.note(running=len(self.running), failed=self.failed)
            self.progress.update()


@attrs.frozen
class Plan:
    """What ``ssseg suite run`` does with each run: ``train`` (new, stopped, or failed and
    retried), ``active`` (name -> its state: queued or running from an earlier ``suite run``),
    and ``skipped`` (name -> why: finished, failed before, a folder of another recipe)."""

    train: tuple[Job, ...]
    active: dict[str, str]
    skipped: dict[str, str]


def plan_runs(suite: LoadedSuite, out: Path, jobs: dict[str, str] | None, retry_failed: bool = False) -> Plan:
    """Sort the suite's runs by their folders under ``out`` and ``jobs`` (the scheduler's state
    by job id; None: not asked): a run that failed is trained again only with ``retry_failed``."""
    train, active, skipped = [], {}, {}
    for job in suite.jobs:
        run_dir = out / job.name
        state = job_state(job, run_dir)
        if state == "done":
            skipped[job.name] = "finished, skipped"
            continue
        if state == "stale":
            skipped[job.name] = (f"{run_dir} holds a run of a different recipe (the suite changed since it "
                                 "started); delete the folder to train it again")
            continue
        status, detail = run_status(run_dir, jobs)
        if status in ("queued", "running"):
            active[job.name] = f"already {status} ({detail})"
        elif status == "failed" and not retry_failed:
            skipped[job.name] = f"failed before ({detail}); not retried: --retry-failed trains it again"
        else:
            train.append(job)
    return Plan(tuple(train), active, skipped)


def outcome(suite: LoadedSuite, out: Path) -> list[str]:
    """One line per run of the suite that is not done, with its state from its folder (a stale
    folder counts as not done)."""
    lines = []
    for job in suite.jobs:
        state = job_state(job, out / job.name)
        if state == "stale":
            lines.append(f"{job.name}: holds a run of a different recipe; delete {out / job.name} to train it again")
        elif state != "done":
            lines.append("{}: {} ({})".format(job.name, *run_status(out / job.name)))
    return lines


def run_suite(suite: LoadedSuite, out: Path, launcher: Any, say: Callable[[str], None] = print,
              retry_failed: bool = False) -> list[str]:
    """Run every unfinished job of ``suite`` under ``out`` with ``launcher`` (``LocalLauncher``
    or ``SubmititLauncher``), failed ones only with ``retry_failed``, and follow those still
    active from an earlier submission where the launcher can; returns one line per run that is
    not done at the end."""
    write_manifest(suite, out)
    jobs, note = asked_slurm(out / job.name for job in suite.jobs)
    if note:
        say(note)
    plan = plan_runs(suite, out, jobs, retry_failed)
    for name, why in (plan.skipped | plan.active).items():
        say(f"{name}: {why}")
    runs = {}
    for job in plan.train:
        run_dir = out / job.name
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / RECIPE, dump_recipe(job.recipe))
        runs[job.name] = launcher.train_job(run_dir)
    say(f"{counted(len(runs), 'run')} to train, {len(plan.active)} already queued or running, "
        f"{len(plan.skipped)} skipped")
    progress = SuiteProgress(len(runs) + len(plan.active), out, say)
    with progress.progress:
        launcher.launch(runs, progress, {name: out / name for name in plan.active})
    return outcome(suite, out)
