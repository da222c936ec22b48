"""Throughput of the real-dataset loaders: decode + weak pipeline, images per second.

Writes synthetic datasets in the real layouts to a temporary directory (VOC-like: 500x375 JPEGs
with index PNG masks; Cityscapes-like: 1024x2048 PNGs with labelTrainIds masks), builds them with
``ssseg.data.registry.build_data`` (split ``all``, scale U[0.5, 2.0], flip) and times the labeled set
(image and mask decoded, rescaled, padded, cropped, flipped) through a ``DataLoader`` with 0, 1
and 2 workers (one intra-op thread per process). The first batch (worker start-up) is not timed.
The machine's load average is printed with each row: on a shared machine it explains outliers.

    python benchmarks/data_throughput.py            # about 2 minutes on 2 CPU cores
    python benchmarks/data_throughput.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, RandomSampler

from ssseg.data.registry import build_data
from ssseg.recipe.schema import DataConfig

# name, dataset, (height, width), crop, classes, images on disk, image path, mask path, image format
CASES = (
    ("VOC-like 500x375", "pascal_voc", (375, 500), 513, 21,
     "JPEGImages/{i:06d}.jpg", "SegmentationClass/{i:06d}.png", "JPEG"),
    ("Cityscapes-like 1024x2048", "cityscapes", (1024, 2048), 769, 19,
     "leftImg8bit/train/city/city_{i:06d}_leftImg8bit.png",
     "gtFine/train/city/city_{i:06d}_gtFine_labelTrainIds.png", "PNG"),
)


def synthetic_pair(rng: np.random.Generator, size: tuple[int, int], classes: int):
    """A photo-like image (smooth colour field + sensor noise) and a blocky index mask."""
    h, w = size
    coarse = torch.from_numpy(rng.uniform(0, 255, (1, 3, h // 32, w // 32)).astype(np.float32))
    smooth = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic")[0]
    image = (smooth.permute(1, 2, 0).numpy() + rng.normal(0, 4, (h, w, 3))).clip(0, 255)
    blocks = rng.integers(0, classes, (h // 64 + 1, w // 64 + 1))
    mask = blocks.repeat(64, 0).repeat(64, 1)[:h, :w]
    mask[rng.uniform(size=(h, w)) < 0.01] = 255
    return image.astype(np.uint8), mask.astype(np.uint8)


def write_dataset(root: Path, case: tuple, count: int) -> None:
    """``count`` synthetic pairs in the case's layout, and a split directory ``splits``."""
    _, _, size, _, classes, image_path, mask_path, fmt = case
    rng = np.random.default_rng(0)
    lines = []
    for i in range(count):
        image, mask = synthetic_pair(rng, size, classes)
        paths = image_path.format(i=i), mask_path.format(i=i)
        for rel, array in zip(paths, (image, mask)):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(root / rel, fmt if rel == paths[0] else "PNG", quality=90)
        lines.append(" ".join(paths))
    (root / "splits").mkdir()
    for name in ("pool.txt", "val.txt"):
        (root / "splits" / name).write_text("\n".join(lines) + "\n")


def images_per_second(dataset, workers: int, samples: int, batch: int) -> float:
    """Steady-state throughput of ``samples`` random samples, the first batch excluded."""
    sampler = RandomSampler(dataset, replacement=True, num_samples=samples,
                            generator=torch.Generator().manual_seed(0))
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers)
    batches = iter(loader)
    next(batches)
    start = time.perf_counter()
    timed = sum(len(b["image"]) for b in batches)
    return timed / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few samples: a smoke run")
    args = parser.parse_args()
    samples = {"pascal_voc": 64 if args.quick else 320, "cityscapes": 8 if args.quick else 48}
    torch.set_num_threads(1)  # as in DataLoader workers; spare cores go to the workers
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, 1 intra-op thread per process\n")
    print("| data | crop | workers | images/s | load avg (1 min) |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            name, dataset, _, crop, *_ = case
            root = Path(tmp) / dataset
            write_dataset(root, case, count=16)
            cfg = DataConfig(dataset=dataset, root=str(root), split="all", crop=crop,
                             options={"split_dir": "splits"})
            labeled = build_data(cfg).labeled
            for workers in (0, 1, 2):
                rate = images_per_second(labeled, workers, samples[dataset], batch=4)
                print(f"| {name} | {crop} | {workers} | {rate:.1f} | {os.getloadavg()[0]:.1f} |",
                      flush=True)


if __name__ == "__main__":
    main()
