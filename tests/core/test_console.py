"""The console: every evaluation printed with its per-class table; a progress line that fits a
narrow terminal, keeps the ETA, and never leaves a half line under the next output."""

from __future__ import annotations

import io
import re

import yaml

from support.recipes import tiny_recipe_dict
from ssseg.cli import main
from ssseg.console import Console, eval_table, progress_line

LOGS = {"loss": 0.983, "loss_x": 1.967, "loss_u/s1": 0.0, "loss_u/s2": 0.0, "loss_u/fp": 0.0, "lr": 1.54e-03}


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_an_in_place_progress_line_fits_a_narrow_terminal_and_keeps_the_eta(monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    err = Terminal()
    console = Console(out=io.StringIO(), err=err)
    for it in (1, 2):
        console.progress(it, 10, LOGS, 90.0)
    drawn = [segment.replace("\x1b[K", "") for segment in err.getvalue().split("\r")[1:]]
    assert len(drawn) == 2 and all(len(line) <= 59 and line.endswith("eta 1.5 min") for line in drawn)
    assert drawn[1].startswith("[2/10] loss=0.983") and "\n" not in err.getvalue()


def test_without_a_width_the_line_keeps_every_term():
    line = progress_line(50, 1500, LOGS, 156.0)
    assert line == ("[50/1500] loss=0.983 loss_x=1.967 loss_u/s1=0.000 loss_u/s2=0.000 loss_u/fp=0.000 "
                    "lr=1.54e-03 eta 2.6 min")


def test_an_evaluation_after_an_in_place_line_starts_on_its_own_line():
    out, err = io.StringIO(), Terminal()
    console = Console(out=out, err=err)
    console.progress(1, 10, LOGS, 1.0)
    console.evaluation({"iteration": 1, "student/miou": 0.5, "student/iou": {"background": 0.9, "disc": None}})
    assert err.getvalue().endswith("\n")
    assert out.getvalue().splitlines()[0] == "val mIoU at iteration 1: student 50.0"


def test_the_table_has_a_row_per_class_and_a_column_per_model():
    metrics = {"iteration": 4, "student/miou": 0.5, "teacher/miou": 0.6,
               "student/iou": {"background": 0.9, "disc": None}, "teacher/iou": {"background": 0.95, "disc": 0.25}}
    assert eval_table(metrics).splitlines() == ["  class       student  teacher",
                                                "  background     90.0     95.0",
                                                "  disc              -     25.0"]


def test_training_prints_every_evaluation_with_its_table(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict({"optim": {"iters": 2}, "eval": {"every": 1, "max_images": 2},
                                                       "plugins": {"mean_teacher": {}, "fixmatch": {}}})))
    assert main(["train", str(recipe), "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert re.findall(r"val mIoU at iteration (\d)", out) == ["1", "2"]
    assert out.count("  class ") == 2 and out.count("student  teacher") == 2
