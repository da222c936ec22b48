"""docs/hooks.md, generated from the hook specs: ``python -m ssseg.hookdoc > docs/hooks.md``.

tests/test_docs.py fails when the page and the specs differ, so the page is regenerated whenever
a hook spec changes."""

from __future__ import annotations

import inspect
import sys

from ssseg import hookspecs

HEADER = """# Hook reference

Generated from `ssseg/hookspecs.py` by `python -m ssseg.hookdoc > docs/hooks.md`; do not edit by hand.
Hook spec version {version} (what changed in each version: `ssseg/compat.py`, and CONTRIBUTING.md
for the migration notes).

The training loop (`ssseg/engine/trainer.py`) calls these hooks in this order: the build hooks
once in `build_run`, the step hooks in `Trainer.step` (which is written once and called by the
contract kit too), the evaluation hooks at each evaluation. Kinds: **decision** (at most one
plugin per recipe; the core has the default), **contribution** (every plugin answers; combined by
a commutative rule), **observer** (side effects; recipe order). A hook implementation may take any
subset of its arguments. Every answer is checked where it enters the core: a wrong type or shape
is an error naming the plugin, the hook and what it gave.

The values the hooks pass (`StepContext`, `Run`, `LabeledBatch`, `UnlabeledBatch`, `Pseudo`,
`View`, `AugmentationPlan`, `ViewInput`, `StudentOutputs`, `Features`, `FeatureRequest`,
`LossTerm`) are documented field by field at the end of this page.
"""

SECTIONS = {"build_modules": "Build", "before_iteration": "Each training step", "eval_models": "Evaluation"}


def _paragraph(doc: str) -> str:
    return " ".join(line.strip() for line in inspect.cleandoc(doc).splitlines())


def render() -> str:
    """The whole page."""
    from ssseg.api import Run
    from ssseg.engine import types

    lines = [HEADER.format(version=hookspecs.HOOKSPEC_VERSION)]
    for name, kind in hookspecs.HOOK_KINDS.items():
        if name in SECTIONS:
            lines.append(f"## {SECTIONS[name]}\n")
        spec = getattr(hookspecs, name)
        args = ", ".join(inspect.signature(spec).parameters)
        lines.append(f"### `{name}({args})` — {kind}\n")
        lines.append(_paragraph(spec.__doc__) + "\n")
    lines.append("## The values\n")
    for cls in (types.StepContext, Run, types.LabeledBatch, types.UnlabeledBatch, types.Pseudo,
                types.View, types.AugmentationPlan, types.ViewInput, types.StudentOutputs,
                types.Features, types.FeatureRequest, types.LossTerm):
        fields = ", ".join(f"`{f.name}`" for f in cls.__attrs_attrs__)
        lines.append(f"### `{cls.__name__}`\n")
        lines.append(f"Fields: {fields}.\n")
        lines.append(inspect.cleandoc(cls.__doc__) + "\n")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(render())
