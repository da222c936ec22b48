"""The dataset pass a finished stage's ``after_stage`` hooks make: the unlabeled set in batches
with image ids, predicted by checkpoints of this or earlier stages, and the stage's outputs
written into its own folder (pseudo-label sets, id lists), each file atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Sequence

import attrs
import torch
from torch import nn
from torch.utils.data import Dataset

from ssseg.engine.checkpoint import load_module, read
from ssseg.engine.evaluate import predict_scores, probabilities
from ssseg.errors import UserError
from ssseg.files import write_text
from ssseg.models import build_model
from ssseg.recipe.schema import EvalConfig, TTAConfig
from ssseg.run_files import BEST, LAST, SNAPSHOTS, snapshot
from ssseg.stages.label_store import write_label, written_ids
from ssseg.stages.training_set import set_folder
from ssseg.stages.types import PassBatch, Stage

LISTS = "lists"  # <stage folder>/lists/<name>.txt, one image id per line


@attrs.frozen
class DatasetPass:
    """What ``after_stage`` receives besides the stage: read-only access to the unlabeled set
    (``unlabeled``, its images' ``ids()``), to the checkpoints of this stage and of the stages it
    reads (:meth:`checkpoint`), predictions of those checkpoints on the unlabeled images
    (:meth:`predict`), and writers for this stage's outputs: pseudo-label sets
    (:meth:`write_labels`, resumable) and id lists (:meth:`write_ids`, :meth:`read_ids`).
    ``device``: where the predictions run."""

    stage: Stage
    unlabeled: Dataset
    num_classes: int
    device: torch.device

    @property
    def stages_dir(self) -> Path:
        """``<out>/stages``."""
        return self.stage.folder.parent

    def _readable(self, stage: str) -> Path:
        readable = (self.stage.name, *self.stage.reads)
        if stage not in readable:
            raise UserError(f"stage {self.stage.name!r} cannot read stage {stage!r}; valid: "
                            f"{', '.join(readable)} (add it to stages[{self.stage.index}].reads)")
        return self.stages_dir / stage

    def ids(self) -> tuple[str, ...]:
        """The unlabeled images' ids, in the dataset's order (a repeated id is an error)."""
        ids = tuple(self.unlabeled.image_id(i) for i in range(len(self.unlabeled)))
        if len(set(ids)) != len(ids):
            twice = next(i for n, i in enumerate(ids) if i in ids[:n])
            raise UserError(f"two unlabeled images have the id {twice!r} (their file name); staged "
                            "training needs unique image file names")
        return ids

    def checkpoint(self, stage: str, which: str | int = "best") -> Path:
        """The checkpoint of ``stage`` (this stage or one it reads): ``"best"``, ``"last"``, or the
        snapshot kept at an iteration (``stage_snapshots``); a missing file is an error naming it
        and listing the stage's checkpoints."""
        folder = self._readable(stage)
        names = {"best": BEST, "last": LAST}
        if isinstance(which, str) and which not in names:
            raise UserError(f"checkpoint {which!r}: valid: 'best', 'last' or a snapshot's iteration")
        path = folder / (names[which] if isinstance(which, str) else snapshot(which))
        if not path.is_file():
            kept = sorted(p.name for p in folder.glob("*.pt")) if folder.is_dir() else []
            raise UserError(f"checkpoint not found: {path}; stage {stage!r} has "
                            f"{', '.join(kept) or 'no checkpoints'}")
        return path

    def snapshots(self, stage: str | None = None) -> tuple[int, ...]:
        """The iterations of the snapshots ``stage`` (default: this stage) kept, in order."""
        folder = self._readable(stage or self.stage.name)
        return tuple(sorted(int(p.stem.split("_")[1]) for p in folder.glob(SNAPSHOTS)))

    def model(self, checkpoint: Path) -> nn.Module:
        """The student of ``checkpoint`` (a model of this stage's recipe) in eval mode."""
        model = build_model(self.stage.recipe.model, self.num_classes)
        load_module(model, read(checkpoint)["student"], "student", checkpoint)
        return model.to(self.device).eval()

    @torch.no_grad()
    def predict(self, checkpoints: Sequence[Path], ids: Iterable[str] | None = None,
                scales: Sequence[float] = (1.0,), flip: bool = False, batch_size: int = 1) -> Iterator[PassBatch]:
        """Each checkpoint's class probabilities for the unlabeled images ``ids`` (default: all),
        whole images at their own size, in batches of up to ``batch_size`` consecutive images of
        one size; with ``scales`` other than ``(1.0,)`` or ``flip``, the mean softmax over every
        rescaled (and flipped) forward, resized back (test-time augmentation)."""
        models = [self.model(Path(c)) for c in checkpoints]
        cfg = EvalConfig(mode="whole", tta=TTAConfig(flip=flip, scales=tuple(scales)))
        crop = self.stage.recipe.data.crop
        rows = {image_id: i for i, image_id in enumerate(self.ids())}
        wanted = list(rows) if ids is None else list(ids)
        unknown = [i for i in wanted if i not in rows]
        if unknown:
            raise UserError(f"dataset pass: {unknown[0]!r} is no unlabeled image id ({len(unknown)} unknown)")
        batch: list[tuple[str, torch.Tensor]] = []
        for image_id in wanted + [None]:
            image = None if image_id is None else self.unlabeled.full_image(rows[image_id])
            if batch and (image is None or len(batch) == batch_size or image.shape != batch[0][1].shape):
                images = torch.stack([b[1] for b in batch]).to(self.device)
                probs = tuple(probabilities(predict_scores(m, images, cfg, crop, self.num_classes), cfg)
                              for m in models)
                yield PassBatch(ids=tuple(b[0] for b in batch), probs=probs)
                batch = []
            if image is not None:
                batch.append((image_id, image))

    def label_set(self, name: str) -> Path:
        """The folder of this stage's pseudo-label set ``name`` (read later as ``"<stage>/<name>"``)."""
        return set_folder(self.stages_dir, f"{self.stage.name}/{name}")

    def missing_labels(self, name: str, ids: Iterable[str]) -> list[str]:
        """Those of ``ids`` whose label is not yet in set ``name`` (what a resumed pass still
        has to label)."""
        done = written_ids(self.label_set(name))
        return [i for i in ids if i not in done]

    def write_labels(self, name: str, ids: Sequence[str], labels: torch.Tensor) -> None:
        """Write label maps ``[B,H,W]`` of images ``ids`` into set ``name``, one PNG each,
        atomically; labels already written are kept."""
        folder = self.label_set(name)
        for image_id, label in zip(ids, labels):
            write_label(folder, image_id, label)

    def write_ids(self, name: str, ids: Iterable[str]) -> None:
        """Write the id list ``name`` (e.g. a split of the unlabeled set) into this stage's folder,
        atomically."""
        folder = self.stage.folder / LISTS
        folder.mkdir(parents=True, exist_ok=True)
        write_text(folder / f"{name}.txt", "".join(f"{i}\n" for i in ids))

    def has_ids(self, name: str, stage: str | None = None) -> bool:
        """Whether id list ``name`` of ``stage`` (default: this stage) was written."""
        return (self._readable(stage or self.stage.name) / LISTS / f"{name}.txt").is_file()

    def read_ids(self, name: str, stage: str | None = None) -> tuple[str, ...]:
        """Id list ``name`` of ``stage`` (default: this stage); a missing list is an error naming it."""
        path = self._readable(stage or self.stage.name) / LISTS / f"{name}.txt"
        if not path.is_file():
            raise UserError(f"id list not found: {path}")
        return tuple(path.read_text(encoding="utf-8").split())
