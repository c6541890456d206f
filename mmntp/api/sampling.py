"""How tokens and vectors are drawn, and each modality's defaults: the one table.

A field left None takes the default of the output's modality (`DEFAULTS`) when the request
is validated (`resolve`); everything below the validation step sees concrete values. The
sampling kernels live in `mmntp.model.sampling`; this module imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from mmntp.api.checks import finite, int_in, is_int
from mmntp.api.errors import FieldError

MAX_STEPS = 1000  # flow / diffusion sampling steps


@dataclass
class SamplingParams:
    """How the next token is drawn; temperature 0 means greedy (argmax).

    None means "the modality's default" (`DEFAULTS`): an image request keeps its tuned
    guidance when only a seed is given.
    """

    temperature: float | None = None
    top_k: int | None = None  # 0 = off
    top_p: float = 1.0  # 1.0 = off
    min_p: float = 0.0  # 0 = off; drops tokens below min_p x the top probability
    repetition_penalty: float = 1.0  # 1 = off; >1 discourages ids already in prompt/output
    seed: int | None = None  # None = a fresh random seed per request
    # Classifier-free guidance (image and audio outputs): 1 = conditional only, > 1 pushes
    # away from the unconditional prediction.
    guidance_scale: float | None = None
    num_steps: int | None = None  # flow / diffusion sampling steps; None = the head's own

    def __post_init__(self) -> None:
        if self.temperature is not None and finite("temperature", self.temperature) < 0:
            raise FieldError("temperature", f"must be >= 0, got {self.temperature}")
        if self.top_k is not None and (not is_int(self.top_k) or self.top_k < 0):
            raise FieldError("top_k", f"must be an integer >= 0, got {self.top_k!r}")
        if not 0.0 < finite("top_p", self.top_p) <= 1.0:
            raise FieldError("top_p", f"must be in (0, 1], got {self.top_p}")
        if not 0.0 <= finite("min_p", self.min_p) <= 1.0:
            raise FieldError("min_p", f"must be in [0, 1], got {self.min_p}")
        if finite("repetition_penalty", self.repetition_penalty) <= 0:
            raise FieldError("repetition_penalty", f"must be > 0, got {self.repetition_penalty}")
        if self.guidance_scale is not None and finite("guidance_scale", self.guidance_scale) < 0:
            raise FieldError("guidance_scale", f"must be >= 0, got {self.guidance_scale}")
        if self.num_steps is not None:
            int_in("num_steps", self.num_steps, 1, MAX_STEPS)
        if self.seed is not None and (not is_int(self.seed) or self.seed < 0):
            raise FieldError("seed", f"must be a non-negative integer, got {self.seed!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def resolved(self) -> bool:
        return self.temperature is not None and self.top_k is not None


@dataclass(frozen=True)
class ModalityDefaults:
    temperature: float = 1.0
    top_k: int = 0
    # None: the modality takes no guidance (a request that sets it is refused).
    guidance_scale: float | None = None
    takes_steps: bool = False  # flow / diffusion steps (image outputs)


DEFAULTS: dict[str, ModalityDefaults] = {
    "text": ModalityDefaults(),
    "tokens": ModalityDefaults(),
    # Chronos' sampling defaults for forecasting: plain temperature 1 with top-k 50.
    "timeseries": ModalityDefaults(top_k=50),
    # Text-to-image: plain sampling with classifier-free guidance (LlamaGen-style).
    # Guidance 1.5 was chosen for stage 7 of the bundled model on 144 validation captions of
    # seed 5150 that `mmntp eval image` does not use (VQ right colour and shape: 76.4 % at
    # 1.5, 75.0 % at 2, 60.4 % at 2.5; stage 7 over-steers at 3).
    "image": ModalityDefaults(guidance_scale=1.5, takes_steps=True),
    # Text-to-audio: cooled top-k sampling with guidance, chosen on validation tone prompts
    # that `mmntp eval audio` does not use (144 prompts of seed 5150; guidance 1 / 1.5 / 2 /
    # 3 kept 88 / 96 / 94 / 88 % within a semitone at stage 6; docs/benchmarks.md).
    "audio": ModalityDefaults(temperature=0.7, top_k=20, guidance_scale=2.0),
}


def defaults(modality: str) -> SamplingParams:
    """The modality's full default SamplingParams."""
    return resolve(SamplingParams(), modality)


def resolve(params: SamplingParams | None, modality: str) -> SamplingParams:
    """`params` with every None the modality defines filled in from `DEFAULTS`.

    Raises FieldError when guidance or steps are set for a modality that takes none.
    """
    params = params if params is not None else SamplingParams()
    table = DEFAULTS[modality]
    for name, takes, outputs in (
        ("guidance_scale", table.guidance_scale is not None, "image and audio"),
        ("num_steps", table.takes_steps, "image"),
    ):
        if not takes and getattr(params, name) is not None:
            raise FieldError(name, f"applies to {outputs} outputs only, not {modality}")
    return _fill(params, table)


def neutral(params: SamplingParams | None) -> SamplingParams:
    """`params` with temperature and top-k filled by the raw-token row and no modality
    checks: what the engine and the reference loop assume of a request built below the
    validation step (tests, benchmarks)."""
    return _fill(params if params is not None else SamplingParams(), DEFAULTS["tokens"])


def _fill(params: SamplingParams, table: ModalityDefaults) -> SamplingParams:
    filled = {
        name: getattr(table, name)
        for name in _FILLED
        if getattr(params, name) is None and getattr(table, name) is not None
    }
    return replace(params, **filled) if filled else params


_FILLED = ("temperature", "top_k", "guidance_scale")
