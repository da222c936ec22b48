"""``ssseg.__version__`` and ``ssseg --version``: the installed distribution's version."""

from __future__ import annotations

import importlib
from importlib import metadata

import pytest

import ssseg
from ssseg.cli import main


def test_version_is_the_installed_distributions():
    assert ssseg.__version__ == metadata.version("ssseg")


def test_cli_prints_the_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"ssseg {ssseg.__version__}\n"


def test_version_outside_an_installation_is_unknown(monkeypatch):
    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    try:
        assert importlib.reload(ssseg).__version__ == "0+unknown"
    finally:
        monkeypatch.undo()
        importlib.reload(ssseg)
    assert ssseg.__version__ == metadata.version("ssseg")
