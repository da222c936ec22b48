"""Time CorrMatch's region propagation (``propagate_regions``: a loop over the M sampled regions,
batched over images) against the released loop over images × regions, on CPU.

    python benchmarks/corrmatch_propagation.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path[:0] = [str(TESTS), str(TESTS / "strategies")]  # the test module and its support package
from test_plugin_corrmatch import released_propagation  # noqa: E402  the released loop, restated
from ssseg_plugins.corrmatch import propagate_regions  # noqa: E402


def timed(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> int:
    """One row per size: batched and released seconds per call, and their ratio."""
    print("| images × crop, regions M, classes | batched (s) | released loop (s) | ratio |\n|---|---|---|---|")
    for b, side, m, c, repeats in ((8, 32, 128, 5, 5), (4, 321, 128, 21, 3)):
        g = torch.Generator().manual_seed(0)
        regions = torch.rand(b, m, side, side, generator=g) < 0.3
        labels = torch.randint(0, c, (b, side, side), generator=g)
        confident = torch.rand(b, side, side, generator=g) < 0.7
        tau = torch.tensor(0.5)
        ours = timed(lambda: propagate_regions(regions, labels, confident, tau, c), repeats)
        released = timed(lambda: released_propagation(regions, labels, confident, 0.5), repeats)
        print(f"| {b} × {side}², {m}, {c} | {ours:.4f} | {released:.4f} | {released / ours:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
