"""The SLURM commands a suite calls besides the ``sbatch`` that submitit runs: ``sacct`` for the
state of all of a suite's jobs in one call, ``scancel`` to cancel them."""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Iterable

from ssseg.errors import UserError

# sacct states of a job that has not ended (requeued jobs go back to PENDING)
ACTIVE = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED",
                    "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED",
                    "SPECIAL_EXIT", "RESV_DEL_HOLD"})
COMMANDS = ("sbatch", "srun", "sacct", "scancel")  # srun: how submitit recognises a SLURM cluster
_ARRAY = re.compile(r"^(\d+)_\[([0-9,\-]+)(?:%\d+)?\]$")  # pending array tasks: 4242_[3-5,7%4]


class SchedulerError(UserError):
    """A SLURM command is missing or failed; the message names it and its answer."""


def missing_commands() -> list[str]:
    """The SLURM commands of :data:`COMMANDS` not on PATH."""
    return [c for c in COMMANDS if shutil.which(c) is None]


def parse_sacct(text: str) -> dict[str, str]:
    """Job id -> state from ``sacct --parsable2 --noheader --format=JobID,State`` (steps such
    as ``4242_0.batch`` skipped, ranges of pending array tasks expanded, ``CANCELLED by 501``
    read as ``CANCELLED``)."""
    states = {}
    for line in text.splitlines():
        job_id, _, state = line.partition("|")
        if not job_id or "." in job_id or not state:
            continue
        state = state.split()[0]
        match = _ARRAY.match(job_id)
        if match is None:
            states[job_id] = state
            continue
        for part in match.group(2).split(","):
            first, _, last = part.partition("-")
            for task in range(int(first), int(last or first) + 1):
                states[f"{match.group(1)}_{task}"] = state
    return states


def _call(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise SchedulerError(f"no {cmd[0]} on this machine (a SLURM command)") from None
    except subprocess.TimeoutExpired:
        raise SchedulerError(f"{cmd[0]} did not answer within 2 minutes") from None
    if done.returncode != 0:
        lines = (done.stderr.strip() or done.stdout.strip() or f"exit code {done.returncode}").splitlines()
        raise SchedulerError(f"{cmd[0]} failed: {lines[-1]}")
    return done.stdout


def job_states(job_ids: Iterable[str]) -> dict[str, str]:
    """The sacct state of each of ``job_ids`` (``4242`` or array tasks ``4242_3``) that SLURM
    knows, asked in one ``sacct`` call; :class:`SchedulerError` when sacct is missing or fails."""
    ids = set(job_ids)
    if not ids:
        return {}
    arrays = sorted({i.split("_")[0] for i in ids})
    states = parse_sacct(_call(["sacct", "--noheader", "--parsable2", "--allocations",
                                "--format=JobID,State", "--jobs", ",".join(arrays)]))
    return {i: states[i] for i in ids if i in states}


def cancel(job_ids: Iterable[str]) -> None:
    """Cancel ``job_ids`` with one ``scancel`` call (running jobs get SIGTERM, then SIGKILL)."""
    _call(["scancel", *sorted(job_ids)])
