"""Hook spec v3: contributed modules, features on request, what the loss hooks see, checked
answers, the pseudo-label source, and the forward batch."""

from __future__ import annotations

import attrs
import pytest
import torch

from support import recorder
from ssseg.engine.checkpoint import load_weights, state_of
from ssseg.engine.forward import LABELED, WEAK, ForwardBatch
from ssseg.engine.run import build_run
from ssseg.engine.trainer import Trainer
from ssseg.plugin_manager import PluginError

PROBE = {"mean_teacher": {}, "confidence_threshold": {"threshold": 0.0}, "probe": {"use": "support.recorder:Probe"}}


@pytest.fixture(autouse=True)
def _clear():
    recorder.Probe.SEEN.clear()


def test_contributed_module_is_trained_checkpointed_and_loaded(tiny, tmp_path):
    trainer = Trainer(build_run(tiny({"optim": {"iters": 2}, "plugins": PROBE})))
    run = trainer.run
    head = run.modules["probe_head"]
    assert {id(p) for p in head.parameters()} <= {id(p) for g in run.optimizer.param_groups for p in g["params"]}
    before = head.weight.detach().clone()
    trainer.train()
    assert recorder.Probe.SEEN["head_grad"] and not torch.equal(before, head.weight)
    torch.save(state_of(trainer.run, trainer.plugins.plugins), tmp_path / "c.pt")
    other = build_run(tiny({"optim": {"iters": 2}, "plugins": PROBE})).run
    load_weights(other, tmp_path / "c.pt")
    assert torch.equal(other.modules["probe_head"].weight, head.weight)


def test_features_views_and_labeled_batch_reach_the_loss_hooks(tiny):
    trainer = Trainer(build_run(tiny({"optim": {"iters": 1}, "plugins": PROBE})))
    trainer.train()
    seen = recorder.Probe.SEEN
    assert seen["weighted"] == ["plain", "zero"]                 # coefficient 0 included
    assert set(seen["features"]) == {"labeled", "plain", "zero"}
    assert seen["features"]["labeled"][0] == 2 and seen["features"]["plain"][0] == 2
    assert seen["teacher_features"] >= 2 and seen["labeled"] == (2, 32, 32)
    assert seen["view_images"] == {"plain": True, "zero": True}


def test_no_features_are_computed_when_none_are_requested(tiny):
    trainer = Trainer(build_run(tiny({"plugins": {"fixmatch": {}}})))
    result = trainer.step(*next(trainer.batches()), until="forward")
    outputs = result.outputs
    assert outputs.features == {} and outputs.weak is None and result.pseudo.features is None


def test_lambda_u_scales_opted_in_terms(tiny):
    for weight in (1.0, 3.0):
        trainer = Trainer(build_run(tiny({"unsup": {"weight": weight}, "plugins": PROBE})))
        result = trainer.step(*next(trainer.batches()), until="losses")
        total, terms, lambda_u = result.total, result.terms, result.lambda_u
        expected = terms["loss_x"] + lambda_u * (terms["loss_u/plain"] + terms["probe/head"])
        assert lambda_u == weight and torch.allclose(total, expected)


@pytest.mark.parametrize("answer, message", [
    ("weight_shape", r"plugin 'probe' gave a wrong answer in hook 'weight_loss': expected a tensor of shape "
                     r"\[2\] or \[2, 32, 32\], got a tensor of shape \[2, 1, 32, 32\]"),
    ("float_term", r"plugin 'probe' gave a wrong answer in hook 'extra_losses': term 'probe': expected a "
                   r"scalar floating-point tensor, got float 1.0"),
])
def test_a_wrong_answer_names_plugin_hook_and_what_it_gave(tiny, answer, message):
    plugins = {**PROBE, "probe": {"use": "support.recorder:Probe", "answer": answer}}
    trainer = Trainer(build_run(tiny({"plugins": plugins})))
    with pytest.raises(PluginError, match=message):
        trainer.step(*next(trainer.batches()))


def test_a_plan_views_answer_that_is_no_list_of_views_is_refused(tiny):
    from ssseg.api import Plugin, hookimpl

    class Strings(Plugin):
        name = "strings"

        @attrs.frozen
        class Config:
            pass

        @hookimpl
        def plan_views(self, ctx, hardness):
            return "strong"

    from ssseg.testing import SUBJECTS
    SUBJECTS.strings = Strings
    trainer = Trainer(build_run(tiny({"plugins": {"strings": {"use": "ssseg.testing:SUBJECTS.strings"}}})))
    with pytest.raises(PluginError, match=r"'strings' gave a wrong answer in hook 'plan_views': expected a "
                                          r"list of View, got str 'strong'"):
        trainer.step(*next(trainer.batches()), until="prepare")


def test_a_v2_plugin_reading_a_removed_field_is_refused_at_build_time(tiny):
    with pytest.raises(PluginError, match=r"reads StepContext.progress, which hook spec version 3 removed: "
                                          r"use ctx.iteration / ctx.max_iters"):
        build_run(tiny({"plugins": {"old": {"use": "support.recorder:OldExtraLosses"}, "fixmatch": {}}}))


def test_student_train_source_labels_own_pixels_in_train_mode_and_partners_in_eval_mode(tiny):
    recipe = tiny({"plugins": {"fixmatch": {"pseudo_labels": "student_train", "p_cutmix": 1.0}}})
    trainer = Trainer(build_run(recipe))
    labeled, unlabeled = next(trainer.batches())
    prepared = trainer.step(labeled, unlabeled, until="prepare")
    assert [name for name, _ in prepared.batch.parts] == [LABELED, WEAK, "strong"]
    relabelled = trainer.step(labeled, unlabeled, until="relabel")
    weak_logits = relabelled.outputs.weak
    view = relabelled.views["strong"]
    box, partner = view.plan.mixes[0].box, view.plan.mixes[0].partner
    own = weak_logits.argmax(1)
    eval_labels = prepared.pseudo.labels  # the eval-mode forward before the student's
    assert torch.equal(view.pseudo.labels, torch.where(box, eval_labels[partner], own))
    assert torch.equal(relabelled.pseudo.labels, own)


def test_forward_batch_splits_rows_back_by_part():
    images = {n: torch.full((k, 3, 2, 2), float(i)) for i, (n, k) in enumerate([(LABELED, 2), (WEAK, 3), ("s", 3)])}
    batch = ForwardBatch(tuple(images.items()), perturbed=(("fp", 0.5),))
    assert batch.perturbation() == (2, 5, (0.5,))
    output = torch.cat([batch.images(), images[WEAK]])
    rows = batch.split(output)
    assert {k: tuple(v.shape) for k, v in rows.items()} == {LABELED: (2, 3, 2, 2), WEAK: (3, 3, 2, 2),
                                                            "s": (3, 3, 2, 2), "fp": (3, 3, 2, 2)}
    assert all(torch.equal(rows[k], images[k]) for k in images)


def test_gradient_clipping_covers_the_contributed_modules(tiny):
    trainer = Trainer(build_run(tiny({"optim": {"clip_grad": 1e-6}, "plugins": PROBE})))
    run = trainer.run
    trainer.step(*next(trainer.batches()))
    grads = [p.grad for p in trainer.runner.trainable_parameters() if p.grad is not None]
    assert any(p.grad is not None for p in run.modules["probe_head"].parameters())
    assert float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))) <= 1.01e-6
