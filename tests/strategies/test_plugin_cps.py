"""cps: the contract, the loss of both variants against a hand computation, f2 as a trained,
checkpointed and restored module, the CutMix boxes and partners, and two-process DDP."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch

from support.recipes import answer
from hypothesis import given, settings
from hypothesis import strategies as st

from ssseg.testing import tiny_recipe
from support.resume import assert_resume_is_exact
from ssseg.api import UnlabeledBatch, UserError, View
from ssseg.engine import checkpoint
from ssseg.engine.run import build_run
from ssseg.engine.trainer import Trainer
from ssseg.engine.views import Donors, view_image
from ssseg.models import build_model
from ssseg.errors import PluginError
from ssseg.plugin_manager import check_recipe, instantiate
from ssseg_plugins.cps import F2, CPS, cps_box_fractions, cps_boxes, random_cycle, released_head_init

pytest_plugins = ["ssseg.testing"]

LAMBDA = 1.5


def cps_recipe(patch=None, **config):
    """The tiny recipe with ``cps: config`` and λ = 1.5, ``patch`` merged over it."""
    return tiny_recipe({"unsup": {"weight": LAMBDA}, "plugins": {"cps": config}, **(patch or {})})


# -- 1. the contract ---------------------------------------------------------------------------

@pytest.mark.parametrize("config", [{}, {"cutmix": True}, {"head_init": "released"}],
                         ids=["plain", "cutmix", "released_head_init"])
def test_keeps_the_plugin_contract(plugin_contract, config):
    # compose_with={}: CPS plans its own views and needs no teacher (pseudo-label source "none"),
    # so every rule applies; "order" has no companion to reorder and passes trivially (see below).
    # The kit's "resume" rule compares the student and the teacher, not run.modules: f2's resume
    # is checked by test_resume_equals_a_straight_run_for_both_networks.
    plugin_contract(CPS, config=config, compose_with={})


def test_keeps_the_contract_composed_with_a_supervised_loss(plugin_contract):
    """With ohem (the Cityscapes setting) the "order" rule has a companion to reorder."""
    plugin_contract(CPS, config={"cutmix": True}, compose_with={"ohem": {"min_kept": 100}},
                    rules=("composes", "order"))


def test_config_defaults_and_errors():
    config = instantiate("cps", {}).config
    assert (config.cutmix, config.f2_seed, config.released_pairing, config.evaluate_f2, config.head_init) == \
        (False, None, False, False, "smp")
    with pytest.raises(UserError, match=r"plugins\.cps\.bogus"):
        instantiate("cps", {"bogus": 1})
    with pytest.raises(UserError, match="supervised_weight: 1"):
        build_run(cps_recipe({"unsup": {"weight": 1.0, "supervised_weight": 0.5}}))


# -- 2. the loss, by hand --------------------------------------------------------------------

def core_losses(recipe):
    """One step's (run, step result up to the losses, total, terms, λ) through the step runner."""
    trainer = Trainer(build_run(recipe))
    result = trainer.step(*next(trainer.batches()), until="losses")
    return trainer.run, result, result.total, result.terms, result.lambda_u


def ce(logits, target, ignore_index=255):
    """Mean over non-ignored pixels of −log softmax(logits)[target], written out."""
    keep = target != ignore_index
    nll = -logits.log_softmax(1).gather(1, target.masked_fill(~keep, 0).unsqueeze(1)).squeeze(1)
    return (nll * keep).sum() / keep.sum()


def test_plain_loss_is_cross_supervision_over_labeled_and_unlabeled_images():
    run, prepared, total, terms, lambda_u = core_losses(cps_recipe())
    assert list(prepared.views) == ["u"] and prepared.pseudo is None
    assert prepared.views["u"].plan is None and prepared.views["u"].view.coef == 0
    x, y, u = prepared.labeled.image, prepared.labeled.mask, prepared.unlabeled.image
    bl = x.shape[0]
    with torch.no_grad():  # train mode: batch statistics, as in the training forward
        z1 = run.student(torch.cat([x, u]))        # cat(a1, b1)
        z2 = run.modules[F2](torch.cat([x, u]))    # cat(a2, b2)
    y1, y2 = z1.argmax(1), z2.argmax(1)
    l_cps = ce(z1, y2) + ce(z2, y1)
    sup_f1, sup_f2 = ce(z1[:bl], y), ce(z2[:bl], y)
    assert lambda_u == LAMBDA
    assert float(terms["loss_x"].detach()) == pytest.approx(float(sup_f1), rel=1e-5)
    assert float(terms["cps/sup_f2"].detach()) == pytest.approx(float(sup_f2), rel=1e-5)
    assert float(terms["cps/cps"].detach()) == pytest.approx(float(l_cps), rel=1e-5)
    assert float(total.detach()) == pytest.approx(float(sup_f1 + sup_f2 + LAMBDA * l_cps), rel=1e-5)


def test_cutmix_loss_uses_mixed_train_mode_targets_on_the_mixed_images_only():
    run, prepared, total, terms, _ = core_losses(cps_recipe(cutmix=True))
    view = prepared.views["mix"]
    x, y, u = prepared.labeled.image, prepared.labeled.mask, prepared.unlabeled.image
    box, partner = view.plan.mixes[0].box, view.plan.mixes[0].partner
    assert view.view.coef == 0 and box.any() and (partner != torch.arange(len(partner))).all()
    u_mix = torch.where(box.unsqueeze(1), u[partner], u)
    assert torch.equal(view.image, u_mix)
    bl = x.shape[0]
    with torch.no_grad():
        p1, p2 = run.student(u).argmax(1), run.modules[F2](u).argmax(1)  # train mode, no gradient
        y1, y2 = torch.where(box, p1[partner], p1), torch.where(box, p2[partner], p2)
        z1 = run.student(torch.cat([x, u_mix]))
        z2 = run.modules[F2](torch.cat([x, u_mix]))
    l_cps = ce(z1[bl:], y2) + ce(z2[bl:], y1)  # no CPS term on the labeled rows
    sup_f1, sup_f2 = ce(z1[:bl], y), ce(z2[:bl], y)
    assert float(terms["cps/cps"].detach()) == pytest.approx(float(l_cps), rel=1e-5)
    assert float(total.detach()) == pytest.approx(float(sup_f1 + sup_f2 + LAMBDA * l_cps), rel=1e-5)


@pytest.mark.parametrize("cutmix", [False, True])
def test_without_unlabeled_data_it_is_refused_before_training(cutmix):
    """Its unlabeled view is never planned without an unlabeled batch: refused, saying what to set."""
    with pytest.raises(PluginError, match=r"plugins.cps: answers plan_views, which this recipe never calls: the "
                                          r"recipe has no unlabeled batch .* set data.batch_unlabeled"):
        check_recipe(cps_recipe({"data": {"batch_unlabeled": 0}}, cutmix=cutmix))


# -- 3. f2: trained, checkpointed, restored ------------------------------------------------------

def state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]


def new_model(run, seed):
    """The recipe's model initialised from ``seed`` (as build_modules' ``build.new_model``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(run.recipe.model, run.data.num_classes)


def test_f2_is_its_own_network_in_the_optimiser_and_learns():
    built = build_run(cps_recipe())
    run = built.run
    f2 = run.modules[F2]
    assert_same_state(state(f2), state(new_model(run, run.recipe.seed + 1)))  # the default f2_seed
    f1_head = dict(run.student.named_parameters())["net.segmentation_head.0.weight"]
    assert not torch.equal(f1_head, dict(f2.named_parameters())["net.segmentation_head.0.weight"])
    optimised = {id(p) for g in run.optimizer.param_groups for p in g["params"]}
    assert {id(p) for p in f2.parameters()} <= optimised
    trainer, before = Trainer(built), state(f2)
    logs = trainer.step(*next(trainer.batches())).logs
    assert math.isfinite(logs["cps/cps"]) and math.isfinite(logs["cps/sup_f2"])
    assert all(p.grad is not None for p in f2.parameters())
    assert any(bool(p.grad.abs().sum() > 0) for p in f2.parameters())
    changed = [k for k, v in state(f2).items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert "net.segmentation_head.0.weight" in changed and "net.encoder.conv1.weight" in changed


def test_f2_seed_sets_its_initialisation():
    run = build_run(cps_recipe(f2_seed=7)).run
    assert_same_state(state(run.modules[F2]), state(new_model(run, 7)))


def head_modules(model):
    """The modules of an ssseg model outside its encoder."""
    encoder = {id(m) for m in model.net.encoder.modules()}
    return [m for m in model.modules() if id(m) not in encoder]


def test_released_head_init_redraws_both_heads_he_normal_and_keeps_the_encoders():
    """TorchSemiSeg: He-normal (fan in, gain √2) convolutions outside the backbone, PyTorch's
    default bias, BatchNorm 1 / 0; f1 from the recipe's seed, f2 from f2_seed."""
    smp_init, released = build_run(cps_recipe()).run, build_run(cps_recipe(head_init="released")).run
    for a, b in ((smp_init.student, released.student), (smp_init.modules[F2], released.modules[F2])):
        assert_same_state(state(a.net.encoder), state(b.net.encoder))
        convs = [m for m in head_modules(b) if isinstance(m, torch.nn.Conv2d)]
        assert convs and all(not torch.equal(m.weight, n.weight) for m, n in zip(
            [m for m in head_modules(a) if isinstance(m, torch.nn.Conv2d)], convs))
        scaled = torch.cat([(m.weight.detach() / (2 / m.weight[0].numel()) ** 0.5).flatten() for m in convs])
        assert abs(float(scaled.std()) - 1) < 0.03 and abs(float(scaled.mean())) < 0.03, "N(0, 2/fan_in)"
        biases = [(m.bias, m.weight[0].numel() ** -0.5) for m in convs if m.bias is not None]
        assert biases and all(bool((b.abs() <= bound).all()) and bool(b.abs().sum() > 0) for b, bound in biases)
        norms = [m for m in head_modules(b) if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        assert norms and all(bool((m.weight == 1).all() and (m.bias == 0).all()) for m in norms)
    f1 = smp_init.student
    released_head_init(f1, torch.Generator().manual_seed(smp_init.recipe.seed))
    assert_same_state(state(f1), state(released.student))
    f1_head = dict(released.student.named_parameters())["net.segmentation_head.0.weight"]
    assert not torch.equal(f1_head, dict(released.modules[F2].named_parameters())["net.segmentation_head.0.weight"])


def test_resume_equals_a_straight_run_for_both_networks(tmp_path):
    """3 iterations straight == 2, checkpoint, resume, 1 (CutMix: the box draws resume too); the
    checkpoint holds f2, and load_weights (ssseg eval) restores it; evaluate_f2 evaluates it."""
    recipe = cps_recipe({"optim": {"iters": 3}, "eval": {"every": 1000, "max_images": 2}},
                        cutmix=True, evaluate_f2=True)
    full, _ = assert_resume_is_exact(recipe, tmp_path)
    assert {"f2/miou", "student/miou"} <= set(full.run.state.last_eval)
    fresh = build_run(recipe).run
    assert checkpoint.load_weights(fresh, tmp_path / "full" / "last.pt") == 3
    assert_same_state(state(fresh.modules[F2]), state(full.run.modules[F2]))
    assert_same_state(state(fresh.student), state(full.run.student))


def test_only_the_student_is_evaluated_by_default():
    run = build_run(cps_recipe()).run
    assert instantiate("cps", {}).eval_models(run=run) is None
    assert instantiate("cps", {"evaluate_f2": True}).eval_models(run=run) == {"f2": run.modules[F2]}


# -- 4. CutMix boxes and partners ------------------------------------------------------------

def toggled_boxes(b, size, seed):
    """The released construction, written with slices: start at 0, each box toggles its region."""
    sides, corner, _ = cps_box_fractions(b, torch.Generator().manual_seed(seed))
    extent = torch.tensor(size, dtype=torch.float64)
    pixels = torch.round(sides * extent)
    top_left = torch.round((extent - pixels) * corner)
    mask = torch.zeros(b, *size, dtype=torch.bool)
    for i in range(b):
        for (y0, x0), (h, w) in zip(top_left[i].long().tolist(), pixels[i].long().tolist()):
            assert 0 <= y0 and y0 + h <= size[0] and 0 <= x0 and x0 + w <= size[1], "inside the crop"
            mask[i, y0:y0 + h, x0:x0 + w] ^= True
    return mask, sides, pixels


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 6), h=st.integers(4, 160), w=st.integers(4, 160), seed=st.integers(0, 2**31))
def test_boxes_are_three_toggled_boxes_of_a_third_of_the_area_inside_the_crop(b, h, w, seed):
    mask = cps_boxes(b, (h, w), torch.Generator().manual_seed(seed))
    expected, sides, pixels = toggled_boxes(b, (h, w), seed)
    assert mask.shape == (b, h, w) and mask.dtype == torch.bool
    assert torch.equal(mask, expected)
    _, _, area = cps_box_fractions(b, torch.Generator().manual_seed(seed))
    assert sides.shape == (b, 3, 2) and bool(((area >= 0.25) & (area <= 0.5)).all())
    assert torch.allclose(sides.prod(-1), area / 3)  # each box covers a/3 of the crop
    assert bool((sides <= (1 / 3) ** 0.5 + 1e-12).all())  # h = a^v·√(1/3) ≤ √(1/3)
    assert bool(((pixels - sides * torch.tensor([h, w])).abs() <= 0.5).all())  # rounded sides
    assert torch.equal(mask, cps_boxes(b, (h, w), torch.Generator().manual_seed(seed)))  # deterministic


def test_box_area_on_a_large_crop_lies_between_a_twelfth_and_a_sixth_per_box():
    _, _, pixels = toggled_boxes(256, (512, 512), seed=0)
    fraction = pixels.prod(-1) / 512**2
    assert float(fraction.min()) >= 1 / 12 - 0.005 and float(fraction.max()) <= 1 / 6 + 0.005
    assert float(fraction.max() - fraction.min()) > 0.06  # the range is used, not one size
    assert not torch.equal(cps_boxes(4, (64, 64), torch.Generator().manual_seed(0)),
                           cps_boxes(4, (64, 64), torch.Generator().manual_seed(1)))


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 12), seed=st.integers(0, 2**31))
def test_partner_is_a_permutation_without_fixed_points(b, seed):
    partner = random_cycle(b, torch.Generator().manual_seed(seed))
    assert sorted(partner.tolist()) == list(range(b))
    assert b == 1 or bool((partner != torch.arange(b)).all())
    seen, i = set(), 0  # one cycle: following the partners visits every image
    while i not in seen:
        seen.add(i)
        i = int(partner[i])
    assert len(seen) == b


@pytest.mark.parametrize("config, identity", [({"cutmix": True}, False),
                                              ({"cutmix": True, "released_pairing": True}, True)])
def test_plan_draws_boxes_and_partners_per_step(config, identity):
    plugin = instantiate("cps", config)
    batch = UnlabeledBatch(image=torch.rand(4, 3, 24, 20), valid=torch.ones(4, 24, 20, dtype=torch.bool))
    ctx = SimpleNamespace(generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    view = answer(plugin, "plan_views", ctx=ctx, hardness=None)[0]
    assert view == View("mix", coef=0.0)
    first, second = (answer(plugin, "schedule_augmentation", ctx=ctx, view=view, unlabeled=batch) for _ in range(2))
    assert first.mixes[0].box.shape == (4, 24, 20) and first.photometric is None and first.blend is None
    assert not torch.equal(first.mixes[0].box, second.mixes[0].box)
    assert torch.equal(first.mixes[0].partner, torch.arange(4)) == identity
    plain = instantiate("cps", {})
    assert answer(plain, "plan_views", ctx=ctx, hardness=None) == [View("u", coef=0.0)]
    assert answer(plain, "schedule_augmentation", ctx=ctx, view=View("u", 0.0), unlabeled=batch) is None


def test_released_pairing_pastes_another_view_of_the_same_image_with_its_own_targets():
    plugin = instantiate("cps", {"cutmix": True, "released_pairing": True})
    assert plugin.request_features().second_view
    g = torch.Generator().manual_seed(0)
    valid = torch.ones(3, 16, 16, dtype=torch.bool)
    second = UnlabeledBatch(image=torch.rand(3, 3, 16, 16, generator=g), valid=valid)
    batch = UnlabeledBatch(image=torch.rand(3, 3, 16, 16, generator=g), valid=valid, second=second)
    f1, f2 = torch.nn.Conv2d(3, 5, 1), torch.nn.Conv2d(3, 5, 1)
    ctx = SimpleNamespace(generator=g, device=torch.device("cpu"), student=f1, modules={F2: f2})
    plan = answer(plugin, "schedule_augmentation", ctx=ctx, view=View("mix", 0.0), unlabeled=batch)
    assert plan.mixes[0].donor == "second" and plan.mixes[0].partner.tolist() == [0, 1, 2]
    image = view_image(plan, batch.image, Donors(second_image=second.image))
    box = plan.mixes[0].box.unsqueeze(1).expand_as(image)
    assert torch.equal(image[box], second.image[box]) and torch.equal(image[~box], batch.image[~box])
    y1, y2 = plugin.mixed_targets(ctx, batch, plan)
    for y, f in ((y1, f1), (y2, f2)):
        with torch.no_grad():
            assert torch.equal(y, torch.where(plan.mixes[0].box, f(second.image).argmax(1), f(batch.image).argmax(1)))


# -- 5. two processes -------------------------------------------------------------------------

DDP_SCRIPT = """
import sys
import torch
from ssseg.engine.distributed import init_from_env
from ssseg.engine.run import build_run
from ssseg.engine.trainer import Trainer
from ssseg.testing import tiny_recipe

init_from_env()
torch.set_num_threads(1)
for cutmix in (False, True):
    trainer, losses = Trainer(build_run(tiny_recipe({"optim": {"iters": 3}, "eval": {"max_images": 2},
                                 "plugins": {"cps": {"cutmix": cutmix, "evaluate_f2": True}}}))), []
    run = trainer.run
    for (labeled, unlabeled), _ in zip(trainer.batches(), range(3)):
        losses.append(trainer.step(labeled, unlabeled).logs["cps/sup_f2"])
    trainer.evaluate()  # broadcasts rank 0's BatchNorm statistics of the evaluated f1 and f2
    torch.save({"losses": losses, "student": run.student.state_dict(), "f2": run.modules["cps_f2"].state_dict()},
               f"{sys.argv[1]}/{'cutmix' if cutmix else 'plain'}-{run.rank}.pt")
"""


def run_two_ranks(args, timeout=240):
    """Start two processes with torchrun's environment (rank, world size, rendezvous address),
    without the launcher (it would add a third torch import); stop both if either fails."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}
    procs = [subprocess.Popen([sys.executable, *args], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            if any(p.poll() not in (None, 0) for p in procs):
                break  # one failed: the other would wait in a collective forever
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return [(p.wait(), p.stderr.read()) for p in procs]


@pytest.mark.slow
def test_two_process_gloo_training_keeps_both_networks_identical_on_every_rank(tmp_path):
    script = tmp_path / "train_cps.py"
    script.write_text(DDP_SCRIPT)
    for rank, (code, stderr) in enumerate(run_two_ranks([str(script), str(tmp_path)])):
        assert code == 0, f"rank {rank} exited with {code}: {stderr[-3000:]}"
    for variant in ("plain", "cutmix"):
        rank0, rank1 = (torch.load(tmp_path / f"{variant}-{r}.pt", weights_only=False) for r in (0, 1))
        assert rank0["losses"] != rank1["losses"], "the ranks trained on different batches"
        for network in ("student", "f2"):  # parameters by DDP's averaged gradients; buffers by eval
            assert_same_state(rank0[network], rank1[network])
