"""``ssseg new-plugin``: the package it writes installs, lists itself and passes its own tests.

The install test builds the package with pip into a private ``--target`` folder and runs its tests
in a subprocess with that folder on ``PYTHONPATH``: the real build (pyproject, setuptools, entry
point metadata) without touching the shared environment, so concurrent test runs never see a
half-installed plugin. ``examples/ci.sh`` does the editable install into the environment.
"""

from __future__ import annotations

import argparse

import pytest

from ssseg.errors import UserError
from ssseg.scaffold import names_for, register, scaffold


def new_plugin(*argv: str) -> int:
    """Run ``ssseg new-plugin ARGV`` through a parser that only has this subcommand."""
    parser = argparse.ArgumentParser(prog="ssseg")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["new-plugin", *argv])
    return args.func(args)


def test_names_are_spelled_for_each_place():
    names = names_for("my-idea")
    assert (names.plugin, names.distribution, names.package, names.cls) == \
        ("my_idea", "ssseg-my-idea", "ssseg_my_idea", "MyIdea")


@pytest.mark.parametrize("name, message", [
    ("My Idea", "is not a plugin name"),
    ("2fast", "is not a plugin name"),
    ("bad__name", "is not a plugin name"),
    ("fixmatch", "already called 'fixmatch'"),
])
def test_bad_names_are_user_errors(tmp_path, name, message):
    with pytest.raises(UserError, match=message):
        scaffold(name, tmp_path / "out")


def test_an_existing_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="already exists"):
        scaffold("my_idea", tmp_path)

# Installing a scaffolded package, listing it and running its own tests: examples/ci.sh (.ci/run).
