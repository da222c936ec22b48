"""A suite's output folder: the files ``ssseg suite run`` and its launchers write, read back by
``ssseg suite status`` and the report without asking the scheduler.

``<out>/suite.json`` lists the runs; each run folder holds the training run's own files
(:mod:`ssseg.run_files`), ``train.log`` (the output of ``ssseg train``), ``state.json`` (queued,
running, done, failed or stopped, written by the launcher and the run's job) and, under a
scheduler, ``job.json`` (the job that runs it and the scheduler's log of that job).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from ssseg.errors import UserError
from ssseg.files import write_text
from ssseg.recipe.load import read_yaml
from ssseg.run_files import LAST, METRICS, RECIPE

MANIFEST = "suite.json"
LOG = "train.log"
STATE = "state.json"
JOB = "job.json"
STATES = ("new", "queued", "running", "stopped", "failed", "done")


def run_name(variant: str, point: str | None, seed: int) -> str:
    """A run's folder in the suite's: ``variant/seed<k>``, or ``variant/<axis value>/seed<k>`` in
    a suite with an axis."""
    return "/".join([variant, *([point] if point is not None else []), f"seed{seed}"])


def read_records(run_dir: Path, event: str) -> list[dict[str, Any]]:
    """The ``event`` records of a run's metrics.jsonl by iteration; a record repeated by a resumed
    run keeps its latest copy, and a line a kill cut short is skipped."""
    path = run_dir / METRICS
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


def planned_iters(run_dir: Path) -> int | None:
    """``optim.iters`` of the recipe written into the run folder (None before it is written)."""
    path = run_dir / RECIPE
    return read_yaml(path).get("optim", {}).get("iters") if path.is_file() else None


def read_manifest(out: Path) -> dict[str, Any]:
    """``<out>/suite.json``; a folder without one is a :class:`UserError`."""
    path = out / MANIFEST
    if not path.is_file():
        raise UserError(f"{out} is not a suite output folder (no {MANIFEST}; it is written by "
                        "`ssseg suite run`)")
    return json.loads(path.read_text())


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` by ``data`` as indented JSON."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON mapping, or None when the file is missing or cut short."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def mark(run_dir: Path, state: str, **details: Any) -> None:
    """Record the run's ``state`` (one of :data:`STATES`) with when, where and ``details``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / STATE, {"state": state, "time": time.time(), "host": socket.gethostname(),
                                 **details})


def process_gone(record: dict[str, Any]) -> bool:
    """Whether ``record`` names a process (``pid``) on this host that no longer exists."""
    if record.get("pid") is None or record.get("host") != socket.gethostname():
        return False
    try:
        os.kill(record["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def last_iteration(run_dir: Path) -> int:
    """The newest iteration in the run's train records (0 before the first)."""
    records = read_records(run_dir, "train")
    return records[-1]["iteration"] if records else 0


def run_status(run_dir: Path) -> tuple[str, str]:
    """``(state, detail)`` of one run from its folder alone: ``done``; ``failed`` with the exit
    code and the log; ``running`` with its iteration; ``queued`` with the scheduler's job;
    ``stopped`` (interrupted, resumes on the next ``ssseg suite run`` or requeue); ``new``."""
    iters = planned_iters(run_dir)
    if iters is not None and is_finished(run_dir, iters):
        return "done", f"{iters} iterations"
    record = read_json(run_dir / STATE) or {}
    job = read_json(run_dir / JOB) or {}
    state = record.get("state", "stopped" if (run_dir / LAST).exists() else "new")
    where = f"{job['launcher']} job {job['job_id']}" if job.get("job_id") else record.get("launcher", "local")
    progress = f"iteration {last_iteration(run_dir)} of {iters}"
    if state in ("queued", "running") and process_gone(record):
        if state == "queued" and not (run_dir / LAST).exists():
            return "new", "the suite run that queued it has ended"
        return "stopped", f"{progress}; its process ended without a word (see {run_dir / LOG})"
    if state == "running":
        return "running", f"{progress} on {record.get('host')} ({where})"
    if state == "queued":
        return "queued", where + (f"; job log: {job['log']}" if job.get("log") else "")
    if state == "failed":
        return "failed", f"exit code {record.get('exit_code')}; log: {record.get('log', run_dir / LOG)}"
    if state == "stopped":
        return "stopped", f"{progress}; `ssseg suite run` resumes it"
    return state, ""
