"""Mean teacher (Tarvainen & Valpola, 2017): the teacher is an exponential moving average of the
student, and it makes the pseudo-labels.

After every optimiser step t (the global 0-based iteration counter), over parameters **and**
buffers:

    d_t = min(1 − 1/(t + 1), α)          α = ``decay``; d_t = 0 during the first ``warmup_epochs``
    θ'_t = d_t · θ'_{t−1} + (1 − d_t) · θ_t

so the teacher θ' starts as an exact copy of the student θ and its averaging window grows to
1/(1 − α) steps. iMAS uses ``warmup_epochs: 1`` (the teacher copies the student through epoch 0,
then d = 0.996 at once, as the released code counts t globally). Integer buffers (BatchNorm's ``num_batches_tracked``) are copied.

Composed with ``fixmatch`` (or ``unimatch``, or iMAS's plugins) and ``confidence_threshold``, the
core takes the pseudo-labels from the eval-mode teacher: the modern mean teacher of U2PL, AugSeg,
iMAS and UniMatch V2. The classic variant's consistency cost is the separate plugin
``mse_consistency``.
"""

from __future__ import annotations

import copy
import attrs
import torch
from torch import nn

from ssseg.api import EvalModel, Plugin, StepContext, ema_decay, ema_update_, hookimpl, in_range


class MeanTeacher(Plugin):
    """An EMA teacher of the student that makes the pseudo-labels and is evaluated too."""

    name = "mean_teacher"
    requires_hookspec = 5

    @attrs.frozen
    class Config:
        """``decay`` α; ``warmup_epochs`` during which the teacher copies the student (d = 0);
        ``ramp_up``: d_t = min(1 − 1/(t + 1), α) (false: d_t = α from the first step, as CutMix-Seg)."""

        decay: float = attrs.field(default=0.996, validator=in_range(0, 1, hi_open=True))
        warmup_epochs: int = attrs.field(default=0, validator=in_range(0))
        ramp_up: bool = True

    def __init__(self, config):
        super().__init__(config)
        self.teacher: nn.Module | None = None
        self._floats: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])  # (θ', θ) pairs
        self._counts: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])  # integer buffers

    @hookimpl
    def build_teacher(self, student: nn.Module) -> nn.Module:
        """θ' ← θ: a frozen copy of the student in eval mode."""
        self.teacher = copy.deepcopy(student).eval().requires_grad_(False)
        pairs = list(zip([*self.teacher.parameters(), *self.teacher.buffers()],
                         [*student.parameters(), *student.buffers()], strict=True))
        for target, wanted in ((self._floats, True), (self._counts, False)):
            for t, s in pairs:
                if t.is_floating_point() == wanted:
                    target[0].append(t)
                    target[1].append(s)
        return self.teacher

    def decay_at(self, ctx: StepContext) -> float:
        """d_t = min(1 − 1/(t + 1), α) with t the global iteration (α with ``ramp_up: false``); 0
        during the warm-up."""
        if ctx.epoch < self.config.warmup_epochs:
            return 0.0
        if not self.config.ramp_up:
            return self.config.decay
        return ema_decay(ctx.iteration, self.config.decay)

    @hookimpl
    @torch.no_grad()
    def after_optimizer_step(self, ctx: StepContext) -> None:
        """θ'_t = d_t·θ'_{t−1} + (1 − d_t)·θ_t over parameters and float buffers; copy the rest."""
        d = self.decay_at(ctx)
        ema_update_(*self._floats, d)  # tensor pairs gathered once in build_teacher (updated in place)
        if self._counts[0]:
            torch._foreach_copy_(*self._counts)
        ctx.log("ema_decay", d)

    @hookimpl
    def eval_models(self) -> dict[str, EvalModel]:
        """Evaluate the teacher beside the student; ``best.pt`` follows the teacher."""
        return {"teacher": EvalModel(self.teacher, headline=True)}
