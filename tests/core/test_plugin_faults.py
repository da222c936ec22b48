"""A bug in a user's plugin is reported with the plugin's name, where it failed (import,
construction, which hook, saving or restoring its state) and only the plugin's own frames."""

from __future__ import annotations

import pytest
import yaml

from support.recipes import tiny_recipe_dict
from ssseg.cli import main
from ssseg.engine import checkpoint
from ssseg.engine.run import build_run
from ssseg.plugin_manager import check_recipe
from ssseg.engine.trainer import Trainer
from ssseg.plugin_manager import PluginError


def plugin_recipe(tiny, use: str, iters: int = 1):
    return tiny({"optim": {"iters": iters}, "plugins": {"mine": {"use": use}}})


def own_frames_only(message: str, file: str) -> None:
    assert f'{file}", line' in message
    assert "Traceback" not in message and "ssseg/" not in message and "importlib" not in message


@pytest.mark.parametrize("source, error, line", [
    ("import math\nscale = undefined_name\n", "NameError: name 'undefined_name' is not defined", 2),
    ("def plan_views(ctx:\n", "SyntaxError: ", 1),
])
def test_an_import_time_error_names_the_plugin_and_its_line(tmp_path, monkeypatch, tiny, source, error, line):
    (tmp_path / "my_plugin.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError) as caught:
        check_recipe(plugin_recipe(tiny, "my_plugin:Mine"))
    message = str(caught.value)
    assert message.startswith(f"plugin 'mine' failed while importing 'my_plugin': {error}")
    assert f'my_plugin.py", line {line}' in message and "importlib" not in message


def test_an_error_in_the_constructor_names_the_plugin(tiny):
    with pytest.raises(PluginError, match=r"^plugin 'mine' failed in its constructor: ZeroDivisionError") as caught:
        check_recipe(plugin_recipe(tiny, "support.faulty:BrokenInit"))
    own_frames_only(str(caught.value), "faulty.py")


def test_an_error_in_a_hook_shows_only_the_plugins_frames(tiny):
    built = build_run(plugin_recipe(tiny, "support.recorder:Broken"))
    with pytest.raises(PluginError, match=r"^plugin 'mine' failed in hook 'before_iteration': RuntimeError: boom") as caught:
        Trainer(built).train()
    own_frames_only(str(caught.value), "recorder.py")
    assert "pluggy" not in str(caught.value)


@pytest.mark.parametrize("use, error", [
    ("support.faulty:StateFails", "AttributeError: 'StateFails' object has no attribute 'missing_attribute'"),
    ("support.faulty:NumpyState", "TypeError: state_dict()['stats'] is a numpy.ndarray; a checkpoint holds only tensors"),
])
def test_a_state_that_cannot_be_saved_names_the_plugin(tmp_path, tiny, use, error):
    trainer = Trainer(build_run(plugin_recipe(tiny, use)), checkpointer=checkpoint.Checkpointer(tmp_path))
    with pytest.raises(PluginError) as caught:
        trainer.train()
    assert str(caught.value).startswith(f"plugin 'mine' failed in state_dict() while saving a checkpoint: {error}")
    assert not list(tmp_path.iterdir())


def test_a_failing_load_state_dict_names_the_plugin(tmp_path, tiny):
    recipe = plugin_recipe(tiny, "support.faulty:LoadFails")
    Trainer(build_run(recipe), checkpointer=checkpoint.Checkpointer(tmp_path)).train()
    with pytest.raises(PluginError, match=r"^plugin 'mine' failed in load_state_dict\(\) while resuming from "
                                          r".*last.pt: ValueError: cannot take \['step'\]"):
        checkpoint.restore(build_run(recipe), tmp_path / "last.pt")


def test_the_cli_prints_the_plugins_frames_without_a_traceback(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_plugin.py").write_text("scale = undefined_name\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict({"plugins": {"mine": {"use": "my_plugin:Mine"}}})))
    assert main(["train", str(recipe), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ssseg: error: plugin 'mine' failed while importing 'my_plugin': NameError")
    own_frames_only(err, "my_plugin.py")
