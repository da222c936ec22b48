"""Suite plots (PNG, matplotlib; skipped with a note when it is not installed): mIoU over
training, final mIoU with error bars, hardness over training for variants that log it, and for a
suite with an axis, mIoU against the axis per method.

A variant has one colour in every figure and panel; in a suite with an axis, the axis value is
the line style (method × value = colour × line style). mIoU curves mark each evaluation.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from ssseg import files
from ssseg.suite.folder import read_records
from ssseg.suite.results import MODELS, SCORES, SuiteResults, summarize

LINE_STYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)))  # one per axis value


def band(curves: list[dict[int, float]]) -> tuple[list[int], list[float], list[float], list[float]]:
    """Iterations every curve has, with the mean, min and max over the curves there."""
    common = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    values = [[c[i] for c in curves] for i in common]
    return (common, [statistics.fmean(v) for v in values], [min(v) for v in values],
            [max(v) for v in values])


def _curves(results: SuiteResults, variant: str, point: str | None, key: str, event: str) -> list[dict[int, float]]:
    curves = []
    for seed in results.eval_records[variant, point]:
        records = read_records(results.run_dir(variant, point, seed), event)
        curve = {r["iteration"]: r[key] for r in records if r.get(key) is not None}
        if curve:
            curves.append(curve)
    return curves


def colour(results: SuiteResults, variant: str) -> str:
    """The variant's colour in every figure: matplotlib's ``C<k>`` for the k-th variant."""
    return f"C{results.variants.index(variant) % 10}"


def line_style(results: SuiteResults, variant: str, point: str | None) -> dict[str, Any]:
    """Colour (the variant's) and line style (the axis value's) of a row's curves."""
    return {"color": colour(results, variant),
            "linestyle": LINE_STYLES[results.points.index(point) % len(LINE_STYLES)]}


def _band_plot(ax, results: SuiteResults, key: str, event: str, scale: float = 1.0,
               marker: str | None = None) -> None:
    for variant, point in results.rows():
        its, mean, lo, hi = band(_curves(results, variant, point, key, event))
        if its:
            style = line_style(results, variant, point)
            ax.plot(its, [scale * m for m in mean], label=results.label(variant, point), marker=marker,
                    markersize=3, **style)
            ax.fill_between(its, [scale * v for v in lo], [scale * v for v in hi], color=style["color"],
                            alpha=0.15)


def _save(plt, fig, path: Path) -> None:
    """Write ``fig`` as a PNG replacing ``path`` whole (a full disk leaves the previous one)."""
    try:
        fig.tight_layout()
        files.write_atomically(path, lambda file: fig.savefig(file, format="png", dpi=100))
    finally:
        plt.close(fig)


def hardness_keys(results: SuiteResults) -> list[str]:
    """Train-record keys containing "hardness" (e.g. ``imas/hardness_mean``) in any run."""
    keys = set()
    for (variant, point), runs in results.eval_records.items():
        for seed in runs:
            for record in read_records(results.run_dir(variant, point, seed), "train"):
                keys |= {k for k in record if "hardness" in k}
    return sorted(keys)


def axis_positions(points: tuple[str, ...]) -> tuple[list[float], bool]:
    """x positions of the axis values: the values themselves when all are numbers (e.g. numbers
    of labels), else 0, 1, 2, ...; and whether they are numbers."""
    try:
        return [float(p) for p in points], True
    except ValueError:
        return list(range(len(points))), False


def _axis_plot(plt, results: SuiteResults, models: list[str], out: Path) -> tuple[str, str]:
    xs, numeric = axis_positions(results.points)
    fig, axes = plt.subplots(len(models), len(SCORES), figsize=(5.5 * len(SCORES), 4 * len(models)),
                             squeeze=False)
    for row, model in zip(axes, models):
        for ax, score in zip(row, SCORES):
            for variant in (v for v in results.variants if results.evaluates(v, model)):
                stats = [summarize(list(results.per_seed(variant, p, f"{model}/{score}").values()))
                         for p in results.points]
                shown = [(x, s) for x, s in zip(xs, stats) if s.mean is not None]
                if shown:
                    ax.errorbar([x for x, _ in shown], [100 * s.mean for _, s in shown],
                                yerr=[100 * (s.std or 0) for _, s in shown], marker="o", capsize=3,
                                label=variant, color=colour(results, variant))
            if numeric and max(xs) / max(min(xs), 1e-9) >= 8:
                ax.set_xscale("log")
            ax.set_xticks(xs, list(results.points))
            ax.minorticks_off()
            ax.set(title=f"{model} mIoU, {score} evaluation (mean ± std over seeds)",
                   xlabel=results.axis_label, ylabel="mIoU (%)")
            ax.legend(fontsize="small")
    name = "miou_by_axis.png"
    _save(plt, fig, out / name)
    return f"mIoU against {results.axis_label}", name


def write_plots(results: SuiteResults, out: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """Write the PNGs into ``out``; returns (title, file name) pairs and notes."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], ["no plots: matplotlib is not installed (pip install 'ssseg[report]')"]

    figures = []
    models = [m for m in MODELS if any(results.evaluates(v, m) for v in results.variants)]
    if not models:
        return [], ["no plots: no finished run has an mIoU"]
    if results.axis_label:
        figures.append(_axis_plot(plt, results, models, out))
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        _band_plot(ax, results, f"{model}/miou", "eval", 100, marker="o")
        ax.set(title=f"{model} val mIoU (mean, min–max over seeds)", xlabel="iteration", ylabel="mIoU (%)")
        ax.legend(fontsize="small")
    _save(plt, fig, out / "miou_curves.png")
    figures.append(("mIoU over training", "miou_curves.png"))

    rows = results.rows()
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(rows)), 4))
    width = 0.8 / len(models)
    for k, model in enumerate(models):
        stats = [summarize(list(results.per_seed(v, p, f"{model}/last").values())) for v, p in rows]
        xs = [i + (k - (len(models) - 1) / 2) * width for i in range(len(rows))]
        ax.bar(xs, [100 * (s.mean or 0) for s in stats], width, label=model,
               yerr=[100 * (s.std or 0) for s in stats], capsize=3)
    ax.set_xticks(range(len(rows)), [results.label(v, p) for v, p in rows], rotation=20, ha="right")
    ax.set(title="last val mIoU (mean ± std over seeds)", ylabel="mIoU (%)")
    ax.legend(fontsize="small")
    _save(plt, fig, out / "miou_last.png")
    figures.append(("Last mIoU per variant", "miou_last.png"))

    keys = hardness_keys(results)
    if keys:
        fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4), squeeze=False)
        for ax, key in zip(axes[0], keys):
            _band_plot(ax, results, key, "train")
            ax.set(title=f"{key} (mean, min–max over seeds)", xlabel="iteration")
            ax.legend(fontsize="small")
        _save(plt, fig, out / "hardness.png")
        figures.append(("Hardness over training", "hardness.png"))
    return figures, []
