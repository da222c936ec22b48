"""``ssseg predict``: colour-coded masks in the dataset palette, overlays; the report's grid."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image, ImageDraw

from support.recipes import tiny_recipe_dict
from ssseg.cli import main
from ssseg.data.registry import build_data
from ssseg.recipe.load import load_recipe
from ssseg.pictures import CELL, LINE, colour_mask, grid, title_lines, to_pil
from ssseg.suite.report import write_report
from ssseg.suite.folder import MANIFEST
from ssseg.cli import main as suite_main


def pixels(image: Image.Image) -> list:
    """Pixel values in row-major order: ints for one band, tuples for RGB."""
    flat = np.asarray(image).reshape(image.width * image.height, -1).tolist()
    return [p[0] if len(p) == 1 else tuple(p) for p in flat]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A suite-like folder with one finished 1-iteration supervised run: (recipe file, run folder)."""
    out = tmp_path_factory.mktemp("suite")
    recipe = out / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict({"data": {"batch_unlabeled": 0}, "optim": {"iters": 1},
                                                        "plugins": {"supervised": {}}})))
    run = out / "sup" / "seed0"
    assert main(["train", str(recipe), "--out", str(run)]) == 0
    (out / MANIFEST).write_text(json.dumps({"suite": "fake.yaml", "reference": "sup",
                                            "variants": ["sup"], "seeds": [0]}))
    return recipe, run


def test_colour_mask_uses_the_palette_and_white_for_ignore():
    palette = ((10, 20, 30), (40, 50, 60))
    image = colour_mask(torch.tensor([[0, 1], [255, 0]]), palette)
    assert image.mode == "P" and pixels(image) == [0, 1, 255, 0]
    assert pixels(image.convert("RGB")) == [(10, 20, 30), (40, 50, 60), (255, 255, 255), (10, 20, 30)]


def test_predict_writes_palette_masks_and_overlays(trained, tmp_path, capsys):
    recipe, run = trained
    data = build_data(load_recipe(recipe).data)
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"img{i}.png")
        to_pil(data.val[i]["image"]).save(paths[-1])
    out = tmp_path / "pred"
    assert suite_main(["predict", str(recipe), *map(str, paths), "--checkpoint", str(run / "last.pt"),
                       "--out", str(out)]) == 0
    assert "wrote 4 files" in capsys.readouterr().out
    for path in paths:
        mask = Image.open(out / f"{path.stem}_mask.png")
        assert mask.mode == "P" and mask.size == Image.open(path).size
        classes = set(pixels(mask))
        assert classes <= set(range(data.num_classes))
        assert set(pixels(mask.convert("RGB"))) == {data.palette[c] for c in classes}
        assert Image.open(out / f"{path.stem}_overlay.png").mode == "RGB"


def test_predict_errors_are_user_errors(trained, tmp_path, capsys):
    recipe, run = trained
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert suite_main(["predict", str(recipe), str(bad), "--checkpoint", str(run / "last.pt"),
                       "--out", str(tmp_path)]) == 2
    assert "bad.png: unreadable image" in capsys.readouterr().err
    assert suite_main(["predict", str(recipe), str(bad), "--checkpoint", str(run / "last.pt"),
                       "--out", str(tmp_path), "--model", "teacher"]) == 2
    assert "this recipe evaluates student" in capsys.readouterr().err


def test_the_report_grid_shows_images_ground_truth_each_variant_and_the_class_colours(trained):
    recipe, run = trained
    write_report(run.parents[1], predictions=3)
    picture = Image.open(run.parents[1] / "predictions.png").convert("RGB")
    assert picture.height > 16 + 3 * (CELL + 4) and picture.width == 3 * (CELL + 4)
    legend = set(pixels(picture.crop((0, 16 + 3 * (CELL + 4), picture.width, picture.height))))
    assert set(build_data(load_recipe(recipe).data, needs="classes").palette) <= legend
    assert "(predictions.png)" in (run.parents[1] / "report.md").read_text()


def test_grid_layout():
    cells = {"a": [Image.new("RGB", (10, 20))] * 2, "b": [Image.new("P", (20, 20))] * 2}
    assert grid(cells).size == (CELL // 2 + 4 + CELL + 4, 16 + 2 * (CELL + 4))


def test_grid_titles_wrap_instead_of_being_cut():
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    title = "supervised_batch8 · 100"
    assert title_lines(draw, title, CELL - 4) == [title]
    narrow = title_lines(draw, title, 50)
    assert len(narrow) > 1 and "".join(narrow).replace(" ", "") == title.replace(" ", "")
    assert all(draw.textlength(line) <= 50 for line in narrow)
    cells = {title: [Image.new("RGB", (CELL // 2, CELL))], "b": [Image.new("RGB", (CELL // 2, CELL))]}
    assert grid(cells).height == LINE * len(title_lines(draw, title, CELL // 2 - 4)) + 4 + CELL + 4


def test_grid_legend_shows_each_colour_in_rows_that_fit():
    colours = [(10 * k, 200, 30) for k in range(12)]
    cells = {"a": [Image.new("RGB", (CELL, CELL), "black")]}
    picture = grid(cells, [(f"class {k}", c) for k, c in enumerate(colours)])
    assert picture.width == CELL + 4 and picture.height > 16 + CELL + 4 + 2 * LINE   # several rows
    assert set(colours) <= set(pixels(picture.crop((0, 16 + CELL + 4, picture.width, picture.height))))
