"""ohem: which pixels it keeps (hand-worked and against the reference's sort), and a short run."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ssseg.api import UserError
from ssseg.engine.run import build_run
from ssseg.engine.trainer import Trainer
from ssseg.plugin_manager import instantiate

IGNORE = 255
CTX = SimpleNamespace(ignore_index=IGNORE)


def logits_with_gt_probability(p: torch.Tensor) -> torch.Tensor:
    """Two-class logits ``[1,2,H,W]`` whose class-0 softmax probability is ``p`` ``[H,W]``."""
    return torch.stack([p.log(), (1 - p).log()]).unsqueeze(0)


# ground truth class 0 everywhere except one ignored pixel, which would be the hardest of all
P = torch.tensor([[0.9, 0.2, 0.6], [0.8, 0.75, 0.01]], dtype=torch.float64)
TARGET = torch.tensor([[[0, 0, 0], [0, 0, IGNORE]]])


@pytest.mark.parametrize("min_kept, kept", [
    (0, [0.2, 0.6]),  # p ≤ θ = 0.7
    (2, [0.2, 0.6]),  # p_(2) = 0.6 < θ
    (4, [0.2, 0.6, 0.75, 0.8]),  # p_(4) = 0.8 > θ: keep p ≤ 0.8
    (5, [0.2, 0.6, 0.75, 0.8, 0.9]),  # all 5 labeled pixels
    (6, [0.2, 0.6, 0.75, 0.8, 0.9]),  # fewer labeled pixels than m: keep them all
])
def test_hand_worked_example(min_kept, kept):
    plugin = instantiate("ohem", {"thresh": 0.7, "min_kept": min_kept})
    logits = logits_with_gt_probability(P)
    mask = plugin.kept(logits, TARGET, IGNORE)
    assert sorted(P[mask[0]].tolist()) == pytest.approx(kept)
    loss = plugin.supervised_loss(ctx=CTX, logits=logits, target=TARGET)
    assert float(loss) == pytest.approx(-sum(math.log(p) for p in kept) / len(kept))


def reference_kept(logits, target, thresh, min_kept):
    """A transcription of the reference ProbOhemCrossEntropy2d's mask (sort-based)."""
    b, c, h, w = logits.shape
    target = target.reshape(-1)
    valid = target != IGNORE
    prob = F.softmax(logits, 1).transpose(0, 1).reshape(c, -1)
    if min_kept > int(valid.sum()):
        return valid.view(b, h, w)
    prob = prob.masked_fill(~valid, 1)
    mask_prob = prob[target * valid, torch.arange(len(target))]
    threshold = thresh
    if min_kept > 0:
        index = mask_prob.argsort()
        kth = mask_prob[index[min(len(index), min_kept) - 1]]
        if kth > thresh:
            threshold = kth
    return (valid & (mask_prob <= threshold)).view(b, h, w)


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 3), c=st.integers(2, 5), min_kept=st.integers(0, 120), thresh=st.floats(0, 1),
       seed=st.integers(0, 2**31))
def test_kept_pixels_match_the_reference_on_batches(b, c, min_kept, thresh, seed):
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(b, c, 6, 7, generator=g, dtype=torch.float64)
    target = torch.randint(0, c, (b, 6, 7), generator=g)
    target[torch.rand(b, 6, 7, generator=g) < 0.3] = IGNORE
    plugin = instantiate("ohem", {"thresh": thresh, "min_kept": min_kept})
    assert torch.equal(plugin.kept(logits, target, IGNORE), reference_kept(logits, target, thresh, min_kept))


def test_default_config_and_errors_name_the_parameter():
    config = instantiate("ohem", {}).config
    assert (config.thresh, config.min_kept) == (0.7, 100_000)
    with pytest.raises(UserError, match=r"plugins\.ohem\.min_kept"):
        instantiate("ohem", {"min_kept": -1})


def test_two_steps_with_ohem_as_the_supervised_loss(tiny):
    trainer = Trainer(build_run(tiny({"data": {"batch_unlabeled": 0},
                                      "plugins": {"supervised": {}, "ohem": {"min_kept": 200}}})))
    run = trainer.run
    trainer.train()
    labeled, _ = next(trainer.batches())
    with torch.no_grad():
        logits = run.student(labeled["image"])
    ohem = trainer.plugins["ohem"].supervised_loss(ctx=CTX, logits=logits, target=labeled["mask"])
    assert math.isfinite(float(ohem))
    assert float(ohem) > float(F.cross_entropy(logits, labeled["mask"], ignore_index=IGNORE)), "hard pixels only"
