"""The suite report: statistics over seeds, paired differences to the reference variant with a
95% t confidence interval, per-class IoU; written as ``report.md`` and ``report.csv``."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path
from typing import Any

import attrs

from ssseg.errors import UserError
from ssseg.recipe.load import read_yaml
from ssseg.suite.runner import MANIFEST, is_finished, read_records

MODELS = ("student", "teacher")
KINDS = ("last", "best")

# two-sided 95%: the 0.975 quantile of Student's t with 1..30 degrees of freedom
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (a table up to 30, then
    the Cornish-Fisher expansion, within 0.001)."""
    if df < 1:
        raise ValueError("t975 needs at least one degree of freedom")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


@attrs.frozen
class Summary:
    """Mean and sample standard deviation (None for fewer than two values) of ``n`` values."""

    n: int
    mean: float | None
    std: float | None


@attrs.frozen
class Difference:
    """Mean paired difference over ``n`` seeds and its 95% t interval (None for ``n < 2``)."""

    n: int
    mean: float
    low: float | None
    high: float | None


def summarize(values: list[float]) -> Summary:
    """Mean ± sample std of ``values``."""
    if not values:
        return Summary(0, None, None)
    std = statistics.stdev(values) if len(values) > 1 else None
    return Summary(len(values), statistics.fmean(values), std)


def paired_difference(values: dict[int, float], reference: dict[int, float]) -> Difference | None:
    """``values − reference`` over the seeds both have: the mean difference d̄ and
    d̄ ± t(0.975, n−1)·s_d/√n. None when no seed is shared."""
    diffs = [values[s] - reference[s] for s in sorted(values.keys() & reference.keys())]
    if not diffs:
        return None
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return Difference(1, mean, None, None)
    half = t975(len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return Difference(len(diffs), mean, mean - half, mean + half)


@attrs.frozen
class SuiteResults:
    """The finished runs of a suite output folder: each run's eval records by variant and seed."""

    out: Path
    suite: str
    reference: str
    variants: tuple[str, ...]
    seeds: tuple[int, ...]
    evals: dict[str, dict[int, list[dict[str, Any]]]]
    unfinished: tuple[str, ...]

    def run_dir(self, variant: str, seed: int) -> Path:
        """The folder of one run."""
        return self.out / variant / f"seed{seed}"

    def has(self, variant: str, model: str) -> bool:
        """Whether the variant's runs evaluated ``model`` (``student`` or ``teacher``)."""
        return any(f"{model}/miou" in runs[-1] for runs in self.evals[variant].values())

    def values(self, variant: str, metric: str) -> dict[int, float]:
        """Per seed: ``<model>/last``, ``<model>/best`` (mIoU), ``<model>/iou/<class>`` (last),
        ``iterations`` or ``wall_s``; seeds without a value are left out."""
        out = {}
        for seed, evals in self.evals[variant].items():
            value = _metric(evals, metric)
            if value is not None:
                out[seed] = value
        return out

    def class_names(self, model: str) -> list[str]:
        """Class names in the order of the evaluations."""
        for runs in self.evals.values():
            for evals in runs.values():
                if f"{model}/iou" in evals[-1]:
                    return list(evals[-1][f"{model}/iou"])
        return []


def _metric(evals: list[dict[str, Any]], metric: str) -> float | None:
    last = evals[-1]
    if metric in ("iterations", "wall_s"):
        return last["iteration" if metric == "iterations" else "wall_s"]
    model, kind, *cls = metric.split("/", 2)
    if kind == "iou":
        return last.get(f"{model}/iou", {}).get(cls[0])
    scores = [e[f"{model}/miou"] for e in evals if e.get(f"{model}/miou") is not None]
    if not scores:
        return None
    return scores[-1] if kind == "last" else max(scores)


def load_results(out: Path) -> SuiteResults:
    """Read a suite output folder (``suite.json`` and each finished run's metrics)."""
    manifest_path = out / MANIFEST
    if not manifest_path.is_file():
        raise UserError(f"{out} is not a suite output folder (no {MANIFEST}; it is written by "
                        "`ssseg suite run`)")
    manifest = json.loads(manifest_path.read_text())
    evals: dict[str, dict[int, list]] = {}
    unfinished = []
    for variant in manifest["variants"]:
        evals[variant] = {}
        for seed in manifest["seeds"]:
            run_dir = out / variant / f"seed{seed}"
            recipe = run_dir / "recipe.yaml"
            iters = read_yaml(recipe).get("optim", {}).get("iters") if recipe.is_file() else None
            if iters is not None and is_finished(run_dir, iters):
                evals[variant][seed] = read_records(run_dir, "eval")
            else:
                unfinished.append(f"{variant}/seed{seed}")
    return SuiteResults(out, manifest["suite"], manifest["reference"], tuple(manifest["variants"]),
                        tuple(manifest["seeds"]), evals, tuple(unfinished))


def reference_values(results: SuiteResults, metric: str) -> dict[int, float]:
    """The reference variant's values for ``metric``; a teacher metric falls back to the
    reference's student when the reference has no teacher."""
    values = results.values(results.reference, metric)
    if not values and metric.startswith("teacher/"):
        values = results.values(results.reference, "student/" + metric.split("/", 1)[1])
    return values


def csv_rows(results: SuiteResults) -> list[dict[str, Any]]:
    """One row per variant and metric: n, mean, std and the paired difference to the reference
    with its 95% CI (raw units: mIoU and IoU as fractions, wall time in seconds)."""
    metrics = [f"{m}/{k}" for m in MODELS for k in KINDS] + ["iterations", "wall_s"]
    metrics += [f"{m}/iou/{c}" for m in MODELS for c in results.class_names(m)]
    rows = []
    for variant in results.variants:
        for metric in metrics:
            values = results.values(variant, metric)
            if not values:
                continue
            s = summarize(list(values.values()))
            row = {"variant": variant, "metric": metric, "n": s.n, "mean": s.mean, "std": s.std}
            d = None
            if variant != results.reference and "/" in metric:
                d = paired_difference(values, reference_values(results, metric))
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


def markdown(results: SuiteResults, figures: list[tuple[str, str]], notes: list[str]) -> str:
    """The report as Markdown; ``figures`` are (title, file name) pairs beside report.md."""
    models = [m for m in MODELS if any(results.has(v, m) for v in results.variants)]
    metrics = [f"{m}/{k}" for m in models for k in KINDS]
    names = [m.replace("/", " ") for m in metrics]
    seeds = ", ".join(map(str, results.seeds))
    lines = [f"# Suite report: {Path(results.suite).stem}", "",
             f"Suite `{results.suite}`, seeds {seeds}, reference variant `{results.reference}`.",
             "mIoU in %, mean ± sample std over the finished seeds. **last** is the evaluation at "
             "the end of training; **best** is the highest evaluation during training, what the "
             "literature usually reports on the validation set (it selects on the data it reports, "
             "so it is optimistic).", "", "## mIoU", ""]
    rows = []
    for v in results.variants:
        wall = summarize(list(results.values(v, "wall_s").values()))
        iters = sorted(set(results.values(v, "iterations").values()))
        rows.append([f"`{v}`", str(len(results.evals[v])), ", ".join(map(str, iters)) or "–",
                     *(_pct(summarize(list(results.values(v, m).values()))) for m in metrics),
                     _duration(wall.mean)])
    lines += _table(["variant", "seeds", "iterations", *names, "train time"], rows)
    lines += ["", f"## Difference to `{results.reference}`", "",
              "Percentage points, paired by seed: the mean of (variant − reference) over the seeds "
              "both finished, with its 95% confidence interval mean ± t(0.975, n−1)·s/√n "
              "(Student's t, n pairs). An interval that excludes 0 is a difference the seeds "
              "support; with few seeds the intervals are wide (t = 4.30 for 3 seeds).", ""]
    if "teacher" in models and not results.has(results.reference, "teacher"):
        lines += [f"`{results.reference}` has no teacher: teacher columns compare to its student.", ""]
    rows = [[f"`{v}`", *(_diff(paired_difference(results.values(v, m), reference_values(results, m)))
                         for m in metrics)]
            for v in results.variants if v != results.reference]
    lines += _table(["variant", *names], rows) if rows else ["(only one variant)"]
    for model in models:
        variants = [v for v in results.variants if results.has(v, model)]
        rows = [[c, *(_pct(summarize(list(results.values(v, f"{model}/iou/{c}").values())))
                      for v in variants)] for c in results.class_names(model)]
        lines += ["", f"## Per-class IoU, {model}, last evaluation (mean over seeds)", "",
                  *_table(["class", *(f"`{v}`" for v in variants)], rows)]
    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"### {title}\n\n![{title}]({name})\n" for title, name in figures]
    if results.unfinished:
        lines += ["", "## Unfinished runs (left out)", "",
                  *(f"- `{r}` (see its train.log)" for r in results.unfinished)]
    if notes:
        lines += ["", "## Notes", "", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"


def write_report(out: Path, predictions: int = 4) -> Path:
    """Write ``report.md``, ``report.csv`` and the figures (plots when matplotlib is importable;
    a grid of the first ``predictions`` validation images per variant) into ``out``."""
    from ssseg.suite import plots
    from ssseg.suite.predict import prediction_grid

    results = load_results(out)
    with open(out / "report.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["variant", "metric", "n", "mean", "std", "diff", "ci_low",
                                    "ci_high", "pairs"])
        writer.writeheader()
        writer.writerows(csv_rows(results))
    figures, notes = plots.write_plots(results, out)
    if predictions:
        try:
            figures.append(prediction_grid(results, out, predictions))
        except UserError as err:
            notes.append(f"no prediction grid: {err}")
    path = out / "report.md"
    path.write_text(markdown(results, figures, notes))
    return path
