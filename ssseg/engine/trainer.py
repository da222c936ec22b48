"""The training loop. Its call order, hooks included, is written once, in :meth:`Trainer.step`."""

from __future__ import annotations

import json
import time
from typing import Any, Iterator

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ssseg.augment import blend, mix, mix_from
from ssseg.engine.checkpoint import Checkpointer
from ssseg.engine.distributed import any_ranks
from ssseg.engine.evaluate import evaluate
from ssseg.engine.precision import autocast, compiled
from ssseg.engine.run import Run
from ssseg.engine.sampling import EpochSampler, SeededSamples
from ssseg.engine.forward import LABELED, WEAK, ForwardBatch
from ssseg.engine.types import (AugmentationPlan, Features, LabeledBatch, LossTerm, Pseudo, StepContext,
                                StudentOutputs, UnlabeledBatch, ViewInput)
from ssseg.errors import UserError
from ssseg.files import append_line
from ssseg.models import eval_mode


def cross_entropy(logits: Tensor, target: Tensor, ignore_index: int = 255) -> Tensor:
    """Mean cross-entropy over non-ignored pixels (0 when every pixel is ignored)."""
    loss = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum")
    return loss / (target != ignore_index).sum().clamp_min(1)


def weighted_view_loss(logits: Tensor, pseudo: Pseudo, weight: Tensor, normalize: str = "valid") -> Tensor:
    """The unsupervised loss of one view: Σ weight·valid·CE(logits, labels) / Σ valid, or with
    ``normalize="pixels"`` Σ weight·CE / (B·H·W) over every pixel, padding included."""
    ce = F.cross_entropy(logits, pseudo.labels, reduction="none")
    if normalize == "pixels":
        return (ce * weight).sum() / ce.numel()
    valid = pseudo.valid.to(ce.dtype)
    return (ce * weight * valid).sum() / valid.sum().clamp_min(1)


def product_of(answers: list[Tensor | None], like: Tensor) -> Tensor:
    """The product of ``weight_loss`` answers (``[B]`` or ``[B,H,W]``), broadcast like ``like``."""
    weight = torch.ones_like(like, dtype=torch.float32)
    for w in answers:
        if w is not None:
            weight = weight * (w.view(-1, 1, 1) if w.dim() == 1 else w)
    return weight


def view_image(plan: AugmentationPlan | None, weak: Tensor, second: Tensor | None = None) -> Tensor:
    """The input image of one view: the plan's photometric ops, blend and CutMix on ``weak``; the
    CutMix boxes paste from this image batch, or from ``second`` (the second weak view) after the
    plan's ``donor_photometric`` when its ``cutmix_donor`` is ``"second"``."""
    if plan is None:
        return weak
    image = weak
    if plan.photometric is not None:
        strong = plan.photometric(image)
        image = strong if plan.blend is None else blend(image, strong, plan.blend)
    if plan.cutmix_box is None:
        return image
    if plan.cutmix_donor == "view":
        return mix(plan.cutmix_box, plan.cutmix_partner, image)[0]
    donor = second if plan.donor_photometric is None else plan.donor_photometric(second)
    return mix_from(plan.cutmix_box, [donor[plan.cutmix_partner.to(donor.device)]], [image])[0]


def view_pseudo(plan: AugmentationPlan | None, own: Pseudo, donor: Pseudo) -> Pseudo:
    """The pseudo-labels of one view: ``own``, with each CutMix box filled from the partner's
    entry of ``donor`` (labels, confidences, validity and logits move together)."""
    if plan is None or plan.cutmix_box is None:
        return own
    partner = plan.cutmix_partner
    fields = ("labels", "conf", "valid") + (("logits",) if own.logits is not None else ())
    mixed = mix_from(plan.cutmix_box, [getattr(donor, f)[partner.to(own.labels.device)] for f in fields],
                     [getattr(own, f) for f in fields])
    return Pseudo(**dict(zip(fields, mixed)))


@attrs.frozen
class PreparedStep:
    """What a step decided before the student forward: its context, the batches, the weak view's
    pseudo-labels (eval-mode teacher; None for the source ``none``), the hardness, every view's
    :class:`ViewInput` by name, the student forward's :class:`ForwardBatch`, and the eval-mode
    pseudo-labels of the second weak view when it was loaded (``unlabeled.second``)."""

    ctx: StepContext
    labeled: LabeledBatch
    unlabeled: UnlabeledBatch | None
    pseudo: Pseudo | None = None
    hardness: Tensor | None = None
    views: dict[str, ViewInput] = attrs.field(factory=dict)
    batch: ForwardBatch | None = None
    second_pseudo: Pseudo | None = None

    def donor(self, plan: AugmentationPlan | None) -> Pseudo | None:
        """The eval-mode pseudo-labels ``plan``'s CutMix boxes paste from (its ``cutmix_donor``)."""
        return self.second_pseudo if plan is not None and plan.cutmix_donor == "second" else self.pseudo


class Trainer:
    """Runs a built :class:`Run`: data loading, steps, evaluation, checkpoints and logs."""

    def __init__(self, run: Run, progress=None, checkpointer: Checkpointer | None = None):
        self.run = run
        self.hook = run.pm.hook
        self.progress = progress
        self.checkpointer = checkpointer
        r = run.recipe
        self.model = self.wrap(run.student)
        self.modules = {name: self.wrap(module) for name, module in run.modules.items()}
        self.model = compiled(self.model, r.run.compile)
        self.state = run.state
        self.unsupervised = run.data.unlabeled is not None and r.data.batch_unlabeled > 0
        n_epoch_items = len(run.data.unlabeled) if self.unsupervised else len(run.data.labeled or ())
        batch = r.data.batch_unlabeled if self.unsupervised else r.data.batch_labeled
        self.iters_per_epoch = n_epoch_items // (batch * run.world_size)
        if self.iters_per_epoch == 0 and run.data.labeled is not None:  # None: built to evaluate
            raise UserError(f"data: {n_epoch_items} {'unlabeled' if self.unsupervised else 'labeled'} "
                            f"images are fewer than one batch of {batch} per process")
        self.eval_every = r.eval.every if r.eval.every_epochs is None \
            else r.eval.every_epochs * max(self.iters_per_epoch, 1)
        self.stop_signal: int | None = None  # set by a signal handler; honoured between steps
        self.stop_agreed = False  # a stop signal on any rank, agreed before the optimiser step

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` as a training forward calls it: wrapped for DDP with several processes."""
        run = self.run
        if run.world_size == 1:
            return module
        device_ids = [run.device.index] if run.device.type == "cuda" else None
        # smp encoders built with encoder_depth < 5 keep their unused deeper stages
        return DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=True)

    # -- the step ----------------------------------------------------------------------------

    def step(self, labeled: dict[str, Tensor], unlabeled: UnlabeledBatch | None) -> dict[str, float]:
        """One training iteration. The order of this method IS the hook call order. The
        iteration advances at its end, for a skipped step too (and nowhere else)."""
        prepared = self.prepare(labeled, unlabeled)  # before_iteration .. schedule_augmentation
        ctx = prepared.ctx
        with self.autocast():  # the forwards at run.precision; losses come out in fp32
            outputs = self.forward(prepared)
            prepared = self.relabel(prepared, outputs)
            total, terms, lambda_u = self.losses(prepared, outputs)  # supervised_loss .. unsup_weight
        if not self.optimize(ctx, total, terms):  # after_backward
            self.state.iteration += 1
            return {"skipped": 1.0}
        self.hook.after_optimizer_step(ctx=ctx)
        logs = {"loss": float(total.detach()), "lr": self.run.optimizer.param_groups[0]["lr"],
                **{k: float(v.detach()) for k, v in terms.items()}, **ctx.logs}
        if prepared.views:
            logs["lambda_u"] = float(lambda_u)
        self.hook.after_iteration(ctx=ctx, logs=logs)
        self.state.iteration += 1
        return logs

    # -- the core's parts of the step -------------------------------------------------------

    def prepare(self, labeled: dict[str, Tensor], unlabeled: UnlabeledBatch | None,
                ctx: StepContext | None = None) -> PreparedStep:
        """The step up to the student forward, in this order: ``before_iteration``, the teacher's
        pseudo-labels, ``after_pseudo_label``, ``estimate_hardness``, ``plan_views``, and
        ``schedule_augmentation`` per image view, whose plans build the views' inputs. ``ctx``:
        the step's context (default: :meth:`context`, the current iteration's)."""
        ctx, hook = ctx or self.context(), self.hook
        hook.before_iteration(ctx=ctx)
        labeled = LabeledBatch(image=labeled["image"], mask=labeled["mask"])
        if unlabeled is None:
            return PreparedStep(ctx, labeled, None, batch=ForwardBatch(((LABELED, labeled.image),)))
        source, second = self.run.pseudo_label_source, unlabeled.second
        pseudo = hardness = second_pseudo = None
        with self.autocast():
            if source != "none":
                pseudo = self.pseudo_label(unlabeled)
                second_pseudo = None if second is None else self.pseudo_label(second)
                hook.after_pseudo_label(ctx=ctx, unlabeled=unlabeled, pseudo=pseudo)
                hardness = hook.estimate_hardness(ctx=ctx, unlabeled=unlabeled, pseudo=pseudo)
            views, prepared = {}, PreparedStep(ctx, labeled, unlabeled, pseudo, second_pseudo=second_pseudo)
            for view in hook.plan_views(ctx=ctx, hardness=hardness) or []:
                if source == "none" and view.coef:
                    raise UserError(f"view {view.name!r} has coefficient {view.coef}, but the pseudo-label "
                                    "source is 'none' (no pseudo-labels): give it coefficient 0")
                plan = image = None
                if view.kind == "image":
                    plan = hook.schedule_augmentation(ctx=ctx, view=view, unlabeled=unlabeled,
                                                      pseudo=pseudo, hardness=hardness)
                    image = view_image(plan, unlabeled.image, None if second is None else second.image)
                own = None if pseudo is None else view_pseudo(plan, pseudo, prepared.donor(plan))
                views[view.name] = ViewInput(view=view, image=image, plan=plan, pseudo=own)
        features = tuple((n, v.view.dropout) for n, v in views.items() if v.view.kind == "feature")
        parts = ((LABELED, labeled.image),)
        if features or source == "student_train" or self.run.features.student_on_weak:
            parts += ((WEAK, unlabeled.image),)
        parts += tuple((n, v.image) for n, v in views.items() if v.image is not None)
        return attrs.evolve(prepared, hardness=hardness, views=views, batch=ForwardBatch(parts, features))

    def autocast(self):
        """Mixed precision for the forwards (``run.precision``); a no-op context for fp32."""
        return autocast(self.run.device, self.run.recipe.run.precision)

    def context(self, iteration: int | None = None) -> StepContext:
        """The :class:`StepContext` of the current iteration (or of ``iteration``)."""
        run, state = self.run, self.state
        iteration = state.iteration if iteration is None else iteration
        return StepContext(
            iteration=iteration, max_iters=run.recipe.optim.iters,
            epoch=iteration // self.iters_per_epoch, iters_per_epoch=self.iters_per_epoch,
            device=run.device, rank=run.rank, world_size=run.world_size,
            generator=state.generator, shared_generator=state.shared_generator,
            student=run.student, teacher=run.teacher if run.teacher is not None else run.student,
            num_classes=run.data.num_classes, ignore_index=run.data.ignore_index, modules=self.modules)

    @torch.no_grad()
    def pseudo_label(self, unlabeled: UnlabeledBatch) -> Pseudo:
        """The teacher (or the student, for online strategies) in eval mode on the weak view,
        with the teacher features plugins asked for."""
        teacher = self.run.teacher if self.run.teacher is not None else self.run.student
        wanted = self.run.features.teacher
        with eval_mode(teacher):
            out = teacher(unlabeled.image, features=wanted) if wanted else teacher(unlabeled.image)
        if not wanted:
            return Pseudo.from_logits(out, unlabeled.valid)
        return Pseudo.from_logits(out["logits"], unlabeled.valid,
                                  Features(encoder=tuple(out["encoder"]) if "encoder" in out else None,
                                           decoder=out.get("decoder")))

    def forward(self, prepared: PreparedStep) -> StudentOutputs:
        """One student forward (train mode) over the prepared :class:`ForwardBatch`: labeled
        images, the weak batch when a feature view, the ``student_train`` source or a plugin
        needs it, and every image view; feature views reuse the weak batch's encoder pass."""
        batch, wanted = prepared.batch, self.run.features.student
        out = self.model(batch.images(), perturb=batch.perturbation(), aux_rows=batch.rows(LABELED),
                         features=wanted)
        if isinstance(out, Tensor):
            out = {"logits": out}
        rows = batch.split(out["logits"])
        parts = [LABELED, *([WEAK] if WEAK in rows else []), *prepared.views]
        features = {}
        if wanted:
            encoder = [batch.split(stage) for stage in out.get("encoder", ())]
            decoder = batch.split(out["decoder"]) if "decoder" in out else {}
            features = {p: Features(encoder=tuple(s[p] for s in encoder) if encoder else None,
                                    decoder=decoder.get(p)) for p in parts}
        outputs = StudentOutputs(labeled=rows[LABELED], views={n: rows[n] for n in prepared.views},
                                 weak=rows.get(WEAK), aux=out.get("aux"), features=features)
        return outputs

    def relabel(self, prepared: PreparedStep, outputs: StudentOutputs) -> PreparedStep:
        """With the ``student_train`` source: each view's pseudo-labels from the student's detached
        train-mode logits of the weak batch, CutMix partners' from the eval-mode teacher."""
        if self.run.pseudo_label_source != "student_train" or prepared.unlabeled is None:
            return prepared
        own = Pseudo.from_logits(outputs.weak, prepared.unlabeled.valid)
        views = {n: attrs.evolve(v, pseudo=view_pseudo(v.plan, own, prepared.donor(v.plan)))
                 for n, v in prepared.views.items()}
        return attrs.evolve(prepared, pseudo=own, views=views)

    def supervised_loss(self, ctx: StepContext, logits: Tensor, target: Tensor) -> Tensor:
        """The ``supervised_loss`` hook's answer, or cross-entropy ignoring the ignore index."""
        loss = self.hook.supervised_loss(ctx=ctx, logits=logits, target=target)
        return cross_entropy(logits, target, self.run.data.ignore_index) if loss is None else loss

    def weight_answers(self, prepared: PreparedStep) -> dict[str, list[Tensor]]:
        """Every plugin's ``weight_loss`` answers, for each view with pseudo-labels."""
        return {name: self.hook.weight_loss(ctx=prepared.ctx, view=v.view, pseudo=v.pseudo,
                                            hardness=prepared.hardness, view_input=v)
                for name, v in prepared.views.items() if v.pseudo is not None}

    def lambda_u(self, ctx: StepContext) -> float:
        """λ_u of this step: the ``unsup_weight`` hook's answer, or the recipe's ``unsup.weight``."""
        answer = self.hook.unsup_weight(ctx=ctx)
        return self.run.recipe.unsup.weight if answer is None else answer

    def losses(self, prepared: PreparedStep, outputs: StudentOutputs
               ) -> tuple[Tensor, dict[str, Tensor], float]:
        """(total, named terms, λ_u): the supervised loss (and the auxiliary head's), every view's
        weighted cross-entropy, the extra terms, and λ_u, in that order of hook calls."""
        ctx, r, labeled = prepared.ctx, self.run.recipe, prepared.labeled
        loss_x = self.supervised_loss(ctx, outputs.labeled, labeled.mask)
        terms: dict[str, Tensor] = {"loss_x": loss_x}
        if outputs.aux is not None:
            terms["loss_x/aux"] = self.supervised_loss(ctx, outputs.aux, labeled.mask)
            loss_x = loss_x + r.model.aux_weight * terms["loss_x/aux"]
        loss_u = loss_x.new_zeros(())
        for name, answers in self.weight_answers(prepared).items():
            view = prepared.views[name]
            if view.view.coef == 0:
                continue
            weight = product_of(answers, view.pseudo.conf)
            terms[f"loss_u/{name}"] = weighted_view_loss(outputs.views[name], view.pseudo, weight,
                                                         r.unsup.normalize)
            loss_u = loss_u + view.view.coef * terms[f"loss_u/{name}"]
        extras = self.merge_named(self.hook.extra_losses(
            ctx=ctx, labeled=labeled, unlabeled=prepared.unlabeled, pseudo=prepared.pseudo,
            hardness=prepared.hardness, views=prepared.views, outputs=outputs), "extra_losses")
        lambda_u = self.lambda_u(ctx)
        for name, term in extras.items():
            if isinstance(term, LossTerm) and term.times_lambda_u:
                loss_u = loss_u + term.value
        total = r.unsup.supervised_weight * loss_x + lambda_u * loss_u
        for term in extras.values():
            if not (isinstance(term, LossTerm) and term.times_lambda_u):
                total = total + (term.value if isinstance(term, LossTerm) else term)
        extras = {k: v.value if isinstance(v, LossTerm) else v for k, v in extras.items()}
        return total, terms | extras, lambda_u

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters the optimiser trains: the student's, then each contributed module's."""
        return [p for m in (self.run.student, *self.run.modules.values()) for p in m.parameters()]

    def optimize(self, ctx: StepContext, total: Tensor, terms: dict[str, Tensor]) -> bool:
        """Backward, ``after_backward``, optional gradient clipping, poly learning rate, optimiser
        step. A non-finite loss on any rank stops the run naming the bad terms, or
        (``run.on_nonfinite: skip``) drops the step; returns whether the optimiser stepped."""
        run, o = self.run, self.run.recipe.optim
        nonfinite, self.stop_agreed = any_ranks(not bool(torch.isfinite(total.detach())),
                                                self.stop_signal is not None, device=run.device)
        if nonfinite:
            bad = [k for k, v in terms.items() if not torch.isfinite(v.detach())] or ["the total"]
            if run.recipe.run.on_nonfinite == "stop":
                raise NonFiniteLoss(f"iteration {run.iteration}: non-finite loss in {', '.join(bad)}; "
                                    "the last checkpoint is kept. Lower optim.lr, set optim.clip_grad, "
                                    "or set run.on_nonfinite: skip")
            self.state.skipped_steps += 1
            return False
        scaler = self.state.scaler  # fp16 only; a no-op otherwise
        run.optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        if scaler.is_enabled():
            scaler.unscale_(run.optimizer)
        self.hook.after_backward(ctx=ctx)
        if o.clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(self.trainable_parameters(), o.clip_grad)
        factor = (1 - run.iteration / o.iters) ** o.power if o.schedule == "poly" else 1.0
        for group in run.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        scaler.step(run.optimizer)  # fp16: skipped when the scaled gradients overflowed
        scaler.update()
        return True

    @staticmethod
    def merge_named(answers: list[dict[str, Any] | None], hook: str) -> dict[str, Any]:
        """Union of named contributions; a name given by two plugins is an error."""
        merged: dict[str, Any] = {}
        for answer in answers:
            for name, value in (answer or {}).items():
                if name in merged:
                    raise UserError(f"two plugins answer {hook} with the same name {name!r}")
                merged[name] = value
        return merged

    # -- data ----------------------------------------------------------------------------------

    def batches(self) -> Iterator[tuple[dict[str, Tensor], UnlabeledBatch | None]]:
        """(labeled, unlabeled) batches from the current iteration on, epoch after epoch."""
        run, r = self.run, self.run.recipe
        while True:
            epoch, start = divmod(run.iteration, self.iters_per_epoch)
            labeled = self.loader(run.data.labeled, r.data.batch_labeled, epoch, start, salt=1)
            if not self.unsupervised:
                for batch in labeled:
                    yield self.to_device(batch), None
                continue
            unlabeled = self.loader(run.data.unlabeled, r.data.batch_unlabeled, epoch, start, salt=2,
                                    second_view=run.features.second_view)
            for lb, ub in zip(labeled, unlabeled):
                yield self.to_device(lb), unlabeled_batch(self.to_device(ub))

    def loader(self, dataset, batch: int, epoch: int, start: int, salt: int,
               second_view: bool = False) -> DataLoader:
        """A loader over one epoch's share of ``dataset``, resuming at batch ``start``; with
        ``second_view`` each sample also holds a second weak view of its image (``"second"``)."""
        run, r = self.run, self.run.recipe
        sampler = EpochSampler(len(dataset), self.iters_per_epoch * batch, r.seed * 10 + salt, epoch,
                               start * batch, run.rank, run.world_size)
        # an explicit generator keeps the loader's worker seeding off the global RNG stream
        return DataLoader(SeededSamples(dataset, second_view), batch_size=batch, sampler=sampler,
                          drop_last=True, num_workers=r.data.workers, pin_memory=run.device.type == "cuda",
                          generator=torch.Generator().manual_seed(r.seed * 7919 + epoch))

    def to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Move a collated batch (and the batches nested in it) to the run's device."""
        return {k: v.to(self.run.device, non_blocking=True) if isinstance(v, Tensor)
                else self.to_device(v) if isinstance(v, dict) else v for k, v in batch.items()}

    # -- evaluation, checkpoints, logs -----------------------------------------------------

    def evaluate(self) -> dict[str, Any]:
        """Evaluate the student and every module from ``eval_models`` on the val set; the record
        carries each model's best mIoU so far (:meth:`TrainingState.record_eval`)."""
        run, r = self.run, self.run.recipe
        models = evaluated_models(run)
        metrics: dict[str, Any] = {"iteration": run.iteration, "event": "eval",
                                   "wall_s": round(self.state.wall_s, 3)}
        for name, model in models.items():
            with self.autocast():
                result = evaluate(model, run.data.val, r.eval, crop=r.data.crop,
                                  num_classes=run.data.num_classes, ignore_index=run.data.ignore_index,
                                  device=run.device, class_names=run.data.class_names, desc=f"eval {name}")
            metrics |= {f"{name}/{k}": v for k, v in result.items()}
        self.hook.after_eval(run=run, metrics=metrics, models=models)
        return metrics

    def write_metrics(self, record: dict[str, Any]) -> None:
        """Append one JSON line to ``metrics.jsonl`` (rank 0 only)."""
        if self.run.out_dir is not None and self.run.is_main:
            append_line(self.run.out_dir / "metrics.jsonl", json.dumps(record, allow_nan=True))

    def evaluate_and_record(self) -> bool:
        """Evaluate, record it in the training state and ``metrics.jsonl``; returns whether the
        headline model reached a new best."""
        metrics = self.evaluate()
        new_best = self.state.record_eval(metrics)
        self.write_metrics(metrics)
        return new_best

    def train(self) -> dict[str, Any]:
        """Train from ``run.iteration`` to ``optim.iters``; evaluates every ``eval.every`` iterations
        (or ``eval.every_epochs`` epochs) and at the end; checkpoints every
        ``run.checkpoint_every``, at the end, at a new best, and when a stop signal arrives (then
        raises :class:`Stopped` after saving). Returns the last evaluation record."""
        run, r, state = self.run, self.run.recipe, self.state
        run.student.train()
        started, done_at_start, wall_at_start = time.perf_counter(), state.iteration, state.wall_s
        for labeled, unlabeled in self.batches():
            if state.iteration >= r.optim.iters:
                break
            logs = self.step(labeled, unlabeled)
            state.wall_s = wall_at_start + time.perf_counter() - started
            it, last = state.iteration, state.iteration == r.optim.iters
            if it % r.run.log_every == 0 or last:
                self.write_metrics({"iteration": it, "event": "train", "wall_s": round(state.wall_s, 3), **logs,
                                    **({"skipped_steps": state.skipped_steps} if state.skipped_steps else {})})
                if self.progress is not None and run.is_main:
                    rate = (time.perf_counter() - started) / (it - done_at_start)
                    self.progress(it, r.optim.iters, logs, rate * (r.optim.iters - it))
            new_best = (it % self.eval_every == 0 or last) and self.evaluate_and_record()
            stop = self.stop_agreed
            if self.checkpointer is not None and (it % r.run.checkpoint_every == 0 or last or new_best or stop):
                self.checkpointer.save(self.run, best=new_best)
            if stop:
                raise Stopped(it, self.stop_signal)
        if state.last_eval.get("iteration") != state.iteration:
            self.evaluate_and_record()
        return state.last_eval


def unlabeled_batch(batch: dict[str, Any]) -> UnlabeledBatch:
    """The :class:`UnlabeledBatch` of a collated unlabeled batch, with its second view if loaded."""
    second = batch.get("second")
    return UnlabeledBatch(image=batch["image"], valid=batch["valid"],
                          second=None if second is None else unlabeled_batch(second))


def evaluated_models(run: Run) -> dict[str, torch.nn.Module]:
    """The modules a run evaluates: the student and every module ``eval_models`` names."""
    return {"student": run.student} | Trainer.merge_named(run.pm.hook.eval_models(run=run), "eval_models")


class NonFiniteLoss(UserError):
    """The loss became NaN or infinite (``run.on_nonfinite: stop``)."""


class Stopped(Exception):
    """Training stopped between steps on a signal, after saving a checkpoint."""

    def __init__(self, iteration: int, signum: int | None):
        super().__init__(f"stopped at iteration {iteration}")
        self.iteration, self.signum = iteration, signum
