"""Fake SLURM commands on PATH (``sbatch``, ``srun``, ``sacct``, ``scancel``) for tests of the SLURM
launcher: each records its arguments; ``sbatch`` answers ``Submitted batch job <id>`` with ids from
4242 up; ``sacct`` prints the answers a test gave, one per call (the last one repeats), or fails."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

SCRIPT = """#!{python}
import json, os, sys
from pathlib import Path

root, name = Path(os.environ["FAKE_SLURM"]), Path(sys.argv[0]).name
with open(root / "calls.jsonl", "a") as calls:
    calls.write(json.dumps([name, *sys.argv[1:]]) + "\\n")
if name == "sbatch":
    counter = root / "next_job"
    job = int(counter.read_text()) if counter.exists() else 4242
    counter.write_text(str(job + 1))
    print(f"Submitted batch job {{job}}")
elif name == "sacct":
    if (root / "sacct_error").exists():
        print((root / "sacct_error").read_text(), file=sys.stderr)
        sys.exit(1)
    answers = json.loads((root / "sacct.json").read_text()) if (root / "sacct.json").exists() else [""]
    print(answers[0], end="")
    (root / "sacct.json").write_text(json.dumps(answers[1:] or answers))
"""


class FakeSlurm:
    """The fake commands in ``folder/bin``, put first on PATH with ``monkeypatch``."""

    COMMANDS = ("sbatch", "srun", "sacct", "scancel")

    def __init__(self, folder: Path, monkeypatch):
        self.root = folder
        (folder / "bin").mkdir(parents=True)
        for name in self.COMMANDS:
            path = folder / "bin" / name
            path.write_text(SCRIPT.format(python=sys.executable))
            path.chmod(0o755)
        monkeypatch.setenv("FAKE_SLURM", str(folder))
        monkeypatch.setenv("PATH", f"{folder / 'bin'}{os.pathsep}{os.environ['PATH']}")

    def sacct(self, *answers: dict[str, str] | str) -> None:
        """What the next sacct calls print, one answer each (job id -> state, or the raw text)."""
        texts = [a if isinstance(a, str) else "".join(f"{j}|{s}\n" for j, s in a.items()) for a in answers]
        (self.root / "sacct.json").write_text(json.dumps(texts))

    def sacct_fails(self, message: str) -> None:
        """sacct prints ``message`` on stderr and exits 1."""
        (self.root / "sacct_error").write_text(message)

    def calls(self, name: str) -> list[list[str]]:
        """The arguments of each call of the command ``name`` so far."""
        path = self.root / "calls.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return [call[1:] for call in map(json.loads, lines) if call[0] == name]
