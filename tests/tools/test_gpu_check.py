"""benchmarks/gpu_check.py: without CUDA the full check refuses in one line; ``--quick`` runs every
section's code path on the CPU and writes the table and the JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "gpu_check.py"
SECTIONS = ["cuda_tests", "paper_steps", "overhead", "photometric", "sliding_eval", "ddp", "largest_batch"]


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          cwd=SCRIPT.parents[1], timeout=600)


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_the_full_check_says_so_and_fails(tmp_path):
    proc = run("--out", str(tmp_path))
    assert proc.returncode == 2 and "needs a CUDA device" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_quick_runs_every_section_and_writes_the_table_and_the_json(tmp_path):
    proc = run("--quick", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["sections"] == {name: "ok" for name in SECTIONS}
    table = (tmp_path / "gpu_check.md").read_text()
    for name in SECTIONS:
        assert f"| {name} |" in table
    steps = [row for row in report["rows"] if row["section"] == "paper_steps"]
    assert len(steps) == 3 and all(row["step_s"] > 0 for row in steps)
    assert all(row["max_loss_rel_diff"] <= 1e-6 for row in report["rows"] if row["section"] == "overhead")
