"""``run.precision``, ``run.channels_last`` and ``run.compile``: each takes effect, and keeps one
step's loss and gradients on a fixed batch equal to fp32's within its tolerance."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from ssseg.engine import checkpoint
from ssseg.engine.run import build_run
from ssseg.engine.trainer import Trainer
from ssseg.errors import UserError
from ssseg.pictures import predict_mask
from ssseg.recipe.load import merge
from ssseg.testing import tiny_recipe

# mean-teacher FixMatch with every pixel confident, so the unlabeled loss is not zero at step 1
MT_FIXMATCH = {"plugins": {"mean_teacher": {"decay": 0.99}, "fixmatch": {},
                           "confidence_threshold": {"threshold": 0.0}},
               "eval": {"max_images": 2}}


def build(run_patch: dict) -> Trainer:
    """A trainer of the tiny mean-teacher FixMatch recipe with ``run_patch`` over ``run:``."""
    return Trainer(build_run(tiny_recipe(merge(MT_FIXMATCH, {"run": run_patch}))))


def one_step(run_patch: dict):
    """(loss, flat gradient, first conv's output) of one step on the first batch."""
    trainer = build(run_patch)
    seen = []
    hook = trainer.run.student.net.encoder.conv1.register_forward_hook(lambda m, i, out: seen.append(out))
    labeled, unlabeled = next(trainer.batches())
    logs = trainer.step(labeled, unlabeled).logs
    hook.remove()
    grad = torch.cat([p.grad.flatten() for p in trainer.run.student.parameters() if p.grad is not None])
    return logs["loss"], grad, seen[-1]


@pytest.fixture(scope="module")
def reference():
    return one_step({})


@pytest.mark.parametrize("option, loss_tol, grad_tol", [
    # measured on this batch: loss 2.5e-4 / 2.6e-4 / 0, gradient 0.16 / 0.053 / 0.0039
    ({"precision": "bf16"}, 0.01, 0.3),
    ({"precision": "fp16"}, 0.002, 0.1),
    ({"channels_last": True}, 1e-5, 0.01),
])
def test_option_takes_effect_and_agrees_with_fp32(reference, option, loss_tol, grad_tol):
    loss0, grad0, conv0 = reference
    loss, grad, conv = one_step(option)
    if "precision" in option:
        assert conv.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[option["precision"]]
        assert loss != loss0  # lower precision changes the numbers a little
    else:
        assert conv.is_contiguous(memory_format=torch.channels_last)
        assert not conv0.is_contiguous(memory_format=torch.channels_last)
    assert abs(loss - loss0) <= loss_tol * abs(loss0)
    # relative L2 error of the whole gradient: also catches an fp16 gradient left scaled
    assert float((grad - grad0).norm() / grad0.norm()) <= grad_tol


def test_compile_runs_the_student_through_dynamo_and_agrees(reference):
    loss0, grad0, _ = reference
    counters.clear()
    loss, grad, _ = one_step({"compile": "aot_eager"})  # inductor needs minutes on a CPU
    assert counters["stats"]["unique_graphs"] >= 1
    assert abs(loss - loss0) <= 1e-5 * abs(loss0)
    assert float((grad - grad0).norm() / grad0.norm()) <= 1e-4


def test_unknown_compile_backend_names_the_key_and_the_valid_ones():
    with pytest.raises(UserError, match=r"run.compile: unknown torch.compile backend 'fast'.*inductor"):
        build({"compile": "fast"})


def test_fp16_loss_scale_survives_a_checkpoint(tmp_path):
    trainer = build({"precision": "fp16"})
    trainer.step(*next(trainer.batches()))
    trainer.run.state.scaler.update(new_scale=1024.0)
    checkpoint.Checkpointer(tmp_path).save(trainer.run, trainer.plugins)
    resumed = build({"precision": "fp16"})
    assert resumed.run.state.scaler.get_scale() != 1024.0
    checkpoint.restore(resumed, tmp_path / checkpoint.LAST)
    assert resumed.run.state.scaler.get_scale() == 1024.0


def test_bf16_run_trains_and_evaluates():
    trainer = build({"precision": "bf16"})
    metrics = trainer.train()
    assert 0 <= metrics["student/miou"] <= 1 and 0 <= metrics["teacher/miou"] <= 1


def test_predictions_use_the_runs_precision_like_its_evaluations():
    run = build({"precision": "bf16"}).run
    seen = []
    run.student.net.encoder.conv1.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    mask = predict_mask(run, run.student.eval(), run.data.val[0]["image"])
    assert seen == [torch.bfloat16] and mask.dtype == torch.int64
