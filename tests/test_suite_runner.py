"""``ssseg suite run``: runs each variant × seed in a subprocess, skips finished runs, resumes
unfinished ones, reports a failing run without stopping the others; ``ssseg suite status``."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import tiny_recipe_dict
from ssseg.cli import main as suite_main
from ssseg.suite import folder, launchers, runner, train_job
from ssseg.suite.spec import load_suite

SUITE = {
    "base": "tiny.yaml",
    "seeds": [1],
    "overrides": {"optim": {"iters": 2}, "eval": {"every": 1}},
    "reference": "plain",
    "variants": {
        "plain": {},
        "hardness": {"patch": {"plugins": {"imas_hardness": {}}}},
        "broken": {"patch": {"data": {"dataset": "folder", "root": "/nonexistent/ssseg"}}},
    },
}
GOOD = ["plain/seed1", "hardness/seed1"]


class FakeProcess:
    """Stands in for ``subprocess.Popen`` in a job: records the command, exits with ``code``."""

    started: list[list[str]] = []
    code = 1

    def __init__(self, cmd, **kwargs):
        FakeProcess.started.append(cmd)
        self.pid, self.returncode = 1, FakeProcess.code

    def poll(self):
        return self.returncode


@pytest.fixture
def fake_training(monkeypatch):
    FakeProcess.started = []
    monkeypatch.setattr(train_job.subprocess, "Popen", FakeProcess)
    return FakeProcess


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory):
    """The suite above (3 runs: two good ones in parallel, one failing) run once with
    ``--jobs 2``: (suite file, output folder, exit code, stdout)."""
    folder = tmp_path_factory.mktemp("suite")
    (folder / "tiny.yaml").write_text(yaml.safe_dump(tiny_recipe_dict({"plugins": {"mean_teacher": {},
                                                                                   "fixmatch": {}}})))
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(SUITE, sort_keys=False))
    out = folder / "out"
    with pytest.MonkeyPatch.context() as mp:
        lines: list[str] = []
        mp.setattr("builtins.print", lambda *a, **k: lines.append(" ".join(map(str, a))))
        code = suite_main(["suite", "run", str(path), "--out", str(out), "--jobs", "2"])
    return path, out, code, "\n".join(lines)


@pytest.mark.slow
def test_every_good_run_finishes_and_a_failing_run_is_reported(suite_run):
    path, out, code, stdout = suite_run
    assert code == 1
    for name in GOOD:
        assert folder.is_finished(out / name, 2), name
        recipe = yaml.safe_load((out / name / "recipe.yaml").read_text())
        assert recipe["seed"] == 1 and recipe["run"]["threads"] == max(1, launchers.available_cores() // 2)
        assert folder.run_status(out / name) == ("done", "2 iterations")
    log = out / "broken" / "seed1" / folder.LOG
    assert f"broken/seed1: failed (exit code 2); log: {log}" in stdout
    assert "/nonexistent/ssseg" in log.read_text()
    assert folder.run_status(out / "broken" / "seed1") == ("failed", f"exit code 2; log: {log}")
    assert "1 of 3 runs failed" in stdout
    assert (out / "report.md").is_file() and (out / "report.csv").is_file()


@pytest.mark.slow
def test_rerunning_skips_finished_runs(suite_run, fake_training, capsys):
    path, out, _, _ = suite_run
    before = {name: (out / name / "metrics.jsonl").stat().st_mtime_ns for name in GOOD}
    assert suite_main(["suite", "run", str(path), "--out", str(out)]) == 1
    assert [Path(cmd[cmd.index("--out") + 1]).relative_to(out).as_posix() for cmd in fake_training.started] == \
        ["broken/seed1"]
    assert {name: (out / name / "metrics.jsonl").stat().st_mtime_ns for name in GOOD} == before
    assert "plain/seed1: finished, skipped" in capsys.readouterr().out


@pytest.mark.slow
def test_an_unfinished_run_is_resumed_and_a_changed_recipe_is_refused(suite_run, tmp_path, fake_training):
    path, out, _, _ = suite_run
    job = load_suite(path).jobs[0]
    assert job.name == "plain/seed1"
    partial = tmp_path / job.name
    partial.mkdir(parents=True)
    (partial / "last.pt").write_bytes(b"")
    (partial / "recipe.yaml").write_text((out / job.name / "recipe.yaml").read_text())
    assert runner.job_state(job, partial) == "partial"
    fake_training.code = 0
    assert train_job.TrainJob(partial)() == 0
    assert fake_training.started[0][-1] == "--resume" and fake_training.started[0][2:4] == ["ssseg", "train"]
    changed = load_suite(path, ["optim.lr=0.5"]).jobs[0]
    assert runner.job_state(changed, out / job.name) == "stale"
    assert runner.job_state(job, out / job.name) == "done"


@pytest.mark.slow
def test_dry_run_lists_the_runs_and_their_state(suite_run, capsys):
    path, out, _, _ = suite_run
    assert suite_main(["suite", "run", str(path), "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "plain/seed1: done (2 iterations)" in text and "broken/seed1: new (2 iterations)" in text


def test_a_bad_suite_exits_2_before_training(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"variants": {"a": {"recipe": "missing.yaml"}}}))
    assert suite_main(["suite", "run", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "variants.a: recipe" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_records_skip_a_line_a_kill_cut_short(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"iteration": 1, "event": "eval", "student/miou": 0.5}\n'
                                            '{"iteration": 2, "event": "ev')
    assert [r["iteration"] for r in folder.read_records(tmp_path, "eval")] == [1]


@pytest.mark.slow  # starts a process for a pid that is gone
def test_status_shows_each_runs_state_from_the_folder_alone(tmp_path, capsys):
    runs = ["a/seed0", "a/seed1", "a/seed2", "b/seed0", "b/seed1", "b/seed2", "b/seed3"]
    (tmp_path / folder.MANIFEST).write_text(json.dumps({"runs": runs}))
    for name in runs:
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "recipe.yaml").write_text("optim: {iters: 4}\n")
    records = [{"iteration": 2, "event": "train"}, {"iteration": 4, "event": "eval"}]
    (tmp_path / "a/seed0/metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "a/seed1/metrics.jsonl").write_text(json.dumps(records[0]) + "\n")
    folder.mark(tmp_path / "a/seed1", "running", pid=os.getpid())
    folder.mark(tmp_path / "a/seed2", "failed", exit_code=2, log="/logs/a2.log")
    folder.mark(tmp_path / "b/seed0", "queued")
    (tmp_path / "b/seed0" / folder.JOB).write_text(json.dumps({"launcher": "slurm", "job_id": "77_3",
                                                              "log": "/s/77_3_0_log.err"}))
    gone = subprocess.Popen(["true"])
    gone.wait()
    folder.mark(tmp_path / "b/seed1", "running", pid=gone.pid)
    folder.mark(tmp_path / "b/seed3", "queued", pid=gone.pid)
    assert suite_main(["suite", "status", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    host = os.uname().nodename
    assert lines == [
        "a/seed0: done (4 iterations)",
        f"a/seed1: running (iteration 2 of 4 on {host} (local))",
        "a/seed2: failed (exit code 2; log: /logs/a2.log)",
        "b/seed0: queued (slurm job 77_3; job log: /s/77_3_0_log.err)",
        f"b/seed1: stopped (iteration 0 of 4; its process ended without a word (see {tmp_path / 'b/seed1/train.log'}))",
        "b/seed2: new",
        "b/seed3: new (the suite run that queued it has ended)",
        "1 done, 1 running, 1 failed, 1 queued, 1 stopped, 2 new",
    ]
