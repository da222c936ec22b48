"""u2pl: the contract, L_u's entropy filter and α_t schedule, L_c against a hand computation,
the queues and state, U2PL's CutMix boxes and decision, short runs through the real Trainer."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import attrs
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
import yaml
from torch import Tensor, nn

from support.recipes import answer, view_of_plan, tiny_recipe_dict
from ssseg.api import Pseudo, UnlabeledBatch, UserError, View, hookimpl
from ssseg.engine.run import build_run
from ssseg.engine.trainer import Trainer
from ssseg.plugin_manager import instantiate
from ssseg.testing import validate_recipe
import ssseg_plugins.u2pl as u2pl_module
from ssseg_plugins.u2pl import (U2PL, PixelSets, alpha_at, contrastive_from_sets, enqueue, gathered_keys,
                                on_decoder_grid, per_image_labels, percentile, pixel_sets, released_labels,
                                u2pl_boxes, unsup_loss)

pytest_plugins = ["ssseg.testing"]

REPO = Path(__file__).resolve().parents[2]
# small enough for the tiny recipe (4 classes, 32² crops, 2 + 2 images): r_l, r_h as recipes/u2pl.yaml
SMALL = {"sup_only_epochs": 0, "rep_dim": 8, "rank_low": 1, "rank_high": 4, "queue_size": 64,
         "queue_size_class0": 96, "num_anchors": 16, "num_negatives": 8}
RECIPE = {"plugins": {"mean_teacher": {}, "u2pl": SMALL}}


def train(recipe, out_dir):
    """Train ``recipe`` writing logs to ``out_dir``; return the trainer and its per-step logs."""
    out_dir.mkdir(exist_ok=True)
    trainer = Trainer(build_run(recipe, out_dir))
    trainer.train()
    records = map(json.loads, (out_dir / "metrics.jsonl").read_text().splitlines())
    return trainer, [r for r in records if r["event"] == "train"]


def config(**changes):
    return instantiate("u2pl", {**SMALL, **changes}).config


# -- configuration and the contract ---------------------------------------------------------------

def test_defaults_are_the_released_voc_values_and_errors_name_the_parameter():
    c = instantiate("u2pl", {}).config
    assert (c.sup_only_epochs, c.p_cutmix, c.alpha0, c.alpha0_contrastive, c.rep_dim, c.ema_decay) == \
        (1, 0.5, 20.0, 20.0, 256, 0.99)
    assert (c.delta_p, c.delta_n, c.rank_low, c.rank_high, c.num_anchors, c.num_negatives, c.temperature) == \
        (0.3, 1.0, 3, 20, 256, 50, 0.5)
    assert (c.queue_size, c.queue_size_class0, c.contrastive_weight, c.contrastive, c.queue_pairing) == \
        (30000, 50000, 1.0, "released", "released")
    with pytest.raises(UserError, match=r"plugins\.u2pl\.rank_high"):
        instantiate("u2pl", {"rank_low": 3, "rank_high": 3})
    with pytest.raises(UserError, match=r"plugins\.u2pl\.contrastive"):
        instantiate("u2pl", {"contrastive": "other"})


@pytest.mark.parametrize("released", [{}, {"contrastive_labels": "released", "shared_boxes": True}],
                         ids=["default", "released_labels_and_boxes"])
def test_keeps_the_plugin_contract(plugin_contract, released):
    plugin_contract(U2PL, config={**SMALL, **released}, compose_with={"mean_teacher": {}})


def test_shipped_recipes_pair_the_teacher_schedule_with_the_warm_start():
    paths = ["recipes/u2pl.yaml", *sorted(str(p.relative_to(REPO)) for p in (REPO / "recipes/paper").glob("u2pl_*.yaml"))]
    assert len(paths) == 4
    for path in paths:
        plugins = validate_recipe(REPO / path).plugins
        teacher, u2pl = plugins["mean_teacher"], plugins["u2pl"]
        assert teacher["warmup_epochs"] == u2pl["sup_only_epochs"] + 1, path
        assert teacher["decay"] == u2pl["ema_decay"] == 0.99, path


def test_needs_a_separate_teacher(tiny):
    with pytest.raises(UserError, match=r"plugins.u2pl: needs a plugin that answers 'build_teacher'.*"
                                        r"add `mean_teacher: \{decay: 0.99, warmup_epochs: 2\}`"):
        build_run(tiny({"plugins": {"u2pl": SMALL}}))


# -- L_u ----------------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), q=st.floats(0, 100), seed=st.integers(0, 2**31))
def test_percentile_is_numpys_linear_percentile(n, q, seed):
    values = torch.rand(n, generator=torch.Generator().manual_seed(seed)) * 3
    expected = float(np.percentile(values.numpy(), q))
    assert float(percentile(values, q)) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_unsup_loss_drops_exactly_the_top_alpha_percent_and_scales_by_n_over_n_kept():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 4, 10, 10, generator=g)
    labels = torch.randint(0, 4, (1, 10, 10), generator=g)
    h = torch.randperm(100, generator=g).float().view(1, 10, 10)  # distinct entropies 0..99
    ce = F.cross_entropy(logits, labels, reduction="none")
    valid = torch.ones(1, 10, 10, dtype=torch.bool)
    loss, kept = unsup_loss(logits, labels, h, valid, alpha=20.0)
    assert float(kept) == pytest.approx(0.8), "the 20 highest of 100 entropies are dropped"
    torch.testing.assert_close(loss, (100 / 80) * ce[h < 80].mean())
    # padding: neither in the percentile nor in N; the top 20 % of the 50 valid pixels go
    valid = h.remainder(2) == 0  # entropies 0, 2, ..., 98
    loss, kept = unsup_loss(logits, labels, h, valid, alpha=20.0)
    assert float(kept) == pytest.approx(0.8)
    torch.testing.assert_close(loss, (50 / 40) * ce[valid & (h < 80)].mean())
    nothing = unsup_loss(logits, labels, h, torch.zeros_like(valid), alpha=20.0)[0]
    assert float(nothing) == 0


@pytest.mark.parametrize("epoch, epochs, alpha", [(0, 80, 20.0), (40, 80, 10.0), (79, 80, 0.25), (0, 0, 20.0),
                                                  (7, 6, 0.0)])
def test_alpha_t_shrinks_linearly_per_epoch(epoch, epochs, alpha):
    assert alpha_at(20.0, epoch, epochs) == pytest.approx(alpha)


# -- L_c ----------------------------------------------------------------------------------------

def crafted():
    """2 classes, rows (labeled, unlabeled) of 4 pixels, 2-d representations (see the asserts)."""
    label = torch.tensor([[[0, 0, 1, 1]], [[0, 1, 0, 1]]])
    q0 = torch.tensor([[[0.9, 0.2, 0.2, 0.9]], [[0.25, 0.75, 0.4, 0.7]]])  # Q^t of class 0; class 1 = 1 − q0
    probs = torch.stack([q0, 1 - q0], 1)
    low = torch.tensor([[[True] * 4], [[True, True, False, False]]])
    high = torch.tensor([[[True] * 4], [[False, False, True, True]]])
    rep = torch.zeros(2, 1, 4, 2)
    rep[0, 0, 0], rep[0, 0, 2] = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    rep.requires_grad_(True)
    rep_t = torch.tensor([[[[1.0, 0.2], [0.8, 0.4], [0.1, 1.0], [0.3, 0.5]]],
                          [[[1.0, -0.2], [-0.4, 1.0], [0.6, 0.7], [0.9, 0.2]]]])
    return label, probs, low, high, rep, rep_t


def hand_term(a, positive, negative, n, tau):
    """−log e^{cos(a,z⁺)/τ} / (e^{cos(a,z⁺)/τ} + n·e^{cos(a,k)/τ}), every negative being k."""
    s_pos, s_neg = F.cosine_similarity(a, positive, 0) / tau, F.cosine_similarity(a, negative, 0) / tau
    return -s_pos + torch.log(torch.exp(s_pos) + n * torch.exp(s_neg))


def test_pixel_sets_and_contrastive_loss_match_the_hand_computation():
    label, probs, low, high, rep, rep_t = crafted()
    c = config(rank_low=1, rank_high=2, num_anchors=5, num_negatives=3)
    sets = pixel_sets(per_image_labels(label, 2), probs, low, high, 1, c.delta_p, c.delta_n,
                      (c.rank_low, c.rank_high))
    pixel = lambda row, col: torch.zeros(2, 1, 4, dtype=torch.bool).index_put_(  # noqa: E731
        (torch.tensor([row]), torch.tensor([0]), torch.tensor([col])), torch.tensor(True))
    # anchors: label = c, low, Q^t_c > 0.3 (one pixel each); positives: label = c and low
    assert torch.equal(sets.anchors[0], pixel(0, 0)) and torch.equal(sets.anchors[1], pixel(0, 2))
    assert torch.equal(sets.positives[0], pixel(0, 0) | pixel(0, 1) | pixel(1, 0))
    assert torch.equal(sets.positives[1], pixel(0, 2) | pixel(0, 3) | pixel(1, 1))
    # negatives: unlabeled, label = c, high, c ranked 1 by the teacher; none from the labeled row
    assert torch.equal(sets.negatives[0], pixel(1, 2)) and torch.equal(sets.negatives[1], pixel(1, 3))
    assert sets.valid == [0, 1]
    queues = enqueue([torch.zeros(0, 2)] * 2, gathered_keys(rep_t, sets.negatives), [10, 10])
    assert torch.equal(queues[0], rep_t[1, 0, 2:3]) and torch.equal(queues[1], rep_t[1, 0, 3:4])
    loss = contrastive_from_sets(rep, rep_t, sets, queues, c, torch.Generator().manual_seed(0))
    z0, z1 = rep_t[sets.positives[0]].mean(0), rep_t[sets.positives[1]].mean(0)
    hand = (hand_term(rep[0, 0, 0], z0, rep_t[1, 0, 2], 3, 0.5)
            + hand_term(rep[0, 0, 2], z1, rep_t[1, 0, 3], 3, 0.5)) / 2
    torch.testing.assert_close(loss, hand)
    loss.backward()
    assert rep.grad[0, 0, 0].abs().sum() > 0 and rep.grad[1].abs().sum() == 0, "gradient through anchors only"


def test_one_valid_class_gives_zero_with_a_graph():
    label, probs, low, high, rep, rep_t = crafted()
    c = config(rank_low=1, rank_high=2)
    sets = pixel_sets(per_image_labels(torch.zeros_like(label), 2), probs, low, high, 1, c.delta_p, c.delta_n,
                      (1, 2))
    assert sets.valid == [0]
    loss = contrastive_from_sets(rep, rep_t, sets, [torch.ones(4, 2)] * 2, c, torch.Generator())
    assert float(loss.detach()) == 0 and loss.requires_grad


def test_released_pairing_takes_the_queue_of_the_jth_valid_class():
    """Issue #111: with valid classes [1, 2], j = 0 uses class 0's (empty) anchors with class 1's
    queue, j = 1 class 1's anchors and positive with class 2's queue; same_class pairs by class."""
    n = lambda *cols: torch.tensor([[[i in cols for i in range(3)]]])  # noqa: E731 - pixel masks [1,1,3]
    rep = torch.tensor([[[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]]])
    rep_t = torch.tensor([[[[0.5, 0.5], [0.2, 1.0], [1.0, 0.3]]]])
    sets = PixelSets(anchors=[n(), n(1), n(2)], positives=[n(), n(1), n(2)], negatives=[n()] * 3, valid=[1, 2])
    queues = [torch.zeros(0, 2), torch.tensor([[1.0, -1.0]]), torch.tensor([[-1.0, 0.5]])]
    released = contrastive_from_sets(rep, rep_t, sets, queues, config(num_negatives=4), torch.Generator())
    torch.testing.assert_close(released, hand_term(rep[0, 0, 1], rep_t[0, 0, 1], queues[2][0], 4, 0.5) / 2)
    same = contrastive_from_sets(rep, rep_t, sets, queues, config(num_negatives=4, queue_pairing="same_class"),
                                 torch.Generator())
    torch.testing.assert_close(same, (hand_term(rep[0, 0, 1], rep_t[0, 0, 1], queues[1][0], 4, 0.5)
                                      + hand_term(rep[0, 0, 2], rep_t[0, 0, 2], queues[2][0], 4, 0.5)) / 2)


def test_paper_rule_takes_labeled_negatives_of_other_classes_and_averages_over_all_classes():
    label, probs, low, high, rep, rep_t = crafted()
    reliable = ~torch.tensor([[[False] * 4], [[False, False, True, True]]])
    sets = pixel_sets(per_image_labels(label, 2), probs, reliable, high, 1, 0.3, 1.0, (1, 2), rule="paper")
    # labeled pixel (0, 3): y = 1 but class 0 ranks first there, so it is a negative of class 0
    assert bool(sets.negatives[0][0, 0, 3]) and not bool(sets.negatives[0][0, 0, 0])
    assert bool(sets.negatives[0][1, 0, 2]), "unlabeled: unreliable, class 0 ranked in [r_l, r_h)"
    assert torch.equal(sets.positives[0], sets.anchors[0]), "z⁺ averages the anchors"
    c = config(contrastive="paper", num_negatives=2)
    queues = [torch.tensor([[0.0, 1.0]]), torch.zeros(0, 2)]
    loss = contrastive_from_sets(rep, rep_t, sets, queues, c, torch.Generator())
    torch.testing.assert_close(loss, hand_term(rep[0, 0, 0], rep_t[0, 0, 0], queues[0][0], 2, 0.5) / 2)


def released_label_onehot(inputs: Tensor, num_segments: int) -> Tensor:
    """A transcription of the released u2pl/utils/utils.py ``label_onehot`` (on the CPU): zeros
    [C,B,H,W]; ignored (255) pixels read as class 0; scatter along dim 0 with the index [B,1,H,W];
    zero every (b, h, w) whose input is 255; permute to [B,C,H,W]."""
    batch_size, im_h, im_w = inputs.shape
    outputs = torch.zeros((num_segments, batch_size, im_h, im_w))
    inputs_temp = inputs.clone()
    inputs_temp[inputs == 255] = 0
    outputs.scatter_(0, inputs_temp.unsqueeze(1), 1.0)
    outputs[:, inputs == 255] = 0
    return outputs.permute(1, 0, 2, 3)


HAND = torch.tensor([[[0, 1, 255, 2], [3, 3, 1, 255]],      # image 0
                     [[2, 1, 1, 255], [0, 255, 3, 3]],      # image 1: its 255 at (0, 3) meets image 0's
                     [[2, 2, 0, 1], [255, 3, 2, 0]]])       # image 2


def test_released_labels_are_the_released_label_onehot():
    """Hand-made labels of 3 images, 4 classes, with ignored pixels: the released layout is image 0
    holding the union of the batch's classes (another image's ignored pixel adds class 0, image
    0's own ignored pixels hold nothing) and images 1, 2 holding none."""
    expected = released_label_onehot(HAND, 4).bool()
    got = released_labels(torch.where(HAND == 255, -1, HAND), 4)
    assert torch.equal(got, expected)
    assert got[0, :, 0, 0].tolist() == [True, False, True, False], "classes 0 (image 0), 2 (images 1, 2)"
    assert got[0, :, 1, 0].tolist() == [True, False, False, True], "image 2's ignored pixel counts as 0"
    assert not got[0, :, 0, 2].any() and not got[1:].any()
    assert torch.equal(released_labels(torch.where(HAND == 255, -1, HAND)[:1], 4), per_image_labels(
        torch.where(HAND == 255, -1, HAND)[:1], 4)), "one image: the two layouts agree"


def test_per_image_labels_are_the_released_function_laid_out_per_image():
    """The released function with the scatter along the class axis of a [B,C,H,W] tensor."""
    temp = torch.where(HAND == 255, 0, HAND)
    laid_out = torch.zeros(3, 4, 2, 4).scatter_(1, temp.unsqueeze(1), 1.0)
    laid_out.permute(1, 0, 2, 3)[:, HAND == 255] = 0
    assert torch.equal(per_image_labels(torch.where(HAND == 255, -1, HAND), 4), laid_out.bool())


@pytest.mark.parametrize("layout", ["per_image", "released"])
def test_contrastive_loss_builds_each_batchs_labels_in_the_chosen_layout(monkeypatch, layout):
    """The labeled rows (y) and the unlabeled rows (ŷ) are laid out separately, as the released
    code calls label_onehot once per batch."""
    seen = {}

    def spy(labels, *args, **kwargs):
        seen["labels"] = labels
        return pixel_sets(labels, *args, **kwargs)

    monkeypatch.setattr(u2pl_module, "pixel_sets", spy)
    plugin = instantiate("u2pl", {**SMALL, "contrastive_labels": layout})
    plugin.queues = [torch.zeros(0, 8) for _ in range(4)]
    g = torch.Generator().manual_seed(0)
    y, y_hat = HAND[:2], HAND[1:].clamp_max(3)
    labeled = SimpleNamespace(image=torch.zeros(2, 3, 2, 4), mask=y)
    probs = torch.rand(4, 4, 2, 4, generator=g).softmax(1)
    ctx = SimpleNamespace(ignore_index=255, generator=g, log=lambda *a: None)
    plugin.contrastive_loss(ctx, labeled, torch.randn(4, 8, 2, 4), torch.randn(4, 8, 2, 4), probs,
                            torch.rand(2, 2, 4, generator=g), torch.ones(2, 2, 4, dtype=torch.bool), y_hat, 20.0)
    build = released_labels if layout == "released" else per_image_labels
    expected = torch.cat([build(torch.where(y == 255, -1, y), 4), build(y_hat, 4)])
    assert torch.equal(seen["labels"], expected)


def test_queues_append_and_keep_the_newest_entries_class_0_its_own_size():
    queues = [torch.zeros(0, 2), torch.zeros(0, 2)]
    for step in range(3):
        keys = [torch.full((2, 2), float(10 * step + i)) + torch.tensor([0.0, 1.0]) for i in range(2)]
        queues = enqueue(queues, keys, [3, 2])
    assert queues[0][:, 0].tolist() == [10.0, 20.0, 20.0], "class 0: the newest 3 of 6"
    assert queues[1][:, 0].tolist() == [21.0, 21.0], "class 1: the newest 2"
    assert all(q.device.type == "cpu" and q.dtype == torch.float32 for q in queues)


def test_on_decoder_grid_samples_the_stride_padded_input():
    x = torch.arange(6 * 7).view(1, 6, 7)
    out = on_decoder_grid(x, (2, 2), 4, -1)  # the input padded to 8 × 8, every 4th pixel
    assert out.tolist() == [[[0, 4], [28, 32]]]
    assert on_decoder_grid(x, (6, 7), 1, -1).equal(x)
    assert on_decoder_grid(x, (3, 4), 2, -1)[0, 2].tolist() == [28, 30, 32, 34]


# -- CutMix ----------------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 6), height=st.integers(3, 64), width=st.integers(3, 64), seed=st.integers(0, 2**31))
def test_boxes_have_half_the_area_lie_inside_and_exceed_half_of_each_side(b, height, width, seed):
    box = u2pl_boxes(b, (height, width), torch.Generator().manual_seed(seed))
    rows, cols = box.any(2).sum(1), box.any(1).sum(1)
    assert torch.equal(box.sum((1, 2)), rows * cols), "one rectangle, not clipped by the border"
    assert ((rows * cols - height * width / 2).abs() <= cols / 2).all(), "area H·W/2 up to rounding h"
    assert (cols > width / 2).all() and (cols <= width - 1).all()
    if height == width:
        assert (rows > height / 2).all()
    assert (rows <= height).all()


@pytest.mark.parametrize("shared_boxes", [False, True])
def test_cutmix_decision_is_shared_across_ranks_and_the_partner_is_the_next_image(shared_boxes):
    plugin = instantiate("u2pl", {"shared_boxes": shared_boxes})
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 4, (4, 16, 16), generator=g)
    index = torch.arange(4).view(4, 1, 1).expand(4, 16, 16)
    batch = UnlabeledBatch(image=torch.stack([labels / 3, index / 3, torch.zeros(4, 16, 16)], 1),
                           valid=torch.ones(4, 16, 16, dtype=torch.bool))
    pseudo = Pseudo(labels=labels, conf=torch.rand(4, 16, 16, generator=g), valid=batch.valid)
    ranks = [SimpleNamespace(shared_generator=torch.Generator().manual_seed(0), device=torch.device("cpu"),
                             generator=torch.Generator().manual_seed(rank), log=lambda *a: None)
             for rank in (0, 1)]
    plans = [[answer(plugin, "schedule_augmentation", ctx=ctx, view=View("mix", 0.0), unlabeled=batch) for _ in range(40)]
             for ctx in ranks]
    fired = [[p is not None for p in rank] for rank in plans]
    assert fired[0] == fired[1] and 10 < sum(fired[0]) < 30, "one shared Bernoulli(0.5) per batch"
    same = [torch.equal(a.mixes[0].box, b.mixes[0].box) for a, b in zip(*plans) if a is not None]
    assert all(same) if shared_boxes else not all(same), "boxes alike on every rank only with shared_boxes"
    plan = next(p for p in plans[0] if p is not None)
    assert plan.mixes[0].partner.tolist() == [1, 2, 3, 0]
    image, mixed = view_of_plan(plan, batch, pseudo)
    src = (image[:, 1] * 3).round().long()
    assert torch.equal(src, torch.where(plan.mixes[0].box, (index + 1) % 4, index))
    assert torch.equal((image[:, 0] * 3).round().long(), mixed.labels), "ŷ moves with the image"


# -- the EMA head and the state -------------------------------------------------------------

def test_ema_head_copies_through_epoch_s_then_averages():
    plugin = instantiate("u2pl", {"sup_only_epochs": 1, "ema_decay": 0.99})
    plugin.head, plugin.ema_head = nn.Linear(2, 2), nn.Linear(2, 2).requires_grad_(False)
    for epoch, iteration, d in [(0, 5, 0.0), (1, 15, 0.0), (2, 200, 0.99), (3, 300, 0.99)]:
        before = [p.clone() for p in plugin.ema_head.parameters()]
        with torch.no_grad():
            for p in plugin.head.parameters():
                p.add_(1.0)
        plugin.after_optimizer_step(ctx=SimpleNamespace(epoch=epoch, iteration=iteration))
        for old, new, student in zip(before, plugin.ema_head.parameters(), plugin.head.parameters()):
            torch.testing.assert_close(new, d * old + (1 - d) * student)
    plugin = instantiate("u2pl", {"sup_only_epochs": 0, "ema_decay": 0.99})
    plugin.head, plugin.ema_head = nn.Linear(2, 2), nn.Linear(2, 2).requires_grad_(False)
    before = plugin.ema_head.weight.clone()
    plugin.after_optimizer_step(ctx=SimpleNamespace(epoch=1, iteration=3))  # min(1 − 1/4, 0.99)
    torch.testing.assert_close(plugin.ema_head.weight, 0.75 * before + 0.25 * plugin.head.weight)


# -- training through the real Trainer ---------------------------------------------------------------

def test_three_steps_train_the_head_and_the_state_round_trips(tmp_path, tiny):
    trainer, logs = train(tiny({**RECIPE, "optim": {"iters": 3}}), tmp_path / "run")
    run = trainer.run
    for r in logs:
        assert all(math.isfinite(r[k]) for k in ("loss", "loss_x", "u2pl/unsup", "u2pl/contrastive"))
        assert r["u2pl/unsup"] > 0 and r["u2pl/alpha_t"] == 20.0
        assert r["u2pl/kept"] == pytest.approx(0.8, abs=0.01), "N_k/N: the top 20 % entropy dropped"
        assert r["loss"] == pytest.approx(r["loss_x"] + r["u2pl/unsup"] + r["u2pl/contrastive"], rel=1e-5)
    assert any(r["u2pl/contrastive"] > 0 for r in logs)
    head = run.modules["u2pl_rep"]
    optimised = {id(p) for group in run.optimizer.param_groups for p in group["params"]}
    assert all(id(p) in optimised for p in head.parameters()), "the rep head is in the optimiser"
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters()), "and gets gradients"
    assert not run.teacher.training, "the teacher is back in eval mode"
    plugin = trainer.plugins["u2pl"]
    assert sum(q.shape[0] for q in plugin.queues) > 0
    buffer = io.BytesIO()
    torch.save(plugin.state_dict(), buffer)
    fresh = build_run(tiny({**RECIPE, "optim": {"iters": 3}})).plugins["u2pl"]
    assert not all(torch.equal(a, b) for a, b in zip(fresh.ema_head.state_dict().values(),
                                                     plugin.ema_head.state_dict().values()))
    fresh.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=False))
    assert all(torch.equal(a, b) for a, b in zip(fresh.queues, plugin.queues))
    for (name, a), b in zip(plugin.ema_head.state_dict().items(), fresh.ema_head.state_dict().values()):
        assert torch.equal(a, b), name


def test_warm_start_is_supervised_only(tmp_path, tiny):
    trainer, logs = train(tiny({"plugins": {"mean_teacher": {}, "u2pl": {**SMALL, "sup_only_epochs": 1}}}),
                          tmp_path / "run")
    for r in logs:
        assert r["u2pl/unsup"] == 0 and r["u2pl/contrastive"] == 0 and r["loss"] == r["loss_x"]
        assert "u2pl/cutmix" not in r and "lambda_u" not in r, "no view is planned"
    assert all(p.grad is None for p in trainer.run.modules["u2pl_rep"].parameters())
    assert all(q.shape[0] == 0 for q in trainer.plugins["u2pl"].queues)



class RecordingU2PL(U2PL):
    """U2PL that writes its queues' lengths and sums per rank after every step (``path``-rank.txt)."""

    @attrs.frozen
    class Config(U2PL.Config):
        path: str = ""

    @hookimpl
    def after_iteration(self, ctx, logs):
        with open(f"{self.config.path}-{ctx.rank}.txt", "a") as f:
            f.write(" ".join(f"{q.shape[0]}:{float(q.sum()):.4f}" for q in self.queues) + "\n")


@pytest.mark.slow
def test_two_process_gloo_run_gathers_the_keys_of_every_rank(tmp_path):
    """Under DDP (the representation head wrapped) each rank enqueues the keys of both ranks, in
    rank order, so the queues agree although the ranks see different images."""
    recipe = tmp_path / "r.yaml"
    params = {**SMALL, "use": "strategies.test_plugin_u2pl:RecordingU2PL", "path": str(tmp_path / "queues")}
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict({"optim": {"iters": 3},
                                                       "plugins": {"mean_teacher": {}, "u2pl": params}})))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "ssseg", "train", str(recipe), "--out", str(tmp_path / "run")],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0, rank1 = ((tmp_path / f"queues-{r}.txt").read_text().splitlines() for r in (0, 1))
    assert len(rank0) == 3 and rank0 == rank1
    assert rank0[-1] != " ".join(["0:0.0000"] * 4), "keys were enqueued"
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["u2pl/contrastive"]) for r in records if r["event"] == "train")
