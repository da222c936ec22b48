"""The suite report, written as ``report.md`` and ``report.csv`` with its figures: mIoU over seeds
(last and best evaluation), paired differences to the reference with a 95% t interval, per-class
IoU, and, for a suite with an axis, the table as the papers print it (methods × axis values). The
runs that did not finish are listed with their state, and a failed run with its log's last lines;
a suite where no run finished gets a report that says so and lists them."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from ssseg import files, run_lock
from ssseg.errors import UserError
from ssseg.suite.folder import REPORT_LOCK, log_tail, run_status
from ssseg.suite.plots import write_plots
from ssseg.suite.predict import prediction_grid
from ssseg.suite.results import (MODELS, SCORES, Difference, Summary, SuiteResults, counted, load_results,
                                 paired_difference, summarize, t975)

REPORT_WAIT_S = 300.0  # how long a report waits for another process writing a report into the same folder

CSV_COLUMNS = ("variant", "axis_value", "metric", "n", "mean", "std", "diff", "ci_low", "ci_high", "pairs")


def csv_rows(results: SuiteResults) -> list[dict[str, Any]]:
    """One row per variant, axis value and metric: n, mean, std and the paired difference to the
    reference with its 95% CI (raw units: mIoU and IoU as fractions, wall time in seconds)."""
    metrics = [f"{m}/{k}" for m in MODELS for k in SCORES] + ["iterations", "wall_s"]
    metrics += [f"{m}/iou/{c}" for m in MODELS for c in results.class_names(m)]
    rows = []
    for variant, point in results.rows():
        for metric in metrics:
            values = results.per_seed(variant, point, metric)
            if not values:
                continue
            s = summarize(list(values.values()))
            row = {"variant": variant, "axis_value": point, "metric": metric, "n": s.n, "mean": s.mean,
                   "std": s.std}
            d = None
            if variant != results.reference and "/" in metric:
                d = paired_difference(values, results.reference_per_seed(point, metric))
            row |= {"diff": d and d.mean, "ci_low": d and d.low, "ci_high": d and d.high,
                    "pairs": d.n if d else None}
            rows.append(row)
    return rows


def _pct(s: Summary) -> str:
    if s.mean is None:
        return "–"
    return f"{100 * s.mean:.1f}" + (f" ± {100 * s.std:.1f}" if s.std is not None else "")


def _diff(d: Difference | None) -> str:
    if d is None:
        return "–"
    ci = f" [{100 * d.low:+.1f}, {100 * d.high:+.1f}]" if d.low is not None else " (1 seed, no CI)"
    return f"{100 * d.mean:+.1f}{ci}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows)]


def _mean_std(results: SuiteResults, variant: str, point: str | None, metric: str) -> str:
    return _pct(summarize(list(results.per_seed(variant, point, metric).values())))


def _versus_reference(results: SuiteResults, variant: str, point: str | None, metric: str) -> str:
    return _diff(paired_difference(results.per_seed(variant, point, metric),
                                   results.reference_per_seed(point, metric)))


def paper_tables(results: SuiteResults, models: list[str]) -> list[str]:
    """For a suite with an axis: rows = methods, columns = axis values, one table of mIoU
    (mean ± std) per model and score, then the paired differences to the reference."""
    label, points = results.axis_label, results.points
    header = ["method", *(f"{label} {p}" for p in points)]
    lines = []
    for model in models:
        variants = [v for v in results.variants if results.evaluates(v, model)]
        for score in SCORES:
            rows = [[f"`{v}`", *(_mean_std(results, v, p, f"{model}/{score}") for p in points)]
                    for v in variants]
            lines += ["", f"## {model.capitalize()} mIoU by {label}, {score} evaluation", "",
                      *_table(header, rows)]
    lines += ["", f"## Difference to `{results.reference}` by {label}", "",
              "Percentage points, paired by seed at each axis value, with the 95% interval (below)."]
    for model in models:
        variants = [v for v in results.variants if results.evaluates(v, model) and v != results.reference]
        for score in SCORES:
            rows = [[f"`{v}`", *(_versus_reference(results, v, p, f"{model}/{score}") for p in points)]
                    for v in variants]
            if rows:
                lines += ["", f"{model}, {score} evaluation:", "", *_table(header, rows)]
    return lines


def _interval_note(seeds: int) -> str:
    if seeds < 2:
        return "With 1 seed there is no interval: add seeds to get one."
    return (f"With few seeds the intervals are wide (t = {t975(seeds - 1):.2f} for "
            f"{counted(seeds, 'seed')}).")


def unfinished_runs(results: SuiteResults) -> list[str]:
    """Markdown list items of the runs that did not finish: each with its state from its folder,
    and a failed run with its log's last lines."""
    lines = []
    for name in results.unfinished:
        state, detail = run_status(results.out / name)
        lines.append(f"- `{name}`: {state}" + (f" ({detail})" if detail else ""))
        if state == "failed":
            log, tail = log_tail(results.out / name)
            if tail:
                lines += [f"  last lines of {log}:", "", "  ```", *(f"  {line}" for line in tail), "  ```"]
    return lines


def _nothing_finished(results: SuiteResults, notes: list[str]) -> str:
    total = len(results.unfinished)
    lines = [f"# Suite report: {Path(results.suite).stem}", "",
             f"Suite `{results.suite}`, seeds {', '.join(map(str, results.seeds))}.", "",
             f"**No run has finished** (0 of {counted(total, 'run')}), so there is nothing to compare "
             f"yet. Each run's state, as its folder records it (`ssseg suite status {results.out}` also "
             "asks SLURM):", "", *unfinished_runs(results)]
    if notes:
        lines += ["", "## Notes", "", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"


def markdown(results: SuiteResults, figures: list[tuple[str, str]], notes: list[str]) -> str:
    """The report as Markdown; ``figures`` are (title, file name) pairs beside report.md."""
    if not results.finished:
        return _nothing_finished(results, notes)
    models = [m for m in MODELS if any(results.evaluates(v, m) for v in results.variants)]
    metrics = [f"{m}/{k}" for m in models for k in SCORES]
    names = [m.replace("/", " ") for m in metrics]
    axis = (f", axis {results.axis_label}: {', '.join(results.points)}" if results.axis_label else "")
    reference = results.reference
    lines = [f"# Suite report: {Path(results.suite).stem}", "",
             f"Suite `{results.suite}`, seeds {', '.join(map(str, results.seeds))}{axis}.",
             f"Reference: `{reference}`, {results.reference_reason}.",
             "mIoU in %, mean ± sample std over the finished seeds. **last** is the evaluation at "
             "the end of training; **best** is the highest evaluation during training, what the "
             "literature usually reports on the validation set (it selects on the data it reports, "
             "so it is optimistic)."]
    if results.axis_label:
        lines += paper_tables(results, models)
    rows = []
    for variant, point in results.rows():
        wall = summarize(list(results.per_seed(variant, point, "wall_s").values()))
        iters = sorted(set(results.per_seed(variant, point, "iterations").values()))
        rows.append([f"`{results.label(variant, point)}`", str(len(results.eval_records[variant, point])),
                     ", ".join(map(str, iters)) or "–",
                     *(_mean_std(results, variant, point, m) for m in metrics), _duration(wall.mean)])
    lines += ["", "## mIoU", "", *_table(["variant", "seeds", "iterations", *names, "train time"], rows)]
    lines += ["", f"## Difference to `{reference}`", "",
              "Percentage points, paired by seed: the mean of (variant − reference) over the seeds "
              "both finished, with its 95% confidence interval mean ± t(0.975, n−1)·s/√n "
              "(Student's t, n pairs). An interval that excludes 0 is a difference the seeds "
              f"support. {_interval_note(len(results.seeds))}", ""]
    if "teacher" in models and not results.evaluates(reference, "teacher"):
        lines += [f"`{reference}` has no teacher: teacher columns compare to its student.", ""]
    rows = [[f"`{results.label(v, p)}`", *(_versus_reference(results, v, p, m) for m in metrics)]
            for v, p in results.rows() if v != reference]
    lines += _table(["variant", *names], rows) if rows else ["(only one variant)"]
    for model in models:
        columns = [(v, p) for v, p in results.rows() if results.evaluates(v, model)]
        rows = [[c, *(_mean_std(results, v, p, f"{model}/iou/{c}") for v, p in columns)]
                for c in results.class_names(model)]
        lines += ["", f"## Per-class IoU, {model}, last evaluation (mean over seeds)", "",
                  *_table(["class", *(f"`{results.label(v, p)}`" for v, p in columns)], rows)]
    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"### {title}\n\n![{title}]({name})\n" for title, name in figures]
    if results.unfinished:
        lines += ["", f"## Runs not finished (left out): {len(results.unfinished)} of "
                      f"{counted(len(results.unfinished) + results.finished, 'run')}", "", *unfinished_runs(results)]
    if notes:
        lines += ["", "## Notes", "", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"


def write_report(out: Path, predictions: int = 4, into: Path | None = None) -> Path:
    """Write ``report.md``, ``report.csv`` and the figures (plots when matplotlib is importable;
    a grid of the first ``predictions`` validation images per row) of the suite folder ``out``
    into ``into`` (default: ``out``), holding its report lock (a second writer waits). Each file
    is replaced whole; a full or read-only disk is a :class:`~ssseg.files.WriteError`."""
    results = load_results(out)
    into = into or out
    lock_path = into / REPORT_LOCK
    try:
        into.mkdir(parents=True, exist_ok=True)
        lock = run_lock.acquire(lock_path, "ssseg suite report", wait_s=REPORT_WAIT_S,
                                advice="it writes a report into the same folder; try again when it has ended")
    except OSError as err:
        raise files.write_error(err, lock_path, replacing=False) from None
    with lock:
        table = io.StringIO()
        writer = csv.DictWriter(table, CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(csv_rows(results))
        files.write_text(into / "report.csv", table.getvalue())
        figures, notes = write_plots(results, into) if results.finished else ([], [])
        if predictions and results.finished:
            try:
                figures.append(prediction_grid(results, into, predictions))
            except files.WriteError:
                raise
            except UserError as err:
                notes.append(f"no prediction grid: {err}")
        path = into / "report.md"
        files.write_text(path, markdown(results, figures, notes))
    return path
