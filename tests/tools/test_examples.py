"""The example plugins are third-party code: they import only ssseg's public modules (what a
plugin or its tests may use, CONTRIBUTING.md), so they show what an outside package can do."""

from __future__ import annotations

import ast
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PUBLIC = {"ssseg", "ssseg.api", "ssseg.augment", "ssseg.testing"}


def ssseg_imports(path: Path) -> set[str]:
    """The ssseg modules (not ``ssseg_*`` packages) that the Python file ``path`` imports."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules.add(node.module)
    return {m for m in modules if m == "ssseg" or m.startswith("ssseg.")}


def test_examples_import_only_the_public_api():
    files = sorted(EXAMPLES.rglob("*.py"))
    assert len(files) >= 6
    private = {str(f.relative_to(EXAMPLES)): sorted(ssseg_imports(f) - PUBLIC) for f in files}
    assert {f: m for f, m in private.items() if m} == {}
