"""Bit-level fingerprint of the shipped strategies: every loss term of every step, and the final
weights, for a few steps of each embedded recipe on one thread.

    python benchmarks/loss_fingerprint.py --write benchmarks/loss_fingerprint.json   # record
    python benchmarks/loss_fingerprint.py --check benchmarks/loss_fingerprint.json   # compare

A change to the core that must not change any strategy (a new hook spec, a refactor of the step)
is checked with ``--check`` against the fingerprint recorded before it: losses are compared as
exact float bits (``float.hex``) and weights by a SHA-256 of their bytes. The overhead benchmark
(benchmarks/overhead.py) checks the same bit-identity against a hand-written loop.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ssseg.engine.run import build_run  # noqa: E402
from ssseg.engine.trainer import Trainer  # noqa: E402
from ssseg.recipe.load import load_recipe  # noqa: E402

RECIPES = ["quickstart", "fixmatch", "unimatch", "imas", "imas_unimatch", "mean_teacher"]
STEPS = 12
OVERRIDES = [f"optim.iters={STEPS}", "eval.every=100000", "run.threads=1", "run.log_every=1"]


def weights_digest(modules: dict[str, torch.nn.Module]) -> str:
    """SHA-256 over every tensor of ``modules``' state dicts, in key order."""
    digest = hashlib.sha256()
    for name, module in sorted(modules.items()):
        for key, value in sorted(module.state_dict().items()):
            digest.update(f"{name}.{key}".encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def fingerprint(name: str) -> dict:
    """Loss terms of each step (float.hex) and the final weights' digest of one recipe."""
    recipe = load_recipe(Path("recipes") / f"{name}.yaml", OVERRIDES)
    trainer = Trainer(build_run(recipe))
    losses = []
    batches = trainer.batches()
    for _ in range(STEPS):
        logs = trainer.step(*next(batches))
        losses.append({k: float(v).hex() for k, v in sorted(logs.items()) if k.startswith("loss")})
    run = trainer.run
    modules = {"student": run.student} | ({"teacher": run.teacher} if run.teacher is not None else {})
    return {"losses": losses, "weights": weights_digest(modules)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", type=Path, help="record the fingerprint to this JSON file")
    group.add_argument("--check", type=Path, help="compare with the fingerprint in this JSON file")
    parser.add_argument("--recipes", nargs="*", default=RECIPES)
    args = parser.parse_args()
    torch.set_num_threads(1)
    found = {name: fingerprint(name) for name in args.recipes}
    if args.write:
        args.write.write_text(json.dumps(found, indent=1) + "\n")
        print(f"wrote {args.write}")
        return 0
    expected = json.loads(args.check.read_text())
    bad = 0
    for name, got in found.items():
        want = expected[name]
        same_losses = got["losses"] == want["losses"]
        same_weights = got["weights"] == want["weights"]
        print(f"{name:15s} losses {'identical' if same_losses else 'DIFFER'}, "
              f"weights {'identical' if same_weights else 'DIFFER'}")
        bad += not (same_losses and same_weights)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
