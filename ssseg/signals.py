"""Installing a handler for the stop signals (SIGINT, SIGTERM) for the length of a block, and
deferring Ctrl-C over a block that must not be cut in the middle (importing the libraries)."""

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


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Within the block, a SIGINT is recorded instead of raised; when the block ends, one that
    arrived is raised as ``KeyboardInterrupt``. For importing torch and the model libraries: a
    KeyboardInterrupt in the middle of a C extension's import can leave a module half initialised
    (numpy recursing in its ``__getattr__``) or be swallowed by the importing code (the run then
    goes on)."""
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def import_libraries() -> None:
    """Import torch and the model libraries (segmentation-models-pytorch imports torch,
    torchvision and numpy) with Ctrl-C deferred until they have imported."""
    with deferred_interrupt():
        import segmentation_models_pytorch  # noqa: F401
