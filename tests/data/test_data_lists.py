"""Split lists that are empty or name an image twice: ``data check`` reports them (file, line,
image), training refuses them naming the file, and evaluation and prediction read only the val
list (or none)."""

from __future__ import annotations

import re

import pytest
import yaml
from PIL import Image

from support.recipes import tiny_recipe_dict
from support.data_trees import folder_tree, problems
from ssseg.cli import main
from ssseg.data.registry import build_data
from ssseg.errors import UserError
from ssseg.recipe.schema import DataConfig


def config(root, split="2") -> DataConfig:
    return DataConfig(dataset="folder", root=str(root), split=split, crop=4)


def messages(root) -> list[str]:
    return problems(root, "folder")


def test_an_empty_list_is_a_problem_naming_the_file(tmp_path):
    folder_tree(tmp_path)
    labeled = tmp_path / "splits/2/labeled.txt"
    labeled.write_text("\n")
    assert messages(tmp_path) == [f"{labeled}: empty list: it names no images"]
    with pytest.raises(UserError, match=re.escape(f"{labeled}: empty list")):
        build_data(config(tmp_path))


def test_an_image_listed_twice_is_a_problem_naming_file_line_and_image(tmp_path):
    folder_tree(tmp_path)
    labeled = tmp_path / "splits/2/labeled.txt"
    labeled.write_text(labeled.read_text() + "\nimages/im0.png masks/im0.png")
    expected = f"{labeled}:3: images/im0.png is listed twice (first at line 1); remove the repeat"
    assert messages(tmp_path) == [expected]
    with pytest.raises(UserError, match=re.escape(expected)):
        build_data(config(tmp_path))


def test_a_repeat_in_the_pool_is_reported_once(tmp_path):
    folder_tree(tmp_path)
    pool = tmp_path / "splits/pool.txt"
    pool.write_text(pool.read_text() + "\nimages/im4.png masks/im4.png")
    assert messages(tmp_path) == [f"{pool}:6: images/im4.png is listed twice (first at line 5); "
                                  "remove the repeat"]


def test_eval_and_predict_read_only_what_they_need(tmp_path, capsys):
    folder_tree(tmp_path / "data")
    recipe = tmp_path / "r.yaml"
    data = {"dataset": "folder", "root": str(tmp_path / "data"), "split": "2", "batch_unlabeled": 0}
    recipe_dict = tiny_recipe_dict({"data": data, "optim": {"iters": 1}, "plugins": {"supervised": {}}})
    recipe_dict["data"]["options"] = {}
    recipe.write_text(yaml.safe_dump(recipe_dict))
    assert main(["train", str(recipe), "--out", str(tmp_path / "run")]) == 0
    checkpoint = str(tmp_path / "run" / "last.pt")
    (tmp_path / "data/splits/2/labeled.txt").write_text("images/gone.png masks/gone.png")
    assert main(["eval", str(recipe), "--checkpoint", checkpoint]) == 0
    (tmp_path / "data/splits/val.txt").write_text("")
    Image.new("RGB", (16, 12)).save(tmp_path / "image.png")
    assert main(["predict", str(recipe), str(tmp_path / "image.png"), "--checkpoint", checkpoint,
                 "--out", str(tmp_path / "pred")]) == 0
    assert main(["eval", str(recipe), "--checkpoint", checkpoint]) == 2
    assert "val.txt: empty list" in capsys.readouterr().err
