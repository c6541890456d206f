"""Reading TOML recipes: the file itself and the checks every recipe field goes through.

One module for the model recipes (`mmntp.train.recipe`), the curriculum
(`mmntp.train.curriculum`) and the tokenizer recipes (`mmntp.train.tokenizer_recipe`):
every error names the field and the value it got, and unknown keys are refused so a typo
never silently falls back to a default.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any


def number(
    name: str,
    value: Any,
    *,
    integer: bool = False,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
) -> Any:
    """Check one numeric field and return it as int or float; errors name the field."""
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    for bound, op, holds in (
        (gt, ">", lambda b: value > b),
        (ge, ">=", lambda b: value >= b),
        (lt, "<", lambda b: value < b),
        (le, "<=", lambda b: value <= b),
    ):
        if bound is not None and not holds(bound):
            raise ValueError(f"{name} must be {op} {bound:g}, got {value!r}")
    return int(value) if integer else float(value)


def string(name: str, value: Any, *, empty: bool = True) -> str:
    """Check a string field (non-empty unless `empty`)."""
    if not isinstance(value, str) or (not empty and not value):
        raise ValueError(f"{name} must be a {'' if empty else 'non-empty '}string, got {value!r}")
    return value


def table(name: str, value: Any) -> dict[str, Any]:
    """Check a TOML table (a dict)."""
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a table, got {value!r}")
    return value


def reject_unknown(prefix: str, value: dict[str, Any], known: set[str]) -> None:
    """Refuse keys outside `known`; the error names each as `prefix + key`."""
    unknown = sorted(set(value) - known)
    if unknown:
        where = ", ".join(f"{prefix}{key}" for key in unknown)
        raise ValueError(
            f"unknown recipe key {where} (expected one of: {', '.join(sorted(known))})"
        )


def read_toml(path: str | Path) -> tuple[dict[str, Any], Path]:
    """(the file's table, its resolved path); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe {str(path)!r} does not exist")
    try:
        return tomllib.loads(path.read_text()), path.resolve()
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: invalid TOML: {err}") from None
