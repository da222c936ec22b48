"""smp models through the wrapper: any input size, encoder and decoder callable separately."""

from __future__ import annotations

import pytest
import torch

from ssseg.errors import UserError
from ssseg.models import build_model
from ssseg.recipe.schema import ModelConfig

SMALL = {"encoder_depth": 3, "decoder_channels": [16, 8, 8]}


@pytest.mark.parametrize("h, w", [(32, 32), (33, 47), (17, 9)])
def test_any_input_size_gives_logits_of_that_size(h, w):
    model = build_model(ModelConfig(arch="Unet", encoder="resnet18", options=SMALL), 5).eval()
    assert model(torch.rand(2, 3, h, w)).shape == (2, 5, h, w)


def test_deeplabv3plus_pads_to_its_output_stride():
    model = build_model(ModelConfig(arch="DeepLabV3Plus", encoder="resnet18"), 3).eval()
    assert model.stride == 16
    assert model(torch.rand(1, 3, 50, 41)).shape == (1, 3, 50, 41)


def test_encode_then_decode_equals_forward():
    model = build_model(ModelConfig(arch="Unet", encoder="resnet18", options=SMALL), 4).eval()
    x = torch.rand(2, 3, 20, 28)
    assert torch.allclose(model.decode(model.encode(x), (20, 28)), model(x))


def test_param_groups_split_encoder_from_head():
    model = build_model(ModelConfig(arch="Unet", encoder="resnet18", options=SMALL), 4)
    backbone, head = model.param_groups()
    assert len(backbone) + len(head) == len(list(model.parameters()))
    assert {id(p) for p in backbone} == {id(p) for p in model.net.encoder.parameters()}


def test_local_encoder_weights_are_loaded(tmp_path):
    source = build_model(ModelConfig(arch="Unet", encoder="resnet18", options=SMALL), 4)
    path = tmp_path / "enc.pt"
    torch.save({**source.net.encoder.state_dict(), "fc.weight": torch.zeros(1)}, path)
    model = build_model(ModelConfig(arch="Unet", encoder="resnet18", encoder_weights=str(path),
                                    options=SMALL), 4)
    for a, b in zip(source.net.encoder.state_dict().values(), model.net.encoder.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("cfg, message", [
    (ModelConfig(arch="Unett"), "unknown architecture 'Unett'; valid: .*Unet"),
    (ModelConfig(arch="Unet", encoder="resnet18", encoder_weights="/nope.pt"), "file not found"),
])
def test_bad_model_config_is_a_user_error(cfg, message):
    with pytest.raises(UserError, match=message):
        build_model(cfg, 3)


def test_encoder_weights_of_another_network_are_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"something.weight": torch.zeros(3)}, path)
    with pytest.raises(UserError, match="no tensor in .* matches the encoder"):
        build_model(ModelConfig(arch="Unet", encoder="resnet18", encoder_weights=str(path)), 3)


def test_auxiliary_head_returns_logits_of_the_first_rows_at_full_size():
    model = build_model(ModelConfig(arch="Unet", encoder="resnet18", aux_head=True, options=SMALL), 4)
    out = model(torch.rand(3, 3, 30, 26), aux_rows=2)
    logits, aux = out["logits"], out["aux"]
    assert logits.shape == (3, 4, 30, 26) and aux.shape == (2, 4, 30, 26)
    assert torch.is_tensor(model(torch.rand(1, 3, 30, 26)))  # no aux requested: logits alone
    backbone, head = model.param_groups()
    assert {id(p) for p in model.aux.parameters()} <= {id(p) for p in head}


def test_feature_geometry_matches_the_features_and_leaves_the_model_unchanged():
    model = build_model(ModelConfig(arch="Unet", encoder="resnet18", options=SMALL), 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    channels = model.feature_geometry()
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    out = model(torch.rand(2, 3, 40, 24), features=("encoder", "decoder"))
    assert channels["decoder"] == out["decoder"].shape[1] == 8
    assert channels["encoder"] == tuple(f.shape[1] for f in out["encoder"])
    assert channels["decoder_reduction"] == 40 // out["decoder"].shape[-2] == 1  # Unet decodes at full size
    assert out["logits"].shape == (2, 3, 40, 24)
