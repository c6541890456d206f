"""What jobs and validation know of the loaded model: its vocabulary, tokenizers, heads
and the service's limits. The typed seam between the pipeline and its jobs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mmntp.api import FieldError, Limits, PromptPart, TextPart, TokenIdsPart
from mmntp.format import sequence
from mmntp.generation.validate import Capabilities, check_ids
from mmntp.model.vocab import VocabLayout

LATENT_TOKENIZER = "image_latent"  # the model folder's key of its KL image tokenizer
PATCH_HEAD = "patch"  # the continuous next-patch series head's name in a model
PATCH_MODALITY = "timeseries"  # the continuous input its patches feed back through


@dataclass
class ModelContext:
    vocab: VocabLayout
    tokenizers: Mapping[str, Any]  # modality -> tokenizer (built on first use)
    heads: Mapping[str, Any]  # the model's output heads by name ("token", "flow", "audio")
    limits: Limits
    max_seq_len: int  # the model's context: a prompt and its output must fit in it
    series_tokens: bool = True  # False: the token head never learnt series (patch-only)

    def tokenizer(self, modality: str):
        if modality not in self.tokenizers:
            raise FieldError("", f"this model has no {modality} tokenizer")
        return self.tokenizers[modality]

    def image_heads(self) -> tuple[str, ...]:
        """Image heads this model has: "vq" with a VQ tokenizer, flow / diffusion heads
        with a KL tokenizer."""
        heads = ("vq",) if "image" in self.tokenizers else ()
        if LATENT_TOKENIZER in self.tokenizers:
            heads += tuple(h for h in ("flow", "diffusion") if h in self.heads)
        return heads

    def series_heads(self) -> tuple[str, ...]:
        """Forecast heads, the default first: "tokens" with a series tokenizer the token head
        was trained on, "patch" with a next-patch head."""
        heads = ("tokens",) if "timeseries" in self.tokenizers and self.series_tokens else ()
        return heads + ((PATCH_HEAD,) if PATCH_HEAD in self.heads else ())

    def patch_width(self) -> int:
        """Values per position of the next-patch head (0: none)."""
        return self.heads[PATCH_HEAD].width if PATCH_HEAD in self.heads else 0

    def capabilities(self) -> Capabilities:
        return Capabilities(
            self.vocab.size,
            frozenset(m for m in self.tokenizers if m != LATENT_TOKENIZER),
            self.image_heads(),
            self.limits,
            self.series_heads(),
            self.patch_width(),
        )

    def latent_cells(self, head: str) -> int:
        """k of the k x k latent cells one position of `head` holds."""
        tok = self.tokenizer(LATENT_TOKENIZER)
        return math.isqrt(self.heads[head].width // tok.latent_dim)

    def prompt_ids(self, parts: Sequence[PromptPart]) -> list[int]:
        """Encode validated prompt parts (text and raw ids) into global ids."""
        ids: list[int] = []
        for i, part in enumerate(parts):
            if isinstance(part, TokenIdsPart):
                ids.extend(check_ids(part.ids, self.vocab.size, f"prompt[{i}].token_ids.ids"))
            elif isinstance(part, TextPart):
                if not ids:
                    ids.append(self.vocab.special("<bos>"))
                ids.extend(sequence.text_ids(self.vocab, self.tokenizer("text"), part.text))
            else:
                raise FieldError(f"prompt[{i}]", f"a {type(part).__name__} cannot be mixed in here")
        if not ids:
            raise FieldError("prompt", "empty prompt")
        return self.checked_prompt(ids)

    def checked_prompt(self, ids: list[int]) -> list[int]:
        """`ids` if they fit max_prompt_tokens (FieldError naming the limit otherwise)."""
        if len(ids) > self.limits.max_prompt_tokens:
            raise FieldError(
                "prompt",
                f"{len(ids)} tokens exceeds max_prompt_tokens {self.limits.max_prompt_tokens}",
            )
        return ids
