"""Small field checks shared by the API's dataclasses and the validation step; each raises
FieldError naming the field and the value it got."""

from __future__ import annotations

import math
from typing import Any

from mmntp.api.errors import FieldError


def is_int(value: Any) -> bool:
    """A Python or numpy integer, not a bool."""
    return not isinstance(value, bool) and hasattr(value, "__index__")


def finite(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise FieldError(field, f"must be a finite number, got {value!r}")
    return float(value)


def int_in(field: str, value: Any, lo: int, hi: int | None = None) -> int:
    """An integer in [lo, hi] (hi None: no upper bound)."""
    if not is_int(value) or value < lo or (hi is not None and value > hi):
        where = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise FieldError(field, f"must be an integer {where}, got {value!r}")
    return int(value)
