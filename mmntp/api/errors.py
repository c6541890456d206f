"""Errors of the user-facing API: the field a problem is about travels as data."""

from __future__ import annotations

from typing import Any

# Problems that read as a sentence after the field name ("horizon must be ..."); any other
# problem follows a colon ("prompt[0]: unsupported prompt part ...").
_VERBS = ("must ", "is ", "has ", "needs ", "exceeds ", "applies ", "cannot ", "does ")


class FieldError(ValueError):
    """A request field is wrong: `field` is its path ("sampling.temperature",
    "prompt[0].timeseries.values"), `problem` what is wrong with it."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(render(field, problem))

    def under(self, prefix: str) -> FieldError:
        """The same problem seen from an enclosing message: `prefix` + "." + field."""
        return FieldError(join(prefix, self.field), self.problem)


def join(prefix: str, field: str) -> str:
    if not prefix:
        return field
    if not field:
        return prefix
    return f"{prefix}{field}" if field.startswith("[") else f"{prefix}.{field}"


def render(field: str, problem: str) -> str:
    if not field:
        return problem
    return f"{field} {problem}" if problem.startswith(_VERBS) else f"{field}: {problem}"


def type_name(value: Any) -> str:
    """How a JSON value's type reads in a message ("a string", "null", "float")."""
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def short_repr(value: Any) -> str:
    """repr(value) on one line, at most 40 characters."""
    text = repr(value).replace("\n", " ")
    return text if len(text) <= 40 else text[:37] + "..."


def check_int(name: str, value: Any, lo: int, hi: int) -> int:
    """`value` if it is an int (not a bool) in [lo, hi], else FieldError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(name, f"must be an integer, got {type_name(value)} {short_repr(value)}")
    if not lo <= value <= hi:
        raise FieldError(name, f"must lie in [{lo}, {hi}], got {value}")
    return value
