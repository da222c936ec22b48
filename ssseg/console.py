"""What ``ssseg train`` and ``ssseg eval`` print: each evaluation's summary line and per-class IoU
table (as MMSegmentation prints it), and the training progress line, which fits the terminal."""

from __future__ import annotations

import shutil
import sys
from typing import Any, TextIO


def eval_models(metrics: dict[str, Any]) -> list[str]:
    """The evaluated models of an evaluation record, sorted."""
    return sorted({k.split("/")[0] for k in metrics if k.endswith("/miou")})


def eval_summary(metrics: dict[str, Any]) -> str:
    """``val mIoU at iteration N: student 59.5, teacher 60.1`` (and the classes excluded)."""
    models = eval_models(metrics)
    parts = [f"{m} {100 * metrics[f'{m}/miou']:.1f}" for m in models]
    absent = metrics.get(f"{models[0]}/absent_classes") if models else None
    note = f" (absent from val and predictions, excluded: {', '.join(absent)})" if absent else ""
    return f"val mIoU at iteration {metrics['iteration']}: {', '.join(parts)}{note}"


def eval_table(metrics: dict[str, Any]) -> str:
    """Per-class IoU (%) of every evaluated model, one row per class and a column per model
    (``-``: a class absent from the ground truth and the predictions)."""
    models = [m for m in eval_models(metrics) if f"{m}/iou" in metrics]
    if not models:
        return ""
    classes = list(metrics[f"{models[0]}/iou"])
    width = max([len("class"), *map(len, classes)])
    cells = [max(7, len(m)) for m in models]
    lines = ["  " + "class".ljust(width) + "".join(f"  {m:>{w}}" for m, w in zip(models, cells))]
    for name in classes:
        values = [metrics[f"{m}/iou"].get(name) for m in models]
        lines.append("  " + name.ljust(width) + "".join(
            f"  {'-' if v is None else f'{100 * v:.1f}':>{w}}" for v, w in zip(values, cells)))
    return "\n".join(lines)


def progress_line(it: int, total: int, logs: dict[str, float], eta_s: float, width: int | None = None) -> str:
    """``[it/total] loss=... lr=... eta M min``; with a ``width``, loss terms are dropped from the
    last until the line fits, so the iteration, the total loss and the ETA stay visible."""
    losses = [f"{k}={v:.3f}" for k, v in logs.items() if k.startswith("loss")]
    rate = f"lr={logs['lr']:.2e}" if "lr" in logs else "skipped (non-finite loss)"
    eta = f"eta {eta_s / 60:.1f} min"
    line = " ".join([f"[{it}/{total}]", *losses, rate, eta])
    while width is not None and len(line) > width and len(losses) > 1:
        losses.pop()
        line = " ".join([f"[{it}/{total}]", *losses, rate, eta])
    return line if width is None else line[:width]


class Console:
    """The training console: progress lines on ``err`` (rewritten in place on a terminal, fitted
    to its width) and each evaluation's summary and table on ``out``, which starts on a fresh line."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None):
        self.out, self.err = out or sys.stdout, err or sys.stderr
        self.open_line = False  # a progress line is being rewritten in place

    def progress(self, it: int, total: int, logs: dict[str, float], eta_s: float) -> None:
        """One progress line (in place on a terminal until the last iteration)."""
        if self.err.isatty() and it < total:
            width = shutil.get_terminal_size().columns - 1
            self.err.write("\r" + progress_line(it, total, logs, eta_s, width) + "\x1b[K")
            self.err.flush()
            self.open_line = True
        else:
            self.end_line()
            print(progress_line(it, total, logs, eta_s), file=self.err, flush=True)

    def evaluation(self, metrics: dict[str, Any]) -> None:
        """The summary line and the per-class table of one evaluation."""
        self.end_line()
        print(eval_summary(metrics), file=self.out)
        table = eval_table(metrics)
        if table:
            print(table, file=self.out)
        self.out.flush()

    def end_line(self) -> None:
        """Finish an in-place progress line, so the next output starts on its own line."""
        if self.open_line:
            self.err.write("\n")
            self.open_line = False
