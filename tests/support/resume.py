"""The one resume-equivalence check of the tests: a run resumed from a mid-run checkpoint logs the
same steps and ends with the same weights as the run trained straight through."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import torch

from ssseg.engine import checkpoint
from ssseg.engine.run import build_run
from ssseg.engine.trainer import Trainer


def step_logs(out_dir: Path) -> list[dict]:
    """The training records of a run folder's metrics.jsonl, wall time left out."""
    records = map(json.loads, (out_dir / "metrics.jsonl").read_text().splitlines())
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in records if r["event"] == "train"]


def weights(run) -> dict[str, torch.Tensor]:
    """Every trained tensor of a run: student, teacher and contributed modules."""
    named = {"student": run.student, **run.modules, **({"teacher": run.teacher} if run.separate_teacher else {})}
    return {f"{m}.{k}": v for m, module in named.items() for k, v in module.state_dict().items()}


def assert_resume_is_exact(recipe, tmp_path: Path, at: int = 2) -> tuple[Trainer, Trainer]:
    """Train ``recipe`` straight (a checkpoint every step), then a fresh run restored from the
    checkpoint of iteration ``at`` to the end: the same step logs from ``at`` on and the same
    weights. Returns (straight, resumed) for further checks."""
    recipe = attrs.evolve(recipe, run=attrs.evolve(recipe.run, checkpoint_every=1,
                                                   log_every=1, keep_checkpoints=recipe.optim.iters))
    full, resumed_dir = tmp_path / "full", tmp_path / "resumed"
    full.mkdir()
    resumed_dir.mkdir()
    straight = Trainer(build_run(recipe, full),
                       checkpointer=checkpoint.Checkpointer(full, keep=recipe.optim.iters))
    straight.train()
    resumed = Trainer(build_run(recipe, resumed_dir))
    checkpoint.restore(resumed, full / f"iter_{at:07d}.pt")
    resumed.train()
    assert step_logs(resumed_dir) == step_logs(full)[at:]
    a, b = weights(straight.run), weights(resumed.run)
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    return straight, resumed
