"""attrs validators whose errors name the field and the valid range (used by recipe and plugin configs).

Each validator's ``valid`` attribute says in words what it accepts (the "valid" column of
docs/recipes.md, :mod:`ssseg.recipedoc`); ``None`` always passes (the type says whether null is allowed).
"""

from __future__ import annotations

import math
from typing import Any


def _fail(attribute: Any, message: str) -> None:
    err = ValueError(message)
    err.ssseg_field = attribute.name  # read by structure() to build the key path
    raise err


def in_range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
             hi_open: bool = False):
    """Validator: ``lo <= value <= hi`` (open ends with ``lo_open``/``hi_open``); None passes."""

    valid = "".join(("(" if lo_open else "[", "-inf" if lo is None else f"{lo:g}", ", ",
                     "inf" if hi is None else f"{hi:g}", ")" if hi_open else "]"))

    def check(_inst: Any, attribute: Any, value: Any) -> None:
        if value is None:
            return
        bad = isinstance(value, float) and math.isnan(value)
        if lo is not None:
            bad |= value <= lo if lo_open else value < lo
        if hi is not None:
            bad |= value >= hi if hi_open else value > hi
        if bad:
            _fail(attribute, f"{value!r} is out of range; valid: {valid}")

    check.valid = valid
    return check


def positive(_inst: Any, attribute: Any, value: Any) -> None:
    """Validator: value > 0 (None passes)."""
    if value is not None and not value > 0:
        _fail(attribute, f"{value!r} must be {positive.valid}")


positive.valid = "> 0"


def ordered_pair(_inst: Any, attribute: Any, value: Any) -> None:
    """Validator: a (low, high) pair with 0 < low <= high."""
    if value is not None and not 0 < value[0] <= value[1]:
        _fail(attribute, f"{list(value)!r} must be {ordered_pair.valid}")


ordered_pair.valid = "[low, high] with 0 < low <= high"


MAX_SIDE = 4096  # pixels: larger crops and windows do not fit in any accelerator's memory


def image_side(_inst: Any, attribute: Any, value: Any) -> None:
    """Validator: a crop or window side in pixels, in [1, MAX_SIDE] (None passes)."""
    if value is None:
        return
    positive(_inst, attribute, value)
    if value > MAX_SIDE:
        gib = value * value * 3 * 4 / 2**30
        _fail(attribute, f"{value} is out of range; valid: {image_side.valid}: it is the side of "
                         f"a square view, and one RGB float image of {value}×{value} alone takes "
                         f"{gib:,.0f} GiB")


image_side.valid = f"[1, {MAX_SIDE}] pixels"
