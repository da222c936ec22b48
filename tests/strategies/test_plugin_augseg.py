"""augseg: the random intensity view (op set, count 1–3 with replacement, parameter ranges), the
boxes (λ ~ Beta once per batch, centre in [⌊S/8⌋, S), clipping), ρ against a hand computation,
injection with probability 1 − ρ of the source, the two sequential mixes against a loop written
from the released ``cut_mix_label_adaptive``, and the plugin through the contract kit."""

from __future__ import annotations

import math

import pytest
import torch

from ssseg.augment import OP_NAMES, apply_plan, op_id
from ssseg.augment import augseg_ops as A

N = 30_000  # draws for the statistical tests (each runs in well under a second)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- the random intensity view ---------------------------------------------------------------------


def test_plan_draws_only_the_eleven_released_ops():
    plan = A.sample_augseg_plan(N, gen())
    assert set(plan.ops.unique().tolist()) == {op_id(name) for name in A.AUGSEG_OPS}
    assert "invert" not in A.AUGSEG_OPS and len(A.AUGSEG_OPS) == 11 == len(set(A.AUGSEG_OPS))


def test_op_count_is_uniform_in_1_to_3():
    """Slot s holds a drawn op iff s < k; a drawn op is the identity w.p. 1/11. So the identity
    share of slot s is P(k ≤ s) + P(k > s)/11: 1/11, 1/3 + 2/33, 2/3 + 1/33 for k ~ U{1, 2, 3}
    (a fixed k = 3 gives 1/11 everywhere; k ~ U{0..3} gives more identity in slot 0)."""
    plan = A.sample_augseg_plan(N, gen(1))
    share = (plan.ops == op_id("identity")).double().mean(0)
    expected = torch.tensor([1 / 11, 1 / 3 + 2 / 33, 2 / 3 + 1 / 33], dtype=torch.float64)
    assert torch.allclose(share, expected, atol=0.012), share
    fixed = A.sample_augseg_plan(N, gen(1), random_count=False)
    assert torch.allclose((fixed.ops == op_id("identity")).double().mean(0), torch.full((3,), 1 / 11,
                          dtype=torch.float64), atol=0.012)


def test_ops_are_drawn_with_replacement():
    """With k = 3, slots 0 and 1 hold the same op w.p. 1/11 (never, without replacement)."""
    plan = A.sample_augseg_plan(N, gen(2), random_count=False)
    same = (plan.ops[:, 0] == plan.ops[:, 1]).double().mean()
    assert abs(float(same) - 1 / 11) < 0.01


def params_of(plan, name):
    return plan.params[plan.ops == op_id(name)].double()


def test_parameter_ranges_are_the_released_ones():
    plan = A.sample_augseg_plan(4 * N, gen(3), random_count=False)
    for name in A.ENHANCE:  # enhance factors in (0.05, 0.95]: always weakening
        f = params_of(plan, name)
        assert f.min() > 0.05 - 1e-6 and f.max() <= 0.95 + 1e-6 and f.min() < 0.06 and f.max() > 0.94
    bits = params_of(plan, "posterize")
    assert set(bits.unique().tolist()) == {4.0, 5.0, 6.0, 7.0}
    assert torch.allclose(torch.bincount(bits.long() - 4).double() / len(bits), torch.full((4,), 0.25,
                          dtype=torch.float64), atol=0.02)
    threshold = params_of(plan, "solarize")
    assert set(threshold.unique().tolist()) == set(map(float, range(1, 256)))  # 1..255, never 256
    sigma = params_of(plan, "blur")
    assert sigma.min() >= 0.1 - 1e-6 and sigma.max() < 2.0 and sigma.max() > 1.98
    hue = params_of(plan, "hue") * 255  # released: uint8(±0.5u·255) levels of PIL's hue channel
    assert torch.allclose(hue, hue.round(), atol=1e-3)
    hue = hue.round()
    assert hue.min() == -127 and hue.max() == 127 and (hue < 0).double().mean().sub(0.5).abs() < 0.03
    for name in ("autocontrast", "equalize"):
        assert (params_of(plan, name) == 1).all()
    assert (params_of(plan, "identity") == 0).all()


def test_plan_applies_each_slot_in_order():
    """An image whose plan is all identity stays; brightness f then solarize t equals the two ops
    in that order (solarize first would give another image)."""
    g = gen(4)
    images = torch.rand(2, 3, 8, 8, generator=g)
    plan = A.sample_augseg_plan(2, g)
    ident = op_id("identity")
    ops = torch.tensor([[ident] * 3, [op_id("brightness"), op_id("solarize"), ident]])
    params = torch.tensor([[0.0, 0.0, 0.0], [0.5, 64.0, 0.0]])
    out = apply_plan(images, type(plan)(ops=ops, params=params), on_levels=False)
    assert torch.equal(out[0], images[0])
    dimmed = images[1] * 0.5
    expected = torch.where(dimmed * 255 >= 63.5, 1 - dimmed, dimmed)
    assert torch.allclose(out[1], expected, atol=1e-6)


def test_plan_is_a_function_of_the_generator():
    a, b = A.sample_augseg_plan(16, gen(5)), A.sample_augseg_plan(16, gen(5))
    assert torch.equal(a.ops, b.ops) and torch.equal(a.params, b.params)
    assert OP_NAMES[int(a.ops[0, 0])] in A.AUGSEG_OPS


# -- λ and the boxes -------------------------------------------------------------------------------


@pytest.mark.parametrize("a, b", [(8, 2), (4, 4)])
def test_beta_draws_have_the_beta_mean_and_variance(a, b):
    g = gen(6)
    draws = torch.tensor([A.beta_integer(a, b, g) for _ in range(4000)], dtype=torch.float64)
    mean, var = a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))
    assert abs(float(draws.mean()) - mean) < 0.01
    assert abs(float(draws.var()) - var) < 0.15 * var


def box_rows_cols(box):
    rows, cols = box.any(1), box.any(0)
    r, c = rows.nonzero().squeeze(1), cols.nonzero().squeeze(1)
    return (int(r.min()), int(r.max()) + 1), (int(c.min()), int(c.max()) + 1)


def test_box_centre_range_sides_and_clipping():
    """Non-square crop 48 × 80 at √(1 − λ) = 0.25: sides ⌊48/4⌋ = 12 and ⌊80/4⌋ = 20 (half 6, 10);
    centres in [6, 48) × [10, 80); boxes whose centre lies within a half-side of the bottom/right
    are cut there."""
    h, w = 48, 80
    boxes = A.augseg_boxes(4000, (h, w), 1 - 0.25 ** 2, gen(7))
    centres_y, centres_x = [], []
    for box in boxes:
        (top, bottom), (left, right) = box_rows_cols(box)
        cy, cx = top + 6, left + 10  # the top/left side is never cut: centre ≥ ⌊S/8⌋ ≥ half-side here
        centres_y.append(cy)
        centres_x.append(cx)
        assert bottom == min(cy + 6, h) and right == min(cx + 10, w)  # cut at the bottom/right only
        assert int(box.sum()) == (bottom - top) * (right - left)
    assert (min(centres_y), max(centres_y), min(centres_x), max(centres_x)) == (h // 8, h - 1, w // 8, w - 1)


def test_box_sides_follow_lambda():
    """λ = 1: empty. λ = 0, crop 16: sides 16 (half 8), centre c ∈ [2, 16): rows [c − 8, c + 8)
    cut to the crop: 16 rows at c = 8, the fewest (9) at c = 15."""
    assert A.augseg_boxes(50, (16, 16), 1.0, gen(8)).sum() == 0
    sizes = A.augseg_boxes(3000, (16, 16), 0.0, gen(8)).flatten(1).sum(1)
    assert (int(sizes.max()), int(sizes.min())) == (256, 81)


# -- ρ and the injection ---------------------------------------------------------------------------


def test_image_confidence_against_a_hand_computation():
    """Image 0: a one-hot pixel (H = 0, q = 1 → 1) and a uniform pixel (H = log 2, so 1 − H/log 2
    = 0 → 0): ρ = ½. Image 1, C = 2: p = (0.8, 0.2) at both pixels."""
    probs = torch.tensor([[[[1.0, 0.5]], [[0.0, 0.5]]],
                          [[[0.8, 0.8]], [[0.2, 0.2]]]])  # [B=2, C=2, H=1, W=2]
    h = -(0.8 * math.log(0.8 + 1e-10) + 0.2 * math.log(0.2 + 1e-10)) / math.log(2)
    expected = torch.tensor([0.5, (1 - h) * 0.8])
    assert torch.allclose(A.image_confidence(probs), expected, atol=1e-6)
    three = torch.tensor([0.7, 0.2, 0.1]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    h3 = -sum(p * math.log(p + 1e-10) for p in (0.7, 0.2, 0.1)) / math.log(3)
    assert abs(float(A.image_confidence(three)[0]) - (1 - h3) * 0.7) < 1e-6


def test_injection_fires_with_probability_one_minus_rho():
    g = gen(9)
    assert not A.injection_fires(torch.ones(N), g).any()  # ρ = 1: never
    assert A.injection_fires(torch.zeros(N), g).all()  # ρ = 0: always
    rho = torch.tensor([0.2, 0.7]).repeat(N // 2)
    fired = A.injection_fires(rho, g).view(-1, 2).double().mean(0)
    assert torch.allclose(fired, torch.tensor([0.8, 0.3], dtype=torch.float64), atol=0.015)


# -- the two mixes against the released loop -------------------------------------------------------


def released_cut_mix(u_img, u_lab, u_conf, x_img, x_lab, fires, perm, l_box, u_box):
    """Written from the released ``cut_mix_label_adaptive`` (loops over the batch): inject into
    copies, then paste the copies of π(i) into the originals inside the unlabeled boxes."""
    mix_img, mix_lab, mix_conf = u_img.clone(), u_lab.clone(), u_conf.clone()
    x_conf = torch.ones_like(u_conf)
    for i in range(len(u_img)):
        if fires[i]:
            m = l_box[i]
            mix_img[i][:, m] = x_img[perm[i]][:, m]
            mix_lab[i][m] = x_lab[perm[i]][m]
            mix_conf[i][m] = x_conf[perm[i]][m]
    out_img, out_lab, out_conf = u_img.clone(), u_lab.clone(), u_conf.clone()
    for i in range(len(u_img)):
        m = u_box[i]
        out_img[i][:, m] = mix_img[perm[i]][:, m]
        out_lab[i][m] = mix_lab[perm[i]][m]
        out_conf[i][m] = mix_conf[perm[i]][m]
    return out_img, out_lab, out_conf


def sequential_mixes(mixes, u_img, u_lab, u_conf, u_valid, x_img, x_lab):
    """The two mixes as the core applies them: (1) from the view itself, (2) from the labeled
    batch with targets = ground truth, conf = 1, valid = mask ≠ 255."""
    (box1, p1), (box2, p2) = mixes
    img, lab, conf, valid = (torch.where(_b(box1, t), t[p1], t) for t in (u_img, u_lab, u_conf, u_valid))
    x_conf, x_valid = torch.ones_like(u_conf), x_lab != 255
    img, lab, conf, valid = (torch.where(_b(box2, t), d[p2], t)
                             for t, d in ((img, x_img), (lab, x_lab), (conf, x_conf), (valid, x_valid)))
    return img, lab, conf, valid


def _b(box, t):
    return box.unsqueeze(1) if t.dim() == 4 else box


def random_case(seed, b=5, h=12, w=10):
    g = gen(seed)
    u_img, x_img = torch.rand(b, 3, h, w, generator=g), torch.rand(b, 3, h, w, generator=g) + 2
    u_lab = torch.randint(0, 4, (b, h, w), generator=g)
    x_lab = torch.randint(10, 14, (b, h, w), generator=g)
    x_lab[torch.rand(b, h, w, generator=g) < 0.3] = 255
    u_conf = torch.rand(b, h, w, generator=g) * 0.9
    fires = torch.rand(b, generator=g) < 0.6
    perm = torch.randperm(b, generator=g)
    l_box = A.augseg_boxes(b, (h, w), A.beta_integer(8, 2, g), g)
    u_box = A.augseg_boxes(b, (h, w), A.beta_integer(4, 4, g), g)
    return u_img, u_lab, u_conf, x_img, x_lab, fires, perm, l_box, u_box


@pytest.mark.parametrize("seed", range(20))
def test_two_sequential_mixes_equal_the_released_loop(seed):
    u_img, u_lab, u_conf, x_img, x_lab, fires, perm, l_box, u_box = random_case(seed)
    mixes = A.label_injecting_mixes(u_box, l_box, perm, fires)
    valid = torch.ones_like(u_lab, dtype=torch.bool)
    img, lab, conf, ok = sequential_mixes(mixes, u_img, u_lab, u_conf, valid, x_img, x_lab)
    ref_img, ref_lab, ref_conf = released_cut_mix(u_img, u_lab, u_conf, x_img, x_lab, fires, perm, l_box, u_box)
    assert torch.equal(img, ref_img) and torch.equal(lab, ref_lab) and torch.equal(conf, ref_conf)
    assert torch.equal(ok, ref_lab != 255)  # injected 255 pixels are invalid, all others valid


def test_injection_depends_on_the_source_image():
    """π = (1, 2, 0): image j pastes image π(j)'s copy, injected from x_π(π(j)) iff π(j) fires.
    Only image 2 fires: labeled pixels (from x_0) reach image 1 only, with conf 1."""
    b, h, w = 3, 6, 6
    u_img, x_img = torch.zeros(b, 3, h, w), torch.arange(b).float().view(b, 1, 1, 1).expand(b, 3, h, w) + 10
    u_lab, x_lab = torch.zeros(b, h, w, dtype=torch.long), torch.full((b, h, w), 7)
    x_lab[:, 0, :] = 255
    u_conf = torch.full((b, h, w), 0.5)
    perm, fires = torch.tensor([1, 2, 0]), torch.tensor([False, False, True])
    full = torch.ones(b, h, w, dtype=torch.bool)
    mixes = A.label_injecting_mixes(full, full, perm, fires)
    img, lab, conf, valid = sequential_mixes(mixes, u_img, u_lab, u_conf, full, x_img, x_lab)
    assert (img[1] == 10).all() and (img[0] == 0).all() and (img[2] == 0).all()  # x_{π(π(1))} = x_0
    assert (lab[1, 1:] == 7).all() and (lab[1, 0] == 255).all() and (conf[1] == 1).all()
    assert not valid[1, 0].any() and valid[1, 1:].all() and valid[0].all() and (conf[0] == 0.5).all()
    released = released_cut_mix(u_img, u_lab, u_conf, x_img, x_lab, fires, perm, full, full)
    assert all(torch.equal(a, b) for a, b in zip((img, lab, conf), released))


# -- the plugin ------------------------------------------------------------------------------------

from types import SimpleNamespace  # noqa: E402

from ssseg.api import LabeledBatch, Pseudo, UnlabeledBatch, UserError  # noqa: E402
from ssseg.plugin_manager import check_recipe, instantiate  # noqa: E402
from ssseg.recipe.load import build_recipe  # noqa: E402
from support.recipes import answer, tiny_recipe_dict  # noqa: E402

RELEASED = {"unsup": {"normalize": "pixels"},
            "plugins": {"mean_teacher": {"warmup_epochs": 1}, "augseg": {}, "confidence_threshold": {}}}


def test_default_config_is_the_released_one_and_errors_name_the_parameter():
    c = instantiate("augseg", {}).config
    assert (c.num_augs, c.random_num, c.label_beta, c.mix_beta, c.cutmix) == (3, True, (8, 2), (4, 4), True)
    with pytest.raises(UserError, match=r"plugins\.augseg\.label_beta"):
        instantiate("augseg", {"label_beta": [0, 2]})
    with pytest.raises(UserError, match=r"plugins\.augseg\.num_augs"):
        instantiate("augseg", {"num_augs": 12})


def test_unequal_batches_are_refused_naming_the_keys():
    check_recipe(build_recipe(tiny_recipe_dict(RELEASED)))  # 2 + 2: accepted
    unequal = tiny_recipe_dict(RELEASED | {"data": {"batch_labeled": 2, "batch_unlabeled": 3}})
    with pytest.raises(UserError, match=r"data\.batch_labeled.*data\.batch_unlabeled"):
        check_recipe(build_recipe(unequal))


def schedule(plugin, image, mask, logits, seed=0):
    ctx = SimpleNamespace(generator=gen(seed), device=torch.device("cpu"), log=lambda *a, **k: None)
    labeled = LabeledBatch(image=image + 2, mask=mask)
    valid = torch.ones(mask.shape, dtype=torch.bool)
    unlabeled = UnlabeledBatch(image=image, valid=valid)
    pseudo = Pseudo.from_logits(logits, valid)
    view = answer(plugin, "plan_views", ctx=ctx, labeled=labeled, hardness=None)[0]
    return answer(plugin, "schedule_augmentation", ctx=ctx, view=view, labeled=labeled, unlabeled=unlabeled,
                                        pseudo=pseudo, hardness=None)


@pytest.mark.parametrize("confident", [True, False])
def test_forced_confidence_never_or_always_injects(confident):
    """One-hot teacher predictions (ρ = 1) never inject: the labeled mix pastes nothing; uniform
    ones (ρ = 0) always do: it pastes inside M_j ∩ L_π(j) from x_π(π(j))."""
    b, h, w, c = 6, 16, 16, 3
    logits = torch.zeros(b, c, h, w)
    if confident:
        logits[:, 0] = 1e4
    plugin = instantiate("augseg", {})
    plan = schedule(plugin, torch.rand(b, 3, h, w), torch.zeros(b, h, w, dtype=torch.long), logits)
    first, second = plan.mixes
    assert (first.donor, second.donor) == ("view", "labeled")
    assert torch.equal(second.partner, first.partner[first.partner])
    assert (second.box <= first.box).all()
    assert (not second.box.any()) if confident else second.box.any()


def test_plan_without_cutmix_is_the_intensity_view_alone():
    plan = schedule(instantiate("augseg", {"cutmix": False}), torch.rand(2, 3, 8, 8),
                    torch.zeros(2, 8, 8, dtype=torch.long), torch.zeros(2, 3, 8, 8))
    assert plan.mixes == () and plan.photometric is not None


# -- through the core: the plan's mixes, the ground truth, and L_u ---------------------------------

from ssseg.api import AugmentationPlan, CutMix  # noqa: E402
from ssseg.engine.views import Donors, view_image, view_pseudo  # noqa: E402
from ssseg.losses import weighted_view_loss  # noqa: E402

IGNORE, CLASSES = 255, 14


def core_view(mixes, u_img, u_pseudo, x_img, x_lab):
    """The view's image and targets as the core builds them from the plan's two mixes."""
    (box1, p1), (box2, p2) = mixes
    plan = AugmentationPlan(mixes=(CutMix(box1, p1, donor="view"), CutMix(box2, p2, donor="labeled")))
    donors = Donors(labeled_image=x_img, ground_truth=lambda: Pseudo.from_ground_truth(x_lab, CLASSES, IGNORE))
    return plan, view_image(plan, u_img, donors), view_pseudo(plan, u_pseudo, donors)


@pytest.mark.parametrize("seed", range(8))
def test_core_applies_the_mixes_as_the_released_loop(seed):
    """Image, labels and confidences of the core's view equal the released loop's; labeled pixels
    carry conf 1, and the released 255 targets are exactly the core's invalid pasted pixels."""
    u_img, _, _, x_img, x_lab, fires, perm, l_box, u_box = random_case(seed)
    b, _, h, w = u_img.shape
    logits = torch.randn(b, CLASSES, h, w, generator=gen(100 + seed)) * 3
    valid = torch.ones(b, h, w, dtype=torch.bool)
    valid[:, -2:] = False  # padding rows of the unlabeled crops
    u_pseudo = Pseudo.from_logits(logits, valid)
    mixes = A.label_injecting_mixes(u_box, l_box, perm, fires)
    plan, image, pseudo = core_view(mixes, u_img, u_pseudo, x_img, x_lab)
    ref_img, ref_lab, ref_conf = released_cut_mix(u_img, u_pseudo.labels, u_pseudo.conf, x_img, x_lab, fires, perm,
                                                  l_box, u_box)
    assert torch.equal(image, ref_img) and torch.equal(pseudo.conf, ref_conf)
    pasted_ignore = mixes[1][0] & ~pseudo.valid
    assert torch.equal(pasted_ignore, ref_lab == IGNORE)
    assert torch.equal(pseudo.labels[ref_lab != IGNORE], ref_lab[ref_lab != IGNORE])


@pytest.mark.parametrize("tau", [0.95, 0.5, -0.7])
def test_unlabeled_loss_is_the_released_one(tau):
    """L_u = (1/BHW) Σ 1[q̄ ≥ τ ∧ ȳ ≠ 255]·CE over all pixels, padding of the unlabeled crops
    included: the core's ``pixels`` loss with τ's mask. The pasted 255 pixels are ``ignored`` by
    the core (they would otherwise count as class 0)."""
    u_img, _, _, x_img, x_lab, fires, perm, l_box, u_box = random_case(3)
    fires[:] = True
    b, _, h, w = u_img.shape
    logits = torch.randn(b, CLASSES, h, w, generator=gen(7)) * 4
    valid = torch.ones(b, h, w, dtype=torch.bool)
    valid[:, :, -3:] = False
    u_pseudo = Pseudo.from_logits(logits, valid)
    mixes = A.label_injecting_mixes(u_box, l_box, perm, fires)
    plan, _, pseudo = core_view(mixes, u_img, u_pseudo, x_img, x_lab)
    student = torch.randn(b, CLASSES, h, w, generator=gen(8))
    _, ref_lab, ref_conf = released_cut_mix(u_img, u_pseudo.labels, u_pseudo.conf, x_img, x_lab, fires, perm,
                                            l_box, u_box)
    kept = (ref_conf >= tau) & (ref_lab != IGNORE)
    ce = torch.nn.functional.cross_entropy(student, ref_lab.masked_fill(~kept, IGNORE), ignore_index=IGNORE,
                                           reduction="none")
    released = ce.mean()
    weight = (pseudo.conf >= tau).float()
    assert (ref_lab == IGNORE).any() and torch.equal(pseudo.ignored, ref_lab == IGNORE)
    assert torch.allclose(weighted_view_loss(student, pseudo, weight, "pixels"), released, atol=1e-6)
    not_ignored = Pseudo(pseudo.labels, pseudo.conf, pseudo.valid, pseudo.logits)
    assert not torch.allclose(weighted_view_loss(student, not_ignored, weight, "pixels"), released, atol=1e-6)
