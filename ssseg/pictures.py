"""Pictures of predictions: colour-coded masks in the dataset's palette, overlays, and grids of
validation images beside their ground truth and each model's prediction, with the classes'
colours below (the suite report's ``predictions.png``, the TensorBoard plugin's image)."""

from __future__ import annotations

import torch
from PIL import Image, ImageDraw
from torch import Tensor

from ssseg.engine.evaluate import predict
from ssseg.engine.precision import autocast
from ssseg.engine.run import Run
from ssseg.models import eval_mode

IGNORE_COLOUR = (255, 255, 255)
CELL = 128  # grid cell height in pixels
LINE = 12  # height of a line of text in a grid
SWATCH = 9  # side of a legend's colour swatch


def colour_mask(mask: Tensor, palette: tuple[tuple[int, int, int], ...], ignore_index: int = 255) -> Image.Image:
    """A paletted PNG image of class indices ``[H,W]``: pixel values are the classes, shown in
    the dataset's colours (``ignore_index`` in white)."""
    colours = [(0, 0, 0)] * 256
    colours[: len(palette)] = palette
    if 0 <= ignore_index < 256:
        colours[ignore_index] = IGNORE_COLOUR
    image = Image.fromarray(mask.to(torch.uint8).cpu().numpy())  # mode L; putpalette makes it P
    image.putpalette([c for rgb in colours for c in rgb])
    return image


def to_pil(image: Tensor) -> Image.Image:
    """An RGB image from a ``[3,H,W]`` tensor in [0, 1]."""
    return Image.fromarray((image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy())


def overlay(image: Tensor, mask: Image.Image, alpha: float = 0.5) -> Image.Image:
    """The image ``[3,H,W]`` in [0, 1] blended with a colour mask (``alpha`` = mask weight)."""
    return Image.blend(to_pil(image), mask.convert("RGB"), alpha)


def predict_mask(run: Run, module: torch.nn.Module, image: Tensor) -> Tensor:
    """Class indices ``[H,W]`` for ``image`` ``[3,H,W]`` with the recipe's evaluation mode and
    ``run.precision``, as training's evaluations predict."""
    r = run.recipe
    with autocast(run.device, r.run.precision):
        return predict(module, image.to(run.device), r.eval, r.data.crop, run.data.num_classes).cpu()


def _cell(image: Image.Image) -> Image.Image:
    width = max(1, round(image.width * CELL / image.height))
    return image.convert("RGB").resize((width, CELL), Image.Resampling.NEAREST)


def title_lines(draw: ImageDraw.ImageDraw, title: str, width: int) -> list[str]:
    """``title`` in lines that fit ``width`` pixels, broken at spaces (a longer word anywhere)."""
    lines: list[str] = []
    for word in title.split():
        if lines and draw.textlength(f"{lines[-1]} {word}") <= width:
            lines[-1] += f" {word}"
            continue
        while len(word) > 1 and draw.textlength(word) > width:
            cut = max((k for k in range(1, len(word)) if draw.textlength(word[:k]) <= width), default=1)
            lines.append(word[:cut])
            word = word[cut:]
        lines.append(word)
    return lines or [""]


def _legend_layout(draw: ImageDraw.ImageDraw, legend: list[tuple[str, tuple[int, int, int]]],
                   width: int) -> list[tuple[int, int, str, tuple[int, int, int]]]:
    """(x, y, name, colour) of each legend entry, in rows that fit ``width`` pixels."""
    placed, x, y = [], 0, 0
    for name, rgb in legend:
        size = SWATCH + 4 + round(draw.textlength(name)) + 12
        if x and x + size > width:
            x, y = 0, y + LINE
        placed.append((x, y, name, rgb))
        x += size
    return placed


def grid(columns: dict[str, list[Image.Image]],
         legend: list[tuple[str, tuple[int, int, int]]] | None = None) -> Image.Image:
    """Columns of equally many images under their titles (wrapped to the column's width), each
    scaled to a height of ``CELL``; below them, ``legend``: a colour swatch per (name, colour)."""
    cells = {t: [_cell(im) for im in ims] for t, ims in columns.items()}
    widths = [max(im.width for im in ims) for ims in cells.values()]
    rows = len(next(iter(cells.values())))
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    titles = [title_lines(draw, title, width - 4) for title, width in zip(cells, widths)]
    header = LINE * max(len(lines) for lines in titles) + 4
    canvas_width = sum(widths) + 4 * len(widths)
    body = header + rows * (CELL + 4)
    entries = _legend_layout(draw, legend or [], canvas_width - 4)
    height = body + (entries[-1][1] + LINE + 4 if entries else 0)
    canvas = Image.new("RGB", (canvas_width, height), "white")
    draw = ImageDraw.Draw(canvas)
    x = 0
    for lines, ims, width in zip(titles, cells.values(), widths):
        for k, line in enumerate(lines):
            draw.text((x + 2, 2 + LINE * k), line, fill="black")
        for row, im in enumerate(ims):
            canvas.paste(im, (x, header + row * (CELL + 4)))
        x += width + 4
    for x, y, name, rgb in entries:
        top = body + y
        draw.rectangle((x + 2, top + 1, x + 2 + SWATCH, top + 1 + SWATCH), fill=tuple(rgb), outline="black")
        draw.text((x + SWATCH + 6, top), name, fill="black")
    return canvas


def class_legend(run: Run) -> list[tuple[str, tuple[int, int, int]]]:
    """(class name, colour) of each class of the run's data, and the colour of ignored pixels."""
    return [*zip(run.data.class_names, run.data.palette), ("ignored", IGNORE_COLOUR)]


def val_columns(run: Run, count: int) -> tuple[list[dict[str, Tensor]], dict[str, list[Image.Image]]]:
    """The first ``count`` validation samples, and their ``image`` and ``ground truth`` columns."""
    samples = [run.data.val[i] for i in range(min(count, len(run.data.val)))]
    return samples, {"image": [to_pil(s["image"]) for s in samples],
                     "ground truth": [colour_mask(s["mask"], run.data.palette, run.data.ignore_index)
                                      for s in samples]}


def prediction_column(run: Run, module: torch.nn.Module, samples: list[dict[str, Tensor]]) -> list[Image.Image]:
    """``module``'s colour-coded predictions of ``samples``, predicted in eval mode (its mode is
    restored afterwards)."""
    with eval_mode(module):
        return [colour_mask(predict_mask(run, module, s["image"]), run.data.palette) for s in samples]


def evaluation_grid(run: Run, models: dict[str, torch.nn.Module], count: int = 4) -> Image.Image:
    """The first ``count`` validation images, their ground truth, and each of ``models``'
    predictions (``after_eval`` passes the evaluated ones), as a grid image."""
    samples, columns = val_columns(run, count)
    for name, module in models.items():
        columns[name] = prediction_column(run, module, samples)
    return grid(columns, class_legend(run))
