"""The hook reference in docs/ is the one generated from the hook specs."""

from __future__ import annotations

from pathlib import Path

from ssseg import hookdoc

DOC = Path(__file__).resolve().parents[1] / "docs" / "hooks.md"


def test_hook_reference_is_generated_from_the_specs():
    assert DOC.read_text() == hookdoc.render(), \
        "docs/hooks.md is out of date: run python -m ssseg.hookdoc > docs/hooks.md"


def test_hook_reference_documents_every_hook_and_every_field():
    text = DOC.read_text()
    from ssseg import hookspecs
    from ssseg.engine import types
    for name in hookspecs.HOOK_KINDS:
        assert f"### `{name}(" in text
    for cls in (types.StepContext, types.Pseudo, types.StudentOutputs, types.ViewInput):
        for field in cls.__attrs_attrs__:
            assert f"`{field.name}`" in text and field.name in (cls.__doc__ or ""), (cls.__name__, field.name)
