"""Where a suite's runs train: ``local`` (subprocesses of ``ssseg suite run``, ``--jobs`` at a
time) or ``slurm`` (one SLURM job per run through submitit, a job array where they share their
options, requeued after preemption or at the time limit).

A launcher makes the :class:`~ssseg.suite.train_job.TrainJob` of each run and launches runs
(and, under SLURM, follows those an earlier ``ssseg suite run`` submitted), reporting each
start and end to a watcher (``started(name, run_dir)``, ``finished(name)``, and ``note(line)``
for what the user should know). A run's outcome is read from its folder
(:func:`~ssseg.suite.folder.run_status`), where the run's job records it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol

from ssseg.errors import UserError
from ssseg.signals import handling
from ssseg.suite import slurm
from ssseg.suite.folder import JOB, STATE, mark, read_json, settle, slurm_states, write_json
from ssseg.suite.results import counted
from ssseg.suite.spec import SlurmOptions
from ssseg.suite.train_job import TrainJob

SIGNAL_DELAY_S = 180  # SLURM signals a job this long before its time limit, to save and requeue
SLURM_POLL_S = 30.0  # how often ``--launcher slurm`` asks sacct about its jobs


class Watcher(Protocol):
    """What a launcher reports to (``ssseg suite run``'s progress)."""

    def started(self, name: str, run_dir: Path) -> None: ...

    def finished(self, name: str) -> None: ...

    def note(self, line: str) -> None: ...


class Stopped(Exception):
    """``ssseg suite run`` received SIGINT (Ctrl-C) or SIGTERM (``ssseg suite cancel``)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise :class:`Stopped` in the main thread."""
    def stop(signum: int, _frame: Any) -> None:
        raise Stopped(signum)

    with handling(stop):
        yield


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

    def launch(self, runs: dict[str, TrainJob], watcher: Watcher, active: dict[str, Path] | None = None) -> None:
        """Train ``runs`` (name -> job) and return when all have ended. The ``active`` runs
        (name -> folder), which another process still trains, are not followed: that process
        (one of an earlier ``ssseg suite run`` on a system without tethering) records their end.
        On :class:`Stopped`, start no queued run, pass the signal to the running ones (they save
        a checkpoint and stop), wait for them, and raise it again."""
        for name in active or {}:
            watcher.note(f"{name}: trained by another process, not followed; run `ssseg suite run` "
                         "again when it has ended")
        for job in runs.values():
            mark(job.run_dir, "queued", pid=os.getpid())

        def one(name: str) -> None:
            watcher.started(name, runs[name].run_dir)
            runs[name]()
            watcher.finished(name)

        pool = ThreadPoolExecutor(self.jobs)
        try:
            list(pool.map(one, runs))
        except Stopped as stop:
            for job in runs.values():
                job.stop(stop.signum)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


class SubmititLauncher:
    """Each run as one job of a submitit executor (``slurm_executor``; in tests submitit's
    ``LocalExecutor``), submitted together (a SLURM job array), then followed every ``poll_s``
    seconds with one ``sacct`` call for all of them, with the runs still queued or running from
    an earlier submission. A job that ends before its training recorded an end (a node failure,
    out of memory, cancelled) is recorded in its run's folder."""

    def __init__(self, executor: Any, options: SlurmOptions = SlurmOptions(), poll_s: float | None = None):
        self.executor, self.options = executor, options
        self.poll_s = SLURM_POLL_S if poll_s is None else poll_s
        self.kind = type(executor).__name__.removesuffix("Executor").lower()
        self.submitted: dict[str, Any] = {}  # job id -> submitit job, of this process's submissions

    def train_job(self, run_dir: Path) -> TrainJob:
        """The job that trains the run in ``run_dir`` (under torchrun for several GPUs or nodes)."""
        return slurm_train_job(self.options, run_dir)

    def _job_states(self, run_dirs: Iterable[Path]) -> dict[str, str]:
        """The scheduler's state of the runs' jobs by job id: one sacct call under SLURM; the
        jobs this process submitted under another executor (submitit's local one)."""
        if self.kind == "slurm":
            return slurm_states(run_dirs)
        return {job_id: job.state for job_id, job in self.submitted.items()}

    def _submit(self, runs: dict[str, TrainJob], watcher: Watcher) -> None:
        for job in runs.values():
            mark(job.run_dir, "queued", launcher=self.kind)
        try:
            with self.executor.batch():
                jobs = {name: self.executor.submit(job) for name, job in runs.items()}
        except Exception as err:  # noqa: BLE001 - sbatch refused (a bad partition, account, option)
            for job in runs.values():
                (job.run_dir / STATE).unlink(missing_ok=True)
            raise UserError(f"{self.kind} refused the jobs: {str(err).strip()}") from None
        for name, job in jobs.items():
            self.submitted[job.job_id] = job
            write_json(runs[name].run_dir / JOB, {"launcher": self.kind, "job_id": job.job_id,
                                                  "log": str(job.paths.stderr)})
        ids = [job.job_id for job in jobs.values()]
        what = (f"job array {ids[0].split('_')[0]} (tasks {ids[0]} to {ids[-1]})" if len(ids) > 1
                else f"job {ids[0]}")
        watcher.note(f"submitted {counted(len(ids), 'run')} to {self.kind} as {what}")

    def launch(self, runs: dict[str, TrainJob], watcher: Watcher, active: dict[str, Path] | None = None) -> None:
        """Submit ``runs`` (name -> job) and return when their jobs and those of the ``active``
        runs (name -> run folder) have ended."""
        if runs:
            self._submit(runs, watcher)
        pending = {name: job.run_dir for name, job in runs.items()} | (active or {})
        started: set[str] = set()
        unanswered = False
        while pending:
            try:
                states = self._job_states(pending.values())
                unanswered = False
            except slurm.SchedulerError as err:
                if not unanswered:
                    watcher.note(f"cannot ask {self.kind} about its jobs ({err}); trying again every "
                                 f"{self.poll_s:.0f} s")
                states, unanswered = {}, True
            for name, run_dir in list(pending.items()):
                state = (read_json(run_dir / STATE) or {}).get("state")
                if name not in started and state != "queued":
                    started.add(name)
                    watcher.started(name, run_dir)
                scheduler = states.get((read_json(run_dir / JOB) or {}).get("job_id"))
                if scheduler is not None and scheduler not in slurm.ACTIVE:
                    settle(run_dir, scheduler)
                    del pending[name]
                    watcher.finished(name)
            if pending:
                time.sleep(self.poll_s)


def slurm_train_job(options: SlurmOptions, run_dir: Path) -> TrainJob:
    """The job of a SLURM run: ``options``' GPUs and nodes, ``run.threads`` = its CPUs over its
    GPUs (unset without CPUs)."""
    cpus, gpus = options.cpus_per_run, options.gpus_per_run
    threads = max(1, cpus // max(1, gpus)) if cpus else None
    return TrainJob(run_dir, threads, gpus, options.nodes_per_run)


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
    """A submitit ``SlurmExecutor`` writing its files under ``<out>/.submitit``; a
    :class:`UserError` where the SLURM commands are missing."""
    submitit = _submitit()
    missing = slurm.missing_commands()
    if missing:
        raise UserError(f"--launcher slurm: no {', '.join(missing)} on this machine; run it where the "
                        f"SLURM commands are (a login node: submitit recognises a cluster by srun, "
                        f"sbatch submits, sacct follows the jobs, scancel cancels them); --dry-run "
                        f"shows the runs and the sbatch script anywhere")
    executor = submitit.SlurmExecutor(folder=out / ".submitit" / "%j")
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
