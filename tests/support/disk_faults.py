"""Disk faults injected where ssseg opens the files it writes (``ssseg.files.open_file``)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ssseg import files


class FullDisk:
    """A file that takes ``room`` bytes, then fails like a full disk (ENOSPC)."""

    def __init__(self, file, room: int):
        self.file, self.room = file, room

    def write(self, data) -> int:
        if len(data) > self.room:
            self.file.write(data[: self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def fail_writes(monkeypatch, folder: Path, code: int = errno.ENOSPC, room: int = 0) -> None:
    """Files opened for writing in ``folder`` fail: ENOSPC after ``room`` bytes, or any other
    ``code`` (EROFS: a read-only file system) when opened. Root ignores permissions, so this is
    how the tests meet a full or read-only disk."""
    real = files.open_file

    def opener(path, mode="r", *args, **kwargs):
        if Path(path).parent != folder or "r" in mode:
            return real(path, mode, *args, **kwargs)
        if code != errno.ENOSPC:
            raise OSError(code, os.strerror(code), str(path))
        return FullDisk(real(path, mode, *args, **kwargs), room)

    monkeypatch.setattr(files, "open_file", opener)
