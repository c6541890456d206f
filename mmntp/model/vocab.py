"""The one vocabulary: special tokens, text tokens, then one id range per codebook.

The layout is data saved with the model (`to_dict`/`from_dict`), so a model trained
with images and audio carries its own id map and nothing here changes per modality.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from mmntp.model.config import LIMITS, FieldError, check_int

MAX_VOCAB_SIZE = LIMITS["vocab_size"][1]
MODALITIES = ("text", "image", "audio", "timeseries", "motion")
TASKS = ("generate", "forecast", "caption", "transcribe", "speak")


@dataclass(frozen=True)
class IdRange:
    """A contiguous block of global ids [start, start + size) for one codebook."""

    modality: str
    codebook: int
    start: int
    size: int

    @property
    def stop(self) -> int:
        return self.start + self.size


@dataclass
class VocabLayout:
    """Global id map of the model.

    `specials` maps a special token name ("<bos>", "<begin_timeseries>", ...) to its id;
    `ranges` holds one IdRange per (modality, codebook); text is the ("text", 0) range.
    `size` may exceed the highest id (padding to a friendly multiple for matmuls).
    """

    specials: dict[str, int]
    ranges: list[IdRange]
    size: int
    _by_key: dict[tuple[str, int], IdRange] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_key = {}
        for r in self.ranges:
            if (r.modality, r.codebook) in self._by_key:
                raise ValueError(f"duplicate range for {r.modality} codebook {r.codebook}")
            if r.size <= 0 or r.start < 0 or r.stop > self.size:
                raise ValueError(f"range {r} does not fit in a vocabulary of {self.size}")
            self._by_key[(r.modality, r.codebook)] = r
        spans = sorted((r.start, r.stop) for r in self.ranges)
        for (_, a_stop), (b_start, _) in zip(spans, spans[1:]):
            if b_start < a_stop:
                raise ValueError("codebook ranges overlap")
        for name, idx in self.specials.items():
            if not 0 <= idx < self.size:
                raise ValueError(f"special token {name} id {idx} outside vocabulary of {self.size}")

    # -- construction -------------------------------------------------------------

    @classmethod
    def build(
        cls,
        text_size: int,
        codebooks: dict[str, list[int]] | None = None,
        modalities: tuple[str, ...] = MODALITIES,
        tasks: tuple[str, ...] = TASKS,
        pad_to: int = 64,
    ) -> VocabLayout:
        """Lay out specials, then text, then each modality's codebooks in order.

        `codebooks` maps a modality to its codebook sizes, e.g. {"timeseries": [4096]}.
        """
        names = ["<pad>", "<bos>", "<eos>", "<unk>"]
        names += [f"<{edge}_{m}>" for m in modalities for edge in ("begin", "end")]
        names += [f"<task_{t}>" for t in tasks]
        specials = {name: i for i, name in enumerate(names)}
        ranges = [IdRange("text", 0, len(names), text_size)]
        cursor = ranges[0].stop
        for modality, sizes in (codebooks or {}).items():
            for k, size in enumerate(sizes):
                ranges.append(IdRange(modality, k, cursor, size))
                cursor += size
        size = (cursor + pad_to - 1) // pad_to * pad_to
        return cls(specials=specials, ranges=ranges, size=size)

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "specials": dict(self.specials),
            "ranges": [
                {"modality": r.modality, "codebook": r.codebook, "start": r.start, "size": r.size}
                for r in self.ranges
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VocabLayout:
        """The layout saved in a model folder, read as untrusted: types and ranges are
        checked; raises `FieldError` naming the field ("ranges[2].size")."""
        if not isinstance(data, dict):
            raise FieldError("", "must be a JSON object")
        for key in ("size", "specials", "ranges"):
            if key not in data:
                raise FieldError(key, "is missing")
        size = check_int("size", data["size"], 1, MAX_VOCAB_SIZE)
        specials = data["specials"]
        if not isinstance(specials, dict):
            raise FieldError("specials", "must be an object of name -> id")
        for name, idx in specials.items():
            check_int(f"specials.{name}", idx, 0, size - 1)
        if not isinstance(data["ranges"], list):
            raise FieldError("ranges", "must be a list")
        ranges = []
        for i, r in enumerate(data["ranges"]):
            where = f"ranges[{i}]"
            if not isinstance(r, dict) or set(r) != {"modality", "codebook", "start", "size"}:
                raise FieldError(where, "must be an object of modality, codebook, start, size")
            if not isinstance(r["modality"], str):
                raise FieldError(f"{where}.modality", "must be a string")
            ranges.append(
                IdRange(
                    r["modality"],
                    check_int(f"{where}.codebook", r["codebook"], 0, MAX_VOCAB_SIZE),
                    check_int(f"{where}.start", r["start"], 0, size - 1),
                    check_int(f"{where}.size", r["size"], 1, size),
                )
            )
        try:
            return cls(specials=dict(specials), ranges=ranges, size=size)
        except ValueError as err:
            raise FieldError("ranges", str(err)) from None

    # -- lookups --------------------------------------------------------------------

    def special(self, name: str) -> int:
        try:
            return self.specials[name]
        except KeyError:
            raise KeyError(f"no special token {name!r} in this vocabulary") from None

    def has_special(self, name: str) -> bool:
        return name in self.specials

    def range(self, modality: str, codebook: int = 0) -> IdRange:
        try:
            return self._by_key[(modality, codebook)]
        except KeyError:
            raise KeyError(f"vocabulary has no {modality} codebook {codebook}") from None

    def has_modality(self, modality: str) -> bool:
        return (modality, 0) in self._by_key

    def to_global(self, modality: str, codebook: int, codes: Any) -> Any:
        """Local code(s) of one codebook -> global id(s); ints or tensors."""
        r = self.range(modality, codebook)
        _check_codes(codes, r)
        return codes + r.start

    def to_local(self, global_id: int) -> tuple[str, int, int]:
        """Global id -> (modality, codebook, code); specials -> ("special", -1, id)."""
        for r in self.ranges:
            if r.start <= global_id < r.stop:
                return r.modality, r.codebook, global_id - r.start
        if global_id in self.specials.values():
            return "special", -1, global_id
        raise ValueError(f"id {global_id} is neither special nor in a codebook range")

    def allowed_mask(
        self,
        spans: list[tuple[int, int]] = (),
        ids: list[int] = (),
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Boolean mask [size] that is True on the given global [lo, hi) spans and ids."""
        mask = torch.zeros(self.size, dtype=torch.bool, device=device)
        for lo, hi in spans:
            mask[lo:hi] = True
        if len(ids):
            mask[list(ids)] = True
        return mask


def _check_codes(codes: Any, r: IdRange) -> None:
    if isinstance(codes, torch.Tensor):
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= r.size):
            raise ValueError(f"{r.modality} codes must lie in [0, {r.size})")
    elif not 0 <= int(codes) < r.size:
        raise ValueError(f"{r.modality} code {codes} outside [0, {r.size})")
