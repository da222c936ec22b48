"""``python -m ssseg.suite.tethered PARENT_PID COMMAND...``: run ``COMMAND`` (by ``exec``, so it
keeps this process's pid) so that it receives SIGTERM when the thread of ``PARENT_PID`` that
started it ends, however it ends (SIGKILL included): a training started by ``ssseg suite run``
then saves a checkpoint and stops instead of training on without its suite.

Linux only (``prctl(PR_SET_PDEATHSIG)``, kept across ``exec``); elsewhere ``COMMAND`` runs
untethered.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def tether(parent: int) -> None:
    """Ask the kernel for SIGTERM when this process's parent thread ends; exit at once if the
    parent (pid ``parent``) has already ended."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:  # the parent ended before the tether was tied
        sys.exit(128 + signal.SIGTERM)


def command(parent: int, cmd: list[str]) -> list[str]:
    """``cmd`` tethered to the process ``parent``."""
    return [sys.executable, "-m", "ssseg.suite.tethered", str(parent), *cmd]


if __name__ == "__main__":
    tether(int(sys.argv[1]))
    os.execvp(sys.argv[2], sys.argv[2:])
