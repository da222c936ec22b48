"""A training run's output folder, checked before anything is built (and before torch is
imported, so the answer is immediate) and kept consistent across
interruptions: ``recipe.yaml`` is never half-written and is the truth a resumed run continues
with; ``metrics.jsonl`` holds each iteration once however often the run was resumed; a folder
holding another recipe's run is never reused."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
from pathlib import Path
from typing import Sequence

import attrs

from ssseg import files, run_lock
from ssseg.errors import UserError
from ssseg.recipe.differences import RESUMABLE, incompatible_changes
from ssseg.recipe.load import dump_recipe, load_recipe
from ssseg.recipe.schema import Recipe
from ssseg.recipe.structure import unstructure
from ssseg.run_files import LAST, METRICS, RECIPE, STAGES

SHOWN = 3  # differences named in a message
LOCK = "train.lock"  # held by the one process writing the folder


@attrs.frozen
class RunFolder:
    """The output folder of one training run."""

    path: Path

    @property
    def last(self) -> Path:
        """The newest checkpoint."""
        return self.path / LAST

    @property
    def recipe_file(self) -> Path:
        """The run's fully resolved recipe."""
        return self.path / RECIPE

    @property
    def metrics_file(self) -> Path:
        """The run's training and evaluation records, one JSON line each."""
        return self.path / METRICS

    def writing(self, command: str) -> contextlib.AbstractContextManager:
        """Hold the folder's writer lock (``train.lock``) while a training (new or resumed) writes
        it: a second process is refused naming the holder, a dead holder's lock is taken over.
        Only global rank 0 of a torchrun holds it (the other ranks write nothing)."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"--out {self.path} is a file, not a folder; choose another --out")
        if os.environ.get("RANK", "0") != "0":
            return contextlib.nullcontext()
        return run_lock.writing(self.path, LOCK, command, advice=(
            "wait for it to end or stop it (Ctrl-C saves a checkpoint, then --resume continues it); "
            "to train another run at the same time, choose another --out"))

    def open(self, recipe_path: Path, overrides: Sequence[str], resume: bool) -> Recipe:
        """Check the folder before data and model are built, and return the recipe to train.

        Refused: a file in the folder's place, a folder that cannot be written, a run with a
        checkpoint unless resumed, ``resume`` without a checkpoint, and a partial run (no
        checkpoint yet) of another recipe. A resumed run continues with the folder's
        ``recipe.yaml`` (its own, with the overrides it was started with), so ``recipe_path``
        is read only for a new run or a folder without one; ``overrides`` apply on top.
        """
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"--out {self.path} is a file, not a folder; choose another --out")
        if resume:
            recipe = self._resumed_recipe(recipe_path, overrides)
        else:
            recipe = load_recipe(recipe_path, overrides)
            self._refuse_another_run(recipe)
        self._require_writable()
        return recipe

    def _resumed_recipe(self, recipe_path: Path, overrides: Sequence[str]) -> Recipe:
        if not self.last.exists() and not (self.path / STAGES).is_dir():
            raise UserError(f"--resume: no checkpoint at {self.last}")
        source = self.recipe_file if self.recipe_file.is_file() else recipe_path
        recipe = load_recipe(source, overrides)
        changed = incompatible_changes(unstructure(load_recipe(source)), unstructure(recipe),
                                       (f"in {source.name}", "with -o"))
        if changed:
            raise UserError(f"--resume: a resumed run may change only {RESUMABLE} "
                            f"({'; '.join(changed[:SHOWN])}); start a new --out for another recipe")
        return recipe

    def _refuse_another_run(self, recipe: Recipe) -> None:
        if self.last.exists():
            raise UserError(f"{self.path} already holds a run ({self.last}); continue it with --resume "
                            "or choose another --out")
        if not (self.recipe_file.exists() or self.metrics_file.exists()):
            return
        try:
            changed = incompatible_changes(unstructure(load_recipe(self.recipe_file)), unstructure(recipe),
                                           (f"in its {RECIPE}", "in the recipe"))
        except UserError:
            changed = [f"no readable {RECIPE}"]
        if changed:
            raise UserError(f"{self.path} holds a partial run (no checkpoint yet) of another recipe "
                            f"({'; '.join(changed[:SHOWN])}); choose another --out, or delete the "
                            "folder to start over")

    def _require_writable(self) -> None:
        probe = self.path / f".ssseg-write-test-{os.getpid()}"
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            with files.open_file(probe, "wb"):
                pass
            probe.unlink()
        except OSError as err:
            raise UserError(f"cannot write in the output folder {self.path} ({err.strerror or err}); "
                            "choose another --out") from None

    def begin(self, recipe: Recipe, iteration: int) -> None:
        """Write the resolved recipe, and keep only the metrics records up to ``iteration``
        (the checkpoint's: later ones are replayed by the resumed run; none for a new run)."""
        files.write_text(self.recipe_file, dump_recipe(recipe))
        if self.metrics_file.is_file():
            text = self.metrics_file.read_text(encoding="utf-8")
            kept = "".join(f"{line}\n" for line in text.splitlines() if _iteration(line) <= iteration)
            if kept != text:
                files.write_text(self.metrics_file, kept)

    def how_to_continue(self) -> str:
        """What an interrupted run leaves, and the command that continues it."""
        if not self.last.exists():
            return "no checkpoint was written yet; the same command starts the run again"
        return (f"{self.last} holds the last complete checkpoint; continue with: ssseg train "
                f"{shlex.quote(str(self.recipe_file))} --out {shlex.quote(str(self.path))} --resume")


    def how_to_restart(self, lr: float) -> str:
        """After divergence: the last good checkpoint and the command that continues from it with
        a tenth of the learning rate ``lr`` (a resumed run may change ``optim.lr``)."""
        if not self.last.exists():
            return f"no checkpoint was written yet; start again with a lower optim.lr (e.g. -o optim.lr={lr / 10:g})"
        return (f"the last good checkpoint, {self.last}, is kept; continue from it with a lower learning "
                f"rate: ssseg train {shlex.quote(str(self.recipe_file))} --out {shlex.quote(str(self.path))} "
                f"--resume -o optim.lr={lr / 10:g} (optim.clip_grad may change on --resume too), or set "
                "run.on_nonfinite: skip")


def _iteration(line: str) -> float:
    """A metrics record's iteration; infinite for a line a kill cut short."""
    try:
        return json.loads(line)["iteration"]
    except (ValueError, KeyError, TypeError):
        return float("inf")
