"""Progress of a long wait (evaluation, a suite, a data check): a tqdm bar on a terminal, plain
lines in logs and CI.

The style is chosen once per :class:`Progress`: ``SSSEG_PROGRESS`` = ``bar``, ``plain`` or ``off``
forces one; otherwise a bar when standard error is a terminal and tqdm is installed (the
``progress`` extra), else plain lines. Plain lines appear only for waits longer than ``every_s``
seconds (one line every ``every_s`` seconds, and one at the end), so short waits print nothing.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Iterable, Iterator, TextIO, TypeVar

STYLES = ("bar", "plain", "off")
T = TypeVar("T")


def pick_style(stream: TextIO) -> str:
    """``SSSEG_PROGRESS`` if set to a valid style, else ``bar`` on a terminal with tqdm, else
    ``plain``."""
    forced = os.environ.get("SSSEG_PROGRESS", "")
    if forced in STYLES:
        return forced
    if stream.isatty():
        try:
            import tqdm  # noqa: F401
        except ImportError:
            return "plain"
        return "bar"
    return "plain"


def eta_text(seconds: float) -> str:
    """A duration as ``42 s``, ``3.5 min`` or ``2.1 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """Counts ``done`` of ``total`` ``unit`` for the wait named ``desc``; use as a context
    manager (or call :meth:`close`). ``note(**fields)`` adds fields to the displayed line."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", *, every_s: float = 10.0,
                 stream: TextIO | None = None, style: str | None = None):
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.stream = stream or sys.stderr
        self.style = style or pick_style(self.stream)
        self.done, self.fields = 0, {}
        self.started = self.last_line = time.monotonic()
        self.printed, self.printed_at = False, -1  # whether a line was printed; at which count
        self.bar = None
        if self.style == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream, leave=False,
                            dynamic_ncols=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """``n`` more units are done."""
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.style == "plain" and time.monotonic() - self.last_line >= self.every_s:
            self._line()

    def note(self, **fields: Any) -> None:
        """Show ``fields`` (``running=2``, ``failed=1``) beside the count."""
        self.fields.update(fields)
        if self.bar is not None:
            self.bar.set_postfix(self.fields, refresh=False)

    def line(self) -> str:
        """The plain line for the current state: count, percent, rate and ETA."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        count = f"{self.done}/{self.total}" if self.total else f"{self.done}"
        parts = [f"{self.desc}: {count} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.done / self.total:.0f}%)"
        parts += [f"{k} {v}" for k, v in self.fields.items()]
        if self.done:
            parts.append(f"{self.done / elapsed:.2f} {self.unit}/s")
            if self.total and self.done < self.total:
                parts.append(f"eta {eta_text(elapsed / self.done * (self.total - self.done))}")
        return ", ".join(parts)

    def _line(self) -> None:
        print(self.line(), file=self.stream, flush=True)
        self.last_line, self.printed, self.printed_at = time.monotonic(), True, self.done

    def close(self) -> None:
        """End the display: close the bar, or print the final plain line if any line was printed
        and the last one is not already final."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.style == "plain" and self.printed and self.printed_at != self.done:
            self._line()


def track(items: Iterable[T], total: int | None, desc: str, unit: str = "it", **kwargs: Any) -> Iterator[T]:
    """Yield ``items``, counting each one on a :class:`Progress`."""
    with Progress(total, desc, unit, **kwargs) as progress:
        for item in items:
            yield item
            progress.update()
