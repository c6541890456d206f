"""What the tokenizer recipes share (image VQ/KL, audio codec, cochlear): the top-level
fields' checks, out_dir resolution and section parsing; the TOML file and its field checks
are read through `mmntp.train.toml_fields`, as the model recipes are.

A recipe class is a dataclass with `name`, `kind`, `seed`, `out_dir`, `batch_size`,
`threads`, `tokenizer` (constructor arguments) and `path`, plus dataclass sections; every
error names the field, and unknown keys are refused.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from mmntp.train.toml_fields import number, reject_unknown, string, table


class TokenizerRecipe:
    """Mixin for the recipe dataclasses: `check_common()` from __post_init__, `output_dir()`."""

    def check_common(self, kinds: tuple[str, ...]) -> None:
        self.name = string("name", self.name, empty=False)
        if self.kind not in kinds:
            raise ValueError(f"kind must be one of {kinds}, got {self.kind!r}")
        self.seed = number("seed", self.seed, integer=True, ge=0)
        self.out_dir = string("out_dir", self.out_dir, empty=False)
        self.batch_size = number("batch_size", self.batch_size, integer=True, gt=0)
        self.threads = number("threads", self.threads, integer=True, ge=0)
        self.tokenizer = dict(table("tokenizer", self.tokenizer))
        if "seed" in self.tokenizer:
            raise ValueError("tokenizer.seed is the recipe's seed; remove it")

    def output_dir(self) -> Path:
        """out_dir resolved against the recipe file's folder (or the working directory)."""
        base = self.path.parent if self.path is not None else Path.cwd()
        return (base / self.out_dir).resolve()


def parse_sections(
    cls: type, values: dict[str, Any], sections: dict[str, type], path: Path | None
) -> Any:
    """A parsed TOML table -> `cls` with its section tables built; unknown keys refused."""
    values = dict(values)
    reject_unknown("", values, {f.name for f in fields(cls)} - {"path"})
    for key, section_cls in sections.items():
        if key in values:
            section = table(key, values[key])
            reject_unknown(f"{key}.", section, {f.name for f in fields(section_cls)})
            try:
                values[key] = section_cls(**section)
            except TypeError as err:
                raise ValueError(f"{key}: {err}") from None
    for required in ("name", "kind"):
        if required not in values:
            raise ValueError(f"recipe needs a {required!r} key")
    return cls(**values, path=path)
