"""One writer per folder: an exclusive lock file that names the process holding it.

::

    from ssseg import run_lock

    with run_lock.acquire(folder / "suite.lock", "ssseg suite run",
                          advice="wait for it to end, or stop it with `ssseg suite cancel DIR`"):
        ...  # released on every way out: return, exception, Ctrl-C, SystemExit

The lock file holds the holder's pid, host, start time and command (JSON). It is taken
atomically: a complete temporary file is hard-linked into place, which fails while another
holds it (also on NFS). A lock whose holder is a process of this host that no longer runs
(killed with SIGKILL, a crash, a power cut) is taken over, with a message; the take-over holds
a short-lived ``<lock>.takeover`` file, so two processes never both take over one stale lock.
A lock of a live process, or of a process on another host (whose liveness cannot be checked
from here), refuses with :class:`LockHeld`, naming the holder and what to do.

A lock file that cannot be created (a read-only file system, a full disk) raises the
``OSError``: callers word it for their command (e.g. "choose another --out").
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import attrs

from ssseg import files
from ssseg.errors import UserError

POLL_S = 0.1  # between tries while waiting for a lock, or for another process's take-over
TAKEOVER_STALE_S = 30.0  # a take-over file older than this was left by a killed process
CLOCK_SLACK_S = 2.0  # a process start time from /proc is exact to about a second


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@attrs.frozen
class Holder:
    """The process that holds a lock: ``pid`` on ``host``, since ``started`` (``time.time()``),
    running ``command`` (e.g. ``ssseg suite run``)."""

    pid: int
    host: str
    started: float
    command: str

    def describe(self) -> str:
        """``ssseg suite run (pid 123 on node7, since 2024-05-01 12:03:04)``."""
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"{self.command} (pid {self.pid} on {self.host}, since {since})"

    def is_running(self) -> bool:
        """Whether the holder still runs; True for a process of another host (not checkable)."""
        return self.host != socket.gethostname() or process_alive(self.pid, since=self.started)


class LockHeld(UserError):
    """A lock is held by a live process (or one of another host); the message names it."""

    def __init__(self, path: Path, holder: Holder, advice: str = ""):
        self.path, self.holder = path, holder
        elsewhere = (f"; if that process is gone (its machine stopped), delete {path}"
                     if holder.host != socket.gethostname() else "")
        super().__init__(f"{path.parent} is in use by {holder.describe()}"
                         + (f"; {advice}" if advice else "") + elsewhere)


def _start_time(pid: int) -> tuple[str, float] | None:
    """(state letter, start time as ``time.time()``) of a process from Linux's /proc; None
    elsewhere or when it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (command) "
    return fields[0], boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def process_alive(pid: int, since: float | None = None) -> bool:
    """Whether process ``pid`` of this host is running: it exists, has not ended (a zombie,
    not yet reaped by its parent, has), and, given ``since`` (a ``time.time()`` at which it was
    known to run), did not start after it (its pid reused by a newer process)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    info = _start_time(pid)
    if info is None:
        return True
    state, started = info
    return state not in ("Z", "X") and (since is None or started <= since + CLOCK_SLACK_S)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _parse(raw: bytes) -> Holder | None:
    try:
        data = json.loads(raw)
        return Holder(int(data["pid"]), str(data["host"]), float(data["started"]), str(data["command"]))
    except (ValueError, KeyError, TypeError):
        return None


def read_holder(path: Path) -> Holder | None:
    """The holder named in the lock file ``path``; None when there is none (or it is unreadable)."""
    raw = _read(Path(path))
    return None if raw is None else _parse(raw)


class Lock:
    """A held lock (see :func:`acquire`); a context manager that releases it on exit."""

    def __init__(self, path: Path, holder: Holder, raw: bytes):
        self.path, self.holder, self._raw = path, holder, raw
        self.released = False

    def release(self) -> None:
        """Remove the lock file if it is still this lock's (idempotent)."""
        if not self.released:
            self.released = True
            if _read(self.path) == self._raw:
                self.path.unlink(missing_ok=True)

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _take_over(path: Path, stale: bytes, mine: Path) -> bool:
    """Replace the lock file by ``mine`` if it still holds ``stale``, under the take-over file."""
    guard = path.with_name(path.name + ".takeover")
    try:
        os.close(os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        try:
            if time.time() - guard.stat().st_mtime > TAKEOVER_STALE_S:
                guard.unlink()
        except FileNotFoundError:
            pass
        return False
    try:
        if _read(path) != stale:
            return False
        os.replace(mine, path)
        return True
    finally:
        guard.unlink(missing_ok=True)


def acquire(path: Path, command: str, advice: str = "", wait_s: float = 0.0,
            say: Callable[[str], None] = _say) -> Lock:
    """Take the lock file ``path`` for this process, running ``command``, and return the
    :class:`Lock` (use it in a ``with`` block). A stale lock (its holder a process of this host
    that no longer runs) is taken over, telling ``say`` whose it was. A lock held by a live
    process waits up to ``wait_s`` seconds for it, then raises :class:`LockHeld` with
    ``advice`` (what the user can do). ``OSError`` when the lock file cannot be written."""
    path = Path(path)
    holder = Holder(os.getpid(), socket.gethostname(), time.time(), command)
    raw = json.dumps(attrs.asdict(holder)).encode() + b"\n"
    mine = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    deadline = time.monotonic() + wait_s
    try:
        with files.open_file(mine, "wb") as file:
            file.write(raw)
        while True:
            try:
                os.link(mine, path)
                return Lock(path, holder, raw)
            except FileExistsError:
                pass
            current = _read(path)
            if current is None:
                continue  # released meanwhile: try again at once
            other = _parse(current)
            if other is None or not other.is_running():
                if _take_over(path, current, mine):
                    say(f"taking over {path}: " + (f"{other.describe()} no longer runs" if other
                                                   else "it names no process (damaged)"))
                    return Lock(path, holder, raw)
            elif time.monotonic() >= deadline:
                raise LockHeld(path, other, advice)
            time.sleep(POLL_S)
    finally:
        mine.unlink(missing_ok=True)


@contextlib.contextmanager
def writing(folder: Path, name: str, command: str, advice: str) -> Iterator[Lock]:
    """Hold the lock file ``folder/name`` while one command writes the output folder ``folder``
    (made if missing); a folder that cannot be written is a :class:`UserError` naming it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = acquire(folder / name, command, advice=advice)
    except OSError as err:
        raise UserError(f"cannot write in the output folder {folder} ({err.strerror or err}); "
                        "choose another --out") from None
    with lock:
        yield lock
