"""The hook reference in docs/ matches the hook specs."""

from __future__ import annotations

import inspect
from pathlib import Path

from ssseg import hookspecs

DOC = Path(__file__).resolve().parents[1] / "docs" / "hooks.md"


def test_hook_reference_lists_every_hook_in_order_with_kind_and_arguments():
    text = DOC.read_text()
    headings = [line for line in text.splitlines() if line.startswith("### ")]
    expected = [f"### `{name}({', '.join(inspect.signature(getattr(hookspecs, name)).parameters)})` — {kind}"
                for name, kind in hookspecs.KINDS.items()]
    assert headings == expected
