"""Checkpoints: model, teacher, contributed modules, plugin state, optimiser, RNG states and iteration, written
atomically (temporary file, then rename) so an interrupted write leaves the previous one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ssseg.errors import UserError
from ssseg.hookspecs import HOOKSPEC_VERSION
from ssseg.recipe.structure import unstructure

LAST, BEST = "last.pt", "best.pt"
# recipe sections a resumed run may change: schedule length, evaluation and bookkeeping
RESUMABLE_CHANGES = ("optim.iters", "eval.", "run.")


def state_of(trainer) -> dict[str, Any]:
    """Everything needed to continue the run exactly where it is."""
    run = trainer.run
    return {
        "iteration": run.iteration,
        "hookspec_version": HOOKSPEC_VERSION,
        "recipe": unstructure(run.recipe),
        "student": run.student.state_dict(),
        "teacher": run.teacher.state_dict() if run.teacher is not None else None,
        "modules": {name: module.state_dict() for name, module in run.modules.items()},
        "plugins": {k: p.state_dict() for k, p in run.plugins.items() if hasattr(p, "state_dict")},
        "optimizer": run.optimizer.state_dict(),
        "scaler": trainer.scaler.state_dict(),
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "generator": trainer.generator.get_state(),
                "shared_generator": trainer.shared_generator.get_state()},
        "last_eval": trainer.last_eval,
        "best": trainer.best,
        "wall_s": trainer.wall_s,
    }


def _replace_atomically(write, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


class Checkpointer:
    """Writes ``last.pt`` (atomically), keeps the last ``keep`` iteration checkpoints as hard
    links ``iter_<N>.pt``, and ``best.pt``. Only rank 0 writes."""

    def __init__(self, folder: Path, keep: int = 0):
        self.folder, self.keep = folder, keep

    @property
    def last(self) -> Path:
        """The newest checkpoint's path."""
        return self.folder / LAST

    def save(self, trainer, best: bool = False) -> None:
        """Write the trainer's state; with ``best`` also make it ``best.pt``."""
        if not trainer.run.is_main:
            return
        _replace_atomically(lambda tmp: torch.save(state_of(trainer), tmp), self.last)
        if best:
            _replace_atomically(lambda tmp: os.link(self.last, tmp), self.folder / BEST)
        if self.keep:
            it = trainer.run.iteration
            _replace_atomically(lambda tmp: os.link(self.last, tmp), self.folder / f"iter_{it:07d}.pt")
            for old in sorted(self.folder.glob("iter_*.pt"))[: -self.keep]:
                old.unlink()


def read(path: Path) -> dict[str, Any]:
    """A checkpoint's contents; a missing or unreadable file is a user error naming it."""
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise UserError(f"cannot read checkpoint {path}: {err}") from None


def recipe_differences(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """Key paths where two unstructured recipes differ (``a.b: saved vs current``)."""
    out = []
    for key in sorted(set(saved) | set(current)):
        path = f"{prefix}{key}"
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and path != "plugins":
            out += recipe_differences(a, b, path + ".")
        elif a != b:
            out.append(f"{path}: {a!r} in the checkpoint, {b!r} in the recipe")
    return out


def restore(trainer, path: Path) -> None:
    """Continue ``trainer`` from the checkpoint at ``path``. Refuses a checkpoint written by a
    different recipe (only the schedule length, ``eval`` and ``run`` may change)."""
    run, state = trainer.run, read(path)
    changed = [d for d in recipe_differences(state["recipe"], unstructure(run.recipe))
               if not d.startswith(RESUMABLE_CHANGES)]
    if changed:
        raise UserError(f"{path} was written by a different recipe ({'; '.join(changed[:3])}); "
                        "resume with the recipe it was written with, or start a new --out")
    try:
        load_models(run, state, path)
        run.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler") and trainer.scaler.is_enabled():  # fp16 before and now
            trainer.scaler.load_state_dict(state["scaler"])
        for key, plugin in run.plugins.items():
            if hasattr(plugin, "load_state_dict"):
                plugin.load_state_dict(state["plugins"][key])
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path} does not fit this recipe: {_first_lines(err)}") from None
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    trainer.generator.set_state(rng["generator"])
    trainer.shared_generator.set_state(rng["shared_generator"])
    trainer.last_eval, trainer.best = state["last_eval"], state["best"]
    trainer.wall_s = state["wall_s"]
    run.iteration = state["iteration"]


def load_weights(run, path: Path) -> int:
    """Load only the model weights (student and teacher) from a checkpoint, for evaluation;
    returns the checkpoint's iteration."""
    state = read(path)
    try:
        load_models(run, state, path)
    except (RuntimeError, KeyError) as err:
        raise UserError(f"{path} does not fit this recipe's model: {_first_lines(err)}") from None
    return state["iteration"]


def load_models(run, state: dict[str, Any], path: Path) -> None:
    """Load the student, the teacher (when both have one) and every contributed module."""
    run.student.load_state_dict(state["student"])
    if run.teacher is not None and state.get("teacher") is not None:
        run.teacher.load_state_dict(state["teacher"])
    saved = state.get("modules", {})
    if set(saved) != set(run.modules):
        raise UserError(f"{path} holds the trainable modules {sorted(saved)}, this recipe builds "
                        f"{sorted(run.modules)}; use the recipe the checkpoint was written with")
    for name, module in run.modules.items():
        module.load_state_dict(saved[name])


def _first_lines(err: Exception) -> str:
    return " ".join(line.strip() for line in str(err).splitlines()[:2])
