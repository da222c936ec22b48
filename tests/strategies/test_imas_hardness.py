"""iMAS hardness (wsIoU): hand-worked maps, properties, the plugin's eval-mode contract."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from support.resume import assert_resume_is_exact
from support.imas import IMAS, make_ctx, two_iterations_are_finite
from ssseg.testing import tiny_recipe
from ssseg.api import Pseudo, UnlabeledBatch, UserError
from ssseg.engine.run import build_run
from ssseg.plugin_manager import instantiate
from ssseg.recipe.structure import ConfigError
from ssseg_plugins.imas_hardness import wsiou_easiness

T = torch.tensor


def e_of(ys, cs, yt, ct, num_classes=3, threshold=0.9, ignore_background=True):
    return wsiou_easiness(T(ys), T(cs), T(yt), T(ct), num_classes, threshold, ignore_background)[0]


# Two 2x4 maps. Class 0: n^t = n^s = 3, ∩ = 2, IoU = 1/2; class 1: n^t = 2, n^s = 3, ∩ = 2, IoU = 2/3;
# class 2: n^t = 3, n^s = 2, ∩ = 2, IoU = 2/3. ρ_t = 6/8, ρ_s = 4/8 at τ = 0.9.
Y_T = [[[0, 0, 1, 1], [2, 2, 2, 0]]]
Y_S = [[[0, 1, 1, 1], [2, 2, 0, 0]]]
C_T = [[[1.0, 1.0, 1.0, 0.5], [1.0, 0.9, 1.0, 0.2]]]   # 0.9 = τ counts as confident
C_S = [[[1.0, 0.5, 1.0, 0.5], [0.3, 1.0, 1.0, 0.8]]]


def test_hand_worked_without_background():
    # w^t = (0, 2/5, 3/5), w^s = (0, 3/5, 2/5): wIoU_t = wIoU_s = 2/3; e = (3/4·2/3 + 1/2·2/3)/2 = 5/12
    assert e_of(Y_S, C_S, Y_T, C_T).item() == pytest.approx(5 / 12)


def test_hand_worked_with_background():
    # w^t = (3/8, 2/8, 3/8), w^s = (3/8, 3/8, 2/8): wIoU_t = 3/16 + 1/6 + 1/4 = 29/48,
    # wIoU_s = 3/16 + 1/4 + 1/6 = 29/48; e = (3/4 + 1/2)·29/48 / 2 = 145/384
    assert e_of(Y_S, C_S, Y_T, C_T, ignore_background=False).item() == pytest.approx(145 / 384)


def test_classes_in_neither_map_contribute_nothing():
    assert e_of(Y_S, C_S, Y_T, C_T, num_classes=7).item() == pytest.approx(5 / 12)


def test_asymmetric_class_weights():
    # y^t: 1 1 1 2, y^s: 1 1 2 2. IoU_1 = 2/3, IoU_2 = 1/2; w^t = (3/4, 1/4), w^s = (1/2, 1/2)
    # wIoU_t = 1/2 + 1/8 = 5/8, wIoU_s = 1/3 + 1/4 = 7/12; all confident: e = (5/8 + 7/12)/2 = 29/48
    ones = [[[1.0] * 4]]
    assert e_of([[[1, 1, 2, 2]]], ones, [[[1, 1, 1, 2]]], ones).item() == pytest.approx(29 / 48)


def test_all_background_is_hardest():
    zeros, ones = [[[0] * 4] * 2], [[[1.0] * 4] * 2]
    assert e_of(zeros, ones, zeros, ones).item() == 0
    assert e_of(zeros, ones, zeros, ones, ignore_background=False).item() == 1


def test_disjoint_predictions_have_zero_easiness():
    ones = [[[1.0] * 4] * 2]
    assert e_of([[[1] * 4] * 2], ones, [[[2] * 4] * 2], ones).item() == 0


def test_identical_predictions_give_the_mean_confident_fraction():
    # IoU = 1 for every predicted class: e = (ρ_t + ρ_s)/2 = (6/8 + 4/8)/2
    assert e_of(Y_T, C_S, Y_T, C_T).item() == pytest.approx(5 / 8)


def test_images_of_a_batch_are_independent():
    ys, cs, yt, ct = (T(Y_S + Y_T), T(C_S + C_T), T(Y_T + Y_T), T(C_T + C_S))
    batch = wsiou_easiness(ys, cs, yt, ct, 3, 0.9)[0]
    single = [wsiou_easiness(ys[i:i + 1], cs[i:i + 1], yt[i:i + 1], ct[i:i + 1], 3, 0.9)[0] for i in range(2)]
    assert torch.allclose(batch, torch.cat(single))


@st.composite
def prediction_pairs(draw):
    b, h, w, c = draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 5)), draw(st.integers(2, 5))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    maps = [torch.randint(c, (b, h, w), generator=g) for _ in range(2)]
    confs = [torch.rand((b, h, w), generator=g) for _ in range(2)]
    return maps, confs, c, draw(st.booleans()), draw(st.integers(0, 2**31 - 1))


@settings(max_examples=60, deadline=None)
@given(prediction_pairs())
def test_easiness_is_in_unit_interval_and_symmetric_and_relabelling_invariant(case):
    (ys, yt), (cs, ct), c, ignore_bg, seed = case
    e = wsiou_easiness(ys, cs, yt, ct, c, 0.5, ignore_bg)[0]
    assert ((0 <= e) & (e <= 1)).all()
    swapped = wsiou_easiness(yt, ct, ys, cs, c, 0.5, ignore_bg)[0]
    assert torch.allclose(e, swapped)
    perm = torch.cat([T([0]), 1 + torch.randperm(c - 1, generator=torch.Generator().manual_seed(seed))])
    relabelled = wsiou_easiness(perm[ys], cs, perm[yt], ct, c, 0.5, ignore_bg)[0]
    assert torch.allclose(e, relabelled)


class _ConvBN(torch.nn.Module):
    """A tiny segmentation net whose output depends on train/eval mode (BatchNorm)."""

    def __init__(self, classes: int = 3):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, classes, 1), torch.nn.BatchNorm2d(classes))
        self.net[1].running_mean.fill_(0.3)
        self.net[1].running_var.fill_(2.0)

    def forward(self, x):
        return 10 * self.net(x)


def test_plugin_runs_the_student_in_eval_mode_and_restores_its_mode():
    # Teacher = exact copy of the student (epoch 0): IoU = 1, so γ = 1 − mean confident fraction,
    # which holds only if the student predicted in eval mode (BatchNorm running statistics).
    student = _ConvBN().train()
    teacher = copy.deepcopy(student).eval()
    x = torch.rand(4, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        conf, labels = teacher(x).softmax(1).max(1)
    pseudo = Pseudo(labels=labels, conf=conf, valid=torch.ones_like(labels, dtype=torch.bool))
    ctx = make_ctx(student, teacher=teacher)
    plugin = instantiate("imas_hardness", {"threshold": 0.6, "ignore_background": False})
    hardness = plugin.estimate_hardness(ctx=ctx, unlabeled=UnlabeledBatch(x, pseudo.valid), pseudo=pseudo)
    rho = (conf >= 0.6).flatten(1).float().mean(1)
    assert student.training and not hardness.requires_grad
    assert torch.allclose(hardness, 1 - rho)
    assert ctx.logs["imas/hardness_mean"] == pytest.approx(float((1 - rho).mean()))
    assert ctx.logs["imas/hardness_std"] == pytest.approx(float((1 - rho).std(unbiased=False)))
    assert ctx.logs["imas/confident_fraction_teacher"] == pytest.approx(float(rho.mean()))


def test_default_config_and_a_bad_threshold():
    assert instantiate("imas_hardness", {}).config.threshold == 0.95
    with pytest.raises(ConfigError, match="plugins.imas_hardness.threshold"):
        instantiate("imas_hardness", {"threshold": 1.5})


def test_a_plugin_that_needs_hardness_refuses_a_recipe_without_an_estimator():
    with pytest.raises(UserError, match="add `imas_hardness: {}`"):
        build_run(tiny_recipe({"plugins": {"imas_weighting": {}, "imas_augmentation": {}}}))


def test_two_iterations_of_the_imas_recipe_are_finite():
    logs = two_iterations_are_finite(IMAS)
    assert 0 <= logs["imas/hardness_mean"] <= 1


def test_resume_continues_exactly(tmp_path):
    assert_resume_is_exact(tiny_recipe({"optim": {"iters": 4}, "plugins": IMAS}), tmp_path)


def test_without_a_separate_teacher_it_is_refused_naming_the_teacher_to_add():
    """wsIoU of the online student against itself is 1 (e = 1 everywhere): a silent no-op."""
    from ssseg.errors import PluginError
    from ssseg.plugin_manager import check_recipe
    plugins = {"fixmatch": {}, "imas_hardness": {}, "imas_weighting": {}}
    with pytest.raises(PluginError, match=r"plugins.imas_hardness: needs a plugin that answers 'build_teacher'.*"
                                          r"add `mean_teacher: \{\}`"):
        check_recipe(tiny_recipe({"plugins": plugins}))
    check_recipe(tiny_recipe({"plugins": {"mean_teacher": {}, **plugins}}))
