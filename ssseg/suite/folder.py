"""A suite's output folder: the files ``ssseg suite run`` and its launchers write, read back by
``ssseg suite status`` and the report (with one ``sacct`` call for the runs under SLURM).

``<out>/suite.json`` lists the runs; each run folder holds the training run's own files
(:mod:`ssseg.run_files`), ``train.log`` (the output of ``ssseg train``), ``state.json`` (queued,
running, done, failed or stopped, written by the launcher and the run's job, with a ``detail``
when the launcher saw its scheduler job end first) and, under a scheduler, ``job.json`` (the job
that runs it and the scheduler's log of that job). ``<out>/suite.lock`` names the ``ssseg suite
run`` writing the folder (:mod:`ssseg.run_lock`).
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from ssseg.errors import UserError
from ssseg.files import write_text
from ssseg.recipe.load import read_yaml
from ssseg.run_lock import process_alive
from ssseg.run_files import LAST, METRICS, RECIPE
from ssseg.suite.slurm import ACTIVE, SchedulerError, job_states

MANIFEST = "suite.json"
LOG = "train.log"
STATE = "state.json"
JOB = "job.json"
STATES = ("new", "queued", "running", "stopped", "failed", "done")
SUITE_LOCK = "suite.lock"  # held by `ssseg suite run`
REPORT_LOCK = "report.lock"  # held while a report is written into a folder


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
    """Whether ``record`` names a process (``pid``) of this host that no longer runs (ended,
    a zombie, or its pid reused by a process started after ``record["time"]``)."""
    if record.get("pid") is None or record.get("host") != socket.gethostname():
        return False
    return not process_alive(record["pid"], since=record.get("time"))


def last_iteration(run_dir: Path) -> int:
    """The newest iteration in the run's train records (0 before the first)."""
    records = read_records(run_dir, "train")
    return records[-1]["iteration"] if records else 0


def slurm_states(run_dirs: Iterable[Path]) -> dict[str, str]:
    """sacct's state of the SLURM job of each of ``run_dirs`` that has one, by job id, in one
    sacct call (:class:`~ssseg.suite.slurm.SchedulerError` when it cannot be asked)."""
    jobs = (read_json(run_dir / JOB) or {} for run_dir in run_dirs)
    return job_states(job["job_id"] for job in jobs if job.get("launcher") == "slurm" and job.get("job_id"))


def asked_slurm(run_dirs: Iterable[Path]) -> tuple[dict[str, str] | None, str | None]:
    """``(slurm_states(run_dirs), None)``, or ``(None, a note saying why SLURM was not asked)``
    where sacct is missing or fails."""
    try:
        return slurm_states(run_dirs), None
    except SchedulerError as err:
        return None, f"(SLURM not asked: {err}; queued and running runs as their folders last recorded)"


def ended_job(run_dir: Path, scheduler_state: str) -> tuple[str, str]:
    """``(state, detail)`` of a run whose scheduler job ended (``scheduler_state``, e.g. sacct's
    FAILED or CANCELLED) while its folder says queued or running: the job ended before the
    training recorded an end (a node failure, out of memory, the time limit, a cancel)."""
    job = read_json(run_dir / JOB) or {}
    name = f"{job.get('launcher')} job {job.get('job_id')}"
    if scheduler_state == "CANCELLED":
        resumes = (run_dir / LAST).exists()
        return ("stopped" if resumes else "new",
                f"{name} was cancelled; `ssseg suite run` {'resumes' if resumes else 'trains'} it")
    return "failed", f"{name} ended {scheduler_state} before the training recorded an end; job log: {job.get('log')}"


def settle(run_dir: Path, scheduler_state: str) -> None:
    """Record the end of a run's scheduler job (``scheduler_state``) in its ``state.json``
    when its training did not record one (see :func:`ended_job`)."""
    state = (read_json(run_dir / STATE) or {}).get("state")
    iters = planned_iters(run_dir)
    if state in ("queued", "running") and not (iters is not None and is_finished(run_dir, iters)):
        state, detail = ended_job(run_dir, scheduler_state)
        mark(run_dir, state, detail=detail, job_state=scheduler_state)


def run_status(run_dir: Path, jobs: Mapping[str, str] | None = None) -> tuple[str, str]:
    """``(state, detail)`` of one run from its folder and ``jobs`` (the scheduler's state by job
    id, from :func:`slurm_states`; None: not asked): ``done``; ``failed`` with the exit code
    and the log; ``running`` with its iteration; ``queued`` with the scheduler's job;
    ``stopped`` (interrupted or cancelled, resumes on the next ``ssseg suite run`` or requeue);
    ``new``. A run its folder says queued or running is checked: a local process that no longer
    runs, or a scheduler job that has ended, is said so."""
    iters = planned_iters(run_dir)
    if iters is not None and is_finished(run_dir, iters):
        return "done", f"{iters} iterations"
    record = read_json(run_dir / STATE) or {}
    job = read_json(run_dir / JOB) or {}
    state = record.get("state", "stopped" if (run_dir / LAST).exists() else "new")
    scheduler = (jobs or {}).get(job.get("job_id"))
    where = f"{job['launcher']} job {job['job_id']}" if job.get("job_id") else record.get("launcher", "local")
    progress = f"iteration {last_iteration(run_dir)} of {iters}"
    if state in ("queued", "running"):
        if scheduler is not None and scheduler not in ACTIVE:
            return ended_job(run_dir, scheduler)
        if process_gone(record):
            if state == "queued" and not (run_dir / LAST).exists():
                return "new", "the suite run that queued it has ended"
            return "stopped", f"{progress}; its process ended without a word (see {run_dir / LOG})"
    if state == "running":
        return "running", f"{progress} on {record.get('host')} ({where})"
    if state == "queued":
        return "queued", where + (f"; job log: {job['log']}" if job.get("log") else "")
    if record.get("detail"):
        return state, record["detail"]
    if state == "failed":
        return "failed", f"exit code {record.get('exit_code')}; log: {record.get('log', run_dir / LOG)}"
    if state == "stopped":
        return "stopped", f"{progress}; `ssseg suite run` resumes it"
    return state, ""


def log_tail(run_dir: Path, lines: int = 3) -> tuple[Path, list[str]]:
    """The log a run's failure points to (its job's log when the job ended before the training,
    else ``train.log``) and its last ``lines`` non-empty lines."""
    record = read_json(run_dir / STATE) or {}
    job = read_json(run_dir / JOB) or {}
    path = Path(job["log"] if record.get("job_state") and job.get("log") else record.get("log", run_dir / LOG))
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return path, []
    return path, [line for line in text.splitlines() if line.strip()][-lines:]
