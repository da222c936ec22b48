"""Two gloo processes on CPU: same control-flow decisions on every rank, every validation image
counted once, and only rank 0 writes."""

from __future__ import annotations

import pytest
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from support.recipes import tiny_recipe_dict
from ssseg.cli import main

TESTS = Path(__file__).parents[1]  # the tests folder


@pytest.mark.slow
def test_two_process_gloo_run(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict({
        "optim": {"iters": 3},
        "plugins": {"decisions": {"use": "support.recorder:Decisions", "path": str(tmp_path / "decisions")},
                    # a contributed module with a parameter no step uses, declared for DDP
                    "half": {"use": "support.recorder:HalfUsedHead"}}})))
    env = {**os.environ, "PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "ssseg", "train", str(recipe), "--out", str(tmp_path / "run")],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("val mIoU at iteration 3") == 1  # rank 0 alone reports

    rank0 = (tmp_path / "decisions-0.txt").read_text().splitlines()
    rank1 = (tmp_path / "decisions-1.txt").read_text().splitlines()
    assert len(rank0) == 3 and rank0 == rank1  # every hook ran on both, alike

    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in records if r["event"] == "eval"][-1]
    assert final["student/images"] == 6
    assert len([r for r in records if r["event"] == "train"]) == 3  # written once, not per rank

    capsys.readouterr()
    assert main(["eval", str(recipe), "--checkpoint", str(tmp_path / "run" / "last.pt")]) == 0
    single = capsys.readouterr().out
    assert f"student {100 * final['student/miou']:.1f}" in single  # DDP eval == one process


def test_leave_collects_the_ddp_wrappers_holding_the_group_before_destroying_it(tmp_path):
    """The trainer's DDP wrappers are still alive at leave(), kept by reference cycles (measured
    in a 2-process run: 2 per rank); left to interpreter shutdown, the gloo group they hold can
    abort the process (``terminate called without an active exception``)."""
    import gc
    import weakref

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from ssseg.engine.distributed import leave

    gc.disable()  # so that only leave() can collect the cycle
    try:
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
        ddp = DistributedDataParallel(torch.nn.Linear(2, 2))
        ddp.held_by = [ddp]  # a reference cycle, as the trainer's wrappers are in
        alive = weakref.ref(ddp)
        del ddp
        leave()
        assert alive() is None and not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        gc.enable()
