"""What the tokenizer recipes share (image VQ/KL, audio codec, cochlear): the top-level
fields' checks, out_dir resolution, section parsing and reading the TOML file.

A recipe class is a dataclass with `name`, `kind`, `seed`, `out_dir`, `batch_size`,
`threads`, `tokenizer` (constructor arguments) and `path`, plus dataclass sections; every
error names the field, and unknown keys are refused.
"""

from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

from mmntp.train.recipe import _number, _reject_unknown, _string, _table


class TokenizerRecipe:
    """Mixin for the recipe dataclasses: `check_common()` from __post_init__, `output_dir()`."""

    def check_common(self, kinds: tuple[str, ...]) -> None:
        self.name = _string("name", self.name, empty=False)
        if self.kind not in kinds:
            raise ValueError(f"kind must be one of {kinds}, got {self.kind!r}")
        self.seed = _number("seed", self.seed, integer=True, ge=0)
        self.out_dir = _string("out_dir", self.out_dir, empty=False)
        self.batch_size = _number("batch_size", self.batch_size, integer=True, gt=0)
        self.threads = _number("threads", self.threads, integer=True, ge=0)
        self.tokenizer = dict(_table("tokenizer", self.tokenizer))
        if "seed" in self.tokenizer:
            raise ValueError("tokenizer.seed is the recipe's seed; remove it")

    def output_dir(self) -> Path:
        """out_dir resolved against the recipe file's folder (or the working directory)."""
        base = self.path.parent if self.path is not None else Path.cwd()
        return (base / self.out_dir).resolve()


def parse_sections(
    cls: type, table: dict[str, Any], sections: dict[str, type], path: Path | None
) -> Any:
    """A parsed TOML table -> `cls` with its section tables built; unknown keys refused."""
    table = dict(table)
    _reject_unknown("", table, {f.name for f in fields(cls)} - {"path"})
    for key, section_cls in sections.items():
        if key in table:
            section = _table(key, table[key])
            _reject_unknown(f"{key}.", section, {f.name for f in fields(section_cls)})
            try:
                table[key] = section_cls(**section)
            except TypeError as err:
                raise ValueError(f"{key}: {err}") from None
    for required in ("name", "kind"):
        if required not in table:
            raise ValueError(f"recipe needs a {required!r} key")
    return cls(**table, path=path)


def read_toml(path: str | Path) -> tuple[dict[str, Any], Path]:
    """(the recipe file's table, its resolved path); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe {str(path)!r} does not exist")
    try:
        return tomllib.loads(path.read_text()), path.resolve()
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path} is not valid TOML: {err}") from err
