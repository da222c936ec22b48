"""Where a suite's runs train: ``local`` (subprocesses of ``ssseg suite run``, ``--jobs`` at a
time) or ``slurm`` (one SLURM job per run through submitit, a job array where they share their
options, requeued after preemption or at the time limit).

A launcher makes the :class:`~ssseg.suite.train_job.TrainJob` of each run, tells whether a run
that its folder marks queued or running is still alive, and launches runs, reporting each start
and end to a watcher (``started(name, run_dir)``, ``finished(name, code, problem)``).
"""

from __future__ import annotations

import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from ssseg.errors import UserError
from ssseg.suite.folder import JOB, STATE, mark, process_gone, read_json, write_json
from ssseg.suite.spec import SlurmOptions
from ssseg.suite.train_job import TrainJob

SIGNAL_DELAY_S = 180  # SLURM signals a job this long before its time limit, to save and requeue


class Watcher(Protocol):
    """What a launcher reports to (``ssseg suite run``'s progress)."""

    def started(self, name: str, run_dir: Path) -> None: ...

    def finished(self, name: str, code: int | None, problem: str | None = None) -> None: ...


def available_cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class LocalLauncher:
    """Each run as a subprocess of this process, ``jobs`` at a time (each with ``run.threads =
    max(1, cores // jobs)`` when ``jobs > 1``)."""

    kind = "local"

    def __init__(self, jobs: int = 1):
        if jobs < 1:
            raise UserError(f"--jobs must be at least 1, got {jobs}")
        self.jobs = jobs
        self.threads = max(1, available_cores() // jobs) if jobs > 1 else None

    def train_job(self, run_dir: Path) -> TrainJob:
        """The job that trains the run in ``run_dir``."""
        return TrainJob(run_dir, self.threads)

    def still_active(self, run_dir: Path) -> bool:
        """Whether a process on this host still runs (or queues) the run in ``run_dir``."""
        record = read_json(run_dir / STATE) or {}
        return (record.get("host") == socket.gethostname() and record.get("pid") is not None
                and not process_gone(record))

    def launch(self, runs: dict[str, TrainJob], watcher: Watcher) -> None:
        """Train ``runs`` (name -> job) and return when all have ended."""
        for job in runs.values():
            mark(job.run_dir, "queued", pid=os.getpid())

        def one(name: str) -> None:
            watcher.started(name, runs[name].run_dir)
            watcher.finished(name, runs[name]())

        pool = ThreadPoolExecutor(self.jobs)
        try:
            list(pool.map(one, runs))
        finally:  # after Ctrl-C, start no queued run (the running ones save and stop on SIGINT)
            pool.shutdown(wait=True, cancel_futures=True)


class SubmititLauncher:
    """Each run as one job of a submitit executor (``slurm_executor``; in tests submitit's
    ``LocalExecutor``), submitted together (a SLURM job array), then watched every ``poll_s``
    seconds from the run folders and the executor's results."""

    def __init__(self, executor: Any, options: SlurmOptions = SlurmOptions(), poll_s: float = 30.0):
        self.executor, self.options, self.poll_s = executor, options, poll_s
        self.kind = type(executor).__name__.removesuffix("Executor").lower()
        cpus, gpus = options.cpus_per_run, options.gpus_per_run
        self.threads = max(1, cpus // max(1, gpus)) if cpus else None

    def train_job(self, run_dir: Path) -> TrainJob:
        """The job that trains the run in ``run_dir`` (under torchrun for several GPUs or nodes)."""
        return TrainJob(run_dir, self.threads, self.options.gpus_per_run, self.options.nodes_per_run)

    def _job(self, run_dir: Path) -> Any:
        record = read_json(run_dir / JOB)
        if not record or record.get("launcher") != self.kind:
            return None
        return self.executor.job_class(folder=self.executor.folder, job_id=record["job_id"])

    def still_active(self, run_dir: Path) -> bool:
        """Whether the scheduler's job of the run in ``run_dir`` has not ended."""
        job = self._job(run_dir)
        return job is not None and not job.done()

    def launch(self, runs: dict[str, TrainJob], watcher: Watcher) -> None:
        """Submit ``runs`` (name -> job) and return when all their jobs have ended."""
        for job in runs.values():
            mark(job.run_dir, "queued", launcher=self.kind)
        try:
            with self.executor.batch():
                submitted = {name: self.executor.submit(job) for name, job in runs.items()}
        except Exception as err:  # noqa: BLE001 - sbatch refused (a bad partition, account, option)
            for job in runs.values():
                (job.run_dir / STATE).unlink(missing_ok=True)
            raise UserError(f"{self.kind} refused the jobs: {str(err).strip()}") from None
        for name, job in submitted.items():
            write_json(runs[name].run_dir / JOB, {"launcher": self.kind, "job_id": job.job_id,
                                                  "log": str(job.paths.stderr)})
        started: set[str] = set()
        while submitted:
            for name, job in list(submitted.items()):
                state = (read_json(runs[name].run_dir / STATE) or {}).get("state")
                if name not in started and state in ("running", "done", "failed", "stopped"):
                    started.add(name)
                    watcher.started(name, runs[name].run_dir)
                if job.done():
                    del submitted[name]
                    error = job.exception()
                    if error is not None:
                        first = str(error).strip().splitlines()
                        watcher.finished(name, None, f"its job failed ({first[0] if first else error}); "
                                                     f"log: {job.paths.stderr}")
                    else:
                        watcher.finished(name, job.result())
            if submitted:
                time.sleep(self.poll_s)


def slurm_parameters(options: SlurmOptions, name: str) -> dict[str, Any]:
    """The parameters of submitit's ``SlurmExecutor`` for ``options`` (one task per node; the
    run's own torchrun starts one process per GPU)."""
    parameters = {
        "job_name": name, "partition": options.partition, "account": options.account,
        "time": options.time_min, "nodes": options.nodes_per_run, "ntasks_per_node": 1,
        "gpus_per_node": options.gpus_per_run or None, "cpus_per_task": options.cpus_per_run,
        "signal_delay_s": SIGNAL_DELAY_S, "setup": list(options.setup) or None,
        "additional_parameters": {k.replace("-", "_"): v for k, v in options.sbatch.items()} or None,
    }
    return {k: v for k, v in parameters.items() if v is not None}


def _submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise UserError("--launcher slurm needs submitit: pip install 'ssseg[cluster]'") from None
    return submitit


def slurm_executor(options: SlurmOptions, out: Path, name: str) -> Any:
    """A submitit ``SlurmExecutor`` writing its files under ``<out>/.submitit``."""
    submitit = _submitit()
    try:
        executor = submitit.SlurmExecutor(folder=out / ".submitit" / "%j")
    except RuntimeError as err:  # no srun on this machine
        raise UserError(f"--launcher slurm: {err}") from None
    executor.update_parameters(**slurm_parameters(options, name))
    return executor


def sbatch_script(options: SlurmOptions, out: Path, name: str, runs: int) -> str:
    """The sbatch script ``--launcher slurm`` would submit for ``runs`` runs (a job array when
    more than one), made by submitit without SLURM."""
    submitit = _submitit()

    class Preview(submitit.SlurmExecutor):
        @classmethod
        def affinity(cls) -> int:
            return 1  # let the executor be built where there is no srun: it submits nothing

    executor = Preview(folder=out / ".submitit" / "%j")
    executor.update_parameters(**slurm_parameters(options, name))
    if runs > 1:
        executor.parameters["map_count"] = runs
    return executor._make_submission_file_text(executor._submitit_command_str, "preview")
