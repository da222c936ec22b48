"""mean_teacher: EMA arithmetic (parameters, buffers, warm-up), the classic consistency term,
composition with FixMatch, short runs and resume."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import attrs
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ssseg.api import Pseudo, StudentOutputs, UserError
from ssseg.engine import checkpoint
from support.resume import step_logs
from ssseg.engine.run import build_run
from ssseg.engine.trainer import Trainer
from ssseg.plugin_manager import instantiate

MODERN = {"unsup": {"weight": 0.5, "supervised_weight": 0.5},
          "plugins": {"mean_teacher": {}, "fixmatch": {}, "confidence_threshold": {}}}
CLASSIC = {"plugins": {"mean_teacher": {"decay": 0.99}, "mse_consistency": {}}}


def train(recipe, tmp_path):
    """Train ``recipe`` and return the trainer and its per-step logs."""
    trainer = Trainer(build_run(recipe, tmp_path))
    trainer.train()
    return trainer, step_logs(tmp_path)


def test_default_config_and_errors_name_the_parameter():
    plugin = instantiate("mean_teacher", {})
    assert (plugin.config.decay, plugin.config.warmup_epochs) == (0.996, 0)
    with pytest.raises(UserError, match=r"plugins\.mean_teacher\.decay"):
        instantiate("mean_teacher", {"decay": 1.0})
    with pytest.raises(UserError, match=r"plugins\.mean_teacher\.warmup_epochs"):
        instantiate("mean_teacher", {"warmup_epochs": -1})


# (iteration, iters_per_epoch, warmup_epochs, decay) -> d, computed by hand
DECAYS = [
    ((0, 10, 0, 0.996), 0.0),  # t = 0: an exact copy
    ((1, 10, 0, 0.996), 0.5),
    ((3, 10, 0, 0.6), 0.6),  # 1 - 1/4 = 0.75 capped at α
    ((999, 10, 0, 0.996), 0.996),
    ((9, 10, 1, 0.996), 0.0),  # inside the warm-up epoch
    ((10, 10, 1, 0.996), 1 - 1 / 11),  # first step after it: t is the global counter
    ((13, 10, 1, 0.5), 0.5),  # 1 - 1/14 capped at α
    ((25, 5, 2, 0.9), 0.9),  # t = 25: 1 - 1/26 capped at 0.9
]


def tiny_bn_module(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    module = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3))
    module.train()(torch.randn(4, 2, 5, 5))  # running stats and num_batches_tracked move
    return module


@settings(max_examples=25, deadline=None)
@given(case=st.sampled_from(DECAYS), seed=st.integers(0, 10_000))
def test_ema_update_matches_the_hand_computation(case, seed):
    (iteration, per_epoch, warmup, decay), d = case
    student = tiny_bn_module(seed)
    plugin = instantiate("mean_teacher", {"decay": decay, "warmup_epochs": warmup})
    teacher = plugin.build_teacher(student=student)
    assert teacher is not student and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    with torch.no_grad():  # let the teacher lag behind: perturb every tensor of the student
        for p in [*student.parameters(), *student.buffers()]:
            p.add_(torch.randn(p.shape).to(p.dtype) if p.is_floating_point() else 3)
    before = copy.deepcopy(teacher.state_dict())
    ctx = SimpleNamespace(iteration=iteration, iters_per_epoch=per_epoch, epoch=iteration // per_epoch,
                          student=student, log=lambda *a: None)
    plugin.after_optimizer_step(ctx=ctx)
    after, now = teacher.state_dict(), student.state_dict()
    assert set(after) >= {"1.running_mean", "1.running_var", "1.num_batches_tracked"}
    for name, theta in now.items():
        if theta.is_floating_point():
            torch.testing.assert_close(after[name], d * before[name] + (1 - d) * theta, msg=name)
        else:
            assert torch.equal(after[name], theta), name


def test_two_steps_of_modern_mean_teacher_and_resume(tmp_path, tiny):
    trainer, logs = train(tiny(MODERN), tmp_path)
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["loss_u/strong"]) for r in logs)
    assert [r["ema_decay"] for r in logs] == [0.0, 0.5]
    run = trainer.run
    assert run.teacher is not run.student
    assert set(trainer.run.state.last_eval) >= {"student/miou", "teacher/miou"}
    checkpointer = checkpoint.Checkpointer(tmp_path)
    checkpointer.save(trainer.run, trainer.plugins)
    resumed = Trainer(build_run(tiny(MODERN)))
    assert not all(torch.equal(a, b) for a, b in zip(resumed.run.teacher.state_dict().values(),
                                                     run.teacher.state_dict().values()))
    checkpoint.restore(resumed, checkpointer.last)
    for (name, a), b in zip(run.teacher.state_dict().items(), resumed.run.teacher.state_dict().values()):
        assert torch.equal(a, b), name


def test_the_teacher_makes_the_pseudo_labels(tmp_path, tiny):
    """Zeroing the teacher's head (not the student's) makes every confidence 1/C."""
    trainer = Trainer(build_run(tiny(MODERN)))
    run = trainer.run
    labeled, unlabeled = next(trainer.batches())
    by_student = trainer.runner.pseudo_label(unlabeled)
    with torch.no_grad():
        for p in run.teacher.net.segmentation_head.parameters():
            p.zero_()
    by_teacher = trainer.runner.pseudo_label(unlabeled)
    assert torch.allclose(by_teacher.conf, torch.full_like(by_teacher.conf, 1 / run.data.num_classes))
    assert not torch.allclose(by_student.conf, by_teacher.conf)


def test_classic_variant_adds_the_weighted_softmax_mse(tmp_path, tiny):
    trainer, logs = train(tiny(CLASSIC), tmp_path)
    assert all(math.isfinite(r["consistency"]) and r["consistency"] > 0 for r in logs)
    assert all(r["loss"] == pytest.approx(r["loss_x"] + r["consistency"], rel=1e-5) for r in logs)
    plugin = trainer.plugins["mse_consistency"]
    student = torch.tensor([[[[0.0]], [[0.0]]], [[[2.0]], [[0.0]]]])  # [B=2, C=2, 1, 1]
    teacher = torch.tensor([[[[0.0]], [[0.0]]], [[[0.0]], [[0.0]]]])
    valid = torch.tensor([[[True]], [[True]]])
    pseudo = Pseudo(labels=torch.zeros(2, 1, 1, dtype=torch.long), conf=torch.ones(2, 1, 1), valid=valid,
                    logits=teacher)
    outputs = StudentOutputs(labeled=student, views={}, weak=student)
    at = SimpleNamespace(iteration=0)
    j = plugin.extra_losses(ctx=at, unlabeled=None, pseudo=pseudo, outputs=outputs)["consistency"]
    s = torch.sigmoid(torch.tensor(2.0))  # softmax of (2, 0)
    hand = 2 * (s - 0.5) ** 2 / (2 * 2)  # pixel 1 only, over 2 pixels x 2 classes
    torch.testing.assert_close(j, 100.0 * hand)
    invalid_second = attrs.evolve(pseudo, valid=torch.tensor([[[True]], [[False]]]))
    masked = plugin.extra_losses(ctx=at, unlabeled=None, pseudo=invalid_second, outputs=outputs)
    assert float(masked["consistency"]) == 0, "padding never enters the consistency"


def test_classic_consistency_sees_the_weak_batch_without_planning_views_so_it_composes(tiny):
    from ssseg.engine.trainer import Trainer
    trainer = Trainer(build_run(tiny({"plugins": {"mean_teacher": {}, "mse_consistency": {}, "fixmatch": {}}})))
    result = trainer.step(*next(trainer.batches()), until="forward")
    assert list(result.views) == ["strong"]
    assert result.outputs.weak is not None and result.outputs.weak.shape == result.pseudo.logits.shape


@pytest.mark.parametrize("iteration, factor", [(0, math.exp(-5)), (50, math.exp(-5 * 0.25)), (100, 1.0), (500, 1.0)])
def test_consistency_weight_follows_the_sigmoid_rampup(iteration, factor):
    plugin = instantiate("mse_consistency", {"weight": 100.0, "rampup_iters": 100})
    assert plugin.weight_at(iteration) == pytest.approx(100.0 * factor)
    assert instantiate("mse_consistency", {"weight": 7.0}).weight_at(0) == 7.0
