"""Checkpoints: model, teacher, plugin state, optimiser, RNG states and iteration, written
atomically (temporary file, then rename) so an interrupted write leaves the previous one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ssseg.errors import UserError
from ssseg.hookspecs import HOOKSPEC_VERSION
from ssseg.recipe.structure import unstructure

LAST = "last.pt"


def state_of(trainer) -> dict[str, Any]:
    """Everything needed to continue the run exactly where it is."""
    run = trainer.run
    return {
        "iteration": run.iteration,
        "hookspec_version": HOOKSPEC_VERSION,
        "recipe": unstructure(run.recipe),
        "student": run.student.state_dict(),
        "teacher": run.teacher.state_dict() if run.teacher is not None else None,
        "plugins": {k: p.state_dict() for k, p in run.plugins.items() if hasattr(p, "state_dict")},
        "optimizer": run.optimizer.state_dict(),
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "generator": trainer.generator.get_state(),
                "shared_generator": trainer.shared_generator.get_state()},
        "last_eval": trainer.last_eval,
        "wall_s": trainer.wall_s,
    }


def save(trainer, path: Path) -> None:
    """Write the checkpoint to ``path`` atomically (rank 0 only)."""
    if not trainer.run.is_main:
        return
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state_of(trainer), tmp)
    os.replace(tmp, path)


def read(path: Path) -> dict[str, Any]:
    """A checkpoint's contents; a missing or unreadable file is a user error naming it."""
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise UserError(f"cannot read checkpoint {path}: {err}") from None


def restore(trainer, path: Path) -> None:
    """Continue ``trainer`` from the checkpoint at ``path``; refuses a checkpoint of another
    model or a plugin set it was not written with."""
    run, state = trainer.run, read(path)
    missing = set(state.get("plugins", {})) ^ {k for k, p in run.plugins.items() if hasattr(p, "state_dict")}
    if missing:
        raise UserError(f"{path}: plugin state does not match the recipe (differs for "
                        f"{', '.join(sorted(missing))}); resume with the recipe it was written with")
    try:
        run.student.load_state_dict(state["student"])
        if run.teacher is not None:
            if state["teacher"] is None:
                raise UserError(f"{path} holds no teacher but the recipe builds one")
            run.teacher.load_state_dict(state["teacher"])
        run.optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as err:
        raise UserError(f"{path} does not fit this recipe's model: {_first_lines(err)}") from None
    for key, plugin_state in state.get("plugins", {}).items():
        run.plugins[key].load_state_dict(plugin_state)
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    trainer.generator.set_state(rng["generator"])
    trainer.shared_generator.set_state(rng["shared_generator"])
    trainer.last_eval = state.get("last_eval", {})
    trainer.wall_s = state.get("wall_s", 0.0)
    run.iteration = state["iteration"]


def load_weights(run, path: Path) -> None:
    """Load only the model weights (student and teacher) from a checkpoint, for evaluation."""
    state = read(path)
    try:
        run.student.load_state_dict(state["student"])
        if run.teacher is not None and state.get("teacher") is not None:
            run.teacher.load_state_dict(state["teacher"])
    except (RuntimeError, KeyError) as err:
        raise UserError(f"{path} does not fit this recipe's model: {_first_lines(err)}") from None


def _first_lines(err: Exception) -> str:
    return " ".join(line.strip() for line in str(err).splitlines()[:2])
