"""The compose-or-refuse matrix of ``tests/strategies/test_compose_matrix.py``, printed: every
shipped recipe × every shipped plugin that answers a decision or contribution hook, added with its
defaults, and the verdict:

- ``refused``: ``check_recipe`` (``ssseg explain``) refuses the pair; the first line of its message;
- ``acts``: the tiny version, trained from the kit's warm start, differs from the recipe alone;
- ``NO-OP``: accepted, and it trains as the recipe alone up to rounding (a silent no-op);
- ``MISMATCH``: accepted by ``check_recipe``, refused by training.

    python benchmarks/compose_matrix.py      # about a minute on 2 cores
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from ssseg.errors import UserError  # noqa: E402
from ssseg.testing import pretrained_start, tiny_version, train_tiny, training_difference  # noqa: E402
from strategies.test_compose_matrix import ITERS, PAIRS, recipe, refusal  # noqa: E402


def verdict(recipe_id: str, plugin: str, alone: dict, tmp: Path) -> str:
    """The pair's verdict, as the test decides it (``alone``: the recipes trained alone so far)."""
    message = refusal(recipe_id, plugin)
    if message is not None:
        return f"refused: {message.splitlines()[0]}"
    try:
        added = train_tiny(tiny_version(recipe(recipe_id, plugin), ITERS), tmp / f"{recipe_id}+{plugin}",
                           pretrained_start())
    except UserError as err:
        return f"MISMATCH: {str(err).splitlines()[0]}"
    if recipe_id not in alone:
        alone[recipe_id] = train_tiny(tiny_version(recipe(recipe_id), ITERS), tmp / recipe_id, pretrained_start())
    return "acts" if training_difference(added, alone[recipe_id]) else "NO-OP"


def main() -> None:
    start, counts, alone = time.perf_counter(), Counter(), {}
    with tempfile.TemporaryDirectory() as tmp:
        for recipe_id, plugin in PAIRS:
            text = verdict(recipe_id, plugin, alone, Path(tmp))
            counts[text.partition(":")[0]] += 1
            print(f"{recipe_id:34s} {plugin:21s} {text}")
    print(f"\n{len(PAIRS)} pairs: " + ", ".join(f"{n} {v}" for v, n in counts.most_common())
          + f"; {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
