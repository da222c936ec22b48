"""``ssseg.run_lock``: one holder at a time, between real processes; released on every way out;
a stale lock (its process killed) taken over with a message, a live one refused naming its holder."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from ssseg import run_lock

HOLD = """
import sys, time
from ssseg import run_lock
try:
    lock = run_lock.acquire(sys.argv[1], "holder", wait_s=float(sys.argv[2]), say=lambda m: print(m, flush=True))
except run_lock.LockHeld as err:
    print("refused:", err, flush=True)
    sys.exit(3)
with lock:
    print("held", flush=True)
    sys.stdin.read()      # until the test closes stdin (or kills it)
"""


def holder(path, wait_s=0.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(wait_s)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_a_second_process_is_refused_naming_the_holder_until_it_releases(tmp_path):
    path = tmp_path / "suite.lock"
    first = holder(path)
    assert first.stdout.readline() == "held\n"
    found = run_lock.read_holder(path)
    assert (found.pid, found.host, found.command) == (first.pid, socket.gethostname(), "holder")
    with pytest.raises(run_lock.LockHeld) as err:
        run_lock.acquire(path, "second", advice="wait for it")
    assert str(err.value).startswith(f"{tmp_path} is in use by holder (pid {first.pid} on {socket.gethostname()}, since ")
    assert str(err.value).endswith("; wait for it")
    second = holder(path)
    assert second.communicate()[0].startswith(f"refused: {tmp_path} is in use by holder (pid {first.pid}")
    assert second.returncode == 3
    first.communicate("")                       # it leaves its with block: the lock file goes
    assert first.returncode == 0 and not path.exists()
    with run_lock.acquire(path, "third") as lock:
        assert run_lock.read_holder(path).pid == os.getpid() == lock.holder.pid
    assert not path.exists()


@pytest.mark.slow
def test_a_waiting_process_gets_the_lock_when_the_holder_releases_it(tmp_path):
    path = tmp_path / "report.lock"
    first = holder(path)
    assert first.stdout.readline() == "held\n"
    waiting = holder(path, wait_s=60)
    time.sleep(0.5)
    assert waiting.poll() is None
    first.communicate("")
    assert waiting.stdout.readline() == "held\n"
    waiting.communicate("")


@pytest.mark.slow
def test_the_lock_of_a_killed_process_is_taken_over_with_a_message(tmp_path):
    path = tmp_path / "suite.lock"
    first = holder(path)
    assert first.stdout.readline() == "held\n"
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert run_lock.read_holder(path).pid == first.pid        # nothing released it
    said = []
    with run_lock.acquire(path, "second", say=said.append):
        assert run_lock.read_holder(path).pid == os.getpid()
    assert len(said) == 1 and said[0].startswith(f"taking over {path}: holder (pid {first.pid} on ")
    assert said[0].endswith("no longer runs")


@pytest.mark.parametrize("stale", [False, True])
@pytest.mark.slow
def test_of_processes_that_race_for_a_lock_exactly_one_gets_it(tmp_path, stale):
    path = tmp_path / "suite.lock"
    if stale:                                    # a killed holder's lock: all race to take it over
        dead = subprocess.Popen(["true"])
        dead.wait()
        path.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": time.time(),
                                    "command": "dead"}))
    racers = [holder(path) for _ in range(4)]
    first_lines = [racer.stdout.readline() for racer in racers]
    assert sum(line == "held\n" for line in first_lines) + sum(line.startswith("taking over") for line in first_lines) == 1
    for racer in racers:
        racer.communicate("")
    assert sorted(racer.returncode for racer in racers) == [0, 3, 3, 3]
    assert not path.exists() and not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob("*.takeover"))


def test_the_lock_is_released_on_an_exception_and_a_lock_of_another_host_is_not_taken(tmp_path):
    path = tmp_path / "x.lock"
    with pytest.raises(RuntimeError), run_lock.acquire(path, "me"):
        raise RuntimeError
    assert not path.exists()
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": 0.0, "command": "ssseg suite run"}))
    with pytest.raises(run_lock.LockHeld, match=f"pid 1 on elsewhere, .*; if that process is gone .*, delete {path}"):
        run_lock.acquire(path, "me")


@pytest.mark.slow
def test_process_liveness_sees_zombies_and_reused_pids():
    assert run_lock.process_alive(os.getpid()) and run_lock.process_alive(os.getpid(), since=time.time())
    assert not run_lock.process_alive(os.getpid(), since=0.0)   # a record from before it started: pid reused
    zombie = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while run_lock.process_alive(zombie.pid):     # it ends at once, and stays a zombie until reaped
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(zombie.pid, 0)                         # still "exists" for the kernel
    zombie.wait()
    assert not run_lock.process_alive(zombie.pid) and not run_lock.process_alive(0)
