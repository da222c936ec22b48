"""The released DeepLabV3+ of iMAS/UniMatch (arch DeepLabV3PlusReleased): structure, geometry,
the SegModel interface, the official checkpoint's key names, recipe errors, a training step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from support.recipes import tiny_recipe_dict
from torch import nn

from ssseg.engine.run import build_run
from ssseg.engine.trainer import Trainer
from ssseg.errors import UserError
from ssseg.models import build_model
from ssseg.recipe.load import build_recipe
from ssseg.recipe.schema import ModelConfig
from ssseg.released_deeplab import UNITS, DeepStemResNet, load_official_weights, stage_plan

ARCH = "DeepLabV3PlusReleased"
R50 = (3, 4, 6, 3)


@pytest.fixture(scope="module")
def model():
    """ResNet-50, output stride 16, no multi-grid (UniMatch's VOC and Cityscapes setting)."""
    return build_model(ModelConfig(arch=ARCH, encoder="resnet50"), 5).eval()


def official_state(units=R50) -> dict[str, torch.Tensor]:
    """Zero tensors under the key names and shapes of the official deep-stem ResNet ImageNet
    checkpoints (written from their layout: conv1.{0,3,6} stem convs with BatchNorms conv1.{1,4}
    and bn1, bottleneck units layerN.U, a projection layerN.0.downsample, the classifier fc)."""
    shapes = {"conv1.0.weight": (64, 3, 3, 3), "conv1.3.weight": (64, 64, 3, 3), "conv1.6.weight": (128, 64, 3, 3)}
    norms = {"conv1.1": 64, "conv1.4": 64, "bn1": 128}
    cin = 128
    for layer, (width, count) in enumerate(zip((64, 128, 256, 512), units), 1):
        for unit in range(count):
            unit_in, p = cin if unit == 0 else 4 * width, f"layer{layer}.{unit}"
            shapes |= {f"{p}.conv1.weight": (width, unit_in, 1, 1), f"{p}.conv2.weight": (width, width, 3, 3),
                       f"{p}.conv3.weight": (4 * width, width, 1, 1)}
            norms |= {f"{p}.bn1": width, f"{p}.bn2": width, f"{p}.bn3": 4 * width}
            if unit == 0:
                shapes[f"{p}.downsample.0.weight"] = (4 * width, unit_in, 1, 1)
                norms[f"{p}.downsample.1"] = 4 * width
        cin = 4 * width
    for name, channels in norms.items():
        shapes |= {f"{name}.{t}": (channels,) for t in ("weight", "bias", "running_mean", "running_var")}
    shapes |= {"fc.weight": (1000, 2048), "fc.bias": (1000,)}
    return {k: torch.zeros(1).expand(shape) for k, shape in shapes.items()}  # stride 0: tiny files


def test_stage_plan_follows_torchvision_dilation_and_imas_multi_grid():
    assert stage_plan(R50, 16, False) == [(1, [1, 1, 1]), (2, [1] * 4), (2, [1] * 6), (1, [1, 2, 2])]
    assert stage_plan(R50, 16, True)[3] == (1, [2, 4, 8])  # the released iMAS VOC logs
    assert stage_plan(R50, 8, False)[2:] == [(1, [1] + [2] * 5), (1, [2, 4, 4])]
    assert stage_plan(R50, 8, True)[3] == (1, [4, 8, 16])


@pytest.mark.parametrize("h, w", [(65, 65), (50, 37)])
def test_any_size_gives_logits_of_that_size_and_os16_features(model, h, w):
    out = model(torch.rand(2, 3, h, w), features=("encoder", "decoder"))
    assert out["logits"].shape == (2, 5, h, w)
    strides = [1, 4, 8, 16, 16]
    assert [f.shape[-2:] for f in out["encoder"]] == [(-(-h // s), -(-w // s)) for s in strides]
    assert out["decoder"].shape == (2, 256, -(-h // 4), -(-w // 4))


def test_nothing_is_padded_and_logits_are_the_released_resize(model):
    x = torch.rand(2, 3, 33, 41)  # 4k+1: the released crops' geometry
    assert model.stride == 1
    net = model.net
    decoded = net.decoder(net.encoder((x - model.mean) / model.std))
    released = F.interpolate(net.segmentation_head[0](decoded), size=(33, 41), mode="bilinear", align_corners=True)
    assert torch.allclose(model(x), released, atol=1e-5)


def test_decoder_fuses_with_two_dense_3x3_convolutions_and_has_no_dropout(model):
    decoder = model.net.decoder
    fuse = [m for m in decoder.fuse.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.groups) for c in fuse] == [
        (304, 256, (3, 3), 1), (256, 256, (3, 3), 1)]
    reduce = [m for m in decoder.reduce.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in reduce] == [(256, 48, (1, 1))]
    assert [b[0].dilation[0] for b in decoder.aspp.branches] == [1, 6, 12, 18]
    assert decoder.aspp.project[0].in_channels == 5 * 256
    assert not [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    assert [c.out_channels for c in model.net.encoder.conv1 if isinstance(c, nn.Conv2d)] == [64, 64, 128]


def test_perturbation_features_and_geometry_through_segmodel(model):
    x = torch.rand(2, 3, 33, 33)
    out = model(x, perturb=(0, 2, (0.5,)), features=("encoder", "decoder"))
    logits = out["logits"]
    assert logits.shape == (4, 5, 33, 33) and not torch.allclose(logits[:2], logits[2:])
    assert torch.allclose(logits[:2], model(x), atol=1e-5)
    assert [f.shape[0] for f in out["encoder"]] == [4] * 5 and out["decoder"].shape[0] == 4
    assert model.feature_geometry() == {"encoder": (3, 256, 512, 1024, 2048), "decoder": 256,
                                        "decoder_reduction": 4}


def test_param_groups_split_the_resnet_from_the_decoder_and_head(model):
    backbone, head = model.param_groups()
    assert {id(p) for p in backbone} == {id(p) for p in model.net.encoder.parameters()}
    assert {id(p) for p in head} == {id(p) for p in [*model.net.decoder.parameters(),
                                                     *model.net.segmentation_head.parameters()]}


def test_recipe_options_and_official_weights_reach_the_model(tmp_path):
    state = official_state() | {"layer4.2.conv2.weight": torch.randn(512, 512, 3, 3)}
    path = tmp_path / "resnet50.pth"
    torch.save(state, path)
    cfg = ModelConfig(arch=ARCH, encoder="resnet50", encoder_weights=str(path), aux_head=True,
                      options={"output_stride": 8, "multi_grid": True})
    model = build_model(cfg, 3).eval()
    assert torch.equal(model.net.encoder.layer4[2].conv2.weight, state["layer4.2.conv2.weight"])
    assert torch.equal(model.net.encoder.conv1[0].weight, torch.zeros(64, 3, 3, 3))
    convs = [unit.conv2 for unit in model.net.encoder.layer4]
    assert [(c.dilation[0], c.padding[0], c.stride[0]) for c in convs] == [(4, 4, 1), (8, 8, 1), (16, 16, 1)]
    assert [b[0].dilation[0] for b in model.net.decoder.aspp.branches] == [1, 12, 24, 36]
    x = torch.rand(2, 3, 33, 33)
    out = model(x, aux_rows=1, features=("encoder",))
    assert [f.shape[-1] for f in out["encoder"]] == [33, 9, 5, 5, 5]
    assert out["aux"].shape == (1, 3, 33, 33)
    assert torch.allclose(model.use_channels_last()(x), out["logits"], atol=1e-4)


@pytest.mark.parametrize("name", ["resnet50", "resnet101"])
def test_encoder_keys_and_shapes_are_the_official_checkpoints(name):
    with torch.device("meta"):
        own = DeepStemResNet(name, 16, False).state_dict()
    official = {k: v.shape for k, v in official_state(UNITS[name]).items() if not k.startswith("fc.")}
    assert {k: v.shape for k, v in own.items() if not k.endswith("num_batches_tracked")} == official


def test_checkpoint_counters_are_optional(model):
    counters = {f"{k.rsplit('.', 1)[0]}.num_batches_tracked": torch.tensor(7)
                for k in official_state() if k.endswith("running_var")}
    encoder = model.net.encoder
    before = encoder.bn1.num_batches_tracked.clone()
    load_official_weights(encoder, {k: v for k, v in encoder.state_dict().items()
                                    if not k.endswith("num_batches_tracked")}, "x.pth")
    assert torch.equal(encoder.bn1.num_batches_tracked, before)
    load_official_weights(encoder, encoder.state_dict() | counters, "x.pth")
    assert encoder.layer2[0].bn3.num_batches_tracked == 7


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("layer3.5.bn2.running_var"), r"lacks keys \(1: layer3\.5\.bn2\.running_var\)"),
    (lambda s: s.update({"head.weight": torch.zeros(2)}), r"has unexpected keys \(1: head\.weight\)"),
    (lambda s: s.update({"conv1.6.weight": torch.zeros(64, 64, 3, 3)}),
     r"has wrongly shaped keys \(1: conv1\.6\.weight\)"),
    (lambda s: s.update({f"layer3.{u}.conv1.weight": torch.zeros(256, 1024, 1, 1) for u in range(6, 23)}),
     r"has unexpected keys \(17: layer3\.10\.conv1\.weight, layer3\.11\.conv1\.weight, layer3\.12\.conv1\.weight\)"),
    (lambda s: s.update({"conv1.weight": torch.zeros(64, 3, 7, 7)}), r"has unexpected keys \(1: conv1\.weight\); "
     r"its conv1\.weight is a 7×7 stem \(torchvision, timm\): this arch needs the deep-stem checkpoint"),
])
def test_a_checkpoint_that_does_not_fit_is_a_user_error_naming_file_and_keys(model, edit, message):
    state = official_state()
    edit(state)
    with pytest.raises(UserError, match=r"model\.encoder_weights: ckpt\.pth is not the official deep-stem "
                                        r"resnet50 ImageNet checkpoint: it " + message):
        load_official_weights(model.net.encoder, state, "ckpt.pth")


@pytest.mark.parametrize("encoder, options, message", [
    ("resnet18", {}, r"model\.encoder: DeepLabV3PlusReleased takes resnet50 or resnet101, not 'resnet18'"),
    ("resnet50", {"encoder_output_stride": 16},
     r"model\.options\.encoder_output_stride: not an option of .*; valid: output_stride, multi_grid"),
    ("resnet50", {"output_stride": 32}, r"model\.options\.output_stride: .* takes 16 or 8, not 32"),
    ("resnet50", {"multi_grid": 1}, r"model\.options\.multi_grid: .* takes false or true, not 1"),
])
def test_unknown_encoder_or_option_is_a_user_error(encoder, options, message):
    with pytest.raises(UserError, match=message):
        build_model(ModelConfig(arch=ARCH, encoder=encoder, options=options), 3)


def test_smp_deeplabv3plus_aspp_dropout_option_reaches_smp():
    model = build_model(ModelConfig(arch="DeepLabV3Plus", encoder="resnet18",
                                    options={"decoder_aspp_dropout": 0}), 3)
    dropouts = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    assert dropouts == [0]  # smp's default is 0.5


@pytest.mark.slow
def test_a_unimatch_step_with_the_released_model():
    """The trainer's UniMatch step (feature perturbation included) on the embedded data."""
    recipe = tiny_recipe_dict({"plugins": {"unimatch": {}}, "data": {"batch_labeled": 1, "batch_unlabeled": 1}})
    recipe["model"] = {"arch": ARCH, "encoder": "resnet50"}
    trainer = Trainer(build_run(build_recipe(recipe, "<tiny>")))
    before = trainer.run.student.net.decoder.fuse[1][0].weight.clone()
    logs = trainer.step(*next(trainer.batches())).logs
    assert torch.isfinite(torch.tensor(logs["loss"])) and logs["loss_u/fp"] > 0
    assert not torch.equal(before, trainer.run.student.net.decoder.fuse[1][0].weight)
