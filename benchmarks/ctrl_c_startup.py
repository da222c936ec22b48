"""Ctrl-C at every moment of ``ssseg train``'s start-up: 60 trainings of the tiny test recipe,
each sent SIGINT 0.30, 0.32, ..., 1.48 s after it started (importing the libraries, building the
data and model, the first steps). Each must exit 130 with ``ssseg: interrupted`` and no
traceback; prints the exit codes counted, then each start that did not.

    python benchmarks/ctrl_c_startup.py
    python benchmarks/ctrl_c_startup.py --ssseg-path OTHER_CHECKOUT   # another revision's ssseg
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))
from support.recipes import tiny_recipe_dict  # noqa: E402


def main() -> int:
    """Run the sweep; exit 1 when a start did not end as it must."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ssseg-path", type=Path, help="a checkout whose ssseg package runs instead")
    args = p.parse_args()
    path = os.pathsep.join(str(x) for x in (args.ssseg_path, TESTS) if x)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        recipe = Path(tmp) / "r.yaml"
        recipe.write_text(yaml.safe_dump(tiny_recipe_dict({"optim": {"iters": 2000}})))
        outcomes = []
        for i in range(60):
            delay = 0.3 + 0.02 * i
            proc = subprocess.Popen([sys.executable, "-m", "ssseg", "train", str(recipe), "--out", f"{tmp}/run{i}"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            time.sleep(delay)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=120)
            outcomes.append((delay, proc.returncode, "Traceback" in err, err.strip().splitlines()[-1:]))
    print("exit codes:", dict(collections.Counter(code for _, code, _, _ in outcomes)))
    bad = [o for o in outcomes if o[1] != 128 + signal.SIGINT or o[2]]
    for delay, code, traceback, last in bad:
        print(f"  {delay:.2f} s: exit {code}{', traceback' if traceback else ''}: {last}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
