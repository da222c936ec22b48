"""A test plugin that answers every hook and records the calls (importable via use:)."""

from __future__ import annotations

import attrs

from ssseg.api import Plugin, View, hookimpl

CALLS: list[str] = []


class Recorder(Plugin):
    """Records each hook call in ``CALLS`` and plans one plain view."""

    name = "recorder"

    @attrs.frozen
    class Config:
        tag: str = ""

    def _rec(self, hook: str) -> None:
        CALLS.append(f"{self.config.tag}{hook}")

    @hookimpl
    def pseudo_label_source(self, recipe):
        self._rec("pseudo_label_source")

    @hookimpl
    def validate(self, recipe, pseudo_label_source):
        self._rec("validate")

    @hookimpl
    def build_modules(self, build):
        self._rec("build_modules")

    @hookimpl
    def build_teacher(self, build, student):
        self._rec("build_teacher")

    @hookimpl
    def request_features(self, build):
        self._rec("request_features")

    @hookimpl
    def setup(self, run):
        self._rec("setup")

    @hookimpl
    def before_iteration(self, ctx):
        self._rec("before_iteration")

    @hookimpl
    def after_pseudo_label(self, ctx, unlabeled, pseudo):
        self._rec("after_pseudo_label")

    @hookimpl
    def estimate_hardness(self, ctx, unlabeled, pseudo):
        self._rec("estimate_hardness")

    @hookimpl
    def plan_views(self, ctx, labeled, hardness):
        self._rec("plan_views")
        return [View("plain")]

    @hookimpl
    def refine_views(self, ctx, views, labeled, hardness):
        self._rec("refine_views")

    @hookimpl
    def schedule_augmentation(self, ctx, view, labeled, unlabeled, pseudo, hardness):
        self._rec("schedule_augmentation")

    @hookimpl
    def refine_augmentation(self, ctx, view, plan, labeled, unlabeled, pseudo, hardness):
        self._rec("refine_augmentation")

    @hookimpl
    def forward_heads(self, ctx, outputs):
        self._rec("forward_heads")

    @hookimpl
    def relabel(self, ctx, unlabeled, pseudo, views, outputs):
        self._rec("relabel")

    @hookimpl
    def supervised_loss(self, ctx, logits, target):
        self._rec("supervised_loss")

    @hookimpl
    def weight_loss(self, ctx, view, pseudo, hardness, view_input):
        self._rec("weight_loss")

    @hookimpl
    def extra_losses(self, ctx, labeled, unlabeled, pseudo, hardness, views, outputs):
        self._rec("extra_losses")

    @hookimpl
    def unsup_weight(self, ctx):
        self._rec("unsup_weight")

    @hookimpl
    def after_backward(self, ctx):
        self._rec("after_backward")

    @hookimpl
    def after_optimizer_step(self, ctx):
        self._rec("after_optimizer_step")

    @hookimpl
    def after_iteration(self, ctx, logs):
        self._rec("after_iteration")

    @hookimpl
    def eval_models(self, run):
        self._rec("eval_models")

    @hookimpl
    def after_eval(self, run, metrics):
        self._rec("after_eval")


class Observer(Plugin):
    """Answers only observer hooks, tagged, to check recipe order."""

    name = "observer"

    @attrs.frozen
    class Config:
        tag: str = ""

    @hookimpl
    def before_iteration(self, ctx):
        CALLS.append(f"{self.config.tag}before_iteration")


class Misspelled(Plugin):
    """Implements a hook that does not exist."""

    name = "misspelled"

    @attrs.frozen
    class Config:
        pass

    @hookimpl
    def plan_view(self, ctx, hardness):
        return []


class ExtraArgument(Plugin):
    """Asks for an argument the hook does not pass."""

    name = "extra_argument"

    @attrs.frozen
    class Config:
        pass

    @hookimpl
    def plan_views(self, ctx, hardness, batch):
        return []


class Broken(Plugin):
    """Raises inside a hook."""

    name = "broken"

    @attrs.frozen
    class Config:
        pass

    @hookimpl
    def before_iteration(self, ctx):
        raise RuntimeError("boom")


class Interrupt(Plugin):
    """Raises KeyboardInterrupt once, at the start of iteration ``at`` (a user's Ctrl-C)."""

    name = "interrupt"
    fired: list[int] = []

    @attrs.frozen
    class Config:
        at: int = 1

    @hookimpl
    def before_iteration(self, ctx):
        if ctx.iteration == self.config.at and not Interrupt.fired:
            Interrupt.fired.append(ctx.iteration)
            raise KeyboardInterrupt


class Slow(Plugin):
    """Sleeps at every step so a test can signal or kill a training process mid-run."""

    name = "slow"

    @attrs.frozen
    class Config:
        seconds: float = 0.1

    @hookimpl
    def before_iteration(self, ctx):
        import time

        time.sleep(self.config.seconds)


class NaNAt(Plugin):
    """Adds a NaN loss term at iteration ``at`` (every step with ``every_step``; from ``at`` on
    while the recipe's learning rate exceeds ``above_lr``, when given)."""

    name = "nan_at"

    @attrs.frozen
    class Config:
        at: int = 1
        every_step: bool = False
        above_lr: float | None = None  # from iteration ``at`` on, while the learning rate exceeds it

    def __init__(self, config):
        super().__init__(config)
        self.optimizer = None

    @hookimpl
    def setup(self, run):
        self.optimizer = run.optimizer

    @hookimpl
    def extra_losses(self, ctx, unlabeled, pseudo, outputs):
        c = self.config
        if c.above_lr is not None:
            poisoned = ctx.iteration >= c.at and self.optimizer.param_groups[0]["initial_lr"] > c.above_lr
        else:
            poisoned = c.every_step or ctx.iteration == c.at
        return {"poison": outputs.labeled.sum() * 0 + (float("nan") if poisoned else 0.0)}


class Decisions(Plugin):
    """Draws one control-flow decision per step from the shared generator and appends
    ``rank iteration draw`` lines to ``path`` (one file per rank)."""

    name = "decisions"

    @attrs.frozen
    class Config:
        path: str = "decisions"

    @hookimpl
    def before_iteration(self, ctx):
        import torch

        draw = float(torch.rand((), generator=ctx.shared_generator))
        with open(f"{self.config.path}-{ctx.rank}.txt", "a") as f:
            f.write(f"{ctx.iteration} {draw!r}\n")


class Probe(Plugin):
    """Exercises hook spec v3: a contributed head on requested decoder features, a coefficient-0
    view, a λ_u-scaled extra term, gradients seen after backward; records what it saw."""

    name = "probe"
    SEEN: dict = {}

    @attrs.frozen
    class Config:
        answer: str = "ok"  # "ok", or which wrong answer to give: "weight_shape", "float_term"

    @hookimpl
    def build_modules(self):
        import torch
        return {"probe_head": torch.nn.Conv2d(8, 2, 1)}

    @hookimpl
    def request_features(self):
        from ssseg.api import FeatureRequest
        return FeatureRequest(student=("decoder",), teacher=("encoder",))

    @hookimpl
    def plan_views(self, ctx, hardness):
        return [View("plain", coef=1.0), View("zero", coef=0.0)]

    @hookimpl
    def weight_loss(self, ctx, view, pseudo, view_input):
        import torch
        Probe.SEEN.setdefault("weighted", []).append(view.name)
        if self.config.answer == "weight_shape":
            return torch.ones(pseudo.labels.shape[0], 1, *pseudo.labels.shape[1:])
        return None

    @hookimpl
    def extra_losses(self, ctx, labeled, views, outputs, pseudo):
        from ssseg.api import LossTerm
        Probe.SEEN["features"] = {k: tuple(v.decoder.shape) for k, v in outputs.features.items()}
        Probe.SEEN["teacher_features"] = len(pseudo.features.encoder)
        Probe.SEEN["labeled"] = tuple(labeled.mask.shape)
        Probe.SEEN["view_images"] = {k: v.image is not None for k, v in views.items()}
        if self.config.answer == "float_term":
            return {"probe": 1.0}
        head = ctx.modules["probe_head"](outputs.features["labeled"].decoder)
        return {"probe/head": LossTerm(head.pow(2).mean(), times_lambda_u=True)}

    @hookimpl
    def after_backward(self, ctx):
        Probe.SEEN["head_grad"] = ctx.modules["probe_head"].weight.grad is not None


class OldExtraLosses(Plugin):
    """Written for hook spec 2: reads StepContext.progress."""

    name = "old_extra_losses"
    requires_hookspec = 2

    @attrs.frozen
    class Config:
        pass

    @hookimpl
    def extra_losses(self, ctx, unlabeled, pseudo, outputs):
        return {"old": outputs.labeled.mean() * ctx.progress}


class HalfUsedHead(Plugin):
    """Contributes a module of two layers and trains only one (declared for DDP), and records
    whether each hook it answers ran with gradients enabled."""

    name = "half_used_head"
    GRAD: dict = {}

    @attrs.frozen
    class Config:
        pass

    @hookimpl
    def build_modules(self):
        import torch

        class Head(torch.nn.Module):
            ddp_find_unused_parameters = True  # ``unused`` never takes part in a forward

            def __init__(self):
                super().__init__()
                self.used, self.unused = torch.nn.Conv2d(3, 1, 1), torch.nn.Conv2d(3, 1, 1)

            def forward(self, x):
                return self.used(x)

        return {"half_used": Head()}

    @hookimpl
    def estimate_hardness(self, ctx, unlabeled, pseudo):
        import torch
        HalfUsedHead.GRAD["estimate_hardness"] = torch.is_grad_enabled()

    @hookimpl
    def extra_losses(self, ctx, labeled, hardness):  # takes the hardness it estimates (read, or refused)
        import torch
        HalfUsedHead.GRAD["extra_losses"] = torch.is_grad_enabled()
        return {"half_used": ctx.modules["half_used"](labeled.image).pow(2).mean() * 0}


class Ordered(Plugin):
    """Asks pluggy to call its observer first: refused."""

    name = "ordered"

    @attrs.frozen
    class Config:
        pass

    @hookimpl(tryfirst=True)
    def before_iteration(self, ctx):
        pass


class TwoHeadlines(Plugin):
    """Marks a second model as the headline one besides mean_teacher's teacher."""

    name = "two_headlines"

    @attrs.frozen
    class Config:
        pass

    @hookimpl
    def eval_models(self, run):
        from ssseg.api import EvalModel
        return {"other": EvalModel(run.student, headline=True)}


class RankCounter(Plugin):
    """Keeps a count that grows by this process's rank every step: state that diverges across
    ranks (the contract kit's distributed rule must catch it)."""

    name = "rank_counter"

    @attrs.frozen
    class Config:
        pass

    def __init__(self, config):
        super().__init__(config)
        self.count = 0

    @hookimpl
    def after_iteration(self, ctx):
        self.count += ctx.rank

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"]


class OptionalPlanner(Plugin):
    """Plans its own views only when ``enabled``; otherwise it takes no part in ``plan_views``."""

    name = "optional_planner"

    @attrs.frozen
    class Config:
        enabled: bool = False

    @property
    def decides(self):
        return {"plan_views"} if self.config.enabled else set()

    @hookimpl
    def plan_views(self, ctx, hardness):
        return [View("mine", coef=1.0)]
