"""``ssseg suite run``: runs each variant × seed in a subprocess, skips finished runs, resumes
unfinished ones, reports a failing run without stopping the others."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import tiny_recipe_dict
from ssseg.suite import runner
from ssseg.suite.spec import load_suite
from ssseg.cli import main as suite_main

SUITE = {
    "base": "tiny.yaml",
    "seeds": [0, 1],
    "overrides": {"optim": {"iters": 2}, "eval": {"every": 1}},
    "reference": "plain",
    "variants": {
        "plain": {},
        "hardness": {"patch": {"plugins": {"imas_hardness": {}}}},
        "broken": {"patch": {"data": {"dataset": "folder", "root": "/nonexistent/ssseg"}}},
    },
}
GOOD = ["plain/seed0", "plain/seed1", "hardness/seed0", "hardness/seed1"]


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory):
    """The suite above run once with ``--jobs 2``: (suite file, output folder, exit code, stdout)."""
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


def test_every_good_run_finishes_and_a_failing_run_is_reported(suite_run):
    path, out, code, stdout = suite_run
    assert code == 1
    for name in GOOD:
        assert runner.is_finished(out / name, 2), name
        recipe = yaml.safe_load((out / name / "recipe.yaml").read_text())
        assert recipe["seed"] == int(name[-1]) and recipe["run"]["threads"] == max(1, runner.available_cores() // 2)
    for seed in (0, 1):
        log = out / "broken" / f"seed{seed}" / runner.LOG
        assert f"broken/seed{seed}: failed (exit code 2); log: {log}" in stdout
        assert "/nonexistent/ssseg" in log.read_text()
    assert "2 of 6 runs failed" in stdout
    assert (out / "report.md").is_file() and (out / "report.csv").is_file()


def test_rerunning_skips_finished_runs(suite_run, monkeypatch, capsys):
    path, out, _, _ = suite_run
    before = {name: (out / name / "metrics.jsonl").stat().st_mtime_ns for name in GOOD}
    started = []

    def fake_run(cmd, **kwargs):
        started.append(cmd)
        return subprocess.CompletedProcess(cmd, 1)

    monkeypatch.setattr(runner.subprocess, "run", fake_run)
    assert suite_main(["suite", "run", str(path), "--out", str(out)]) == 1
    assert sorted(Path(cmd[cmd.index("--out") + 1]).relative_to(out).as_posix() for cmd in started) == \
        ["broken/seed0", "broken/seed1"]
    assert {name: (out / name / "metrics.jsonl").stat().st_mtime_ns for name in GOOD} == before
    assert "plain/seed0: finished, skipped" in capsys.readouterr().out


def test_an_unfinished_run_is_resumed_and_a_changed_recipe_is_refused(suite_run, tmp_path, monkeypatch):
    path, out, _, _ = suite_run
    job = load_suite(path).jobs[0]
    assert job.name == "plain/seed0"
    partial = tmp_path / job.name
    partial.mkdir(parents=True)
    (partial / "last.pt").write_bytes(b"")
    (partial / "recipe.yaml").write_text((out / job.name / "recipe.yaml").read_text())
    assert runner.job_state(job, partial) == "partial"
    calls = []
    monkeypatch.setattr(runner.subprocess, "run", lambda cmd, **k: calls.append(cmd) or subprocess.CompletedProcess(cmd, 0))
    assert runner.run_job(job, partial, threads=None) == 0
    assert calls[0][-1] == "--resume" and calls[0][2:4] == ["ssseg", "train"]
    changed = load_suite(path, ["optim.lr=0.5"]).jobs[0]
    assert runner.job_state(changed, out / job.name) == "stale"
    assert runner.job_state(job, out / job.name) == "done"


def test_dry_run_lists_the_runs_and_their_state(suite_run, capsys):
    path, out, _, _ = suite_run
    assert suite_main(["suite", "run", str(path), "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "plain/seed1: done (2 iterations)" in text and "broken/seed0: new (2 iterations)" in text


def test_a_bad_suite_exits_2_before_training(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"variants": {"a": {"recipe": "missing.yaml"}}}))
    assert suite_main(["suite", "run", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "variants.a: recipe" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_records_skip_a_line_a_kill_cut_short(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"iteration": 1, "event": "eval", "student/miou": 0.5}\n'
                                            '{"iteration": 2, "event": "ev')
    assert [r["iteration"] for r in runner.read_records(tmp_path, "eval")] == [1]
