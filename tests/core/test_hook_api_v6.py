"""Hook spec 6: ground-truth views and CutMix donors, refinements of decisions, relabelling after
the student forward, weights and the supervised loss reaching plugins' own losses, the
compose-or-refuse rules, and what a version-5 plugin is told."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from support import compose
from ssseg.cli import main
from ssseg.engine.run import build_run
from ssseg.engine.trainer import Trainer
from ssseg.errors import PluginError, UserError
from ssseg.plugin_manager import check_recipe

USE = "support.compose:"


def use(cls: str) -> dict:
    return {"use": USE + cls}


def prepared_and_losses(recipe):
    trainer = Trainer(build_run(recipe))
    return trainer, trainer.step(*next(trainer.batches()), until="losses")


# -- ground truth as targets -------------------------------------------------------------------

def test_a_labeled_view_trains_against_the_ground_truth(tiny):
    trainer, result = prepared_and_losses(tiny({"plugins": {"v": use("LabeledView")}}))
    view = result.views["lab"]
    labeled = result.labeled
    assert torch.equal(view.image, labeled.image) and view.weight is None
    valid = labeled.mask != trainer.run.data.ignore_index
    assert torch.equal(view.pseudo.valid, valid) and bool((view.pseudo.conf == 1).all())
    ce = F.cross_entropy(result.outputs.views["lab"], labeled.mask.masked_fill(~valid, 0), reduction="none")
    torch.testing.assert_close(result.terms["loss_u/lab"], (ce * valid).sum() / valid.sum())


def test_a_labeled_view_has_a_loss_even_without_pseudo_labels(tiny):
    """With the source 'none' an unlabeled view must have coefficient 0, a labeled one need not."""
    recipe = tiny({"plugins": {"v": use("LabeledView"), "none": use("SourceNone")}})
    _, result = prepared_and_losses(recipe)
    assert result.pseudo is None and float(result.terms["loss_u/lab"].detach()) > 0


def test_a_labeled_cutmix_pastes_labeled_pixels_with_their_ground_truth(tiny):
    trainer, result = prepared_and_losses(tiny({"plugins": {"p": use("PasteLabeled")}}))
    view, labeled, weak = result.views["pasted"], result.labeled, result.pseudo
    box = view.plan.mixes[0].box
    ignore = trainer.run.data.ignore_index
    gt = labeled.mask[0].expand_as(box)
    assert torch.equal(view.image, torch.where(box.unsqueeze(1), labeled.image[:1].expand_as(view.image),
                                               result.unlabeled.image))
    assert torch.equal(view.pseudo.labels, torch.where(box, gt.masked_fill(gt == ignore, 0), weak.labels))
    assert torch.equal(view.pseudo.valid, torch.where(box, gt != ignore, weak.valid))
    assert torch.equal(view.pseudo.conf, torch.where(box, torch.ones_like(weak.conf), weak.conf))
    assert torch.equal(view.pseudo.ignored, box & (gt == ignore)), "ignored ground truth is never trained"
    soft = view.pseudo.probs.argmax(1)
    assert torch.equal(soft[box & (gt != ignore)], gt[box & (gt != ignore)]), "the mixed soft targets are one-hot"


# -- refinements -------------------------------------------------------------------------------

def test_refinements_receive_the_decided_views_and_plans_and_replace_them(tiny):
    compose.ViewsSeen.SEEN.clear()
    _, result = prepared_and_losses(tiny({"plugins": {"fixmatch": {}, "r": use("ViewsSeen")}}))
    seen = compose.ViewsSeen.SEEN
    assert [v.name for v in seen["views"]] == ["strong"] and seen["labeled"] == 2
    assert seen["plans"]["strong"].photometric is not None, "fixmatch's plan reaches the refinement"
    assert list(result.views) == ["strong", "extra"]
    strong = result.views["strong"]
    assert torch.equal(strong.plan.mixes[0].box, seen["plans"]["strong"].mixes[0].box)
    assert strong.plan.photometric is not seen["plans"]["strong"].photometric


def test_a_refinement_without_a_planner_refines_the_empty_plan(tiny):
    compose.ViewsSeen.SEEN.clear()
    _, result = prepared_and_losses(tiny({"plugins": {"r": use("ViewsSeen")}}))
    assert compose.ViewsSeen.SEEN["views"] == [] and list(result.views) == ["extra"]
    assert compose.ViewsSeen.SEEN["plans"]["extra"] is None


def test_two_refiners_of_one_decision_are_refused_naming_both(tiny):
    with pytest.raises(PluginError, match=r"plugins 'a' and 'b' both answer the decision hook 'refine_views', "
                                          r"which takes one answer: remove one of them"):
        check_recipe(tiny({"plugins": {"fixmatch": {}, "a": use("ViewsSeen"), "b": use("RefineViewsToo")}}))


def test_a_second_view_planner_is_refused_with_the_refinement_hint(tiny):
    with pytest.raises(PluginError, match=r"'cutmix_seg' and 'fixmatch' both answer the decision hook 'plan_views'.*"
                                          r"implements refine_views"):
        check_recipe(tiny({"plugins": {"fixmatch": {}, "cutmix_seg": {}}}))


# -- relabel -----------------------------------------------------------------------------------

def test_relabel_replaces_the_views_pseudo_labels_before_the_losses(tiny):
    _, result = prepared_and_losses(tiny({"plugins": {"fixmatch": {}, "z": use("ZeroLabels")}}))
    strong = result.views["strong"]
    assert not strong.pseudo.labels.any()
    logits = result.outputs.views["strong"]
    ce = F.cross_entropy(logits, torch.zeros_like(strong.pseudo.labels), reduction="none")
    valid = strong.pseudo.valid.float()
    torch.testing.assert_close(result.terms["loss_u/strong"], (ce * valid).sum() / valid.sum())


def test_a_relabel_answer_for_an_unknown_view_is_refused_naming_the_views(tiny):
    trainer = Trainer(build_run(tiny({"plugins": {"fixmatch": {}, "w": use("WrongRelabel")}})))
    with pytest.raises(PluginError, match=r"'w' gave a wrong answer in hook 'relabel': 'nope' is not an unlabeled "
                                          r"view of this step; views: \['strong'\]"):
        trainer.step(*next(trainer.batches()), until="relabel")


# -- weights and the supervised loss reach plugins' own losses -------------------------------------

def test_weight_loss_reaches_a_loss_a_strategy_computes_itself(tiny):
    """CutMix-Seg's L_cons multiplies the weight_loss product: τ = 1 zeroes it, τ = 0 leaves it."""
    base = {"mean_teacher": {}, "cutmix_seg": {"threshold": 0.0}}
    terms = {}
    for tau in (None, 0.0, 1.0):
        plugins = base if tau is None else {**base, "confidence_threshold": {"threshold": tau}}
        torch.manual_seed(0)
        _, result = prepared_and_losses(tiny({"plugins": plugins}))
        terms[tau] = float(result.terms["cutmix_seg/cons"].detach())
        assert result.views["mix"].weight.shape == result.views["mix"].pseudo.labels.shape
    assert terms[None] == terms[0.0] and terms[None] > 0 and terms[1.0] == 0


def test_the_supervised_loss_decision_reaches_a_second_network(tiny):
    """CPS's f2 supervised term goes through ctx.supervised_loss, so OHEM changes it."""
    sup_f2 = {}
    for extra in ({}, {"ohem": {"min_kept": 50, "thresh": 0.0}}):
        torch.manual_seed(0)
        _, result = prepared_and_losses(tiny({"plugins": {"cps": {}, **extra}}))
        sup_f2[bool(extra)] = float(result.terms["cps/sup_f2"].detach())
    assert sup_f2[True] != sup_f2[False]


# -- compose or refuse: explain and train give one verdict ----------------------------------------

REFUSALS = [
    ({"supervised": {}, "confidence_threshold": {}}, {"data": {"batch_unlabeled": 0}},
     "plugins.confidence_threshold: answers weight_loss, which this recipe never calls: the recipe has no "
     "unlabeled batch (data.batch_unlabeled: 0). Remove confidence_threshold, or set data.batch_unlabeled"),
    ({"cps": {}, "confidence_threshold": {}}, {},
     "plugins.confidence_threshold: answers weight_loss, which this recipe never calls: the pseudo-label source "
     "is 'none' (no pseudo-labels are made), decided by cps. Remove confidence_threshold, or remove cps"),
    ({"cps": {}, "mean_teacher": {}}, {},
     "plugins.mean_teacher: answers build_teacher, which this recipe never calls: the pseudo-label source is "
     "'none'"),
    ({"mean_teacher": {}, "mse_consistency": {}, "confidence_threshold": {}}, {},
     "plugins.confidence_threshold: answers weight_loss, which this recipe never calls: no plugin of the recipe "
     "plans views (plan_views or refine_views). Remove confidence_threshold, or add a strategy that plans views"),
    ({"mean_teacher": {}, "fixmatch": {}, "imas_hardness": {}}, {},
     "plugins.imas_hardness: answers estimate_hardness, but no plugin of the recipe reads 'hardness'"),
    ({"cps": {}, "mse_consistency": {}}, {},
     "plugins.mse_consistency: J needs the teacher's predictions, and the recipe's pseudo-label source is 'none': "
     "remove mse_consistency or the plugin that decides the source (the pseudo-label source 'none' is decided by "
     "cps's pseudo_label_source)"),
    ({"fixmatch": {}, "ohem": {}}, {},
     "plugins.ohem.min_kept: 100000 is at least the 2048 pixels of a labeled batch (data.batch_labeled 2 × "
     "data.crop 32²), so OHEM would keep every pixel: plain cross-entropy. Set plugins.ohem.min_kept below it, "
     "e.g. 319"),
]


@pytest.mark.parametrize("plugins, patch, message", REFUSALS, ids=[m.split(":")[0] + "|" + ",".join(p)
                                                                    for p, _, m in REFUSALS])
def test_a_plugin_that_would_change_nothing_is_refused_by_check_explain_and_train(tiny, tmp_path, capsys,
                                                                                   plugins, patch, message):
    recipe = tiny({**patch, "plugins": plugins})
    with pytest.raises(UserError, match=re.escape(message)):
        check_recipe(recipe)
    path = tmp_path / "r.yaml"
    path.write_text(recipe_yaml(recipe))
    for command in (["explain", str(path)], ["train", str(path), "--out", str(tmp_path / "run")]):
        assert main(command) == 2
        assert message in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "run" / "last.pt").exists()


def recipe_yaml(recipe) -> str:
    from ssseg.recipe.load import dump_recipe
    return dump_recipe(recipe)


# -- what a version-5 plugin is told -------------------------------------------------------------

def test_a_v5_plugin_building_the_removed_cutmix_fields_is_refused_at_build_naming_the_replacement(tiny):
    with pytest.raises(PluginError, match=r"hook 'schedule_augmentation' reads AugmentationPlan.cutmix_box, which "
                                          r"hook spec version 6 removed: a plan's CutMixes are "
                                          r"AugmentationPlan\(mixes=\(CutMix\(box, partner\),\)\)"):
        check_recipe(tiny({"plugins": {"old": use("OldCutMixPlan")}}))


def test_a_v5_plugin_building_them_in_a_helper_is_told_at_the_first_step(tiny):
    trainer = Trainer(build_run(tiny({"plugins": {"old": use("OldCutMixHelper")}})))
    with pytest.raises(PluginError, match=r"AugmentationPlan.cutmix_box was removed in hook spec version 6"):
        trainer.step(*next(trainer.batches()), until="prepare")


@pytest.mark.parametrize("partner", [[0, 4], [-1, 0]])
def test_a_cutmix_partner_outside_its_donor_batch_is_refused_naming_the_range(partner):
    from ssseg import answers
    from ssseg.api import AugmentationPlan, CutMix, LabeledBatch, UnlabeledBatch, View
    unlabeled = UnlabeledBatch(image=torch.zeros(2, 3, 4, 4), valid=torch.ones(2, 4, 4, dtype=torch.bool))
    labeled = LabeledBatch(image=torch.zeros(4, 3, 4, 4), mask=torch.zeros(4, 4, 4, dtype=torch.long))
    kwargs = {"view": View("s"), "labeled": labeled, "unlabeled": unlabeled}
    box = torch.ones(2, 4, 4, dtype=torch.bool)
    plan = AugmentationPlan(mixes=(CutMix(box, torch.tensor(partner)),))
    assert answers.plan(plan, kwargs) == f"mixes[0]: partner indexes a donor batch of 2 images, got {partner}"
    # the labeled batch has 4 images: 0..3 are in range there
    labeled_plan = AugmentationPlan(mixes=(CutMix(box, torch.tensor([0, 3]), donor="labeled"),))
    assert answers.plan(labeled_plan, kwargs) is None
