"""The run's log: ``metrics.jsonl`` (one JSON record per logged step and per evaluation, rank 0
only) and the progress callback, at the recipe's ``run.log_every`` cadence."""

from __future__ import annotations

import json
import time
from typing import Any, Callable

from ssseg.engine.run import Run
from ssseg.files import append_line

Progress = Callable[[int, int, dict[str, float], float], None]


class MetricsLog:
    """Writes ``run``'s records and reports progress (``progress(it, total, logs, eta_s)``)."""

    def __init__(self, run: Run, progress: Progress | None = None):
        self.run, self.progress = run, progress
        self.started = time.perf_counter()
        self.done_at_start = run.iteration

    def write(self, record: dict[str, Any]) -> None:
        """Append one JSON line to ``metrics.jsonl`` (rank 0 only)."""
        if self.run.out_dir is not None and self.run.is_main:
            append_line(self.run.out_dir / "metrics.jsonl", json.dumps(record, allow_nan=True))

    def after_step(self, logs: dict[str, float]) -> None:
        """Log a step's scalars every ``run.log_every`` iterations and at the last one."""
        run, state, total = self.run, self.run.state, self.run.recipe.optim.iters
        it = state.iteration
        if it % run.recipe.run.log_every and it != total:
            return
        self.write({"iteration": it, "event": "train", "wall_s": round(state.wall_s, 3), **logs,
                    **({"skipped_steps": state.skipped_steps} if state.skipped_steps else {})})
        if self.progress is not None and run.is_main:
            rate = (time.perf_counter() - self.started) / max(it - self.done_at_start, 1)
            self.progress(it, total, logs, rate * (total - it))
