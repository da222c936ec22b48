"""Deferring Ctrl-C over the library imports: a SIGINT inside the block is raised once it ends."""

from __future__ import annotations

import os
import signal

import pytest

from ssseg import cli
from ssseg.signals import deferred_interrupt


def test_a_sigint_inside_the_block_is_raised_when_it_ends_and_the_handler_is_restored():
    before = signal.getsignal(signal.SIGINT)
    finished = False
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupt():
            os.kill(os.getpid(), signal.SIGINT)
            finished = True  # the import this block guards runs to its end
    assert finished
    assert signal.getsignal(signal.SIGINT) is before


def test_a_block_without_sigint_raises_nothing():
    with deferred_interrupt():
        pass


def test_main_imports_the_libraries_with_ctrl_c_deferred_and_reports_it(monkeypatch, capsys):
    def command(args):
        raise AssertionError("a Ctrl-C during the imports must stop before the command runs")

    class Deferred:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            raise KeyboardInterrupt  # what deferred_interrupt raises after a SIGINT in the block

    monkeypatch.setattr("ssseg.signals.deferred_interrupt", Deferred)
    monkeypatch.setattr(cli, "cmd_plugins", command)
    assert cli.main(["plugins"]) == 128 + signal.SIGINT
    assert "ssseg: interrupted" in capsys.readouterr().err


def test_train_suite_status_and_cancel_import_no_library_before_the_command():
    """train imports them after checking its folder (tests/core/test_run_folder.py); status and
    cancel read files only."""
    parser = cli.build_parser()
    for argv in (["train", "r.yaml"], ["suite", "status", "x"], ["suite", "cancel", "x"]):
        assert parser.parse_args(argv).imports_torch is False
    assert getattr(parser.parse_args(["plugins"]), "imports_torch", True) is True
