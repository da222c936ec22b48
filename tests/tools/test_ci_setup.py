"""`source .ci/setup` in an interactive shell: no shell option leaks, and a failure returns
instead of closing the shell."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def bash(script: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


@pytest.mark.slow
def test_a_failed_setup_returns_without_closing_the_shell_or_changing_its_options(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")  # a file where the venv folder would go: creating the venv fails
    out = bash('set +e +u; set +o pipefail; source .ci/setup; echo "status=$? flags=$- '
               '$(shopt -qo pipefail && echo pipefail)"; false; echo alive', SSSEG_VENV_ROOT=str(blocked))
    assert "status=1 " in out.stdout and "alive" in out.stdout
    flags = out.stdout.split("flags=")[1].split()[0]
    assert "e" not in flags and "u" not in flags and "pipefail" not in out.stdout


@pytest.mark.slow
def test_a_working_setup_puts_the_venv_on_path_and_leaves_the_options_alone():
    key = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    venv = Path(os.environ.get("SSSEG_VENV_ROOT", Path.home() / ".cache" / "ssseg")) / f"venv-{key}"
    if not (venv / ".complete").is_file():
        pytest.skip("the project's venv is not set up here (bash .ci/run sets it up)")
    out = bash('set +e +u; source .ci/setup; echo "status=$? flags=$- venv=$VENV"; false; '
               'command -v python; echo alive')
    assert "status=0 " in out.stdout and f"venv={venv}" in out.stdout
    assert f"{venv}/bin/python" in out.stdout and "alive" in out.stdout
    flags = out.stdout.split("flags=")[1].split()[0]
    assert "e" not in flags and "u" not in flags
