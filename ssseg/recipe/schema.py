"""The recipe schema: what a recipe YAML may contain, with defaults and valid ranges.

Every section is a frozen attrs class; :func:`ssseg.recipe.load_recipe` builds a :class:`Recipe`
from YAML and reports unknown keys, wrong types and out-of-range values with the file and key path.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from ssseg.recipe.structure import NOT_A_KEY
from ssseg.recipe.validators import image_side, in_range, ordered_pair, positive

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@attrs.frozen
class ModelConfig:
    """``model:`` a segmentation-models-pytorch architecture, or ``DeepLabV3PlusReleased`` (the
    released iMAS/UniMatch DeepLabV3+, :mod:`ssseg.released_deeplab`).

    ``encoder_weights`` is null (random init) or the path of a local state-dict file for the
    encoder; nothing is downloaded. ``classes`` defaults to the dataset's class count.
    ``options`` are passed to the smp constructor (for example ``encoder_output_stride: 16``), or
    are the released model's ``output_stride`` and ``multi_grid``.
    ``aux_head`` adds an auxiliary head on the encoder's stage-3 features, trained with the
    supervised loss × ``aux_weight`` on the labeled images (the Cityscapes recipes).
    """

    arch: str = "DeepLabV3Plus"
    encoder: str = "resnet50"
    encoder_weights: str | None = None
    classes: int | None = attrs.field(default=None, validator=positive)
    aux_head: bool = False
    aux_weight: float = attrs.field(default=0.4, validator=in_range(0))
    mean: tuple[float, float, float] = _IMAGENET_MEAN
    std: tuple[float, float, float] = _IMAGENET_STD
    options: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class DataConfig:
    """``data:`` which dataset, which split, and the weak (geometric) pipeline.

    ``split`` is dataset specific (VOC "92" or "1_16", Cityscapes "1_8", embedded: the number of
    labeled images). ``batch_*`` are per process. ``options`` holds dataset-specific settings.
    """

    dataset: str = "embedded"
    root: str | None = None
    split: str = "all"
    crop: int = attrs.field(default=64, validator=image_side)
    scale: tuple[float, float] = attrs.field(default=(0.5, 2.0), validator=ordered_pair)
    flip: bool = True
    batch_labeled: int = attrs.field(default=8, validator=positive)
    batch_unlabeled: int = attrs.field(default=8, validator=in_range(0))
    workers: int = attrs.field(default=0, validator=in_range(0))
    options: dict[str, Any] = attrs.field(factory=dict)
    pad_color: Literal["black", "imagenet_mean"] = "black"


@attrs.frozen
class OptimConfig:
    """``optim:`` optimiser and schedule. The decoder/head gets ``lr * head_lr_mult``."""

    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = attrs.field(default=0.001, validator=in_range(0, lo_open=True))
    head_lr_mult: float = attrs.field(default=10.0, validator=in_range(0, lo_open=True))
    momentum: float = attrs.field(default=0.9, validator=in_range(0, 1))
    weight_decay: float = attrs.field(default=1e-4, validator=in_range(0))
    schedule: Literal["poly", "constant"] = "poly"
    power: float = attrs.field(default=0.9, validator=in_range(0))
    iters: int = attrs.field(default=1000, validator=positive)
    clip_grad: float | None = attrs.field(default=None, validator=positive)


@attrs.frozen
class UnsupConfig:
    """``unsup:`` total = supervised_weight·L_x + weight·L_u (+ extra terms); ``weight`` is λ_u,
    which a plugin's ``unsup_weight`` may override per step (FixMatch: both 0.5).

    ``normalize``: what a view's loss Σ w·CE is divided by. ``valid`` (default): the valid pixels
    of the batch, padding left out of the sum too (UniMatch). ``pixels``: every pixel of the
    crops, B·H·W, padding included in the sum and the count (iMAS: the mean over H·W per image,
    then over the batch; its unlabeled loader drops the padding mask)."""

    weight: float = attrs.field(default=1.0, validator=in_range(0))
    supervised_weight: float = attrs.field(default=1.0, validator=in_range(0))
    normalize: Literal["valid", "pixels"] = "valid"


@attrs.frozen
class EvalConfig:
    """``eval:`` when and how to evaluate: every ``every`` iterations, or, when ``every_epochs`` is
    set, every that many epochs of the training loader (the official codes evaluate every epoch),
    and always at the end. ``sliding`` uses ``window`` and ``stride``
    (stride defaults to 2/3 of the window) and runs ``window_batch`` windows per forward (default:
    8 on a GPU, 1 on a CPU, where larger batches measured slower); ``tiling``: ``shifted`` (full
    windows, the last one shifted inward to end at the border) or ``released`` (the iMAS and
    UniMatch rule: a window every ``stride`` pixels from 0, truncated at the border); ``whole``
    pads to the stride and crops back."""

    every: int = attrs.field(default=500, validator=positive)
    every_epochs: int | None = attrs.field(default=None, validator=positive)
    mode: Literal["whole", "sliding"] = "whole"
    window: int | None = attrs.field(default=None, validator=image_side)
    stride: int | None = attrs.field(default=None, validator=image_side)
    window_batch: int | None = attrs.field(default=None, validator=positive)
    tiling: Literal["shifted", "released"] = "shifted"
    max_images: int | None = attrs.field(default=None, validator=positive)


@attrs.frozen
class RunConfig:
    """``run:`` logging and checkpoint cadence, fault handling, threads, device.

    ``keep_checkpoints``: how many iteration checkpoints to keep besides ``last.pt`` and
    ``best.pt``. ``on_nonfinite``: ``stop`` (error naming the iteration and the bad loss terms;
    the last good checkpoint stays) or ``skip`` (drop that step and continue).
    ``sync_bn``: SyncBatchNorm under multi-process training.
    ``precision``: ``fp32``, or mixed precision with ``torch.autocast`` in ``bf16`` or ``fp16``
    (with a gradient scaler) for the forwards of training and evaluation; losses and the
    optimiser stay fp32. ``channels_last``: the model's weights and inputs in NHWC layout.
    ``compile``: a ``torch.compile`` backend for the student's training forward (``inductor``),
    or null.
    """

    log_every: int = attrs.field(default=10, validator=positive)
    checkpoint_every: int = attrs.field(default=500, validator=positive)
    keep_checkpoints: int = attrs.field(default=0, validator=in_range(0))
    on_nonfinite: Literal["stop", "skip"] = "stop"
    sync_bn: bool = False
    threads: int | None = attrs.field(default=None, validator=positive)
    device: str = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool = False
    compile: str | None = None


@attrs.frozen
class Recipe:
    """A whole recipe. ``plugins`` maps a key to its params; the key is a plugin name, or any
    name with ``use: "module:Class"`` among the params for a local plugin.

    ``source`` is no recipe key: the file the recipe was read from, which errors in its plugins'
    configs name as recipe errors do."""

    seed: int = 0
    model: ModelConfig = attrs.field(factory=ModelConfig)
    data: DataConfig = attrs.field(factory=DataConfig)
    optim: OptimConfig = attrs.field(factory=OptimConfig)
    unsup: UnsupConfig = attrs.field(factory=UnsupConfig)
    plugins: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    eval: EvalConfig = attrs.field(factory=EvalConfig)
    run: RunConfig = attrs.field(factory=RunConfig)
    source: str | None = attrs.field(default=None, kw_only=True, eq=False, repr=False,
                                     metadata={NOT_A_KEY: True})
