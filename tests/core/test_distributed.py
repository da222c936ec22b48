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
