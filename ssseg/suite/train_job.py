"""One suite run as a job: ``ssseg train`` in a subprocess (under torchrun when it asks for more
than one GPU or node), resumed from its ``last.pt`` when there is one, its output appended to the
run's ``train.log`` and its state to ``state.json``. The training runs in its own process group
(a signal for it reaches torchrun's workers too, and a Ctrl-C on the suite's terminal reaches
only the suite, which forwards it once), tethered to the process that starts it
(:mod:`ssseg.suite.tethered`): when that process dies, even by SIGKILL, the training gets
SIGTERM, saves a checkpoint and stops.

A launcher calls a :class:`TrainJob` in a thread of ``ssseg suite run`` (local) or inside a SLURM
job through submitit. On preemption or at the time limit submitit calls :meth:`TrainJob.checkpoint`
on SLURM's signal: it stops the training (SIGTERM: the trainer saves after its current step) and
returns the same job for submitit to requeue, which then resumes exactly from that checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any

from ssseg.run_files import LAST, METRICS, RECIPE
from ssseg.suite import tethered
from ssseg.suite.folder import LOG, is_finished, last_iteration, mark, planned_iters

POLL_S = 0.2  # how often a job looks at its training process (a signal is handled in between)
REQUEUE_WAIT_S = 120  # after SLURM's SIGTERM stopped the training, how long to wait for its USR2
STOPPED = (128 + signal.SIGINT, 128 + signal.SIGTERM)  # exit codes of a training stopped by a signal


def train_command(run_dir: Path, threads: int | None, resume: bool, gpus: int = 0, nodes: int = 1,
                  node_rank: int = 0, master: str | None = None) -> list[str]:
    """The command line of one run (its recipe is ``run_dir/recipe.yaml``): ``python -m ssseg
    train``, under ``torch.distributed.run`` (torchrun) with one process per GPU when ``gpus > 1``
    or ``nodes > 1`` (rendezvous at ``master`` on several nodes, standalone on one)."""
    cmd = [sys.executable, "-m"]
    if gpus > 1 or nodes > 1:
        cmd += ["torch.distributed.run", f"--nproc_per_node={max(1, gpus)}"]
        if nodes > 1:
            port = 20000 + zlib.crc32(str(run_dir).encode()) % 20000
            cmd += [f"--nnodes={nodes}", f"--node_rank={node_rank}", f"--master_addr={master}",
                    f"--master_port={port}"]
        else:
            cmd += ["--standalone"]
        cmd += ["-m"]
    cmd += ["ssseg", "train", str(run_dir / RECIPE), "--out", str(run_dir)]
    if threads is not None:
        cmd += ["-o", f"run.threads={threads}"]
    return cmd + (["--resume"] if resume else [])


def _placement(nodes: int) -> tuple[int, str | None]:
    """(this node's rank, the first node's host name) inside a submitit job over ``nodes`` nodes."""
    if nodes == 1:
        return 0, None
    import submitit

    env = submitit.JobEnvironment()
    return env.node, env.hostnames[0]


class TrainJob:
    """Train the run in ``run_dir`` to its end, resuming from ``last.pt``; returns the exit code
    of ``ssseg train`` (0 when it finished). ``threads``: ``run.threads`` for the training;
    ``gpus``/``nodes``: processes per node and nodes, under torchrun when more than one."""

    def __init__(self, run_dir: Path, threads: int | None = None, gpus: int = 0, nodes: int = 1):
        self.run_dir, self.threads, self.gpus, self.nodes = Path(run_dir), threads, gpus, nodes
        self.process: subprocess.Popen | None = None
        self.stop_signal: int | None = None
        self._lock = threading.RLock()  # between starting the process and stop() from another thread

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "process": None, "_lock": None}  # pickled by submitit

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _lock=threading.RLock())

    def command(self, node_rank: int = 0, master: str | None = None) -> list[str]:
        """The ``ssseg train`` command line this job runs now (on node ``node_rank`` of a run
        over several nodes, whose first node is ``master``), resuming when there is a checkpoint."""
        return train_command(self.run_dir, self.threads, (self.run_dir / LAST).exists(), self.gpus,
                             self.nodes, node_rank, master)

    def __call__(self) -> int:
        """Run (or resume) the training to its end."""
        run_dir = self.run_dir
        node_rank, master = _placement(self.nodes)
        main = node_rank == 0
        if is_finished(run_dir, planned_iters(run_dir)):
            if main:
                mark(run_dir, "done")
            return 0
        if not (run_dir / LAST).exists() and main:  # a run that died before its first checkpoint starts over
            (run_dir / METRICS).unlink(missing_ok=True)
        cmd = self.command(node_rank, master)
        log = run_dir / (LOG if main else f"train.node{node_rank}.log")
        with open(log, "a") as out, self._lock:
            if self.stop_signal is not None:  # stopped before it started
                return 128 + self.stop_signal
            out.write(f"$ {' '.join(cmd)}\n")
            out.flush()
            self.process = subprocess.Popen(tethered.command(os.getpid(), cmd), stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        if main:
            mark(run_dir, "running", pid=self.process.pid, job_pid=os.getpid(),
                 iteration=last_iteration(run_dir))
        code = self._wait()
        if not main:
            return code
        if code == 0:
            mark(run_dir, "done")
        elif code in STOPPED:
            mark(run_dir, "stopped", exit_code=code, iteration=last_iteration(run_dir))
            if os.environ.get("SUBMITIT_EXECUTOR") and code == 128 + signal.SIGTERM:
                time.sleep(REQUEUE_WAIT_S)  # preempted: SLURM's USR2 follows, and submitit requeues
        else:
            mark(run_dir, "failed", exit_code=code, log=str(log))
        return code

    def _wait(self) -> int:
        """The training's exit code, 128 + the signal for one a signal ended (a SIGTERM during
        its start-up, before it handles signals, is then a stop like one after)."""
        # poll instead of Popen.wait(): a signal handler that calls checkpoint() while this thread
        # is blocked inside wait() would deadlock on the Popen's lock
        while self.process.poll() is None:
            time.sleep(POLL_S)
        code = self.process.returncode
        return 128 - code if code < 0 else code

    def stop(self, signum: int) -> None:
        """Send ``signum`` to the training's process group (SIGINT or SIGTERM: it saves after
        its current step and exits); a job not started yet will not start."""
        with self._lock:
            self.stop_signal = signum
            if self.process is not None and self.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signum)

    def checkpoint(self) -> Any:
        """Called by submitit on SLURM's preemption or time-limit signal: stop the training after
        its current step (it saves ``last.pt``) and return this job for submitit to requeue."""
        from submitit.helpers import DelayedSubmission

        if self.process is not None:
            self.stop(signal.SIGTERM)
            self._wait()
        if _placement(self.nodes)[0] == 0:
            mark(self.run_dir, "queued", requeued=True, iteration=last_iteration(self.run_dir))
        return DelayedSubmission(TrainJob(self.run_dir, self.threads, self.gpus, self.nodes))
