"""The step table is the one declaration of the step: the pluggy specs, the registry's rules,
the runner's phase order, the kit's hook sets, ``ssseg explain`` and docs/hooks.md all read it.
(The golden order itself is stated independently in tests/core/test_hooks.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest
import torch

from support import recorder
from ssseg import hookdoc, hookspecs, step_table, testing
from ssseg.cli import main
from ssseg.engine.run import BuildContext, build_run
from ssseg.engine.trainer import Trainer
from ssseg.errors import PluginError, UserError
from ssseg.plugin_manager import check_recipe

ROOT = Path(__file__).parents[2]


def test_pluggy_specs_are_the_table_s_hooks_with_their_arguments_and_kinds():
    pm = hookspecs.SPECS
    for name, hook in step_table.HOOKS.items():
        spec = getattr(pm, name)
        assert spec.__code__.co_varnames[: spec.__code__.co_argcount] == hook.arg_names
        assert getattr(spec, "ssseg_spec")["firstresult"] == (hook.kind == "decision")
    assert list(hookspecs.HOOK_KINDS) == list(step_table.HOOKS)


def test_the_kit_s_hook_sets_come_from_the_table():
    assert testing.BUILD_HOOKS == tuple(h.name for p in step_table.PHASES if p.runner in ("check", "build")
                                        for h in p.hooks)
    assert set(testing.UNLABELED_HOOKS) == {n for n, h in step_table.HOOKS.items() if h.unlabeled}
    assert step_table.STEP_PHASES == ("prepare", "forward", "relabel", "losses", "optimize", "end")


def test_docs_hooks_md_has_a_section_per_phase_and_hook_in_table_order():
    page = hookdoc.render()
    headings = re.findall(r"^## Phase `(\w+)`|^### `(\w+)\(", page, flags=re.M)
    expected = [x for p in step_table.PHASES for x in [(p.name, "")] + [("", h.name) for h in p.hooks]]
    assert headings == expected
    assert (ROOT / "docs" / "hooks.md").read_text() == page


def test_explain_lists_every_hook_in_table_order_with_its_answering_plugin(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("extends: " + str(ROOT / "recipes" / "imas.yaml") + "\n")
    assert main(["explain", str(recipe)]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.split("# resolved recipe")[0].splitlines()[3:] if line.strip()]
    assert [r[1] for r in rows] == list(step_table.HOOKS)
    by_hook = {r[1]: (r[0], r[3:]) for r in rows}
    assert by_hook["estimate_hardness"] == ("prepare", ["imas_hardness"])
    assert by_hook["build_teacher"] == ("build", ["mean_teacher"])


def test_a_missing_required_hook_is_refused_by_check_explain_and_train_alike(tmp_path, capsys, tiny):
    text = "extends: " + str(ROOT / "recipes" / "fixmatch.yaml") + "\nplugins: {imas_weighting: {}}\n"
    (tmp_path / "r.yaml").write_text(text)
    message = ("plugins.imas_weighting: needs a plugin that answers 'estimate_hardness', and none in this "
               "recipe does; add `imas_hardness: {}` to the recipe's plugins")
    with pytest.raises(PluginError, match=re.escape(message)):
        check_recipe(tiny({"plugins": {"fixmatch": {}, "imas_weighting": {}}}))
    for command in ("explain", "train"):
        assert main([command, str(tmp_path / "r.yaml"), "--out" if command == "train" else "-o",
                     str(tmp_path / "run") if command == "train" else "seed=0"]) == 2
        assert message in capsys.readouterr().err


def test_ordering_options_are_refused_naming_plugin_and_hook(tiny):
    with pytest.raises(PluginError, match=r"plugin 'o' marks hook 'before_iteration' with tryfirst; ssseg "
                                          r"orders hooks itself"):
        check_recipe(tiny({"plugins": {"o": {"use": "support.recorder:Ordered"}}}))


def test_hooks_declared_without_gradient_run_without_it(tiny):
    recorder.HalfUsedHead.GRAD.clear()
    trainer = Trainer(build_run(tiny({"plugins": {"h": {"use": "support.recorder:HalfUsedHead"}, "fixmatch": {}}})))
    trainer.step(*next(trainer.batches()), until="losses")
    assert recorder.HalfUsedHead.GRAD == {"estimate_hardness": False, "extra_losses": True}
    assert step_table.HOOKS["estimate_hardness"].grad == "no_grad"


def test_the_runner_stops_after_the_named_phase_and_advances_only_after_end(tiny):
    trainer = Trainer(build_run(tiny({"plugins": {"mean_teacher": {}, "fixmatch": {}}})))
    labeled, unlabeled = next(trainer.batches())
    prepared = trainer.step(labeled, unlabeled, until="prepare")
    assert list(prepared.views) == ["strong"] and prepared.outputs is None
    forward = trainer.step(labeled, unlabeled, until="forward")
    assert forward.outputs.views["strong"].shape[0] == 2 and forward.total is None
    losses = trainer.step(labeled, unlabeled, until="losses")
    assert losses.total is not None and losses.stepped is None and trainer.run.iteration == 0
    full = trainer.step(labeled, unlabeled)
    assert full.stepped and "loss" in full.logs and trainer.run.iteration == 1
    with pytest.raises(ValueError, match="until='backward' is no step phase; phases: prepare, forward"):
        trainer.step(labeled, unlabeled, until="backward")


def test_build_hooks_see_a_read_only_context_and_the_run_never_changes(tiny):
    built = build_run(tiny({"plugins": {"mean_teacher": {}, "fixmatch": {}}}))
    run = built.run
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        run.teacher = run.student
    with pytest.raises(TypeError):
        run.modules["x"] = torch.nn.Linear(1, 1)
    assert not hasattr(run, "pm") and not hasattr(run, "plugins")  # plugins never see each other
    assert "optimizer" not in attrs.fields_dict(BuildContext)      # build hooks see no half-built run
    assert run.separate_teacher and run.teacher is not run.student
    online = build_run(tiny({"plugins": {"fixmatch": {}}})).run
    assert online.teacher is online.student and not online.separate_teacher


def test_best_pt_follows_the_headline_model_and_two_headlines_are_refused(tiny):
    trainer = Trainer(build_run(tiny({"plugins": {"mean_teacher": {}, "fixmatch": {}}})))
    models, headline = trainer.evaluator.models()
    assert list(models) == ["student", "teacher"] and headline == "teacher"
    with pytest.raises(UserError, match=r"eval_models marks several headline models \(teacher, other\)"):
        Trainer(build_run(tiny({"plugins": {"mean_teacher": {}, "fixmatch": {},
                                            "two": {"use": "support.recorder:TwoHeadlines"}}})))  # before training


def test_training_state_is_written_only_through_its_own_methods():
    """No module besides the state's own assigns to its fields."""
    fields = "iteration|wall_s|skipped_steps|last_eval|best|generator|shared_generator|scaler"
    writes = re.compile(rf"\bstate\.({fields})\s*(=|\+=|-=)(?!=)")
    offenders = [f"{path.relative_to(ROOT)}:{n}" for folder in ("ssseg", "plugins")
                 for path in (ROOT / folder).rglob("*.py") if path.name != "state.py"
                 for n, line in enumerate(path.read_text().splitlines(), 1) if writes.search(line)]
    assert offenders == []


def test_a_plugin_that_takes_no_part_in_a_decision_composes_with_one_that_does(tiny):
    off = {"optional": {"use": "support.recorder:OptionalPlanner"}, "fixmatch": {}}
    trainer = Trainer(build_run(tiny({"plugins": off})))
    assert trainer.plugins.answering("plan_views") == ["fixmatch"]
    assert list(trainer.step(*next(trainer.batches()), until="prepare").views) == ["strong"]
    on = {"optional": {"use": "support.recorder:OptionalPlanner", "enabled": True}, "fixmatch": {}}
    with pytest.raises(PluginError, match=r"'fixmatch' and 'optional' both answer the decision hook 'plan_views'"):
        check_recipe(tiny({"plugins": on}))
