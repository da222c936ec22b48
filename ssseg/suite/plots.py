"""Suite plots (PNG, matplotlib; skipped with a note when it is not installed): mIoU over
training, final mIoU with error bars, and hardness over training for variants that log it."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING

from ssseg.suite.runner import read_records

if TYPE_CHECKING:
    from ssseg.suite.report import SuiteResults


def band(curves: list[dict[int, float]]) -> tuple[list[int], list[float], list[float], list[float]]:
    """Iterations every curve has, with the mean, min and max over the curves there."""
    common = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    values = [[c[i] for c in curves] for i in common]
    return (common, [statistics.fmean(v) for v in values], [min(v) for v in values],
            [max(v) for v in values])


def _curves(results: SuiteResults, variant: str, key: str, event: str) -> list[dict[int, float]]:
    curves = []
    for seed in results.evals[variant]:
        records = read_records(results.run_dir(variant, seed), event)
        curve = {r["iteration"]: r[key] for r in records if r.get(key) is not None}
        if curve:
            curves.append(curve)
    return curves


def _band_plot(ax, results: SuiteResults, key: str, event: str, scale: float = 1.0) -> None:
    for variant in results.variants:
        its, mean, lo, hi = band(_curves(results, variant, key, event))
        if its:
            line, = ax.plot(its, [scale * m for m in mean], label=variant)
            ax.fill_between(its, [scale * v for v in lo], [scale * v for v in hi],
                            color=line.get_color(), alpha=0.2)


def hardness_keys(results: SuiteResults) -> list[str]:
    """Train-record keys containing "hardness" (e.g. ``imas/hardness_mean``) in any run."""
    keys = set()
    for variant, runs in results.evals.items():
        for seed in runs:
            for record in read_records(results.run_dir(variant, seed), "train"):
                keys |= {k for k in record if "hardness" in k}
    return sorted(keys)


def write_plots(results: SuiteResults, out: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """Write the PNGs into ``out``; returns (title, file name) pairs and notes."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], ["no plots: matplotlib is not installed (pip install 'ssseg[report]')"]
    from ssseg.suite.report import summarize

    figures = []
    models = [m for m in ("student", "teacher") if any(results.has(v, m) for v in results.variants)]
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        _band_plot(ax, results, f"{model}/miou", "eval", 100)
        ax.set(title=f"{model} val mIoU (mean, min–max over seeds)", xlabel="iteration", ylabel="mIoU (%)")
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out / "miou_curves.png", dpi=100)
    plt.close(fig)
    figures.append(("mIoU over training", "miou_curves.png"))

    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(results.variants)), 4))
    width = 0.8 / len(models)
    for k, model in enumerate(models):
        stats = [summarize(list(results.values(v, f"{model}/last").values())) for v in results.variants]
        xs = [i + (k - (len(models) - 1) / 2) * width for i in range(len(results.variants))]
        ax.bar(xs, [100 * (s.mean or 0) for s in stats], width, label=model,
               yerr=[100 * (s.std or 0) for s in stats], capsize=3)
    ax.set_xticks(range(len(results.variants)), results.variants, rotation=20, ha="right")
    ax.set(title="last val mIoU (mean ± std over seeds)", ylabel="mIoU (%)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out / "miou_last.png", dpi=100)
    plt.close(fig)
    figures.append(("Last mIoU per variant", "miou_last.png"))

    keys = hardness_keys(results)
    if keys:
        fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4), squeeze=False)
        for ax, key in zip(axes[0], keys):
            _band_plot(ax, results, key, "train")
            ax.set(title=f"{key} (mean, min–max over seeds)", xlabel="iteration")
            ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(out / "hardness.png", dpi=100)
        plt.close(fig)
        figures.append(("Hardness over training", "hardness.png"))
    return figures, []
