"""The step runner: executes the step phases the step table declares (prepare, forward, relabel,
losses, optimize, end), in its order, on a run and its training state. It can stop after any
phase (``until=``) and returns what the phases produced; tests and the contract kit run part of a
step through it, never a copy."""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import attrs
import torch
from torch import Tensor, nn

from ssseg import step_table
from ssseg.engine.distributed import any_ranks
from ssseg.engine.forward import LABELED, WEAK, ForwardBatch
from ssseg.engine.precision import autocast
from ssseg.engine.run import Run
from ssseg.engine.types import (Features, LabeledBatch, LossTerm, Pseudo, StepContext, StudentOutputs,
                                UnlabeledBatch, View, ViewInput)
from ssseg.engine.views import Donors, view_image, view_pseudo
from ssseg.errors import Diverged, UserError
from ssseg.losses import cross_entropy, weighted_view_loss
from ssseg.models import eval_mode
from ssseg.plugin_manager import PluginSet


@attrs.frozen
class StepResult:
    """What the phases of one step produced, each phase adding its part.

    prepare: ``ctx``, the batches, the weak view's pseudo-labels (eval-mode teacher; None for the
    source ``none``), ``hardness``, every view's :class:`ViewInput` by name, the student
    forward's :class:`ForwardBatch`, the pseudo-labels of the second weak view when loaded, and the
    ``donors`` the views' CutMixes pasted from (the labeled batch's ground truth made once a step).
    forward: ``outputs`` (with the heads' outputs). relabel: ``pseudo`` and the views' pseudo-labels from the train-mode
    forward (``student_train`` source). losses: ``total``, ``terms`` by name, ``lambda_u``.
    optimize: ``stepped`` (False: dropped as non-finite) and ``stop`` (a stop signal on any rank).
    end: ``logs``."""

    ctx: StepContext
    labeled: LabeledBatch
    unlabeled: UnlabeledBatch | None
    pseudo: Pseudo | None = None
    hardness: Tensor | None = None
    views: dict[str, ViewInput] = attrs.field(factory=dict)
    batch: ForwardBatch | None = None
    second_pseudo: Pseudo | None = None
    donors: Donors | None = None
    outputs: StudentOutputs | None = None
    total: Tensor | None = None
    terms: dict[str, Tensor] = attrs.field(factory=dict)
    lambda_u: float | None = None
    stepped: bool | None = None
    stop: bool = False
    logs: dict[str, float] = attrs.field(factory=dict)



class NonFiniteLoss(Diverged):
    """The loss became NaN or infinite (``run.on_nonfinite: stop``)."""


class StepRunner:
    """Runs the step phases of :data:`ssseg.step_table.STEP_PHASES` on ``run`` with ``plugins``.
    ``model`` and ``modules``: the student and the contributed modules as a training forward
    calls them (wrapped for DDP with several processes)."""

    def __init__(self, run: Run, plugins: PluginSet, model: nn.Module, modules: dict[str, nn.Module],
                 iters_per_epoch: int):
        self.run, self.plugins, self.model, self.modules = run, plugins, model, modules
        self.iters_per_epoch = iters_per_epoch

    def step(self, labeled: dict[str, Tensor], unlabeled: UnlabeledBatch | None, until: str | None = None,
             ctx: StepContext | None = None, stop_requested: bool = False) -> StepResult:
        """Run the step's phases in the table's order on one (labeled, unlabeled) batch, stopping
        after phase ``until`` (default: all of them; the iteration advances only after ``end``).
        ``ctx``: the step's context (default: the current iteration's). ``stop_requested``: this
        process received a stop signal (agreed across ranks in the optimize phase)."""
        if until is not None and until not in step_table.STEP_PHASES:
            raise ValueError(f"until={until!r} is no step phase; phases: {', '.join(step_table.STEP_PHASES)}")
        result = StepResult(ctx=ctx or self.context(), stop=stop_requested,
                            labeled=LabeledBatch(image=labeled["image"], mask=labeled["mask"]),
                            unlabeled=unlabeled)
        for name in step_table.STEP_PHASES:
            with self.autocast() if step_table.phase(name).autocast else contextlib.nullcontext():
                result = getattr(self, name)(result)
            if name == until:
                break
        return result

    def autocast(self):
        """Mixed precision for the forwards (``run.precision``); a no-op context for fp32."""
        return autocast(self.run.device, self.run.recipe.run.precision)

    def context(self, iteration: int | None = None) -> StepContext:
        """The :class:`StepContext` of the current iteration (or of ``iteration``)."""
        run, state = self.run, self.run.state
        iteration = state.iteration if iteration is None else iteration
        ctx = StepContext(
            iteration=iteration, max_iters=run.recipe.optim.iters,
            epoch=iteration // self.iters_per_epoch, iters_per_epoch=self.iters_per_epoch,
            device=run.device, rank=run.rank, world_size=run.world_size,
            generator=state.generator, shared_generator=state.shared_generator,
            student=run.student, teacher=run.teacher,
            num_classes=run.data.num_classes, ignore_index=run.data.ignore_index, modules=self.modules)
        ctx.supervised_loss = functools.partial(self.supervised_loss, ctx)
        return ctx

    # -- the phases, named as in the step table ------------------------------------------------

    def prepare(self, result: StepResult) -> StepResult:
        """``before_iteration``, the teacher's pseudo-labels, ``after_pseudo_label``,
        ``estimate_hardness``, ``plan_views`` and ``refine_views``, and per image view
        ``schedule_augmentation`` and ``refine_augmentation``, whose plan builds the view's input
        and targets."""
        ctx, call, unlabeled = result.ctx, self.plugins.call, result.unlabeled
        call("before_iteration", ctx=ctx)
        labeled = result.labeled
        if unlabeled is None:
            return attrs.evolve(result, batch=ForwardBatch(((LABELED, labeled.image),)))
        source = self.run.pseudo_label_source
        pseudo = hardness = second_pseudo = None
        if source != "none":
            pseudo = self.pseudo_label(unlabeled)
            second_pseudo = None if unlabeled.second is None else self.pseudo_label(unlabeled.second)
            call("after_pseudo_label", ctx=ctx, unlabeled=unlabeled, pseudo=pseudo)
            hardness = call("estimate_hardness", ctx=ctx, unlabeled=unlabeled, pseudo=pseudo)
        result = attrs.evolve(result, pseudo=pseudo, second_pseudo=second_pseudo, hardness=hardness)
        planned = call("plan_views", default=[], ctx=ctx, labeled=labeled, hardness=hardness)
        planned = call("refine_views", default=planned, ctx=ctx, views=planned, labeled=labeled, hardness=hardness)
        donors = Donors(second_image=None if unlabeled.second is None else unlabeled.second.image,
                        second_pseudo=second_pseudo, labeled_image=labeled.image,
                        ground_truth=functools.partial(self.ground_truth, labeled))
        result = attrs.evolve(result, donors=donors)
        views = {view.name: self.view_input(ctx, view, result, donors) for view in planned}
        features = tuple((n, v.view.dropout) for n, v in views.items() if v.view.kind == "feature")
        parts = ((LABELED, labeled.image),)
        if features or source == "student_train" or self.run.features.student_on_weak:
            parts += ((WEAK, unlabeled.image),)
        parts += tuple((n, v.image) for n, v in views.items() if v.image is not None)
        return attrs.evolve(result, views=views, batch=ForwardBatch(parts, features))

    def view_input(self, ctx: StepContext, view: View, result: StepResult, donors: Donors) -> ViewInput:
        """One view's input: for an image view the plan (``schedule_augmentation``, then
        ``refine_augmentation``) applied to its source batch and targets."""
        call, labeled, unlabeled = self.plugins.call, result.labeled, result.unlabeled
        if view.source == "labeled":
            if view.kind != "image":
                raise UserError(f"view {view.name!r}: a labeled view must be an image view (kind 'image')")
            base_image, base_targets = labeled.image, donors.ground_truth()
        else:
            if view.coef and result.pseudo is None:
                raise UserError(f"view {view.name!r} has coefficient {view.coef}, but the pseudo-label "
                                "source is 'none' (no pseudo-labels): give it coefficient 0, or make it a "
                                "labeled view (View(source='labeled'))")
            base_image, base_targets = unlabeled.image, result.pseudo
        plan = image = None
        if view.kind == "image":
            kwargs = dict(ctx=ctx, view=view, labeled=labeled, unlabeled=unlabeled, pseudo=result.pseudo,
                          hardness=result.hardness)
            plan = call("schedule_augmentation", **kwargs)
            plan = call("refine_augmentation", default=plan, plan=plan, **kwargs)
            image = view_image(plan, base_image, donors)
        targets = None if base_targets is None else view_pseudo(plan, base_targets, donors)
        return ViewInput(view=view, image=image, plan=plan, pseudo=targets)

    def ground_truth(self, labeled: LabeledBatch) -> Pseudo:
        """The labeled batch's ground truth as targets (for labeled views and labeled CutMix donors)."""
        return Pseudo.from_ground_truth(labeled.mask, self.run.data.num_classes, self.run.data.ignore_index)

    @torch.no_grad()
    def pseudo_label(self, unlabeled: UnlabeledBatch) -> Pseudo:
        """The teacher (the student itself for online strategies) in eval mode on the weak view,
        with the teacher features plugins asked for."""
        teacher, wanted = self.run.teacher, self.run.features.teacher
        with eval_mode(teacher):
            out = teacher(unlabeled.image, features=wanted) if wanted else teacher(unlabeled.image)
        if not wanted:
            return Pseudo.from_logits(out, unlabeled.valid)
        return Pseudo.from_logits(out["logits"], unlabeled.valid,
                                  Features(encoder=tuple(out["encoder"]) if "encoder" in out else None,
                                           decoder=out.get("decoder")))

    def forward(self, result: StepResult) -> StepResult:
        """One student forward (train mode) over the prepared :class:`ForwardBatch`, then
        ``forward_heads`` on its outputs."""
        batch, wanted = result.batch, self.run.features.student
        out = self.model(batch.images(), perturb=batch.perturbation(), aux_rows=batch.rows(LABELED),
                         features=wanted)
        if isinstance(out, Tensor):
            out = {"logits": out}
        rows = batch.split(out["logits"])
        parts = [LABELED, *([WEAK] if WEAK in rows else []), *result.views]
        features = {}
        if wanted:
            encoder = [batch.split(stage) for stage in out.get("encoder", ())]
            decoder = batch.split(out["decoder"]) if "decoder" in out else {}
            features = {p: Features(encoder=tuple(s[p] for s in encoder) if encoder else None,
                                    decoder=decoder.get(p)) for p in parts}
        outputs = StudentOutputs(labeled=rows[LABELED], views={n: rows[n] for n in result.views},
                                 weak=rows.get(WEAK), aux=out.get("aux"), features=features)
        heads = self.plugins.call("forward_heads", ctx=result.ctx, outputs=outputs)
        return attrs.evolve(result, outputs=attrs.evolve(outputs, heads=heads))

    def relabel(self, result: StepResult) -> StepResult:
        """With the ``student_train`` source, each unlabeled view's pseudo-labels from the
        student's detached train-mode logits of the weak batch (CutMix partners' from the eval-mode
        teacher); then the ``relabel`` decision may replace any unlabeled view's pseudo-labels."""
        if result.unlabeled is None or result.pseudo is None:
            return result
        views = result.views
        if self.run.pseudo_label_source == "student_train":
            own = Pseudo.from_logits(result.outputs.weak, result.unlabeled.valid)
            views = {n: attrs.evolve(v, pseudo=view_pseudo(v.plan, own, result.donors, partners=result.pseudo))
                     if v.view.source == "unlabeled" else v for n, v in views.items()}
            result = attrs.evolve(result, pseudo=own, views=views)
        changed = self.plugins.call("relabel", default={}, ctx=result.ctx, unlabeled=result.unlabeled,
                                    pseudo=result.pseudo, views=views, outputs=result.outputs)
        if not changed:
            return result
        return attrs.evolve(result, views={n: attrs.evolve(v, pseudo=changed[n]) if n in changed else v
                                           for n, v in views.items()})

    def losses(self, result: StepResult) -> StepResult:
        """The supervised loss (and the auxiliary head's), every view's weighted cross-entropy, the
        extra terms and λ_u, in that order of hook calls, combined into the total."""
        ctx, r, labeled, outputs, call = result.ctx, self.run.recipe, result.labeled, result.outputs, self.plugins.call
        loss_x = self.supervised_loss(ctx, outputs.labeled, labeled.mask)
        terms: dict[str, Tensor] = {"loss_x": loss_x}
        if outputs.aux is not None:
            terms["loss_x/aux"] = self.supervised_loss(ctx, outputs.aux, labeled.mask)
            loss_x = loss_x + r.model.aux_weight * terms["loss_x/aux"]
        loss_u = loss_x.new_zeros(())
        views = dict(result.views)
        for name, view in result.views.items():
            if view.pseudo is None:
                continue
            weight = None
            if view.view.source == "unlabeled":
                weight = call("weight_loss", ctx=ctx, view=view.view, pseudo=view.pseudo,
                              hardness=result.hardness, view_input=view)
                views[name] = view = attrs.evolve(view, weight=weight)
            if view.view.coef == 0:
                continue
            terms[f"loss_u/{name}"] = weighted_view_loss(outputs.views[name], view.pseudo, weight,
                                                         r.unsup.normalize)
            loss_u = loss_u + view.view.coef * terms[f"loss_u/{name}"]
        extras = call("extra_losses", ctx=ctx, labeled=labeled, unlabeled=result.unlabeled,
                      pseudo=result.pseudo, hardness=result.hardness, views=views, outputs=outputs)
        lambda_u = call("unsup_weight", default=r.unsup.weight, ctx=ctx)
        for term in extras.values():
            if isinstance(term, LossTerm) and term.times_lambda_u:
                loss_u = loss_u + term.value
        total = r.unsup.supervised_weight * loss_x + lambda_u * loss_u
        for term in extras.values():
            if not (isinstance(term, LossTerm) and term.times_lambda_u):
                total = total + (term.value if isinstance(term, LossTerm) else term)
        extras = {k: v.value if isinstance(v, LossTerm) else v for k, v in extras.items()}
        return attrs.evolve(result, views=views, total=total, terms=terms | extras, lambda_u=lambda_u)

    def supervised_loss(self, ctx: StepContext, logits: Tensor, target: Tensor) -> Tensor:
        """The ``supervised_loss`` decision, or cross-entropy ignoring the ignore index."""
        loss = self.plugins.call("supervised_loss", ctx=ctx, logits=logits, target=target)
        return cross_entropy(logits, target, self.run.data.ignore_index) if loss is None else loss

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters the optimiser trains: the student's, then each contributed module's."""
        return [p for m in (self.run.student, *self.run.modules.values()) for p in m.parameters()]

    def optimize(self, result: StepResult) -> StepResult:
        """Backward, ``after_backward``, optional gradient clipping, poly learning rate, optimiser
        step, ``after_optimizer_step``. A non-finite loss on any rank stops the run naming the bad
        terms, or (``run.on_nonfinite: skip``) drops the step; a stop signal on any rank is agreed
        in the same collective."""
        run, o, ctx, total = self.run, self.run.recipe.optim, result.ctx, result.total
        nonfinite, stop = any_ranks(not bool(torch.isfinite(total.detach())), result.stop, device=run.device)
        if nonfinite:
            bad = [k for k, v in result.terms.items() if not torch.isfinite(v.detach())] or ["the total"]
            if run.recipe.run.on_nonfinite == "stop":
                raise NonFiniteLoss(f"iteration {run.iteration}: non-finite loss in {', '.join(bad)}",
                                    run.iteration)
            run.state.skip()
            return attrs.evolve(result, stepped=False, stop=stop)
        scaler = run.state.scaler  # fp16 only; a no-op otherwise
        run.optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        if scaler.is_enabled():
            scaler.unscale_(run.optimizer)
        self.plugins.call("after_backward", ctx=ctx)
        if o.clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(self.trainable_parameters(), o.clip_grad)
        factor = (1 - run.iteration / o.iters) ** o.power if o.schedule == "poly" else 1.0
        for group in run.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        scaler.step(run.optimizer)  # fp16: skipped when the scaled gradients overflowed
        scaler.update()
        self.plugins.call("after_optimizer_step", ctx=ctx)
        return attrs.evolve(result, stepped=True, stop=stop)

    def end(self, result: StepResult) -> StepResult:
        """The step's scalar logs and ``after_iteration`` (not for a dropped step); then the
        iteration advances."""
        if not result.stepped:
            self.run.state.advance()
            return attrs.evolve(result, logs={"skipped": 1.0})
        ctx = result.ctx
        logs: dict[str, Any] = {"loss": float(result.total.detach()),
                                "lr": self.run.optimizer.param_groups[0]["lr"],
                                **{k: float(v.detach()) for k, v in result.terms.items()}, **ctx.logs}
        if result.views:
            logs["lambda_u"] = float(result.lambda_u)
        self.plugins.call("after_iteration", ctx=ctx, logs=logs)
        self.run.state.advance()
        return attrs.evolve(result, logs=logs)
