"""Suite launchers: the SLURM launcher's sbatch script (made by submitit without SLURM), torchrun
for runs over several GPUs or nodes, and a suite run by submitit's local executor with real
processes, preempted by the signal SLURM sends, requeued, and resumed exactly."""

from __future__ import annotations

import os
import re
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import tiny_recipe_dict
from ssseg.cli import main
from ssseg.engine import checkpoint
from ssseg.engine.run import build_run
from ssseg.engine.trainer import Trainer
from ssseg.recipe.load import build_recipe
from ssseg.suite import folder
from ssseg.suite.runner import run_suite
from ssseg.suite.spec import load_suite
from ssseg.suite.train_job import train_command

TESTS = Path(__file__).parent
GOLDEN = TESTS / "golden" / "sbatch_voc_classic.txt"


def test_the_sbatch_script_of_a_cluster_suite_is_the_recorded_one(capsys):
    pytest.importorskip("submitit")
    suite = TESTS.parent / "recipes" / "suites" / "voc_classic.yaml"   # launcher: 4 GPUs, 32 CPUs, 48 h
    assert main(["suite", "run", str(suite), "--launcher", "slurm", "--dry-run", "--out", "/cluster/voc",
                 "--partition", "gpu", "--account", "vision", "--sbatch", "qos=high", "--sbatch", "mem=200G"]) == 0
    script = capsys.readouterr().out.split("# the sbatch script for 12 runs\n", 1)[1]
    assert script.replace(shlex.quote(sys.executable), "<python>") == GOLDEN.read_text()


def test_a_bad_launcher_flag_names_the_key(capsys):
    suite = TESTS.parent / "recipes" / "suites" / "voc_classic.yaml"
    assert main(["suite", "run", str(suite), "--launcher", "slurm", "--dry-run", "--gpus-per-run", "-2"]) == 2
    assert "launcher.gpus_per_run: -2 is out of range" in capsys.readouterr().err


def test_a_run_with_several_gpus_or_nodes_trains_under_torchrun(tmp_path):
    assert train_command(tmp_path, None, False, gpus=1)[1:4] == ["-m", "ssseg", "train"]
    assert train_command(tmp_path, None, False, gpus=4)[1:6] == \
        ["-m", "torch.distributed.run", "--nproc_per_node=4", "--standalone", "-m"]
    cmd = train_command(tmp_path, 8, True, gpus=4, nodes=2, node_rank=1, master="node07")
    assert cmd[3:7] == ["--nproc_per_node=4", "--nnodes=2", "--node_rank=1", "--master_addr=node07"]
    assert re.fullmatch(r"--master_port=\d+", cmd[7]) and cmd[8:12] == ["-m", "ssseg", "train", str(tmp_path / "recipe.yaml")]
    assert cmd[-3:] == ["-o", "run.threads=8", "--resume"]


def wait_for(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_preempted_job_is_requeued_and_resumes_exactly(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    from ssseg.suite.launchers import SubmititLauncher

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    recipe = tiny_recipe_dict({"optim": {"iters": 6}, "run": {"threads": 1},
                               "plugins": {"slow": {"use": "recorder:Slow", "seconds": 0.15}}})
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(recipe))
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump({"base": "tiny.yaml", "seeds": [0], "variants": {"v": {}}}))
    executor = submitit.LocalExecutor(folder=tmp_path / "submitit")
    executor.update_parameters(timeout_min=10)
    out, results = tmp_path / "out", []
    suite_run = threading.Thread(target=lambda: results.append(run_suite(
        load_suite(tmp_path / "suite.yaml"), out, SubmititLauncher(executor, poll_s=0.05), say=lambda _: None)))
    suite_run.start()
    run_dir = out / "v" / "seed0"
    wait_for(lambda: folder.last_iteration(run_dir) >= 1)
    os.kill(folder.read_json(run_dir / folder.STATE)["job_pid"], signal.SIGUSR2)  # SLURM's preemption signal

    (tmp_path / "ref").mkdir()
    reference = Trainer(build_run(build_recipe(recipe)), checkpointer=checkpoint.Checkpointer(tmp_path / "ref"))
    reference_metrics = reference.train()
    suite_run.join(timeout=120)
    assert results == [[]] and folder.run_status(run_dir) == ("done", "6 iterations")
    log = (run_dir / folder.LOG).read_text()
    commands = [line for line in log.splitlines() if line.startswith("$ ")]
    assert len(commands) == 2 and commands[1].endswith("--resume")  # requeued, then resumed
    stopped_at = int(re.search(r"resumed from .* at iteration (\d+)", log).group(1))
    assert 1 <= stopped_at < 6
    assert [r["iteration"] for r in folder.read_records(run_dir, "train")] == [1, 2, 3, 4, 5, 6]
    final = folder.read_records(run_dir, "eval")[-1]
    assert final["student/miou"] == reference_metrics["student/miou"]
    ours, theirs = checkpoint.read(run_dir / "last.pt")["student"], checkpoint.read(tmp_path / "ref" / "last.pt")["student"]
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
