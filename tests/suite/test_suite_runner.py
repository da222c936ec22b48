"""``ssseg suite run``: runs each variant × seed in a subprocess, skips finished runs, resumes
unfinished ones, reports a failing run without stopping the others (and retries it only when
asked), writes the report whatever failed, refuses an unwritable --out and a folder another
``suite run`` writes; its training children die with it (SIGKILL) or save and stop when it is
stopped (``ssseg suite cancel``); ``ssseg suite status``."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from support.recipes import tiny_recipe_dict
from support.disk_faults import fail_writes
from support.fake_slurm import FakeSlurm
from ssseg import run_lock
from ssseg.cli import main as suite_main
from ssseg.suite import folder, launchers, runner, train_job
from ssseg.suite.spec import load_suite

TESTS = Path(__file__).parents[1]  # the tests folder
POPEN = subprocess.Popen  # fake_training replaces subprocess.Popen; helper processes are real

SUITE = {
    "base": "tiny.yaml",
    "seeds": [1],
    "overrides": {"optim": {"iters": 2}, "eval": {"every": 1}},
    "reference": "plain",
    "variants": {
        "plain": {},
        "hardness": {"patch": {"plugins": {"imas_hardness": {}, "imas_weighting": {}}}},
        "broken": {"patch": {"data": {"dataset": "folder", "root": "/nonexistent/ssseg"}}},
    },
}
GOOD = ["plain/seed1", "hardness/seed1"]


class FakeProcess:
    """Stands in for ``subprocess.Popen`` in a job: records the ``ssseg train`` command (checked
    to be tethered, in its own session), writes ``output`` into the run's log, exits with
    ``code``."""

    started: list[list[str]] = []
    code = 1
    output = ""

    def __init__(self, cmd, stdout=None, **kwargs):
        assert cmd[1:4] == ["-m", "ssseg.suite.tethered", str(os.getpid())] and kwargs["start_new_session"]
        FakeProcess.started.append(cmd[4:])
        stdout.write(FakeProcess.output)
        self.pid, self.returncode = -1, FakeProcess.code   # no process: never signalled

    def poll(self):
        return self.returncode


@pytest.fixture
def fake_training(monkeypatch):
    FakeProcess.started, FakeProcess.code, FakeProcess.output = [], 1, ""
    monkeypatch.setattr(train_job.subprocess, "Popen", FakeProcess)
    return FakeProcess


def started_runs(fake, out):
    return [Path(cmd[cmd.index("--out") + 1]).relative_to(out).as_posix() for cmd in fake.started]


@pytest.fixture
def small_suite(tmp_path):
    """A suite file of two supervised variants, one seed: its path."""
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny_recipe_dict({"data": {"batch_unlabeled": 0},
                                                                         "plugins": {"supervised": {}}})))
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump({"base": "tiny.yaml", "seeds": [0], "variants": {
        "a": {}, "b": {"patch": {"optim": {"lr": 0.02}}}}}))
    return path


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
    assert f"broken/seed1: failed (exit code 2; log: {log})" in stdout
    assert "/nonexistent/ssseg" in log.read_text()
    assert folder.run_status(out / "broken" / "seed1") == ("failed", f"exit code 2; log: {log}")
    assert f"1 of 3 runs not done:\nbroken/seed1: failed (exit code 2; log: {log})" in stdout
    assert (out / "report.md").is_file() and (out / "report.csv").is_file()


@pytest.mark.slow
def test_rerunning_skips_finished_runs_and_retries_failed_ones_only_when_asked(suite_run, fake_training, capsys):
    path, out, _, _ = suite_run
    before = {name: (out / name / "metrics.jsonl").stat().st_mtime_ns for name in GOOD}
    assert suite_main(["suite", "run", str(path), "--out", str(out)]) == 1
    assert fake_training.started == []
    text = capsys.readouterr().out
    assert "plain/seed1: finished, skipped" in text
    assert "broken/seed1: failed before (exit code 2; log: " in text and "--retry-failed trains it again" in text
    assert suite_main(["suite", "run", str(path), "--out", str(out), "--retry-failed"]) == 1
    assert started_runs(fake_training, out) == ["broken/seed1"]
    assert {name: (out / name / "metrics.jsonl").stat().st_mtime_ns for name in GOOD} == before


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


def test_a_suite_whose_runs_all_fail_still_writes_its_report(small_suite, tmp_path, fake_training, capsys):
    fake_training.code, fake_training.output = 2, "ssseg: error: no space left on /disk (writing last.pt)\n"
    out = tmp_path / "out"
    assert suite_main(["suite", "run", str(small_suite), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("2 runs (2 variants × 1 seed) into ")
    assert f"2 of 2 runs not done:\na/seed0: failed (exit code 2; log: {out / 'a/seed0/train.log'})" in captured.out
    assert f"report: {out / 'report.md'}" in captured.out and "Traceback" not in captured.err
    text = (out / "report.md").read_text()
    assert "**No run has finished** (0 of 2 runs)" in text and "  ssseg: error: no space left on /disk" in text


def test_an_unwritable_out_is_one_clear_line(small_suite, tmp_path, fake_training, capsys, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    fail_writes(monkeypatch, out, errno.EROFS)
    assert suite_main(["suite", "run", str(small_suite), "--out", str(out)]) == 2
    assert capsys.readouterr().err == (f"ssseg: error: cannot write in the output folder {out} (Read-only file "
                                       "system); choose another --out\n")
    assert fake_training.started == [] and list(out.iterdir()) == []


HOLDER = """
import sys
from ssseg import run_lock
with run_lock.acquire(sys.argv[1], "ssseg suite run"):
    print("held", flush=True)
    sys.stdin.read()
"""


@pytest.mark.slow
def test_a_second_suite_run_on_a_folder_in_use_is_refused(small_suite, tmp_path, fake_training, capsys):
    out = tmp_path / "out"
    out.mkdir()
    holder = POPEN([sys.executable, "-c", HOLDER, str(out / folder.SUITE_LOCK)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        assert suite_main(["suite", "run", str(small_suite), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"ssseg: error: {out} is in use by ssseg suite run (pid {holder.pid} on ")
        assert err.endswith(f"wait for it to end, or stop it with `ssseg suite cancel {out}`\n")
        assert fake_training.started == [] and not (out / folder.MANIFEST).exists()
    finally:
        holder.communicate("")
    assert not (out / folder.SUITE_LOCK).exists()
    fake_training.code = 0
    assert suite_main(["suite", "run", str(small_suite), "--out", str(out)]) == 1   # fake runs leave no metrics
    assert started_runs(fake_training, out) == ["a/seed0", "b/seed0"]


def test_records_skip_a_line_a_kill_cut_short(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"iteration": 1, "event": "eval", "student/miou": 0.5}\n'
                                            '{"iteration": 2, "event": "ev')
    assert [r["iteration"] for r in folder.read_records(tmp_path, "eval")] == [1]


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.slow  # starts processes for pids that are gone
def test_status_shows_each_runs_state_from_the_folder(tmp_path, capsys, monkeypatch):
    FakeSlurm(tmp_path / "slurm", monkeypatch)       # sacct knows no job
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
    zombie = subprocess.Popen(["true"])            # ended, not yet reaped: os.kill(pid, 0) still succeeds
    wait_for(lambda: Path(f"/proc/{zombie.pid}/stat").read_text().split(") ")[1][0] == "Z")
    folder.mark(tmp_path / "b/seed2", "running", pid=zombie.pid)
    assert suite_main(["suite", "status", str(tmp_path)]) == 0
    zombie.wait()
    lines = capsys.readouterr().out.splitlines()
    host = os.uname().nodename
    assert lines == [
        "a/seed0: done (4 iterations)",
        f"a/seed1: running (iteration 2 of 4 on {host} (local))",
        "a/seed2: failed (exit code 2; log: /logs/a2.log)",
        "b/seed0: queued (slurm job 77_3; job log: /s/77_3_0_log.err)",
        f"b/seed1: stopped (iteration 0 of 4; its process ended without a word (see {tmp_path / 'b/seed1/train.log'}))",
        f"b/seed2: stopped (iteration 0 of 4; its process ended without a word (see {tmp_path / 'b/seed2/train.log'}))",
        "b/seed3: new (the suite run that queued it has ended)",
        "1 done, 1 running, 1 failed, 1 queued, 2 stopped, 1 new",
    ]


SITECUSTOMIZE = '''
import os, sys
if os.environ.get("FAKE_TRAINING"):   # `ssseg suite run` trains with a sleeper that saves on a signal
    from ssseg.suite import train_job

    def train_command(run_dir, *args, **kwargs):
        return [sys.executable, "-c", os.environ["FAKE_TRAINING"]]

    train_job.train_command = train_command
'''
SLEEPER = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
signal.signal(signal.SIGINT, lambda *a: sys.exit(130))
time.sleep(120)
"""


@pytest.fixture
def suite_process(small_suite, tmp_path):
    """Start ``ssseg suite run`` of the small suite in a process whose training sleeps until a
    signal; returns (process, output folder, the first run's training pid) once it trains."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(os.environ, FAKE_TRAINING=SLEEPER,
               PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path / "site"), os.environ.get("PYTHONPATH")])))
    out = tmp_path / "out"
    process = POPEN([sys.executable, "-m", "ssseg", "suite", "run", str(small_suite), "--out", str(out)],
                    env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    state = out / "a/seed0" / folder.STATE
    try:
        wait_for(lambda: (folder.read_json(state) or {}).get("state") == "running", timeout=120)
        yield process, out, folder.read_json(state)["pid"]
    finally:
        process.kill()
        process.communicate()


@pytest.mark.slow
def test_a_killed_suite_run_takes_its_training_down_and_a_rerun_takes_over(suite_process, small_suite,
                                                                           fake_training, capsys):
    process, out, child = suite_process
    assert os.getpgid(child) == child != os.getpgid(process.pid)   # the training has its own group
    process.kill()
    process.wait()
    wait_for(lambda: not run_lock.process_alive(child), timeout=15)  # SIGTERM from its tether: it stopped
    assert folder.run_status(out / "a/seed0")[0] == "stopped"
    assert run_lock.read_holder(out / folder.SUITE_LOCK).pid == process.pid   # left by the kill
    fake_training.code = 0
    assert suite_main(["suite", "run", str(small_suite), "--out", str(out)]) == 1   # fake runs leave no metrics
    assert started_runs(fake_training, out) == ["a/seed0", "b/seed0"]
    err = capsys.readouterr().err
    assert f"taking over {out / folder.SUITE_LOCK}: ssseg suite run (pid {process.pid} on " in err
    assert "no longer runs" in err and not (out / folder.SUITE_LOCK).exists()


@pytest.mark.slow
def test_cancel_stops_a_local_suite_run_whose_training_saves_and_stops(suite_process, capsys):
    process, out, child = suite_process
    assert suite_main(["suite", "cancel", str(out)]) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"stopping ssseg suite run (pid {process.pid} on ") and "stopped;" in said
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 143 and "stopped by SIGTERM: the running runs saved a checkpoint" in output
    assert not run_lock.process_alive(child)
    assert folder.run_status(out / "a/seed0")[0] == "stopped"
    assert folder.read_json(out / "a/seed0" / folder.STATE)["exit_code"] == 143
    assert folder.run_status(out / "b/seed0") == ("new", "the suite run that queued it has ended")
    assert suite_main(["suite", "cancel", str(out)]) == 0
    assert capsys.readouterr().out == f"nothing to cancel in {out}: no run is queued or running\n"
