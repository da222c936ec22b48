"""A suite's results: the finished runs' evaluation records read from its output folder, per
variant, axis value and seed; the reference they are compared to; and the statistics over seeds
(mean ± std, paired differences with a 95% t interval). The report, its plots and its prediction
grid all read a :class:`SuiteResults`."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import attrs

from ssseg.suite.folder import is_finished, planned_iters, read_manifest, read_records, run_name

MODELS = ("student", "teacher")
SCORES = ("last", "best")  # a run's score: its final evaluation, or its highest one

# two-sided 95%: the 0.975 quantile of Student's t with 1..30 degrees of freedom
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def counted(n: int, word: str) -> str:
    """``n`` and ``word``, plural unless ``n`` is 1: ``1 run``, ``3 seeds``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


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


def run_score(evals: list[dict[str, Any]], metric: str) -> float | None:
    """One run's value of ``metric`` from its eval records: ``<model>/last`` and ``<model>/best``
    (mIoU of the final and of the highest evaluation), ``<model>/iou/<class>`` (final),
    ``iterations`` or ``wall_s`` (of the final evaluation)."""
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


@attrs.frozen
class SuiteResults:
    """The finished runs of a suite output folder: each run's eval records by (variant, axis
    value) and seed. ``points`` are the axis values as folder names (``(None,)`` without an axis);
    ``reference`` is the variant the others are compared to and ``reference_reason`` says why."""

    out: Path
    suite: str
    variants: tuple[str, ...]
    points: tuple[str | None, ...]
    axis_label: str | None
    seeds: tuple[int, ...]
    eval_records: dict[tuple[str, str | None], dict[int, list[dict[str, Any]]]]
    unfinished: tuple[str, ...]
    reference: str = ""
    reference_reason: str = ""

    def run_dir(self, variant: str, point: str | None, seed: int) -> Path:
        """The folder of one run."""
        return self.out / run_name(variant, point, seed)

    def rows(self) -> list[tuple[str, str | None]]:
        """Every (variant, axis value), variant-major."""
        return [(v, p) for v in self.variants for p in self.points]

    def label(self, variant: str, point: str | None) -> str:
        """A row's name: the variant, and its axis value in a suite with an axis."""
        return variant if point is None else f"{variant} · {point}"

    def evaluates(self, variant: str, model: str) -> bool:
        """Whether the variant's runs evaluated ``model`` (``student`` or ``teacher``)."""
        return any(f"{model}/miou" in evals[-1] for p in self.points
                   for evals in self.eval_records[variant, p].values())

    def per_seed(self, variant: str, point: str | None, metric: str) -> dict[int, float]:
        """Per seed, the run's value of ``metric`` (see :func:`run_score`); seeds without a
        finished run or without that value are left out."""
        values = {seed: run_score(evals, metric) for seed, evals in self.eval_records[variant, point].items()}
        return {seed: v for seed, v in values.items() if v is not None}

    def reference_per_seed(self, point: str | None, metric: str) -> dict[int, float]:
        """The reference's values for ``metric`` at ``point``; a teacher metric falls back to the
        reference's student when the reference has no teacher."""
        values = self.per_seed(self.reference, point, metric)
        if not values and metric.startswith("teacher/"):
            values = self.per_seed(self.reference, point, "student/" + metric.split("/", 1)[1])
        return values

    @property
    def finished(self) -> int:
        """How many runs finished."""
        return sum(len(runs) for runs in self.eval_records.values())

    def class_names(self, model: str) -> list[str]:
        """Class names in the order of the evaluations."""
        for runs in self.eval_records.values():
            for evals in runs.values():
                if f"{model}/iou" in evals[-1]:
                    return list(evals[-1][f"{model}/iou"])
        return []


def choose_reference(results: SuiteResults, named: str | None, supervised: list[str]) -> tuple[str, str]:
    """(reference variant, why): the one the suite names; else the best supervised-only variant
    (highest mean student mIoU of the last evaluation over all its finished runs); else the first."""
    if named is not None:
        return named, "named by the suite"
    means = {}
    for variant in supervised:
        values = [v for p in results.points for v in results.per_seed(variant, p, "student/last").values()]
        if values:
            means[variant] = statistics.fmean(values)
    if not means:
        return results.variants[0], "the first variant (no supervised-only variant has finished runs)"
    best = max(means, key=means.get)
    others = ", ".join(f"`{v}` {100 * m:.1f}" for v, m in sorted(means.items(), key=lambda i: -i[1]))
    return best, (f"the best supervised-only row (student mIoU, last evaluation, mean over its runs: "
                  f"{others})")


def load_results(out: Path) -> SuiteResults:
    """Read a suite output folder (``suite.json`` and each finished run's eval records)."""
    manifest = read_manifest(out)
    axis = manifest.get("axis")
    points = tuple(axis["values"]) if axis else (None,)
    records: dict[tuple[str, str | None], dict[int, list]] = {}
    unfinished = []
    for variant in manifest["variants"]:
        for point in points:
            records[variant, point] = {}
            for seed in manifest["seeds"]:
                run_dir = out / run_name(variant, point, seed)
                iters = planned_iters(run_dir)
                if iters is not None and is_finished(run_dir, iters):
                    records[variant, point][seed] = read_records(run_dir, "eval")
                else:
                    unfinished.append(run_name(variant, point, seed))
    results = SuiteResults(out, manifest["suite"], tuple(manifest["variants"]), points,
                           axis and axis["label"], tuple(manifest["seeds"]), records, tuple(unfinished))
    reference, reason = choose_reference(results, manifest.get("reference"), manifest.get("supervised", []))
    return attrs.evolve(results, reference=reference, reference_reason=reason)
