"""How long training's data check takes on a VOC-sized folder dataset: every labeled and val pair
(image header, decoded mask) of 1,464 labeled and 1,449 val pairs of 500x375 (JPEG images, PNG
masks), the sizes of PASCAL VOC's classic split.

    python benchmarks/data_precheck.py [--root /tmp/precheck] [--labeled 1464] [--val 1449]

Writes the tree once (kept under ``--root`` for reruns), then times ``build_data`` (which runs
the check) three times and prints the median.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ssseg.data.registry import build_data
from ssseg.recipe.schema import DataConfig


def write_tree(root: Path, labeled: int, val: int, classes: int = 21) -> None:
    """A folder dataset of ``labeled`` + ``val`` pairs of 500x375 and a split ``"voc"``."""
    if (root / "splits" / "voc" / "labeled.txt").is_file():
        return
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    (root / "classes.yaml").write_text(f"names: [{', '.join(f'c{k}' for k in range(classes))}]\n")
    lines = []
    for i in range(labeled + val):
        Image.fromarray(rng.integers(0, 255, (375, 500, 3), dtype=np.uint8)).save(root / "images" / f"{i}.jpg")
        mask = np.repeat(np.repeat(rng.integers(0, classes, (15, 20), dtype=np.uint8), 25, 0), 25, 1)
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
        lines.append(f"images/{i}.jpg masks/{i}.png")
    (root / "splits" / "voc").mkdir(parents=True, exist_ok=True)
    (root / "splits" / "pool.txt").write_text("\n".join(lines[:labeled]) + "\n")
    (root / "splits" / "val.txt").write_text("\n".join(lines[labeled:]) + "\n")
    (root / "splits" / "voc" / "labeled.txt").write_text("\n".join(lines[:labeled]) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/precheck"))
    parser.add_argument("--labeled", type=int, default=1464)
    parser.add_argument("--val", type=int, default=1449)
    args = parser.parse_args()
    write_tree(args.root, args.labeled, args.val)
    cfg = DataConfig(dataset="folder", root=str(args.root), split="voc", crop=321)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        build_data(cfg)
        times.append(time.perf_counter() - start)
    print(f"{args.labeled} labeled + {args.val} val pairs: build_data (with the check) "
          f"{statistics.median(times):.2f} s median of {', '.join(f'{t:.2f}' for t in times)}")


if __name__ == "__main__":
    main()
