"""Installing a handler for the stop signals (SIGINT, SIGTERM) for the length of a block."""

from __future__ import annotations

import contextlib
import signal
from typing import Any, Callable, Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def handling(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """Within the block, ``handler(signum, frame)`` answers SIGINT and SIGTERM; the previous
    handlers are restored afterwards, also when the block raises."""
    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler_before in previous.items():
            signal.signal(sig, handler_before)
