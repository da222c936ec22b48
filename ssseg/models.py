"""Segmentation models from segmentation-models-pytorch, or the released DeepLabV3+ of iMAS and
UniMatch (:mod:`ssseg.released_deeplab`), wrapped so any input size works and the encoder and
decoder can be called separately (feature-perturbation views need it)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssseg import released_deeplab
from ssseg.errors import UserError
from ssseg.recipe.schema import ModelConfig


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode (BatchNorm running statistics, no dropout) inside the block, and
    back in the mode it had afterwards, also when the block raises."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


class SegModel(nn.Module):
    """A network with smp's interface (``encoder``, ``decoder``, ``segmentation_head``) that takes
    images in [0, 1] of any size and returns logits of the same size.

    The input is normalised with ``mean``/``std``, zero-padded at the bottom and right to the
    multiple the network needs (``stride``: the encoder's output stride for smp models), and the
    logits are cropped back.
    """

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...],
                 aux: nn.Module | None = None):
        super().__init__()
        self.net = net
        self.aux = aux
        self.stride = _divisor(net)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.memory_format = torch.contiguous_format

    def use_channels_last(self) -> SegModel:
        """Keep the weights and the normalised inputs in NHWC layout (``run.channels_last``)."""
        self.memory_format = torch.channels_last
        return self.to(memory_format=torch.channels_last)

    def encode(self, images: Tensor) -> list[Tensor]:
        """Encoder features of normalised, padded ``images`` ``[B,3,H,W]``."""
        x = (images - self.mean) / self.std
        h, w = x.shape[-2:]
        pad_h, pad_w = -h % self.stride, -w % self.stride
        # a traced graph (TorchScript, ONNX export) pads always, so that it pads every input size;
        # training and evaluation skip the copy when nothing needs padding
        if pad_h or pad_w or torch.jit.is_tracing():
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return self.net.encoder(x.contiguous(memory_format=self.memory_format))

    def decode(self, features: list[Tensor], size: tuple[int, int]) -> Tensor:
        """Logits ``[B,C,H,W]`` from encoder ``features``, cropped to the input ``size``."""
        return self.classify(self.net.decoder(features), size)

    def classify(self, decoded: Tensor, size: tuple[int, int]) -> Tensor:
        """Logits ``[B,C,H,W]`` from the decoder's output, cropped to the input ``size``."""
        return self.net.segmentation_head(decoded)[..., : size[0], : size[1]]

    def forward(self, images: Tensor, perturb: tuple[int, int, tuple[float, ...]] | None = None,
                aux_rows: int = 0, features: tuple[str, ...] = ()) -> Tensor | dict[str, Any]:
        """Logits ``[B,C,H,W]`` (float32, also under autocast) for images ``[B,3,H,W]`` in [0, 1].

        ``perturb=(start, stop, ps)`` also decodes Dropout2d(p) of the encoder features of rows
        ``start:stop`` for each p in ``ps`` (feature perturbation, one encoder pass); their
        logits follow the batch's, in the order of ``ps``. ``aux_rows > 0`` (with an auxiliary
        head) also returns the auxiliary logits of the first ``aux_rows`` images. ``features``
        (any of ``"encoder"``, ``"decoder"``) also returns those intermediate features, for every
        row (perturbed rows included). With any of these extras the answer is a dict with
        ``"logits"`` and the extras under their names (``"aux"``, ``"encoder"``, ``"decoder"``).
        """
        size = images.shape[-2:]
        encoded = self.encode(images)
        aux = None
        if aux_rows and self.aux is not None:
            aux = F.interpolate(self.aux(encoded[-2][:aux_rows]), size=encoded[0].shape[-2:],
                                mode="bilinear", align_corners=False)[..., : size[0], : size[1]]
        if perturb is not None:
            start, stop, ps = perturb
            encoded = [torch.cat([f] + [F.dropout2d(f[start:stop], p) for p in ps]) for f in encoded]
        decoded = self.net.decoder(encoded)
        logits = self.classify(decoded, size).float()
        if aux is None and not features:
            return logits
        out: dict[str, Any] = {"logits": logits}
        if aux is not None:
            out["aux"] = aux.float()
        if "encoder" in features:
            out["encoder"] = list(encoded)
        if "decoder" in features:
            out["decoder"] = decoded
        return out

    @torch.no_grad()
    def feature_geometry(self) -> dict[str, Any]:
        """The features :meth:`forward` returns on request: channels ``{"encoder": (c_0, ...),
        "decoder": D}`` and ``"decoder_reduction"`` r (input pixels per decoder pixel along each
        axis), from a dry forward in eval mode (the mode and the statistics are unchanged), for
        sizing a head on them and sampling crop-resolution maps onto the decoder grid."""
        side = 2 * max(self.stride, 32)  # a multiple of every output stride
        with eval_mode(self):
            out = self(torch.zeros(1, 3, side, side, device=self.mean.device), features=("encoder", "decoder"))
        return {"encoder": tuple(f.shape[1] for f in out["encoder"]), "decoder": out["decoder"].shape[1],
                "decoder_reduction": side // out["decoder"].shape[-1]}

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(encoder parameters, decoder and head parameters) for the head-lr multiplier."""
        backbone = list(self.net.encoder.parameters())
        ids = {id(p) for p in backbone}
        return backbone, [p for p in self.parameters() if id(p) not in ids]


def _divisor(net: nn.Module) -> int:
    """The size multiple the network needs: ``net.input_multiple`` where the network declares
    one, else the encoder's output stride (smp's decoders need it)."""
    return int(getattr(net, "input_multiple", getattr(net.encoder, "output_stride", 32)))


def build_model(cfg: ModelConfig, num_classes: int) -> SegModel:
    """The recipe's model: the released DeepLabV3+ (``arch: DeepLabV3PlusReleased``) or
    ``smp.<arch>(encoder_name=encoder, classes=...)``, with random weights or encoder weights
    from the local file ``encoder_weights``."""
    classes = cfg.classes or num_classes
    if cfg.arch == released_deeplab.ARCH:
        net = released_deeplab.build(cfg.encoder, classes, cfg.options)
        load = released_deeplab.load_official_weights
    else:
        net, load = smp_net(cfg, classes), load_encoder_weights
    if cfg.encoder_weights is not None:
        path = Path(cfg.encoder_weights)
        load(net.encoder, read_state_dict(path), path)
    aux = auxiliary_head(net.encoder.out_channels[-2], classes) if cfg.aux_head else None
    return SegModel(net, cfg.mean, cfg.std, aux)


def smp_net(cfg: ModelConfig, classes: int) -> nn.Module:
    """``smp.<arch>(encoder_name=encoder, classes=classes, **options)`` with random weights and
    without the encoder stages it never runs. smp (and timm) load here, at the first smp model:
    importing them takes seconds that ``ssseg plugins`` and other commands without a model skip."""
    import segmentation_models_pytorch as smp

    arch = getattr(smp, cfg.arch, None)
    if not isinstance(arch, type) or not issubclass(arch, nn.Module):
        valid = sorted(n for n in dir(smp) if isinstance(getattr(smp, n), type)
                       and issubclass(getattr(smp, n), nn.Module) and n[0].isupper()
                       and n not in {"SegmentationModel"} and "Encoder" not in n)
        raise UserError(f"model.arch: unknown architecture {cfg.arch!r}; valid: "
                        f"{', '.join(valid + [released_deeplab.ARCH])}")
    try:
        net = arch(encoder_name=cfg.encoder, encoder_weights=None, classes=classes, **cfg.options)
    except (KeyError, ValueError, TypeError) as err:
        raise UserError(f"model: cannot build {cfg.arch} with encoder {cfg.encoder!r} and "
                        f"options {cfg.options}: {err}") from None
    drop_unused_stages(net.encoder)
    return net


def drop_unused_stages(encoder: nn.Module) -> None:
    """Delete the ResNet stages an encoder built with ``encoder_depth`` < 5 never runs (smp keeps
    them), so they cost no memory, no checkpoint space and no unused DDP parameters."""
    depth = getattr(encoder, "_depth", 5)
    for stage in range(max(depth, 1), 5):  # layer k runs only when depth >= k + 1
        if isinstance(getattr(encoder, f"layer{stage}", None), nn.Module):
            delattr(encoder, f"layer{stage}")


def auxiliary_head(in_channels: int, classes: int) -> nn.Module:
    """The auxiliary head on the encoder's stage-3 features: 3×3 conv → 256 → BN → ReLU → 1×1 conv."""
    return nn.Sequential(nn.Conv2d(in_channels, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256),
                         nn.ReLU(inplace=True), nn.Conv2d(256, classes, 1))


def read_state_dict(path: Path) -> dict[str, Any]:
    """The state dict in the local file ``path`` (``torch.load(weights_only=True)``; a top-level
    ``state_dict`` entry is unwrapped); a missing, unreadable or non-mapping file is a UserError."""
    if not path.is_file():
        raise UserError(f"model.encoder_weights: file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise UserError(f"model.encoder_weights: cannot read {path}: {err}") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise UserError(f"model.encoder_weights: {path} holds a {type(state).__name__}, not a state dict")
    return state


def load_encoder_weights(encoder: nn.Module, state: dict[str, Any], path: Path) -> None:
    """Load the state dict ``state`` (read from ``path``) into an smp ``encoder`` (classifier keys
    such as ``fc.*`` are ignored)."""
    own = encoder.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise UserError(f"model.encoder_weights: no tensor in {path} matches the encoder "
                        f"(expected keys like {next(iter(own))!r})")
    missing = [k for k in own if k not in matched]
    if missing:
        raise UserError(f"model.encoder_weights: {path} lacks {len(missing)} encoder tensors, "
                        f"for example {missing[0]!r}")
    encoder.load_state_dict(matched)
