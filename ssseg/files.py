"""Writing files so that a failure never leaves a half-written one.

Each write goes to ``<name>.tmp`` and replaces the target only once complete, so the previous
version stays readable; a failed or interrupted write removes its temporary file, and a leftover
one (from a kill) never blocks the next write. Disk errors become a one-line :class:`WriteError`
("no space left on <folder>").
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import IO, Callable, Iterator

from ssseg.errors import UserError

TMP_SUFFIX = ".tmp"
open_file = open  # every file this module writes is opened by it; tests replace it to inject disk faults


class WriteError(UserError):
    """A file could not be written: a full disk, a read-only file system, no permission."""


def write_error(err: OSError, path: Path, replacing: bool = True) -> WriteError:
    """The :class:`WriteError` of an ``OSError`` met while writing ``path`` (``replacing``: by
    a temporary file, so the previous version is unchanged)."""
    folder = path.parent
    reasons = {errno.ENOSPC: f"no space left on {folder}",
               errno.EDQUOT: f"disk quota exceeded on {folder}",
               errno.EROFS: f"{folder} is on a read-only file system",
               errno.EACCES: f"no permission to write in {folder}",
               errno.EPERM: f"no permission to write in {folder}"}
    reason = reasons.get(err.errno, f"cannot write in {folder} ({err.strerror or err})")
    kept = f"; the previous {path.name} is unchanged" if replacing and path.exists() else ""
    return WriteError(f"{reason} (writing {path.name}){kept}")


def temporary(path: Path) -> Path:
    """The temporary file a write of ``path`` goes through."""
    return path.with_name(path.name + TMP_SUFFIX)


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    tmp = temporary(path)
    try:
        tmp.unlink(missing_ok=True)  # a write killed before its rename leaves one
        yield tmp
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise write_error(err, path) from None
        raise


class _Recording:
    """A file wrapper that remembers the exception a write raised: torch reports a failed write
    of a file object as ``RuntimeError: unexpected pos``, hiding the cause (ENOSPC, Ctrl-C)."""

    def __init__(self, file: IO[bytes]):
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except BaseException as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.file.flush()


def write_atomically(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Replace ``path`` by what ``write(file)`` writes, or leave it as it was."""
    with _replacing(path) as tmp, open_file(tmp, "wb") as file:
        sink = _Recording(file)
        try:
            write(sink)
        except RuntimeError:
            if sink.error is None:
                raise
            raise sink.error from None


def write_text(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` (UTF-8), or leave it as it was."""
    write_atomically(path, lambda file: file.write(text.encode("utf-8")))


def link_atomically(source: Path, path: Path) -> None:
    """Make ``path`` a hard link to ``source``, replacing what ``path`` was."""
    with _replacing(path) as tmp:
        os.link(source, tmp)


def append_line(path: Path, line: str) -> None:
    """Append ``line`` and a newline to ``path``; a disk error is a :class:`WriteError`."""
    try:
        with open_file(path, "a", encoding="utf-8") as file:
            file.write(line + "\n")
    except OSError as err:
        raise write_error(err, path, replacing=False) from None
