"""docs/recipes.md, generated from the recipe schema: ``python -m ssseg.recipedoc > docs/recipes.md``.

Each key's row comes from its field in :mod:`ssseg.recipe.schema` (type, default, valid values,
and the meaning given to :func:`~ssseg.recipe.schema.key`), each section's introduction from its
class docstring; the prose around the tables is here. tests/tools/test_docs.py fails when the page and
the schema differ, so the page is regenerated whenever a recipe key changes."""

from __future__ import annotations

import inspect
import sys
import types
import typing
from typing import Any, Literal, Union

import attrs
import yaml

from ssseg.data.registry import dataset_names
from ssseg.recipe.schema import DOC, VALID, Recipe
from ssseg.recipe.structure import config_fields, unstructure

HEADER = """# Recipe reference

Generated from `ssseg/recipe/schema.py` by `python -m ssseg.recipedoc > docs/recipes.md`; do not
edit by hand (the prose around the tables is in `ssseg/recipedoc.py`).

A recipe is a YAML mapping validated against that schema. Unknown keys, wrong types and
out-of-range values are errors naming the file and the key path, e.g.
`recipes/x.yaml: optim.lr: -1.0 is out of range; valid: (0, inf]`; a recipe with several of them
gets them all at once, one line each. Each plugin's params are checked against the plugin's
`Config` the same way when the run is built, e.g.
`recipes/x.yaml: plugins.ohem.min_kept: -5 is out of range; valid: [0, inf]`.

- `extends: parent.yaml` — a single parent, relative to this file; mappings merge recursively,
  lists and scalars replace; `plugins.<key>: null` removes an inherited plugin.
- `-o key.path=value` on the command line overrides after merging (value parsed as YAML;
  unlike plain YAML 1.1, `1e-3` is a number, in files and overrides alike).
- Every run saves the fully resolved recipe as `recipe.yaml` in its output folder.
- `metrics.jsonl` gets a record every `run.log_every` iterations; TensorBoard logging is the
  `tensorboard` plugin (`plugins: {tensorboard: {}}` or `ssseg train --tensorboard`); both are
  described in [logging.md](logging.md).

Each section's table gives every key with its type, its default, the values it accepts and what
it means.
"""

MODELS = """## Models

`model.arch` names an architecture class of segmentation-models-pytorch (smp; `model.options`
go to its constructor) or `DeepLabV3PlusReleased`, the DeepLabV3+ of the released iMAS and
UniMatch code (`ssseg/released_deeplab.py`). Either way the trainer sees the same interface:
encoder features, decoder features, a head; the encoder is the backbone of `optim.head_lr_mult`.

### smp's DeepLabV3Plus and its ASPP dropout

smp 0.6's `DeepLabV3Plus` has `decoder_aspp_dropout: 0.5` (a Dropout after the ASPP projection)
and `decoder_aspp_separable: true` by default. Both are constructor arguments, so
`model.options: {decoder_aspp_dropout: 0, decoder_aspp_separable: false}` reaches smp and
removes them (`tests/core/test_models_released.py` checks the dropout). Neither released decoder has
dropout. Even so, smp's decoder is not the released one (table below).

### The released DeepLabV3+ (`DeepLabV3PlusReleased`)

```yaml
model:
  arch: DeepLabV3PlusReleased
  encoder: resnet101                          # resnet50 | resnet101
  encoder_weights: pretrained/resnet101.pth   # the official deep-stem ImageNet checkpoint
  options: {output_stride: 16, multi_grid: true}
```

| option | default | meaning |
|---|---|---|
| `output_stride` | 16 | 16: layer4 dilated, ASPP rates 6, 12, 18; 8: layer3 and layer4 dilated, rates 12, 24, 36 |
| `multi_grid` | false | true: layer4's three units at its rate × (1, 2, 4), i.e. (2, 4, 8) at output stride 16, as every released iMAS log; false: (1, 2, 2), as UniMatch |

Another option, option value or encoder is an error naming `model.options.<key>` or
`model.encoder` and the valid values, e.g. `model.options.encoder_output_stride: not an option
of DeepLabV3PlusReleased; valid: output_stride, multi_grid` (a recipe that extends an smp recipe
must replace its `options`, which merge). `classes`, `mean`/`std` and `aux_head` (the 3×3-conv
head on layer3 of iMAS's Cityscapes runs) work as for smp models.

How it differs from smp's `DeepLabV3Plus`, and why it matters: the published numbers come from
this model, its deep stem is what the official ImageNet checkpoints hold (they do not load into
a 7×7-stem ResNet), and each row changes what is trained.

| | `DeepLabV3PlusReleased` (iMAS, UniMatch) | smp `DeepLabV3Plus` |
|---|---|---|
| stem | three 3×3 convolutions (64, 64, 128 channels), BN, ReLU, max-pool | one 7×7 convolution |
| dilated stage | first unit at the previous rate (torchvision's rule): layer4 (1, 2, 2) at output stride 16; multi-grid (2, 4, 8) | every unit at the new rate: (2, 2, 2) |
| after ASPP | 1×1 projection, BN, ReLU | projection, Dropout (0.5 by default), a separable 3×3 convolution, BN, ReLU |
| fuse | layer1 reduced to 48 channels, concatenated with ASPP, two dense 3×3 convolutions (304→256→256) with BN, ReLU | one separable 3×3 convolution |
| input size | any, nothing padded; on 4k+1 pixels (the released crops 321, 513, 769, 801) the ASPP→layer1 and logits→input resizes are the released bilinear align-corners resizes | padded to a multiple of the output stride (about 10% more pixels on a 321 crop, in the BatchNorm statistics and the ASPP image pooling), fixed ×4 upsampling |
| ImageNet weights | the official deep-stem checkpoint | torchvision/timm ResNets |

The encoder's features are `[x, c1, c2, c3, c4]` (the input and the four stages); the decoder
reads c1 and c4 and returns 256 channels at stride 4. UniMatch's feature perturbation drops
channels of the encoder features, so the decoder sees Dropout2d of c1 and c4, as in the released
code.

Left as they are, with no effect on the released crops: iMAS's max-pool rounds up (`ceil_mode`;
on an even stem output, e.g. whole-image evaluation of a 500×375 VOC image, it gives one more
feature row or column); iMAS's 1×1 layer1 reduction has a bias before its BatchNorm (which
cancels it); iMAS zero-initialises each unit's last BatchNorm and orders the ASPP branches
differently (the checkpoint overwrites the one, the other permutes channels). On inputs other
than 4k+1 pixels, output pixel i reads decoder pixel i/4 (the released code stretches the grid to
the input instead, by less than one decoder pixel). As in the released code, the ASPP image
pooling's BatchNorm needs at least 2 images per training forward.

### The official ImageNet checkpoints

Both codes load an ImageNet-pretrained deep-stem ResNet from `pretrained/resnet50.pth` or
`pretrained/resnet101.pth`: the UniMatch README links them under "Pretrained Backbone", the iMAS
README under "Please download the pretrained models" (Google Drive). ssseg downloads nothing:
fetch the file for your encoder, keep its name, and point `model.encoder_weights` at it (the
paper recipes read `pretrained/resnet50.pth` / `pretrained/resnet101.pth` relative to the working
directory).

The file is read with `torch.load(weights_only=True)` (a file holding anything besides tensors
and plain values is refused) and must carry the official key names: `conv1.0.weight`,
`conv1.1.*`, `conv1.3.weight`, `conv1.4.*`, `conv1.6.weight`, `bn1.*`, `layer1.0.conv1.weight`
… `layer4.2.bn3.running_var`, `layerN.0.downsample.{0,1}.*`. The classifier `fc.*` is ignored and
BatchNorm's `num_batches_tracked` may be absent; any other missing or unexpected key or another
shape is an error naming the file and up to 3 keys, e.g. for a torchvision ResNet-50:

```
model.encoder_weights: pretrained/resnet50.pth is not the official deep-stem resnet50 ImageNet checkpoint: it lacks keys (11: conv1.0.weight, conv1.1.weight, conv1.1.bias); its conv1.weight is a 7×7 stem (torchvision, timm): this arch needs the deep-stem checkpoint the iMAS and UniMatch READMEs link (docs/recipes.md)
```
"""

_TYPE_NAMES = {int: "integer", float: "number", str: "string", bool: "boolean"}


def _names(values: Any) -> str:
    return ", ".join(f"`{v}`" for v in values)


# keys whose valid values a registry outside the schema holds
REGISTRIES = {"data.dataset": lambda: _names(dataset_names())}


def _paragraph(doc: str) -> str:
    return " ".join(inspect.cleandoc(doc).split()).replace("``", "`")


def type_text(tp: Any) -> str:
    """A schema annotation in words: ``integer``, ``number or null``, ``[number, number]``, ..."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(type_text(a) for a in args if a is not type(None)) + " or null"
    if origin is Literal:
        return type_text(type(args[0]))
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {type_text(args[0])}"
        return "[" + ", ".join(type_text(a) for a in args) + "]"
    if origin is dict:
        return "mapping"
    return _TYPE_NAMES.get(tp, getattr(tp, "__name__", str(tp)))


def default_text(field: attrs.Attribute) -> str:
    """A field's default as YAML (``null``, ``[0.5, 2.0]``, ``{}``)."""
    default = field.default
    value = default.factory() if isinstance(default, attrs.Factory) else default
    text = yaml.safe_dump(unstructure(value), default_flow_style=True, width=1000)
    return text.removesuffix("\n...\n").strip()


def valid_text(path: str, field: attrs.Attribute, tp: Any) -> str:
    """What a key accepts: its Literal values, its validator's or the schema's words, a registry."""
    if path in REGISTRIES:
        return REGISTRIES[path]()
    literal = [a for a in (tp, *typing.get_args(tp)) if typing.get_origin(a) is Literal]
    if literal:
        return _names(typing.get_args(literal[0]))
    if tp is bool:
        return _names(("true", "false"))
    return field.metadata.get(VALID) or getattr(field.validator, "valid", None) or "any"


def keys(cls: type = Recipe, prefix: str = "") -> list[tuple[str, attrs.Attribute, Any]]:
    """``(key path, field, annotation)`` of every key of ``cls`` that is no section, in schema
    order; inside a section (a ``prefix``), a section's keys take its place (``eval.tta.flip``)."""
    hints, out = typing.get_type_hints(cls), []
    for name, field in config_fields(cls).items():
        if not attrs.has(hints[name]):
            out.append((prefix + name, field, hints[name]))
        elif prefix:
            out += keys(hints[name], f"{prefix}{name}.")
    return out


def table(cls: type, prefix: str = "") -> str:
    """The markdown table of the keys of ``cls``; a key without a meaning is an error."""
    lines = ["| key | type | default | valid | meaning |", "|---|---|---|---|---|"]
    for path, field, tp in keys(cls, prefix):
        if not field.metadata.get(DOC):
            raise ValueError(f"recipe key {path} has no meaning: declare it with "
                             "ssseg.recipe.schema.key(doc, ...)")
        cells = (f"`{path}`", type_text(tp), f"`{default_text(field)}`", valid_text(path, field, tp),
                 field.metadata[DOC])
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def render() -> str:
    """The whole page."""
    hints = typing.get_type_hints(Recipe)
    parts = [HEADER, "## Top level\n", table(Recipe)]
    for name in config_fields(Recipe):
        section = hints[name]
        if attrs.has(section):
            parts += [f"## `{name}`\n", _paragraph(section.__doc__) + "\n", table(section, f"{name}.")]
    parts.append(MODELS)
    return "\n".join(parts)


if __name__ == "__main__":
    sys.stdout.write(render())
