"""Running a suite: each job is ``python -m ssseg train`` in a subprocess, resumable, optionally
several at a time. Training itself is never re-implemented here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import attrs

from ssseg.errors import UserError
from ssseg.files import write_text
from ssseg.recipe.load import build_recipe, dump_recipe, read_yaml
from ssseg.recipe.schema import Recipe
from ssseg.suite.spec import Job, LoadedSuite

MANIFEST = "suite.json"
LOG = "train.log"


def read_records(run_dir: Path, event: str) -> list[dict[str, Any]]:
    """The ``event`` records of a run's metrics.jsonl by iteration; a record repeated by a resumed
    run keeps its latest copy, and a line a kill cut short is skipped."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    records = {}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == event:
            records[record["iteration"]] = record
    return [records[i] for i in sorted(records)]


def is_finished(run_dir: Path, iters: int) -> bool:
    """True when the run's metrics hold the final evaluation (at ``optim.iters``)."""
    return any(r["iteration"] == iters for r in read_records(run_dir, "eval"))


def _comparable(recipe: Recipe | None) -> Recipe | None:
    return recipe and attrs.evolve(recipe, run=attrs.evolve(recipe.run, threads=None))


def _recorded_recipe(run_dir: Path) -> Recipe | None:
    try:
        return build_recipe(read_yaml(run_dir / "recipe.yaml"))
    except UserError:
        return None


def job_state(job: Job, run_dir: Path) -> str:
    """``done``, ``partial`` (a checkpoint to resume), ``new``, or ``stale`` (the folder holds a
    run of another recipe, apart from ``run.threads``: the suite changed since it started)."""
    finished = is_finished(run_dir, job.recipe.optim.iters)
    started = (run_dir / "last.pt").exists()
    if (finished or started) and _comparable(_recorded_recipe(run_dir)) != _comparable(job.recipe):
        return "stale"
    return "done" if finished else "partial" if started else "new"


def train_command(run_dir: Path, threads: int | None, resume: bool) -> list[str]:
    """The ``ssseg train`` command line of one job (its recipe is ``run_dir/recipe.yaml``)."""
    cmd = [sys.executable, "-m", "ssseg", "train", str(run_dir / "recipe.yaml"), "--out", str(run_dir)]
    if threads is not None:
        cmd += ["-o", f"run.threads={threads}"]
    return cmd + (["--resume"] if resume else [])


def run_job(job: Job, run_dir: Path, threads: int | None) -> int:
    """Train one job in a subprocess (resuming from ``last.pt`` if there is one); its output is
    appended to ``run_dir/train.log``. Returns the exit code."""
    run_dir.mkdir(parents=True, exist_ok=True)
    resume = (run_dir / "last.pt").exists()
    if not resume:  # a run that died before its first checkpoint starts over
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    write_text(run_dir / "recipe.yaml", dump_recipe(job.recipe))
    with open(run_dir / LOG, "a") as log:
        log.write(f"$ {' '.join(train_command(run_dir, threads, resume))}\n")
        log.flush()
        return subprocess.run(train_command(run_dir, threads, resume), stdout=log,
                              stderr=subprocess.STDOUT).returncode


def available_cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def write_manifest(suite: LoadedSuite, out: Path) -> None:
    """``<out>/suite.json``: what ``ssseg suite report`` needs to read the folder."""
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"suite": str(suite.path), "reference": suite.reference,
                "variants": list(suite.spec.variants), "seeds": list(suite.spec.seeds)}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def run_suite(suite: LoadedSuite, out: Path, jobs: int = 1,
              say: Callable[[str], None] = print) -> list[str]:
    """Run every unfinished job of ``suite`` under ``out``, ``jobs`` at a time (each with
    ``run.threads = max(1, cores // jobs)`` when ``jobs > 1``). Returns one line per failed job."""
    write_manifest(suite, out)
    threads = max(1, available_cores() // jobs) if jobs > 1 else None
    failures: list[str] = []
    lock = threading.Lock()

    def one(job: Job) -> None:
        run_dir = out / job.name
        state = job_state(job, run_dir)
        if state == "done":
            say(f"{job.name}: finished, skipped")
            return
        if state == "stale":
            failure = (f"{job.name}: {run_dir} holds a run of a different recipe (the suite changed "
                       "since it started); delete the folder to train it again")
        else:
            say(f"{job.name}: {'resuming' if state == 'partial' else 'training'}")
            started = time.perf_counter()
            code = run_job(job, run_dir, threads)
            if code == 0:
                say(f"{job.name}: done in {time.perf_counter() - started:.0f} s")
                return
            failure = f"{job.name}: failed (exit code {code}); log: {run_dir / LOG}"
        say(failure)
        with lock:
            failures.append(failure)

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        list(pool.map(one, suite.jobs))
    return failures
