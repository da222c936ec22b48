"""Framework overhead: ``ssseg train`` against a plain PyTorch loop of the same algorithm.

    python benchmarks/overhead.py --method mt_fixmatch --steps 300
    python benchmarks/overhead.py --method imas --steps 300

The plain loop below is what a researcher would write by hand: an smp network with inline
normalisation, an EMA teacher, the loss and the optimiser in one function, no hooks, no context
objects, no plans. It calls the method's own tensor functions (the photometric ops, CutMix boxes,
the wsIoU formula) from ``ssseg.augment`` and ``ssseg_plugins.imas_hardness``: those are the
algorithm's work, not the framework's, and sharing them is what makes the random draws identical.

Both start from the same weights and see the same batches (drawn once from ssseg's loader, so
data loading is outside both timings) and the same generator seeds, so their losses agree step for
step (bit for bit when run as here); the script checks that before it reports any time. The ssseg
side is the real ``Trainer.train`` loop (hooks, context, logs written every ``run.log_every`` to a
metrics file); only its batch source is replaced by one that runs the plain step on the same batch
in between, alternating which of the two goes first. Reported: the median step time of each and their ratio (target <= 1.03), by the
wall clock and by the main thread's CPU time (with one intra-op thread all the work runs there,
and CPU time does not count the waits that other jobs on the machine cause).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ssseg.augment import (apply_plan, blend, fixmatch_boxes, hard_easy_partners, imas_boxes,  # noqa: E402
                           mix, sample_fixmatch_plan, sample_imas_plan)
from ssseg.engine.run import build_run  # noqa: E402
from ssseg.engine.trainer import Trainer  # noqa: E402
from ssseg.recipe.load import load_recipe  # noqa: E402
from ssseg_plugins.imas_hardness import wsiou_easiness  # noqa: E402

RECIPES = {
    "mt_fixmatch": ("recipes/fixmatch.yaml", ["plugins.mean_teacher={decay: 0.99}"]),
    "imas": ("recipes/imas.yaml", []),
}


class PlainLoop:
    """Mean-teacher FixMatch written by hand: EMA teacher labels the weak view, the student learns
    the labels on a colour-jittered, CutMixed view, L = w_x·L_x + w_u·L_u."""

    def __init__(self, run, tau: float, decay: float, warmup_epochs: int, iters_per_epoch: int):
        r = run.recipe
        self.num_classes = run.data.num_classes
        self.net = copy.deepcopy(run.student.net)          # the same initial weights
        self.teacher = copy.deepcopy(self.net).eval().requires_grad_(False)
        self.mean = torch.tensor(r.model.mean, device=run.device).view(1, 3, 1, 1)
        self.std = torch.tensor(r.model.std, device=run.device).view(1, 3, 1, 1)
        encoder = list(self.net.encoder.parameters())
        ids = {id(p) for p in encoder}
        head = [p for p in self.net.parameters() if id(p) not in ids]
        o = r.optim
        self.groups = [{"params": encoder, "lr": o.lr}, {"params": head, "lr": o.lr * o.head_lr_mult}]
        self.base_lrs = [g["lr"] for g in self.groups]
        self.opt = torch.optim.AdamW(self.groups, lr=o.lr, weight_decay=o.weight_decay)
        self.iters, self.power = o.iters, o.power
        self.w_x, self.w_u = r.unsup.supervised_weight, r.unsup.weight
        self.tau, self.decay = tau, decay
        self.warmup_iters = warmup_epochs * iters_per_epoch
        self.gen = torch.Generator().manual_seed(r.seed * 1000 + 1)
        self.shared = torch.Generator().manual_seed(r.seed * 1000)
        pairs = list(zip(self.teacher.state_dict().values(), self.net.state_dict().values()))
        self.ema_floats = tuple(zip(*[(a, s) for a, s in pairs if a.is_floating_point()]))
        self.ema_counts = tuple(zip(*[(a, s) for a, s in pairs if not a.is_floating_point()]))

    def logits(self, net, x: Tensor) -> Tensor:
        """The network on images in [0, 1]."""
        return net((x - self.mean) / self.std)

    def views(self, t: int, x_w: Tensor, labels: Tensor, conf: Tensor, valid: Tensor):
        """[(coefficient, image, labels, per-pixel weight, valid)] of the unlabeled views."""
        b, _, h, w = x_w.shape
        plan = sample_fixmatch_plan(b, self.gen)
        box = fixmatch_boxes(b, (h, w), self.gen)
        x_s, y, c, v = mix(box, torch.arange(b - 1, -1, -1), apply_plan(x_w, plan), labels, conf, valid)
        return [(1.0, x_s, y, (c >= self.tau).float(), v)]

    def step(self, t: int, x_l: Tensor, y_l: Tensor, x_w: Tensor, valid: Tensor) -> float:
        """One iteration; returns the total loss."""
        with torch.no_grad():
            conf, labels = self.logits(self.teacher, x_w).softmax(1).max(1)
        views = self.views(t, x_w, labels, conf, valid)
        out = self.logits(self.net, torch.cat([x_l] + [v[1] for v in views]))
        out_l, *out_u = out.split([x_l.shape[0]] + [v[1].shape[0] for v in views])
        loss_x = F.cross_entropy(out_l, y_l, ignore_index=255, reduction="sum") / (y_l != 255).sum().clamp_min(1)
        loss_u = out.new_zeros(())
        for (coef, _, y, weight, v), z in zip(views, out_u):
            ce = F.cross_entropy(z, y, reduction="none")
            loss_u = loss_u + coef * (ce * weight * v).sum() / v.sum().clamp_min(1)
        loss = self.w_x * loss_x + self.w_u * loss_u
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        for g, lr in zip(self.groups, self.base_lrs):
            g["lr"] = lr * (1 - t / self.iters) ** self.power
        self.opt.step()
        with torch.no_grad():  # EMA over parameters and buffers; integer buffers copied
            d = 0.0 if t < self.warmup_iters else min(1 - 1 / (t + 1), self.decay)
            torch._foreach_lerp_(list(self.ema_floats[0]), list(self.ema_floats[1]), 1 - d)
            torch._foreach_copy_(list(self.ema_counts[0]), list(self.ema_counts[1]))
        return float(loss.detach())


class PlainIMAS(PlainLoop):
    """iMAS written by hand: γ from the wsIoU of student and teacher, an intensity view blended by
    e, a CutMix view (hard <-> easy) with probability ē, losses weighted by e."""

    def views(self, t: int, x_w: Tensor, labels: Tensor, conf: Tensor, valid: Tensor):
        b, _, h, w = x_w.shape
        self.net.eval()
        with torch.no_grad():
            conf_s, labels_s = self.logits(self.net, x_w).softmax(1).max(1)
        self.net.train()
        gamma = 1 - wsiou_easiness(labels_s, conf_s, labels, conf, self.num_classes, self.tau)[0]  # γ
        e = 1 - gamma  # the adaptive parts below use 1 − γ
        fired = bool(torch.rand((), generator=self.shared) < float(e.mean()))
        ops = sample_imas_plan(b, self.gen, 2)
        x_int = blend(x_w, apply_plan(x_w, ops), e)
        mask = (conf >= self.tau).float()
        views = [(0.5 if fired else 1.0, x_int, labels, mask * e.view(-1, 1, 1), valid)]
        if fired:
            box = imas_boxes(b, (h, w), self.gen, (0.1, 0.9))
            x_cm, y, c, v = mix(box, hard_easy_partners(e), x_w, labels, conf, valid)
            views.append((0.5, x_cm, y, (c >= self.tau).float() * e.view(-1, 1, 1), v))
        return views


def build(method: str, overrides: list[str], out_dir: Path):
    """The ssseg run and trainer of ``method`` and its plain twin from the same weights."""
    path, fixed = RECIPES[method]
    recipe = load_recipe(path, fixed + overrides)
    trainer = Trainer(build_run(recipe, out_dir))
    run = trainer.run
    plugins = recipe.plugins
    args = dict(tau=plugins["confidence_threshold"]["threshold"], decay=plugins["mean_teacher"]["decay"],
                warmup_epochs=plugins["mean_teacher"].get("warmup_epochs", 0),
                iters_per_epoch=trainer.feed.iters_per_epoch)
    plain = PlainIMAS(run, **args) if method == "imas" else PlainLoop(run, **args)
    return run, trainer, plain


def compare(method: str, steps: int, warmup: int, overrides: list[str]) -> dict[str, float]:
    """Run both loops ``warmup + steps`` steps, interleaved on the same batches; return the largest
    relative loss difference and, per clock, both median step times (ms) and their ratio."""
    total = warmup + steps
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [f"optim.iters={total + 1}", f"eval.every={total + 1}", "eval.max_images=1"] + overrides
        run, trainer, plain = build(method, overrides, Path(tmp))
        source = trainer.batches()
        batches = [next(source) for _ in range(total)]
        times = {"ssseg": [], "plain": []}  # wall seconds
        cpu = {"ssseg": [], "plain": []}    # this thread's CPU seconds (all the work with 1 thread)
        losses = {"ssseg": [], "plain": []}
        trainer.step = record_loss(trainer.step, losses["ssseg"])

        def plain_step(i: int, lb, ub) -> None:
            t, c = time.perf_counter(), time.thread_time()
            losses["plain"].append(plain.step(i, lb["image"], lb["mask"], ub.image, ub.valid))
            times["plain"].append(time.perf_counter() - t)
            cpu["plain"].append(time.thread_time() - c)

        def interleaved():
            """Batch i to ssseg; the plain step on batch i runs before it (even i) or after it."""
            for i, (lb, ub) in enumerate(batches):
                if i % 2 == 0:
                    plain_step(i, lb, ub)
                t, c = time.perf_counter(), time.thread_time()
                yield lb, ub
                times["ssseg"].append(time.perf_counter() - t)  # the whole loop iteration
                cpu["ssseg"].append(time.thread_time() - c)
                if i % 2 == 1:
                    plain_step(i, lb, ub)

        trainer.batches = interleaved
        trainer.train()
    rel = [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(losses["ssseg"], losses["plain"])]
    result = {"steps": steps, "max_loss_rel_diff": max(rel)}
    for clock, series in (("wall", times), ("cpu", cpu)):
        a, b = (statistics.median(series[k][warmup:]) for k in ("ssseg", "plain"))
        result |= {f"{clock}_ssseg_ms": round(a * 1000, 2), f"{clock}_plain_ms": round(b * 1000, 2),
                   f"{clock}_ratio": round(a / b, 3), f"{clock}_step_ratios": [
                       x / y for x, y in zip(series["ssseg"][warmup:], series["plain"][warmup:])]}
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", choices=sorted(RECIPES), default="mt_fixmatch")
    p.add_argument("--steps", type=int, default=300, help="timed steps of each loop")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("-o", "--override", action="append", default=[])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    result = compare(args.method, args.steps, args.warmup, [f"run.threads={args.threads}"] + args.override)
    print(f"method {args.method}; {args.steps} timed steps after {args.warmup}, {args.threads} thread(s)")
    print(f"loss agreement over all {args.warmup + args.steps} steps: max relative |Δ| "
          f"{result['max_loss_rel_diff']:.1e}")
    if result["max_loss_rel_diff"] > 1e-6:
        raise SystemExit("the two loops disagree: not the same algorithm, no timing reported")
    print("| clock | ssseg median ms/step | plain median ms/step | ratio of medians | "
          "median of per-step ratios (quartiles) |\n|---|---|---|---|---|")
    for clock, name in (("wall", "wall"), ("cpu", "thread CPU")):
        ratios = sorted(result[f"{clock}_step_ratios"])
        q = len(ratios) // 4
        print(f"| {name} | {result[f'{clock}_ssseg_ms']:.2f} | {result[f'{clock}_plain_ms']:.2f} | "
              f"{result[f'{clock}_ratio']:.3f} | {statistics.median(ratios):.3f} "
              f"({ratios[q]:.3f}-{ratios[3 * q]:.3f}) |")


def record_loss(step, into: list[float]):
    """Wrap ``Trainer.step`` to keep each step's total loss."""
    def wrapped(labeled, unlabeled):
        result = step(labeled, unlabeled)
        into.append(result.logs["loss"])
        return result
    return wrapped


if __name__ == "__main__":
    main()
