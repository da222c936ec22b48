"""Optimiser step time: torch's per-parameter loop against its multi-tensor (``foreach``) path.

    python benchmarks/optimizer_step.py

torch uses ``foreach`` by default only for CUDA tensors; ssseg's ``build_optimizer`` asks for it
everywhere. Times ``optimizer.step()`` (random gradients, median of ``--steps`` after 3 warm-up
steps, the two paths alternating, one thread) for AdamW and SGD with momentum on the quickstart's Unet-r18 (encoder depth 3,
unused stages dropped as ssseg does) and a DeepLabV3+ ResNet-50.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ssseg.models import build_model  # noqa: E402
from ssseg.recipe.schema import ModelConfig  # noqa: E402

MODELS = {
    "Unet-r18/3 (quickstart)": ModelConfig(arch="Unet", encoder="resnet18",
                                           options={"encoder_depth": 3, "decoder_channels": [64, 32, 16]}),
    "DeepLabV3+ R50": ModelConfig(arch="DeepLabV3Plus", encoder="resnet50"),
}
OPTIMIZERS = {"AdamW": lambda params, foreach: torch.optim.AdamW(params, lr=1e-3, foreach=foreach),
              "SGD": lambda params, foreach: torch.optim.SGD(params, lr=1e-3, momentum=0.9,
                                                             weight_decay=1e-4, foreach=foreach)}


def step_ms(model: torch.nn.Module, make, steps: int) -> tuple[float, float]:
    """Median milliseconds of one ``step()`` of the optimiser ``make`` builds, (loop, foreach):
    two copies of the model stepped in turn, so load on the machine hits both alike."""
    opts = []
    for foreach in (False, True):
        twin = copy.deepcopy(model)
        for p in twin.parameters():
            p.grad = torch.randn_like(p)
        opts.append(make(twin.parameters(), foreach))
    times: tuple[list[float], list[float]] = ([], [])
    for i in range(3 + steps):
        for k in (0, 1) if i % 2 else (1, 0):
            t = time.perf_counter()
            opts[k].step()
            if i >= 3:
                times[k].append(time.perf_counter() - t)
    return statistics.median(times[0]) * 1000, statistics.median(times[1]) * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30)
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, median of {args.steps} steps")
    print("| model | parameters | optimiser | per-parameter loop ms | foreach ms | foreach / loop |")
    print("|---|---|---|---|---|---|")
    for name, cfg in MODELS.items():
        model = build_model(cfg, 4)
        n = sum(p.numel() for p in model.parameters())
        for opt_name, make in OPTIMIZERS.items():
            loop, fused = step_ms(model, make, args.steps)
            print(f"| {name} | {n / 1e6:.1f} M | {opt_name} | {loop:.2f} | {fused:.2f} | {fused / loop:.2f} |")


if __name__ == "__main__":
    main()
