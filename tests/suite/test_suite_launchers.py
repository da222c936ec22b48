"""Suite launchers: the SLURM launcher's sbatch script (made by submitit without SLURM) and the
`ssseg train` lines of its tasks, torchrun for runs over several GPUs or nodes, the SLURM launcher
against fake sbatch/sacct/scancel commands (submission, one sacct call for all jobs, failures
recorded, no silent resubmission, following earlier jobs, cancel), and a suite run by submitit's
local executor with real processes, preempted by the signal SLURM sends, requeued, and resumed
exactly."""

from __future__ import annotations

import os
import re
import shlex
import signal
import sys
import threading
import time
import types
from pathlib import Path

import pytest
import torch
import yaml

from support.recipes import tiny_recipe_dict
from support.fake_slurm import FakeSlurm
from ssseg.cli import main
from ssseg.engine import checkpoint
from ssseg.engine.run import build_run
from ssseg.engine.trainer import Trainer
from ssseg.recipe.load import build_recipe
from ssseg.suite import folder, launchers
from ssseg.suite.slurm import parse_sacct
from ssseg.suite.runner import run_suite, write_manifest
from ssseg.suite.spec import load_suite
from ssseg.suite.train_job import train_command

TESTS = Path(__file__).parents[1]  # the tests folder
GOLDEN = TESTS / "support" / "golden" / "sbatch_voc_classic.txt"


def test_the_sbatch_script_of_a_cluster_suite_is_the_recorded_one(capsys):
    pytest.importorskip("submitit")
    suite = TESTS.parent / "recipes" / "suites" / "voc_classic.yaml"   # launcher: 4 GPUs, 32 CPUs, 48 h
    assert main(["suite", "run", str(suite), "--launcher", "slurm", "--dry-run", "--out", "/cluster/voc",
                 "--partition", "gpu", "--account", "vision", "--sbatch", "qos=high", "--sbatch", "mem=200G"]) == 0
    listing, script = capsys.readouterr().out.split("# the sbatch script for 12 runs\n", 1)
    assert script.replace(shlex.quote(sys.executable), "<python>") == GOLDEN.read_text()
    lines = listing.splitlines()
    assert lines[:2] == ["supervised/seed0: new (98480 iterations)",
                         f"    [array task 0] $ {sys.executable} -m torch.distributed.run --nproc_per_node=4 "
                         "--standalone -m ssseg train /cluster/voc/supervised/seed0/recipe.yaml --out "
                         "/cluster/voc/supervised/seed0 -o run.threads=8"]
    assert lines[23].startswith("    [array task 11] $ ") and lines[23].endswith("--out /cluster/voc/imas/seed2 -o run.threads=8")


def test_a_bad_launcher_flag_names_the_key(capsys):
    suite = TESTS.parent / "recipes" / "suites" / "voc_classic.yaml"
    assert main(["suite", "run", str(suite), "--launcher", "slurm", "--dry-run", "--gpus-per-run", "-2"]) == 2
    assert "launcher.gpus_per_run: -2 is out of range" in capsys.readouterr().err


def test_sacct_answers_are_read_per_job_and_array_task():
    text = ("4242_0|COMPLETED\n4242_0.batch|COMPLETED\n4242_1|CANCELLED by 501\n4242_[2-4,7%4]|PENDING\n"
            "4243|RUNNING\n4243.extern|RUNNING\n")
    assert parse_sacct(text) == {"4242_0": "COMPLETED", "4242_1": "CANCELLED", "4242_2": "PENDING",
                                 "4242_3": "PENDING", "4242_4": "PENDING", "4242_7": "PENDING", "4243": "RUNNING"}


def small_suite(folder: Path) -> Path:
    (folder / "tiny.yaml").write_text(yaml.safe_dump(tiny_recipe_dict({"data": {"batch_unlabeled": 0},
                                                                       "plugins": {"supervised": {}}})))
    path = folder / "small.yaml"
    path.write_text(yaml.safe_dump({"base": "tiny.yaml", "seeds": [0], "variants": {"a": {}, "b": {}}}))
    return path


def test_slurm_without_its_commands_says_what_is_missing_and_where_to_run(tmp_path, monkeypatch, capsys):
    pytest.importorskip("submitit")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["suite", "run", str(small_suite(tmp_path)), "--launcher", "slurm", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("ssseg: error: --launcher slurm: no sbatch, srun, sacct, scancel "
                                              "on this machine; run it where the SLURM commands are")


@pytest.fixture
def fast_polls(monkeypatch):
    """The SLURM launcher polls every 0.05 s, and fails the test instead of polling forever."""
    polls = []

    def sleep(seconds):
        polls.append(seconds)
        assert len(polls) < 200, "the launcher still follows its jobs after 200 polls"
        time.sleep(seconds)

    monkeypatch.setattr(launchers, "SLURM_POLL_S", 0.05)
    monkeypatch.setattr(launchers, "time", types.SimpleNamespace(sleep=sleep))


@pytest.mark.slow
def test_a_failed_array_is_reported_at_once_recorded_and_not_resubmitted_unless_asked(tmp_path, monkeypatch, capsys,
                                                                                      fast_polls):
    pytest.importorskip("submitit")
    slurm = FakeSlurm(tmp_path / "slurm", monkeypatch)
    suite, out = small_suite(tmp_path), tmp_path / "out"
    run = ["suite", "run", str(suite), "--launcher", "slurm", "--out", str(out)]
    slurm.sacct({"4242_0": "PENDING", "4242_1": "PENDING"}, "4242_[0-1%2]|PENDING\n",
                {"4242_0": "FAILED", "4242_1": "OUT_OF_MEMORY"})
    began = time.monotonic()
    assert main(run) == 1
    assert time.monotonic() - began < 10                  # not one failure per 15 s
    text = capsys.readouterr().out
    assert "2 runs to train, 0 already queued or running, 0 skipped\nsubmitted 2 runs to slurm as job array " \
           "4242 (tasks 4242_0 to 4242_1)\n" in text
    log = out / ".submitit" / "4242_0" / "4242_0_0_log.err"
    assert f"a/seed0: failed (slurm job 4242_0 ended FAILED before the training recorded an end; job log: {log})" in text
    assert "b/seed0: failed (slurm job 4242_1 ended OUT_OF_MEMORY" in text
    assert len(slurm.calls("sbatch")) == 1 and len(slurm.calls("sacct")) == 3    # one sacct call per poll
    assert slurm.calls("sacct")[0][-2:] == ["--jobs", "4242"]

    slurm.sacct_fails("sacct: error: Problem talking to the database")   # the folder alone now says failed
    assert main(["suite", "status", str(out)]) == 0
    status = capsys.readouterr().out.splitlines()
    assert status[0].startswith("a/seed0: failed (slurm job 4242_0 ended FAILED") and status[2] == "2 failed"
    assert status[3] == ("(SLURM not asked: sacct failed: sacct: error: Problem talking to the database; queued "
                         "and running runs as their folders last recorded)")
    (slurm.root / "sacct_error").unlink()

    assert main(run) == 1                                  # failed runs are not resubmitted silently
    assert len(slurm.calls("sbatch")) == 1
    text = capsys.readouterr().out
    assert "a/seed0: failed before (slurm job 4242_0 ended FAILED" in text and "--retry-failed trains it again" in text

    slurm.sacct({"4242_0": "FAILED", "4242_1": "FAILED"}, "4243_[0-1%2]|PENDING\n",
                {"4243_0": "RUNNING", "4243_1": "PENDING"}, {"4243_0": "CANCELLED", "4243_1": "CANCELLED"})
    assert main([*run, "--retry-failed"]) == 1
    script = Path(slurm.calls("sbatch")[1][0]).read_text()
    assert "#SBATCH --array=0-1%2" in script
    text = capsys.readouterr().out
    assert "submitted 2 runs to slurm as job array 4243" in text
    assert "a/seed0: new (slurm job 4243_0 was cancelled; `ssseg suite run` trains it)" in text


@pytest.mark.slow
def test_jobs_of_an_earlier_suite_run_are_followed_and_cancelled(tmp_path, monkeypatch, capsys, fast_polls):
    pytest.importorskip("submitit")
    slurm = FakeSlurm(tmp_path / "slurm", monkeypatch)
    suite, out = small_suite(tmp_path), tmp_path / "out"
    write_manifest(load_suite(suite), out)
    for task, name in enumerate(["a/seed0", "b/seed0"]):    # what a suite run stopped by Ctrl-C leaves
        folder.mark(out / name, "queued", launcher="slurm")
        folder.write_json(out / name / folder.JOB, {"launcher": "slurm", "job_id": f"77_{task}", "log": "/l"})
    slurm.sacct({"77_0": "RUNNING", "77_1": "PENDING"})
    assert main(["suite", "cancel", str(out)]) == 0
    assert slurm.calls("scancel") == [["77_0", "77_1"]]
    assert capsys.readouterr().out.startswith("cancelled 2 SLURM jobs: 77_0, 77_1")

    slurm.sacct({"77_0": "RUNNING", "77_1": "PENDING"}, {"77_0": "RUNNING", "77_1": "PENDING"},
                {"77_0": "CANCELLED", "77_1": "RUNNING"}, {"77_0": "CANCELLED", "77_1": "TIMEOUT"})
    assert main(["suite", "run", str(suite), "--launcher", "slurm", "--out", str(out)]) == 1
    text = capsys.readouterr().out
    assert "a/seed0: already queued (slurm job 77_0; job log: /l)" in text
    assert "0 runs to train, 2 already queued or running, 0 skipped" in text and not slurm.calls("sbatch")
    assert "a/seed0: new (slurm job 77_0 was cancelled" in text
    assert "b/seed0: failed (slurm job 77_1 ended TIMEOUT before the training recorded an end; job log: /l)" in text
    assert main(["suite", "cancel", str(out)]) == 0
    assert capsys.readouterr().out == f"nothing to cancel in {out}: no run is queued or running\n"


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
                               "plugins": {"slow": {"use": "support.recorder:Slow", "seconds": 0.15}}})
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
