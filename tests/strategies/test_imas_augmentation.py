"""iMAS adaptive augmentation: views and coefficients, blend, trigger, hard <-> easy CutMix."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ssseg.testing import tiny_recipe
from support.resume import assert_resume_is_exact
from support.imas import IMAS, make_ctx, two_iterations_are_finite
from ssseg.api import AugmentationPlan, CutMix, Pseudo, UnlabeledBatch, View
from ssseg.engine.run import build_run
from ssseg.engine.trainer import Trainer
from ssseg.augment import hard_easy_partners
from support.recipes import answer, view_of_plan
from ssseg.plugin_manager import instantiate


def plugin(**options):
    return instantiate("imas_augmentation", options)


def weak_batch(b=4, h=8, w=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(b, 3, h, w, generator=g)
    labels = torch.randint(3, (b, h, w), generator=g)
    pseudo = Pseudo(labels=labels, conf=torch.rand(b, h, w, generator=g),
                    valid=torch.ones(b, h, w, dtype=torch.bool))
    return UnlabeledBatch(image, pseudo.valid), pseudo


def views_of(p, hardness, seed=0):
    return [(v.name, v.coef, v.kind) for v in answer(p, "refine_views", views=[], ctx=make_ctx(seed=seed), hardness=hardness)]


# -- views and coefficients ------------------------------------------------------------------

def test_cutmix_view_halves_both_coefficients_when_it_fires():
    assert views_of(plugin(), torch.zeros(4)) == [("strong", 0.5, "image"), ("cutmix", 0.5, "image")]
    assert views_of(plugin(), torch.ones(4)) == [("strong", 1.0, "image")]
    assert views_of(plugin(cutmix=False), torch.zeros(4)) == [("strong", 1.0, "image")]


def test_weak_in_forward_is_a_coefficient_zero_view_without_a_plan():
    p = plugin(weak_in_forward=True)
    assert views_of(p, torch.ones(4)) == [("strong", 1.0, "image"), ("x_w", 0.0, "image")]
    weak, pseudo = weak_batch()
    assert answer(p, "refine_augmentation", plan=None, ctx=make_ctx(), view=View("x_w", 0.0), unlabeled=weak,
                                   pseudo=pseudo, hardness=torch.ones(4)) is None


UNIMATCH_VIEWS = [View("s1", 0.25), View("s2", 0.25), View("fp", 0.5, kind="feature", dropout=0.3)]


def test_a_strategys_views_are_kept_and_weak_in_forward_joins_them():
    assert answer(plugin(), "refine_views", views=UNIMATCH_VIEWS, ctx=make_ctx(), hardness=torch.zeros(4)) is None
    refined = answer(plugin(weak_in_forward=True), "refine_views", views=UNIMATCH_VIEWS, ctx=make_ctx(),
                     hardness=torch.zeros(4))
    assert refined == UNIMATCH_VIEWS + [View("x_w", 0.0)]


# -- §3a intensity view ------------------------------------------------------------------------

def intensity_view(p, gamma, view="strong", seed=0):
    weak, pseudo = weak_batch(seed=seed)
    hardness = torch.full((4,), gamma) if isinstance(gamma, float) else gamma
    plan = answer(p, "refine_augmentation", plan=None, ctx=make_ctx(seed=seed), view=View(view), unlabeled=weak,
                                   pseudo=pseudo, hardness=hardness)
    return weak.image, plan, view_of_plan(plan, weak, pseudo)[0]


def test_blend_at_easiness_0_is_the_weak_view_and_at_1_the_strong_view():
    weak, _, hardest = intensity_view(plugin(), 1.0)
    assert torch.equal(hardest, weak)
    weak, plan, easiest = intensity_view(plugin(), 0.0)
    assert torch.allclose(easiest, plan.photometric(weak)) and not torch.allclose(easiest, weak)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=4, max_size=4), st.integers(0, 100))
def test_blend_is_per_image_e_strong_plus_one_minus_e_weak(gammas, seed):
    hardness = torch.tensor(gammas)
    weak, plan, view = intensity_view(plugin(), hardness, seed=seed)
    e = (1 - hardness).view(-1, 1, 1, 1)
    assert torch.allclose(view, e * plan.photometric(weak) + (1 - e) * weak, atol=1e-6)


def test_fixed_strong_view_and_magnitude_variant():
    weak, plan, view = intensity_view(plugin(adapt="none"), 1.0)
    assert plan.blend is None and torch.equal(view, plan.photometric(weak))
    weak, plan, view = intensity_view(plugin(adapt="magnitude"), 1.0)  # e = 0: every op is identity
    assert plan.blend is None and torch.allclose(view, weak, atol=1e-6)
    _, _, fixed = intensity_view(plugin(adapt="none"), 0.0)
    _, _, full = intensity_view(plugin(adapt="magnitude"), 0.0)  # e = 1: the full-strength draw
    assert torch.allclose(fixed, full, atol=1e-6)


# -- §3b adaptive CutMix ----------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=9, unique=True))
def test_cutmix_pairs_rank_k_with_rank_b_minus_1_minus_k(gammas):
    hardness = torch.tensor(gammas)
    b = len(gammas)
    weak, pseudo = weak_batch(b=b)
    plan = answer(plugin(), "refine_augmentation", plan=None, ctx=make_ctx(), view=View("cutmix", 0.5), unlabeled=weak,
                                          pseudo=pseudo, hardness=hardness)
    order = torch.argsort(1 - hardness)  # by easiness, ascending
    for k in range(b):
        assert plan.mixes[0].partner[order[k]] == order[b - 1 - k]


def test_cutmix_sources_are_the_weak_images_and_labels_move_with_the_box():
    weak, pseudo = weak_batch()
    plan = answer(plugin(), "refine_augmentation", plan=None, ctx=make_ctx(), view=View("cutmix", 0.5), unlabeled=weak,
                                          pseudo=pseudo, hardness=torch.tensor([0.1, 0.5, 0.9, 0.3]))
    assert plan.photometric is None and plan.blend is None
    image, mixed = view_of_plan(plan, weak, pseudo)
    box, partner = plan.mixes[0].box, plan.mixes[0].partner
    assert torch.equal(image, torch.where(box.unsqueeze(1), weak.image[partner], weak.image))
    assert torch.equal(mixed.labels, torch.where(box, pseudo.labels[partner], pseudo.labels))
    sides = box.any(2).sum(1), box.any(1).sum(1)  # clipped boxes: at most int(H·v) × int(W·v), one v
    assert (sides[0] <= int(8 * 0.9)).all() and (sides[1] <= int(10 * 0.9)).all()


def fired_share(p, gamma, n=2000):
    ctx = make_ctx(seed=3)
    hardness = torch.full((4,), gamma)
    return sum(len(answer(p, "refine_views", views=[], ctx=ctx, hardness=hardness)) == 2 for _ in range(n)) / n


def test_trigger_probability_follows_mean_easiness():
    assert fired_share(plugin(), 1.0, 200) == 0 and fired_share(plugin(), 0.0, 200) == 1
    assert fired_share(plugin(), 0.7) == pytest.approx(0.3, abs=0.04)  # 4 σ of 2000 draws
    assert fired_share(plugin(cutmix_prob=0.5), 0.0) == pytest.approx(0.5, abs=0.045)


def test_trigger_uses_only_the_shared_generator():
    ctx = make_ctx()
    before = ctx.generator.get_state(), ctx.shared_generator.get_state()
    answer(plugin(), "refine_views", views=[], ctx=ctx, hardness=torch.full((4,), 0.5))
    assert torch.equal(ctx.generator.get_state(), before[0])
    assert not torch.equal(ctx.shared_generator.get_state(), before[1])


def strategy_plan(b=4, h=8, w=10, labeled_mix=False):
    """A strategy's plan of a strong view: a photometric op and a CutMix of the reversed batch
    (FixMatch's shape), optionally followed by a labeled mix."""
    box = torch.zeros(b, h, w, dtype=torch.bool)
    box[:, :3, :3] = True
    mixes = (CutMix(box, torch.arange(b - 1, -1, -1)),)
    if labeled_mix:
        mixes += (CutMix(box.flip(1), torch.zeros(b, dtype=torch.long), donor="labeled"),)
    return AugmentationPlan(photometric=lambda x: 1 - x, mixes=mixes)


def test_a_strategys_image_views_become_independent_adaptive_views_with_the_adaptive_cutmix():
    p = plugin(cutmix_prob=1.0)
    weak, pseudo = weak_batch()
    ctx, hardness = make_ctx(), torch.tensor([0.1, 0.5, 0.9, 0.3])
    s1, s2 = (answer(p, "refine_augmentation", plan=strategy_plan(), ctx=ctx, view=View(v, 0.25), unlabeled=weak,
                     pseudo=pseudo, hardness=hardness) for v in ("s1", "s2"))
    assert torch.equal(s1.blend, 1 - hardness) and len(s1.mixes) == 1
    assert not torch.equal(s1.photometric(weak.image), 1 - weak.image), "iMAS's ops replace the strategy's"
    assert not torch.equal(s1.photometric(weak.image), s2.photometric(weak.image))
    assert not torch.equal(s1.mixes[0].box, s2.mixes[0].box)
    assert torch.equal(s1.mixes[0].partner, s2.mixes[0].partner)  # hard <-> easy, as UniMatch's one mix batch
    assert torch.equal(s1.mixes[0].partner, hard_easy_partners(1 - hardness))


def test_on_a_strategys_view_cutmix_false_keeps_its_mixes_and_ground_truth_mixes_always_stay():
    weak, pseudo = weak_batch()
    kwargs = dict(ctx=make_ctx(), view=View("strong"), unlabeled=weak, pseudo=pseudo, hardness=torch.full((4,), 0.2))
    kept = answer(plugin(cutmix=False), "refine_augmentation", plan=strategy_plan(labeled_mix=True), **kwargs)
    assert all(
        torch.equal(a.box, b.box) and torch.equal(a.partner, b.partner) and a.donor == b.donor
        for a, b in zip(kept.mixes, strategy_plan(labeled_mix=True).mixes, strict=True))
    never = answer(plugin(cutmix_prob=0.0), "refine_augmentation", plan=strategy_plan(labeled_mix=True), **kwargs)
    assert [m.donor for m in never.mixes] == ["labeled"], "the strategy's CutMix is replaced, not kept"
    fired = answer(plugin(cutmix_prob=1.0), "refine_augmentation", plan=strategy_plan(labeled_mix=True), **kwargs)
    assert [m.donor for m in fired.mixes] == ["view", "labeled"]


# -- the plugin's contract -------------------------------------------------------------------

def test_default_config():
    c = plugin().config
    assert (c.adapt, c.n_ops, c.cutmix, c.cutmix_prob, c.weak_in_forward) == ("blend", 2, True, None, False)


def test_without_adaptation_no_estimator_is_needed():
    build_run(tiny_recipe({"plugins": {"imas_augmentation": {"adapt": "none", "cutmix": False}}}))


PLAN_FIELDS = ("photometric", "blend", "mixes")
INTENSITY, BLENDED, CUTMIX = ("photometric",), ("photometric", "blend"), ("mixes",)


@pytest.mark.parametrize("options, views, parts", [
    ({}, {"strong": ("image", 0.5, BLENDED), "cutmix": ("image", 0.5, CUTMIX)},
     ["labeled", "strong", "cutmix"]),
    ({"adapt": "magnitude", "weak_in_forward": True},   # scaled magnitudes: no blend; x_w in the forward
     {"strong": ("image", 0.5, INTENSITY), "cutmix": ("image", 0.5, CUTMIX), "x_w": ("image", 0.0, None)},
     ["labeled", "strong", "cutmix", "x_w"]),
    ({"cutmix_prob": 1.0, "with": {"unimatch": {"fp_dropout": 0.3}}},  # UniMatch's own views, refined
     {"s1": ("image", 0.25, BLENDED + CUTMIX), "s2": ("image", 0.25, BLENDED + CUTMIX), "fp": ("feature", 0.5, None)},
     ["labeled", "weak", "s1", "s2"]),
    ({"adapt": "none", "cutmix": False}, {"strong": ("image", 1.0, INTENSITY)}, ["labeled", "strong"]),
])
def test_each_option_plans_its_views(options, views, parts):
    """The views, coefficients, plan parts and student-forward parts each option produces, and a
    finite loss over two iterations."""
    options = dict(options)
    plugins = {**IMAS, "imas_augmentation": options, **options.pop("with", {})}
    trainer = Trainer(build_run(tiny_recipe({"plugins": plugins})))
    prepared = trainer.step(*next(trainer.batches()), until="prepare")
    planned = {name: (v.view.kind, v.view.coef, None if v.plan is None else
                      tuple(f for f in PLAN_FIELDS if getattr(v.plan, f) not in (None, ())))
               for name, v in prepared.views.items()}
    assert planned == views
    assert [name for name, _ in prepared.batch.parts] == parts
    assert all(v.view.dropout == 0.3 for v in prepared.views.values() if v.view.kind == "feature")
    two_iterations_are_finite(plugins)


@pytest.mark.parametrize("pairing", ["hard_easy", "random"])
def test_cutmix_pairing_option(pairing):
    """hard_easy: the hardest image takes its box from the easiest (every step); random: other
    partners at some step."""
    recipe = tiny_recipe({"data": {"batch_unlabeled": 4}, "plugins": {
        **IMAS, "imas_augmentation": {"cutmix_prob": 1.0, "cutmix_pairing": pairing}}})
    trainer = Trainer(build_run(recipe))
    labeled, unlabeled = next(trainer.batches())
    same = []
    for step in range(4):
        prepared = trainer.runner.step(labeled, unlabeled, until="prepare", ctx=trainer.runner.context(step))
        partner = prepared.views["cutmix"].plan.mixes[0].partner
        same.append(torch.equal(partner, hard_easy_partners(prepared.hardness)))
    assert all(same) if pairing == "hard_easy" else not all(same)


def test_resume_continues_exactly(tmp_path):
    assert_resume_is_exact(tiny_recipe({"optim": {"iters": 4}, "plugins": {**IMAS, "imas_augmentation": {"weak_in_forward": True}}}), tmp_path)


def test_resume_continues_exactly_with_unimatch_views(tmp_path):
    assert_resume_is_exact(tiny_recipe({"optim": {"iters": 4}, "plugins": {**IMAS, "unimatch": {}}}), tmp_path)
