"""docs/hooks.md, generated from the step table: ``python -m ssseg.hookdoc > docs/hooks.md``.

tests/tools/test_docs.py fails when the page and the table differ, so the page is regenerated whenever
the table changes."""

from __future__ import annotations

import inspect
import sys

from ssseg import step_table

HEADER = """# Hook reference

Generated from the step table `ssseg/step_table.py` by `python -m ssseg.hookdoc > docs/hooks.md`;
do not edit by hand. Hook spec version {version} (what changed in each version: `ssseg/compat.py`,
and CONTRIBUTING.md for the migration notes).

A run goes through the phases below in this order. The recipe check runs `validate`, the run
builder `build`, the stage runner `stage` (recipes with `stages` only), the step runner (`ssseg/engine/step.py`) the step phases on every training step
(tests and the contract kit run part of a step through it, `until=<phase>`), and the evaluator
`evaluate`. Every hook's kind, arguments, combine rule, answer check and gradient mode come from
the table.

Kinds: **decision** (at most one plugin per recipe; the core has the default; a plugin whose config
turns a decision off says so with `decides`, the decision hooks it takes part in, and is then not
asked it), **contribution**
(every plugin answers; combined by the hook's commutative rule), **observer** (side effects; recipe
order). A hook implementation may take any subset of its arguments. Every answer is checked where
it enters the core: a wrong type or shape is an error naming the plugin, the hook and what it gave.
Hooks marked *no gradient* run under `torch.no_grad()`. pluggy's `tryfirst`, `trylast`, `wrapper`
and `hookwrapper` are refused: the order comes from the recipe and the kinds.

A plugin that needs other plugins to answer a hook declares it: `requires = {{"estimate_hardness":
"imas_hardness"}}` (hook → the plugin to suggest); the recipe check refuses a recipe where no other
plugin answers it, naming the suggestion.

Combine rules: {rules}.

The values the hooks pass (`StepContext`, `BuildContext`, `Run`, `LabeledBatch`, `UnlabeledBatch`,
`Pseudo`, `View`, `AugmentationPlan`, `ViewInput`, `StudentOutputs`, `Features`, `FeatureRequest`,
`LossTerm`, `EvalModel`, and for the stage hooks `Stage`, `TrainingSet`, `DatasetPass`, `PassBatch`) are documented field by field at the end of this page.
"""


RUNNERS = {"check": "the recipe check", "build": "the run builder", "step": "the step runner",
           "evaluate": "the evaluator", "stage": "the stage runner"}


def render() -> str:
    """The whole page."""
    from ssseg.api import BuildContext, DatasetPass, PassBatch, Run, Stage, TrainingSet
    from ssseg.engine import types

    rules = "; ".join(f"**{c.name}**: {c.meaning}" for c in step_table.COMBINE_RULES)
    lines = [HEADER.format(version=step_table.HOOKSPEC_VERSION, rules=rules)]
    for phase in step_table.PHASES:
        lines.append(f"## Phase `{phase.name}` ({RUNNERS[phase.runner]})\n")
        lines.append(phase.doc + "\n")
        for hook in phase.hooks:
            args = ", ".join(hook.arg_names)
            grad = ", no gradient" if hook.grad == "no_grad" else ""
            lines.append(f"### `{hook.name}({args})` — {hook.kind}\n")
            lines.append(f"Combine: {hook.combine.name}{grad}. Arguments: "
                         + ", ".join(f"`{a.name}: {a.type}`" for a in hook.args)
                         + f". Answer: `{hook.returns}`.\n")
            lines.append(hook.doc + "\n")
    lines.append("## The values\n")
    for cls in (types.StepContext, BuildContext, Run, types.LabeledBatch, types.UnlabeledBatch, types.Pseudo,
                types.View, types.AugmentationPlan, types.CutMix, types.ViewInput, types.StudentOutputs,
                types.Features, types.FeatureRequest, types.LossTerm, types.EvalModel, Stage, TrainingSet,
                DatasetPass, PassBatch):
        fields = ", ".join(f"`{f.name}`" for f in cls.__attrs_attrs__)
        lines.append(f"### `{cls.__name__}`\n")
        lines.append(f"Fields: {fields}.\n")
        lines.append(inspect.cleandoc(cls.__doc__) + "\n")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(render())
