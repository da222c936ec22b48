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
from ssseg.suite.folder import LOG, MANIFEST, STATE, is_finished, read_json, write_json
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
    ends, and a :class:`~ssseg.progress.Progress` of runs done, with how many are running and
    have failed, and the ETA. Collects one line per failed run."""

    def __init__(self, total: int, out: Path, say: Callable[[str], None]):
        self.out, self.say, self.failures = out, say, []
        self.progress = Progress(total, "suite", "runs")
        self.running: dict[str, float] = {}
        self.lock = threading.Lock()

    def started(self, name: str, run_dir: Path) -> None:
        """Run ``name`` began training (or resuming from its ``last.pt``)."""
        with self.lock:
            self.running[name] = time.perf_counter()
            self.say(f"{name}: {'resuming' if (run_dir / LAST).exists() else 'training'}")
            self.progress.note(running=len(self.running), failed=len(self.failures))

    def finished(self, name: str, code: int | None, problem: str | None = None) -> None:
        """Run ``name`` ended with exit ``code`` (None: its job failed, ``problem`` says how)."""
        log = (read_json(self.out / name / STATE) or {}).get("log", self.out / name / LOG)
        with self.lock:
            began = self.running.pop(name, None)
            if code == 0:
                took = f" in {time.perf_counter() - began:.0f} s" if began is not None else ""
                self.say(f"{name}: done{took}")
            else:
                failure = f"{name}: {problem or f'failed (exit code {code}); log: {log}'}"
                self.say(failure)
                self.failures.append(failure)
            self.progress.note(running=len(self.running), failed=len(self.failures))
            self.progress.update()


def run_suite(suite: LoadedSuite, out: Path, launcher: Any, say: Callable[[str], None] = print) -> list[str]:
    """Run every unfinished job of ``suite`` under ``out`` with ``launcher`` (``LocalLauncher``
    or ``SubmititLauncher``); returns one line per failed job."""
    write_manifest(suite, out)
    failures: list[str] = []
    runs = {}
    for job in suite.jobs:
        run_dir = out / job.name
        state = job_state(job, run_dir)
        if state == "done":
            say(f"{job.name}: finished, skipped")
        elif state == "stale":
            failures.append(f"{job.name}: {run_dir} holds a run of a different recipe (the suite changed "
                            "since it started); delete the folder to train it again")
            say(failures[-1])
        elif launcher.still_active(run_dir):
            say(f"{job.name}: already queued or running ({run_dir / STATE}), skipped")
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_text(run_dir / RECIPE, dump_recipe(job.recipe))
            runs[job.name] = launcher.train_job(run_dir)
    progress = SuiteProgress(len(runs), out, say)
    with progress.progress:
        launcher.launch(runs, progress)
    return failures + progress.failures
