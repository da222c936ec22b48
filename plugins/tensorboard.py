"""TensorBoard logging: a run's training scalars, every evaluation per model and per class, and a
grid of predictions on fixed validation images, in ``<run folder>/tensorboard/``.

The steps are the iterations of ``metrics.jsonl`` (1 … ``optim.iters``):

    train/<key>          each scalar of the step's logs (loss, loss_x, loss_u/<view>, lr, lambda_u,
                         plugins' ctx.log values), every ``run.log_every`` iterations and at the last
    eval/<m>/miou        at each evaluation, for each evaluated model m (student, teacher, …)
    eval/<m>/pixel_acc
    iou/<m>/<class>      IoU per class (classes absent from the ground truth and the predictions
                         are left out, as the mIoU leaves them out)
    predictions          image | ground truth | each evaluated model's prediction, for the first
                         ``images`` validation images

Only the process that writes files (rank 0) writes, and only when the run has a folder (``ssseg
train``, not ``ssseg eval``). A resumed run opens its writer with ``purge_step`` at its first new
step, so TensorBoard drops what the interrupted session wrote after its checkpoint and no step is
shown twice.
"""

from __future__ import annotations

import atexit
from typing import Any

import attrs
from torchvision.transforms.functional import pil_to_tensor

from ssseg.api import Plugin, Run, StepContext, UserError, evaluation_grid, hookimpl, in_range

FOLDER = "tensorboard"


class TensorBoard(Plugin):
    """Writes the run's scalars, evaluations and prediction grids as TensorBoard event files."""

    name = "tensorboard"
    requires_hookspec = 4  # after_eval(models)

    @attrs.frozen
    class Config:
        """``images``: validation images in the prediction grid at each evaluation (0: no grid)."""

        images: int = attrs.field(default=4, validator=in_range(0))

    def __init__(self, config):
        super().__init__(config)
        self.run: Run | None = None  # set on the process that writes
        self.writer = None  # opened at this session's first event

    @hookimpl
    def setup(self, run: Run) -> None:
        """Check that the tensorboard package is installed when the run has a folder; write on rank 0."""
        if run.out_dir is None:
            return
        self.summary_writer()
        if run.is_main:
            self.run = run

    def summary_writer(self) -> type:
        """torch's ``SummaryWriter``, or a UserError naming the extra that installs it."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError(f"plugins.{self.recipe_key or self.name}: the tensorboard package is not "
                            "installed; pip install 'ssseg[tensorboard]'") from None
        return SummaryWriter

    def open(self, step: int):
        """The writer; opened at this session's first event with ``purge_step=step``, so events
        an interrupted session wrote from ``step`` on are dropped."""
        if self.writer is None:
            self.writer = self.summary_writer()(log_dir=str(self.run.out_dir / FOLDER), purge_step=step)
            atexit.register(self.close)  # a run stopped by a signal still flushes its last events
        return self.writer

    def close(self) -> None:
        """Flush and close the writer."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            atexit.unregister(self.close)

    @hookimpl
    def after_iteration(self, ctx: StepContext, logs: dict[str, float]) -> None:
        """train/<key> for every scalar of the step, at the iterations ``metrics.jsonl`` logs."""
        step = ctx.iteration + 1
        if self.run is None or (step % self.run.recipe.run.log_every and step < ctx.max_iters):
            return
        writer = self.open(step)
        for key, value in logs.items():
            writer.add_scalar(f"train/{key}", value, step)

    @hookimpl
    def after_eval(self, run: Run, metrics: dict[str, Any], models: dict[str, Any]) -> None:
        """eval/<m>/miou, eval/<m>/pixel_acc and iou/<m>/<class> per evaluated model m, and the
        prediction grid; flushed, and closed after the last iteration's evaluation."""
        if self.run is None:
            return
        step = metrics["iteration"]
        writer = self.open(step)
        for model in sorted({k.split("/")[0] for k in metrics if k.endswith("/miou")}):
            writer.add_scalar(f"eval/{model}/miou", metrics[f"{model}/miou"], step)
            writer.add_scalar(f"eval/{model}/pixel_acc", metrics[f"{model}/pixel_acc"], step)
            for name, iou in metrics[f"{model}/iou"].items():
                if iou is not None:
                    writer.add_scalar(f"iou/{model}/{name}", iou, step)
        if self.config.images:
            writer.add_image("predictions", pil_to_tensor(evaluation_grid(run, models, self.config.images)), step)
        writer.flush()
        if step >= run.recipe.optim.iters:
            self.close()
