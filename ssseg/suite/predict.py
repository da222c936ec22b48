"""``ssseg predict`` (colour masks and overlays of image files) and the suite report's grid of
validation images predicted by each variant."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from ssseg.data.io import read_image
from ssseg.engine.evaluator import load_model
from ssseg.errors import UserError
from ssseg.files import write_atomically
from ssseg.pictures import class_legend, colour_mask, grid, overlay, predict_mask, prediction_column, val_columns
from ssseg.recipe.load import build_recipe, read_yaml
from ssseg.recipe.schema import Recipe
from ssseg.suite.results import SuiteResults


def predict_files(recipe: Recipe, checkpoint: Path, images: list[Path], out: Path,
                  model: str = "student") -> list[Path]:
    """Write ``<stem>_mask.png`` (paletted) and ``<stem>_overlay.png`` for each image into ``out``."""
    run, module = load_model(recipe, checkpoint, model)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in images:
        image = read_image(path).float() / 255
        mask = colour_mask(predict_mask(run, module, image), run.data.palette, run.data.ignore_index)
        written += [out / f"{path.stem}_mask.png", out / f"{path.stem}_overlay.png"]
        mask.save(written[-2])
        overlay(image, mask).save(written[-1])
    return written


def prediction_grid(results: SuiteResults, out: Path, count: int = 4) -> tuple[str, str]:
    """``predictions.png``: the first ``count`` validation images, their ground truth, and each
    row's student prediction (variant and axis value; first seed with a finished run, its
    ``last.pt``), with the classes' colours below."""
    columns: dict[str, list[Image.Image]] = {}
    run = None
    for variant, point in results.rows():
        if not results.eval_records[variant, point]:
            continue
        run_dir = results.run_dir(variant, point, min(results.eval_records[variant, point]))
        recipe = build_recipe(read_yaml(run_dir / "recipe.yaml"), str(run_dir / "recipe.yaml"))
        run, module = load_model(recipe, run_dir / "last.pt", needs="val")
        samples, first = val_columns(run, count)
        columns = columns or first
        columns[results.label(variant, point)] = prediction_column(run, module, samples)
    if run is None:
        raise UserError("no finished run to predict with")
    image = grid(columns, class_legend(run))
    write_atomically(out / "predictions.png", lambda file: image.save(file, format="PNG"))
    return "Predictions on the first validation images (student, first seed)", "predictions.png"
