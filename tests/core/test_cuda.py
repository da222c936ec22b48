"""The CUDA paths: mixed precision with the gradient scaler, channels_last, batched sliding windows
and pinned-memory loading on a GPU. Marked ``cuda``: skipped without a device;
``benchmarks/gpu_check.py`` runs them first on a lent GPU."""

from __future__ import annotations

import pytest
import torch

from ssseg.engine.evaluate import sliding_probs
from ssseg.models import build_model
from ssseg.testing import tiny_recipe
from core.test_precision import build, one_step

pytestmark = pytest.mark.cuda
CUDA = {"device": "cuda"}


@pytest.mark.parametrize("option, dtype, loss_tol", [
    ({}, torch.float32, 0.0), ({"precision": "bf16"}, torch.bfloat16, 0.01),
    ({"precision": "fp16"}, torch.float16, 0.002), ({"channels_last": True}, torch.float32, 1e-3)])
def test_a_cuda_step_takes_the_option_and_agrees_with_the_cpu(option, dtype, loss_tol):
    loss_cpu, _, _ = one_step({})
    loss, grad, conv = one_step({**CUDA, **option})
    assert conv.is_cuda and conv.dtype == dtype and torch.isfinite(grad).all()
    assert conv.is_contiguous(memory_format=torch.channels_last) == bool(option.get("channels_last"))
    assert abs(loss - loss_cpu) <= max(loss_tol, 1e-3) * abs(loss_cpu)  # TF32 convolutions on the GPU


def test_fp16_steps_through_the_gradient_scaler():
    trainer = build({**CUDA, "precision": "fp16"})
    batches = trainer.batches()
    for _ in range(3):
        assert "skipped" not in trainer.step(*next(batches))
    assert trainer.run.state.scaler.is_enabled() and 0 < trainer.run.state.scaler.get_scale() < float("inf")


def test_batched_sliding_windows_equal_one_at_a_time_and_the_cpu():
    model = build_model(tiny_recipe().model, 4).eval()
    image = torch.rand(3, 70, 100, generator=torch.Generator().manual_seed(0))
    on_cpu = sliding_probs(model, image, 48, 32, 4, batch=1)
    model.cuda()
    batched = sliding_probs(model, image.cuda(), 48, 32, 4, batch=8)
    torch.testing.assert_close(batched, sliding_probs(model, image.cuda(), 48, 32, 4, batch=1), atol=1e-4, rtol=0)
    torch.testing.assert_close(batched.cpu(), on_cpu, atol=1e-2, rtol=0)


def test_the_loader_pins_memory_and_batches_arrive_on_the_device():
    trainer = build(CUDA)
    run = trainer.run
    batch = next(iter(trainer.loader(run.data.labeled, 2, 0, 0, salt=1)))
    assert batch["image"].is_pinned()
    labeled, unlabeled = next(trainer.batches())
    assert labeled["image"].is_cuda and unlabeled.image.is_cuda
