"""Comparing two resolved recipes: where they differ, and which differences a resumed run may not make."""

from __future__ import annotations

from typing import Any

# what a resumed run may change: the schedule length, the learning rate and gradient clipping (to
# continue a diverged run from its last good checkpoint), evaluation and bookkeeping
RESUMABLE_CHANGES = ("optim.iters:", "optim.lr:", "optim.clip_grad:", "eval.", "run.")
RESUMABLE = "optim.iters, optim.lr, optim.clip_grad, eval.* and run.*"


def recipe_differences(saved: dict[str, Any], current: dict[str, Any], prefix: str = "",
                       labels: tuple[str, str] = ("in the checkpoint", "in the recipe")) -> list[str]:
    """Key paths where two unstructured recipes differ (``a.b: saved <label>, current <label>``)."""
    out = []
    for key in sorted(set(saved) | set(current)):
        path = f"{prefix}{key}"
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and path != "plugins":
            out += recipe_differences(a, b, path + ".", labels)
        elif a != b:
            out.append(f"{path}: {a!r} {labels[0]}, {b!r} {labels[1]}")
    return out


def incompatible_changes(saved: dict[str, Any], current: dict[str, Any],
                         labels: tuple[str, str] = ("in the checkpoint", "in the recipe")) -> list[str]:
    """The differences between two unstructured recipes that a resumed run may not make (all
    but :data:`RESUMABLE`), described with ``labels``."""
    return [d for d in recipe_differences(saved, current, labels=labels)
            if not d.startswith(RESUMABLE_CHANGES)]
