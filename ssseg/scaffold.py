"""``ssseg new-plugin NAME``: write an installable strategy plugin package that passes its own tests.

The package (templates in ``ssseg/templates/new_plugin``) has a ``pyproject.toml`` with the
``ssseg.plugins`` entry point, ``src/<package>/plugin.py`` with a Config and one hook, tests using
the contract kit (:mod:`ssseg.testing`), a README and a recipe on the embedded data.
"""

from __future__ import annotations

import argparse
import re
import string
from pathlib import Path

import attrs

from ssseg.errors import UserError

TEMPLATES = Path(__file__).with_name("templates") / "new_plugin"
_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[_-][a-z0-9]+)*$")


@attrs.frozen
class Names:
    """How one plugin name is spelled in each place: recipe key and entry point (``plugin``),
    distribution, import package and class."""

    plugin: str
    distribution: str
    package: str
    cls: str


def names_for(name: str) -> Names:
    """The spellings of ``name`` (``my-idea`` → ``my_idea``, ``ssseg-my-idea``, ``ssseg_my_idea``,
    ``MyIdea``); a name that is not lower-case words joined by ``_`` or ``-``, or that an installed
    plugin already has, is a :class:`UserError`."""
    from ssseg.plugin_manager import discover

    if not _NAME.match(name):
        raise UserError(f"new-plugin: {name!r} is not a plugin name; use lower-case letters and digits, "
                        "words joined by '_' or '-', starting with a letter (for example my_idea)")
    words = re.split(r"[_-]", name)
    plugin = "_".join(words)
    if plugin in discover():
        raise UserError(f"new-plugin: an installed plugin is already called {plugin!r} "
                        "(see ssseg plugins); choose another name")
    return Names(plugin=plugin, distribution="ssseg-" + "-".join(words), package="ssseg_" + plugin,
                 cls="".join(w.capitalize() for w in words))


def scaffold(name: str, folder: Path | None = None) -> Path:
    """Write the plugin package for ``name`` into ``folder`` (default ``./ssseg-<name>``), which
    must not exist; returns the folder."""
    names = names_for(name)
    folder = Path(folder or names.distribution)
    if folder.exists():
        raise UserError(f"new-plugin: {folder} already exists; choose another --dir")
    values = attrs.asdict(names)
    for template in sorted(TEMPLATES.rglob("*.tmpl")):
        relative = str(template.relative_to(TEMPLATES).with_suffix("")).replace("PACKAGE", names.package)
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(string.Template(template.read_text()).substitute(values))
    return folder


def cmd_new_plugin(args: argparse.Namespace) -> int:
    """Write a new plugin package and say how to install and test it."""
    folder = scaffold(args.name, args.dir)
    print(f"wrote {folder}; next:\n  cd {folder}\n  pip install -e .\n  python -m pytest\n"
          "  ssseg plugins")
    return 0


def register(subparsers) -> None:
    """Add the ``new-plugin`` subcommand to the ``ssseg`` command's subparsers."""
    p = subparsers.add_parser("new-plugin", help="write a new strategy plugin package")
    p.add_argument("name", help="plugin name: lower-case words joined by _ or - (for example my_idea)")
    p.add_argument("--dir", type=Path, help="folder to write (default: ./ssseg-<name>)")
    p.set_defaults(func=cmd_new_plugin)
