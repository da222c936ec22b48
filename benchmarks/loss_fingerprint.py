"""Bit-level fingerprint of every embedded-data recipe: each logged value of the first steps, the
evaluation at the end and the final weights, trained through ``ssseg train`` on one thread.

    python benchmarks/loss_fingerprint.py --write benchmarks/loss_fingerprint.json   # record
    python benchmarks/loss_fingerprint.py --check benchmarks/loss_fingerprint.json   # compare
    python benchmarks/loss_fingerprint.py --write benchmarks/loss_fingerprint.json --recipes augseg.yaml  # add one

A change to the core that must not change any strategy (a new hook spec, a refactor of the step)
is checked with ``--check`` against the fingerprint recorded before it: losses and mIoU are
compared as exact float bits (``float.hex``) and weights by a SHA-256 of the checkpoint's model
tensors. It runs the command line in this process, so it depends on no internal API and keeps
working across a redesign of the trainer. Every recipe under ``recipes/`` (the shared bases,
paper recipes and suites aside) whose dataset is ``embedded`` is covered, except staged recipes
(their stages are whole runs of other recipes; tests/core/test_stages.py covers the staging).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from ssseg.cli import main as ssseg_main  # noqa: E402
from ssseg.recipe.load import load_recipe  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STEPS = 12
OVERRIDES = [f"optim.iters={STEPS}", "eval.every=100000", "eval.max_images=4", "run.threads=1",
             "run.log_every=1", "run.checkpoint_every=100000"]
MODEL_KEYS = ("student", "teacher", "modules")
UNTIMED = ("event", "wall_s")  # every other train-record value (losses, lr, λ_u, plugin logs) is compared


def embedded_recipes() -> list[str]:
    """The recipes (relative to ``recipes/``) that train on the embedded dataset."""
    found = []
    for path in sorted((ROOT / "recipes").rglob("*.yaml")):
        rel = path.relative_to(ROOT / "recipes")
        if rel.parts[0] in ("base", "paper", "suites"):
            continue
        recipe = load_recipe(path, [])
        if recipe.data.dataset == "embedded" and not recipe.stages:  # staged: tests/core/test_stages.py
            found.append(rel.as_posix())
    return found


def weights_digest(checkpoint: Path) -> str:
    """SHA-256 over every model tensor of a checkpoint (student, teacher, modules), in key order."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    digest = hashlib.sha256()

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key in sorted(value):
                walk(f"{prefix}.{key}", value[key])
        elif isinstance(value, torch.Tensor):
            digest.update(prefix.encode())
            digest.update(value.detach().contiguous().numpy().tobytes())

    for key in MODEL_KEYS:
        walk(key, state.get(key))
    return digest.hexdigest()


def fingerprint(name: str) -> dict:
    """Loss terms of each step and the final evaluation (float.hex) and the weights' digest."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        code = ssseg_main(["train", str(ROOT / "recipes" / name), "--out", str(out),
                           *[a for o in OVERRIDES for a in ("-o", o)]])
        if code != 0:
            raise SystemExit(f"{name}: ssseg train exited {code}")
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        losses = [{k: float(v).hex() for k, v in sorted(r.items()) if k not in UNTIMED}
                  for r in records if r["event"] == "train"]
        evals = [{k: float(v).hex() for k, v in sorted(r.items()) if k.endswith("/miou")}
                 for r in records if r["event"] == "eval"]
        return {"losses": losses, "eval": evals, "weights": weights_digest(out / "last.pt")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", type=Path, help="record the fingerprint to this JSON file")
    group.add_argument("--check", type=Path, help="compare with the fingerprint in this JSON file")
    parser.add_argument("--recipes", nargs="*", help="recipes relative to recipes/ (default: all embedded)")
    args = parser.parse_args()
    found = {name: fingerprint(name) for name in (args.recipes or embedded_recipes())}
    if args.write:  # with --recipes, only their entries of an existing file change
        kept = json.loads(args.write.read_text()) if args.recipes and args.write.exists() else {}
        args.write.write_text(json.dumps(dict(sorted({**kept, **found}.items())), indent=1) + "\n")
        print(f"wrote {args.write} ({len(found)} recipes)")
        return 0
    expected = json.loads(args.check.read_text())
    bad = 0
    for name, got in found.items():
        want = expected.get(name)
        if want is None:
            print(f"{name:45s} not in {args.check}")
            bad += 1
            continue
        verdict = {part: "identical" if got[part] == want[part] else "DIFFER" for part in got}
        print(f"{name:45s} " + ", ".join(f"{part} {v}" for part, v in verdict.items()))
        bad += "DIFFER" in verdict.values()
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
