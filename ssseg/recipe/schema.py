"""The recipe schema: what a recipe YAML may contain, with defaults and valid ranges.

Every section is a frozen attrs class whose fields document themselves (:func:`key`; the page
docs/recipes.md is generated from them by :mod:`ssseg.recipedoc`); :func:`ssseg.recipe.load.load_recipe`
builds a :class:`Recipe` from YAML and reports every unknown key, wrong type and out-of-range value
with the file and key path.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

import attrs

from ssseg.recipe.structure import NOT_A_KEY
from ssseg.recipe.validators import image_side, in_range, ordered_pair, positive

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

# attrs field metadata of a recipe key: DOC, what it means; VALID, what it accepts in words where
# the schema leaves that to the part of ssseg that uses it (validators and Literal types say it
# themselves). docs/recipes.md shows both (python -m ssseg.recipedoc).
DOC, VALID = "doc", "valid"


def key(doc: str, valid: str | None = None, **field: Any) -> Any:
    """An attrs field for a recipe key that means ``doc`` (``field``: attrs.field's arguments)."""
    return attrs.field(metadata={DOC: doc, VALID: valid}, **field)


@attrs.frozen
class ModelConfig:
    """``model:`` a segmentation-models-pytorch (smp) architecture, or ``DeepLabV3PlusReleased``,
    the DeepLabV3+ of the released iMAS and UniMatch code (`ssseg/released_deeplab.py`). Nothing
    is downloaded."""

    arch: str = key("the architecture; [below](#models)", default="DeepLabV3Plus",
                    valid="an smp architecture class name, or `DeepLabV3PlusReleased`")
    encoder: str = key("the encoder (backbone)", default="resnet50",
                       valid="an smp encoder name; `DeepLabV3PlusReleased`: `resnet50`, `resnet101`")
    encoder_weights: str | None = key(
        "null: random initialisation; else a local file with the encoder's state dict "
        "(`DeepLabV3PlusReleased`: [the official deep-stem checkpoint](#the-official-imagenet-checkpoints))",
        default=None, valid="a readable file")
    classes: int | None = key("output classes; null: the dataset's class count", default=None,
                              validator=positive)
    aux_head: bool = key("an auxiliary head on the encoder's stage-3 features (iMAS's Cityscapes "
                         "runs: a 3×3-conv head on layer3), trained with the supervised loss × "
                         "`aux_weight` on the labeled images", default=False)
    aux_weight: float = key("coefficient of the auxiliary head's supervised loss", default=0.4,
                            validator=in_range(0))
    mean: tuple[float, float, float] = key("input normalisation mean, RGB (images arrive in "
                                           "[0, 1]); default ImageNet's", default=_IMAGENET_MEAN)
    std: tuple[float, float, float] = key("input normalisation standard deviation, RGB; default "
                                          "ImageNet's", default=_IMAGENET_STD)
    options: dict[str, Any] = key(
        "passed to the smp constructor (`encoder_output_stride`, `decoder_atrous_rates`, "
        "`encoder_depth`, ...); `DeepLabV3PlusReleased`: `output_stride`, `multi_grid`",
        factory=dict, valid="the architecture's constructor arguments")


@attrs.frozen
class DataConfig:
    """``data:`` which dataset, which split, and the weak (geometric) pipeline
    ([datasets.md](datasets.md)). Batch sizes are per process."""

    dataset: str = key("the dataset", default="embedded")
    root: str | None = key("the dataset's folder (null for `embedded`)", default=None,
                           valid="a folder")
    split: str = key("which images are labeled: VOC `92`…`1464`, `1_16`…; Cityscapes "
                     "`1_16`…`1_2`; embedded: the labeled count", default="all",
                     valid="the dataset's splits")
    crop: int = key("side of the square training crop (larger views do not fit in memory)",
                    default=64, validator=image_side)
    scale: tuple[float, float] = key("random rescale range of the weak pipeline",
                                     default=(0.5, 2.0), validator=ordered_pair)
    flip: bool = key("random horizontal flip", default=True)
    batch_labeled: int = key("labeled images per step", default=8, validator=positive)
    batch_unlabeled: int = key("unlabeled images per step; 0: supervised only", default=8,
                               validator=in_range(0))
    workers: int = key("DataLoader worker processes", default=0, validator=in_range(0))
    options: dict[str, Any] = key("dataset-specific options", factory=dict,
                                  valid="the dataset's options")
    pad_color: Literal["black", "imagenet_mean"] = key(
        "colour of the padding the weak pipeline adds to crops larger than the rescaled image: "
        "black (UniMatch) or (123, 116, 103)/255 (iMAS); padding stays unlabeled and not `valid`",
        default="black")


@attrs.frozen
class OptimConfig:
    """``optim:`` optimiser and schedule."""

    name: Literal["sgd", "adamw"] = key("the optimiser", default="sgd")
    lr: float = key("learning rate of the encoder", default=0.001,
                    validator=in_range(0, lo_open=True))
    head_lr_mult: float = key("the decoder and head learn at `lr × head_lr_mult`", default=10.0,
                              validator=in_range(0, lo_open=True))
    momentum: float = key("SGD's momentum (AdamW ignores it)", default=0.9, validator=in_range(0, 1))
    weight_decay: float = key("weight decay", default=1e-4, validator=in_range(0))
    schedule: Literal["poly", "constant"] = key("`poly`: `lr·(1 − it/iters)^power` each "
                                                "iteration; `constant`", default="poly")
    power: float = key("exponent of the poly schedule", default=0.9, validator=in_range(0))
    iters: int = key("training iterations", default=1000, validator=positive)
    clip_grad: float | None = key("largest gradient norm; null: no clipping", default=None,
                                  validator=positive)


@attrs.frozen
class UnsupConfig:
    """``unsup:`` how the losses add up: total = supervised_weight·L_x + weight·L_u (+ the
    plugins' extra terms); [strategies.md](strategies.md) has L_u."""

    weight: float = key("λ_u, the coefficient of L_u; a plugin's `unsup_weight` may override it "
                        "per step", default=1.0, validator=in_range(0))
    supervised_weight: float = key("coefficient of the supervised loss L_x", default=1.0,
                                   validator=in_range(0))
    normalize: Literal["valid", "pixels"] = key(
        "what a view's loss Σ w·CE is divided by: `valid`, the batch's valid pixels, padding left "
        "out of the sum too (UniMatch); `pixels`, every pixel of the crops, B·H·W, padding in the "
        "sum and the count (iMAS: the mean over H·W per image, then over the batch)",
        default="valid")


def _tta_scales(_inst: Any, attribute: Any, value: tuple[float, ...]) -> None:
    """Validator of ``eval.tta.scales``: a non-empty list of distinct finite numbers > 0."""
    bad = [s for s in value if not (math.isfinite(s) and s > 0)]
    twice = [s for i, s in enumerate(value) if s in value[:i]]
    problem = ("it is empty" if not value else f"{bad[0]!r} is not a finite number > 0" if bad
               else f"{twice[0]!r} appears twice" if twice else None)
    if problem:
        raise ValueError(f"{list(value)!r}: {problem}; valid: {_tta_scales.valid}")


_tta_scales.valid = "a non-empty list of distinct numbers > 0"


@attrs.frozen
class TTAConfig:
    """``eval.tta:`` test-time augmentation (docs/inference.md); the default is none."""

    flip: bool = key("also predict the horizontally flipped image and flip its probabilities back",
                     default=False)
    scales: tuple[float, ...] = key(
        "predict the image resized (bilinear) by each factor, in `eval.mode`, and average the "
        "softmax probabilities of every scale (and flip) at the image's size; `[1.0]` without "
        "`flip`: no test-time augmentation", default=(1.0,), validator=_tta_scales)

    @property
    def active(self) -> bool:
        """Whether any view besides the image itself is predicted."""
        return self.flip or self.scales != (1.0,)


@attrs.frozen
class EvalConfig:
    """``eval:`` when and how to evaluate. An evaluation always runs at the end; one longer than
    10 seconds shows its progress on standard error (images, sliding windows, ETA). Training's
    evaluations, `ssseg eval`, `ssseg predict` and `ssseg.inference.Segmenter` predict alike."""

    every: int = key("evaluate every that many iterations", default=500, validator=positive)
    every_epochs: int | None = key(
        "evaluate every that many epochs of the training loader instead (the official codes "
        "evaluate every epoch); each record also holds every model's best mIoU so far and its "
        "iteration", default=None, validator=positive)
    mode: Literal["whole", "sliding"] = key("`whole`: pad to the stride, crop back; `sliding`: "
                                            "windows, softmax summed", default="whole")
    window: int | None = key("side of a sliding window; null: the training crop", default=None,
                             validator=image_side)
    stride: int | None = key("stride of the sliding windows; null: ⌊2/3 · window⌋", default=None,
                             validator=image_side)
    window_batch: int | None = key("sliding windows per forward; null: 8 on a GPU, 1 on a CPU "
                                   "(larger batches measured slower there: benchmarks/RESULTS.md)",
                                   default=None, validator=positive)
    tiling: Literal["shifted", "released"] = key(
        "`shifted`: full windows, the last one shifted inward to end at the border; `released`: "
        "the iMAS and UniMatch rule, a window every `stride` pixels from 0, cut at the border",
        default="shifted")
    max_images: int | None = key("evaluate only the first that many validation images; null: all",
                                 default=None, validator=positive)
    tta: TTAConfig = attrs.field(factory=TTAConfig)


@attrs.frozen
class RunConfig:
    """``run:`` logging and checkpoint cadence, fault handling, threads, device, precision."""

    log_every: int = key("iterations between `metrics.jsonl` records", default=10,
                         validator=positive)
    checkpoint_every: int = key("iterations between writes of `last.pt`", default=500,
                                validator=positive)
    keep_checkpoints: int = key("how many iteration checkpoints (`iter_<N>.pt`) to keep besides "
                                "`last.pt` and `best.pt`", default=0, validator=in_range(0))
    on_nonfinite: Literal["stop", "skip"] = key(
        "a NaN or infinite loss: `stop`, an error naming the iteration and the bad loss terms "
        "(the last good checkpoint stays); `skip`, drop that step and continue", default="stop")
    sync_bn: bool = key("SyncBatchNorm when training in several processes", default=False)
    threads: int | None = key("torch CPU threads; null: torch's default", default=None,
                              validator=positive)
    device: str = key("`auto`: CUDA if present; `cpu`; `cuda:N` (an error where torch sees no such "
                      "device)", default="auto", valid="`auto`, `cpu`, `cuda`, `cuda:N`")
    precision: Literal["fp32", "bf16", "fp16"] = key(
        "`fp32`, or `torch.autocast` forwards of training and evaluation in `bf16` or `fp16` "
        "(fp16 with a gradient scaler, saved in checkpoints); losses and optimiser stay fp32",
        default="fp32")
    channels_last: bool = key("the model's weights and inputs in NHWC layout", default=False)
    compile: str | None = key("a `torch.compile` backend for the student's training forward; "
                              "null: none. Compiling takes minutes on a CPU", default=None,
                              valid="a torch.compile backend, e.g. `inductor`")


STAGE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"


@attrs.frozen
class StageConfig:
    """``stages[i]:`` one stage of a staged recipe: a whole training run of the recipe with
    ``patch`` merged over it, into ``<out>/stages/<name>/``, started from the recipe's
    initialisation (a fresh model); ``reads``: the earlier stages whose checkpoints and outputs
    this stage's hooks may read ([hooks.md](hooks.md), phase `stage`)."""

    name: str = key("the stage's name: its folder `<out>/stages/<name>/`",
                    valid="letters, digits, `_` and `-`, unique among the stages")
    reads: tuple[str, ...] = key("earlier stages this stage reads", factory=tuple,
                                 valid="names of earlier stages")
    patch: dict[str, Any] = key("merged over the recipe for this stage (as `-o` and suites patch)",
                                factory=dict, valid="recipe keys except `stages` and `seed`")


def _stages(_inst: Any, attribute: Any, value: tuple[StageConfig, ...]) -> None:
    """Validator of ``stages``: valid unique names, reads of earlier stages only, patches without
    ``stages`` or ``seed``."""
    seen: list[str] = []
    for i, stage in enumerate(value):
        problem = None
        if not re.match(STAGE_NAME, stage.name):
            problem = f"name {stage.name!r}: use letters, digits, '_' and '-'"
        elif stage.name in seen:
            problem = f"name {stage.name!r} appears twice"
        elif set(stage.patch) & {"stages", "seed"}:
            problem = f"patch: {sorted(set(stage.patch) & {'stages', 'seed'})[0]!r} cannot change per stage"
        else:
            unknown = [r for r in stage.reads if r not in seen]
            if unknown:
                problem = (f"reads {unknown[0]!r}, which is not an earlier stage; valid: "
                           f"{', '.join(seen) or 'none (the first stage reads nothing)'}")
        if problem:
            err = ValueError(problem)
            err.ssseg_field = f"{attribute.name}[{i}]"
            raise err
        seen.append(stage.name)


@attrs.frozen
class Recipe:
    """A whole recipe. ``source`` is no recipe key: the file the recipe was read from, which
    errors in its plugins' configs name as recipe errors do."""

    seed: int = key("seeds model initialisation, data order and augmentation", default=0)
    model: ModelConfig = attrs.field(factory=ModelConfig)
    data: DataConfig = attrs.field(factory=DataConfig)
    optim: OptimConfig = attrs.field(factory=OptimConfig)
    unsup: UnsupConfig = attrs.field(factory=UnsupConfig)
    plugins: dict[str, dict[str, Any]] = key(
        "plugin key → its params; the key names an installed plugin (`ssseg plugins`), or any "
        "name with `use: \"module:Class\"` among the params for a local plugin", factory=dict,
        valid="installed plugins, or any key with `use:`")
    eval: EvalConfig = attrs.field(factory=EvalConfig)
    run: RunConfig = attrs.field(factory=RunConfig)
    stages: tuple[StageConfig, ...] = key(
        "staged training (ST/ST++): the stages in order, each a training run of this recipe "
        "patched, in `<out>/stages/<name>/`; a finished stage is not redone when the same command "
        "runs again ([hooks.md](hooks.md), phase `stage`); empty: one ordinary run",
        factory=tuple, validator=_stages,
        valid="a list of `{name, reads, patch}`: `name` unique (letters, digits, `_`, `-`), `reads` "
              "earlier stages' names, `patch` recipe keys except `stages` and `seed`")
    source: str | None = attrs.field(default=None, kw_only=True, eq=False, repr=False,
                                     metadata={NOT_A_KEY: True})
