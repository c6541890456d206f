"""The one validation step: a request's prompt, output spec and sampling checked against
what the model can do and the service's limits, with every default filled in.

The local pipeline, the gRPC server and the CLI all go through `validate`. Its errors are
`FieldError`s whose `field` is the request path ("output.timeseries.horizon"), which the
server answers as INVALID_ARGUMENT naming the field. Every check is linear (or n log n) in
the request's size, so no request can hold the caller up for long. What needs the
tokenizers (the prompt's length in tokens, an audio clip's tokens) is checked when the
job is encoded, with the same FieldError.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from mmntp.api import (
    DEFAULT_NUM_SAMPLES,
    MODALITY_OF,
    AudioOutput,
    AudioPart,
    FieldError,
    ImageOutput,
    ImagePart,
    Limits,
    MotionOutput,
    MotionPart,
    OutputSpec,
    PromptPart,
    SamplingParams,
    TextOutput,
    TextPart,
    TimeSeriesOutput,
    TimeSeriesPart,
    TokenIdsPart,
    TokensOutput,
    as_parts,
)
from mmntp.api.checks import finite, int_in, is_int
from mmntp.api.outputs import DEFAULT_RAW_TOKENS, DEFAULT_TEXT_TOKENS
from mmntp.api.sampling import resolve
from mmntp.generation import media

IMAGE_HEADS = ("vq", "flow", "diffusion")
SERIES_HEADS = ("tokens", "patch")
MAX_REQUEST_ID_CHARS = 128
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# The tokenizer each output needs (image: the head decides, checked on its own).
_OUTPUT_TOKENIZER = {"text": "text", "timeseries": "timeseries", "audio": "audio"}


@dataclass(frozen=True)
class Capabilities:
    """What validation needs to know of a model and its service."""

    vocab_size: int
    tokenizers: frozenset[str]  # modalities with a tokenizer ("text", "image", ...)
    image_heads: tuple[str, ...]  # "vq" and/or "flow" / "diffusion"
    limits: Limits
    # "tokens" and/or "patch" (width in patch_width), the model's default first
    series_heads: tuple[str, ...] = ("tokens",)
    patch_width: int = 0  # values per position of the "patch" head

    @property
    def output_modalities(self) -> list[str]:
        can = {"tokens": True, "image": bool(self.image_heads)}
        order = ("text", "timeseries", "tokens", "image", "audio")
        return [m for m in order if can.get(m, m in self.tokenizers)]


@dataclass(frozen=True)
class ValidRequest:
    """A checked request with every default filled in: what jobs are built from."""

    parts: list[PromptPart]
    output: OutputSpec
    sampling: SamplingParams  # resolved for `modality`
    modality: str


def validate(
    prompt: object,
    output: OutputSpec | None,
    sampling: SamplingParams | None,
    caps: Capabilities,
) -> ValidRequest:
    """Check a request and fill its defaults; raises FieldError naming the field."""
    parts = as_parts(prompt)
    output = output if output is not None else TextOutput()
    modality = MODALITY_OF.get(type(output))
    if modality is None:
        raise FieldError("output", f"unknown output spec {type(output).__name__}")
    if not parts:
        raise FieldError("prompt", "empty prompt")
    _at_most("prompt", len(parts), caps.limits.max_prompt_parts, "max_prompt_parts", "parts")
    parts = [check_part(p, f"prompt[{i}]", caps) for i, p in enumerate(parts)]
    output = _output(output, modality, caps)
    _prompt_fits_output(parts, modality, caps.limits)
    if isinstance(output, TimeSeriesOutput) and output.head == "patch":
        _fits_a_patch(parts[0], caps)
    try:
        sampling = resolve(sampling, modality)
    except FieldError as err:
        raise err.under("sampling") from None
    return ValidRequest(parts, output, sampling, modality)


def check_request_id(request_id: str) -> None:
    if len(request_id) > MAX_REQUEST_ID_CHARS:
        raise FieldError(
            "request_id",
            f"must be at most {MAX_REQUEST_ID_CHARS} characters, got {len(request_id)}",
        )
    if not request_id.isprintable() or any(c.isspace() for c in request_id):
        raise FieldError("request_id", f"must be printable without spaces, got {request_id!r}")


def check_ids(ids: Sequence[int], vocab_size: int, field: str) -> list[int]:
    out = []
    for j, i in enumerate(ids):
        if not is_int(i) or not 0 <= i < vocab_size:
            raise FieldError(
                f"{field}[{j}]", f"id {i!r} is outside the vocabulary [0, {vocab_size})"
            )
        out.append(int(i))
    return out


def series_values(values: object, field: str) -> np.ndarray:
    """A series (T,) as float64: NaN marks a missing value, ±inf and float32 overflow fail."""
    try:
        array = np.asarray(values, dtype=np.float64)  # array: [T]
    except (TypeError, ValueError):
        raise FieldError(field, "must be a list of numbers") from None
    if array.ndim != 1:
        raise FieldError(field, f"must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        raise FieldError(field, "empty time series")
    bad = np.flatnonzero(np.isinf(array) | (np.abs(array) > _FLOAT32_MAX))
    if bad.size:
        j = int(bad[0])
        raise FieldError(
            f"{field}[{j}]",
            f"NaN/inf check failed: {array[j]!r} is not allowed (values must be finite within "
            "the float32 range; NaN marks a missing value)",
        )
    if np.isnan(array).all():
        raise FieldError(field, "every value is NaN (missing)")
    return array


def _at_most(field: str, size: int, limit: int, name: str, what: str) -> None:
    """The O(1) size check every list and string passes before any other work."""
    if size > limit:
        raise FieldError(field, f"has {size} {what}, more than {name} {limit}")


# -- prompt parts ------------------------------------------------------------------------


def check_part(part: PromptPart, field: str, caps: Capabilities) -> PromptPart:
    """One prompt part checked on its own; errors are named under `field`."""
    try:
        return _part(part, caps)
    except FieldError as err:
        raise err.under(field) from None


def _part(part: PromptPart, caps: Capabilities) -> PromptPart:
    """One part, checked (relative field paths: "text", "timeseries.values[3]")."""
    limits = caps.limits
    if isinstance(part, TextPart):
        if not isinstance(part.text, str):
            raise FieldError("text", f"must be a string, got {type(part.text).__name__}")
        _at_most("text", len(part.text), limits.max_text_chars, "max_text_chars", "characters")
        _require_tokenizer(caps, "text", "text")
        return part
    if isinstance(part, TokenIdsPart):
        _at_most(
            "token_ids.ids", len(part.ids), limits.max_prompt_tokens, "max_prompt_tokens", "ids"
        )
        return TokenIdsPart(check_ids(part.ids, caps.vocab_size, "token_ids.ids"))
    if isinstance(part, TimeSeriesPart):
        _at_most(
            "timeseries.values",
            len(part.values),
            limits.max_series_values,
            "max_series_values",
            "values",
        )
        values = series_values(part.values, "timeseries.values")
        stamps = list(part.timestamps) if part.timestamps is not None else []
        if stamps and len(stamps) != len(values):
            raise FieldError(
                "timeseries.timestamps", f"{len(stamps)} labels for {len(values)} values"
            )
        _require_tokenizer(caps, "timeseries", "timeseries")
        return TimeSeriesPart(values, stamps or None)
    kind, check = {
        ImagePart: ("image", lambda p: media.check_image(p, caps.limits)),
        AudioPart: ("audio", lambda p: media.check_audio(p, caps.limits)),
        MotionPart: ("motion", media.check_motion),
    }[type(part)]
    check(part)
    _require_tokenizer(caps, kind, kind)
    # A model with such a tokenizer still has no pipeline path for the prompt.
    raise FieldError(kind, f"{kind} prompts are not supported by this server yet")


def _require_tokenizer(caps: Capabilities, modality: str, field: str) -> None:
    if modality not in caps.tokenizers:
        prompt_kinds = ["token_ids"] + [m for m in ("text", "timeseries") if m in caps.tokenizers]
        raise FieldError(
            field,
            f"this model has no {modality} tokenizer (prompt modalities: {', '.join(prompt_kinds)})",
        )


def _prompt_fits_output(parts: list[PromptPart], modality: str, limits: Limits) -> None:
    """The combinations the pipeline supports, refused early with a field path."""
    series = [i for i, p in enumerate(parts) if isinstance(p, TimeSeriesPart)]
    if modality == "timeseries":
        if len(parts) != 1 or not series:
            kinds = ", ".join(_part_name(p) for p in parts)
            raise FieldError(
                "prompt", f"a forecast takes exactly one timeseries part, got [{kinds}]"
            )
        values = np.asarray(parts[0].values)[-limits.timeseries_context_length :]
        observed = int(np.isfinite(values).sum())
        if observed < limits.timeseries_min_context:
            raise FieldError(
                "prompt[0].timeseries",
                f"context has {observed} observed values; at least "
                f"{limits.timeseries_min_context} are needed",
            )
    elif series:
        raise FieldError(
            f"prompt[{series[0]}].timeseries",
            f"a time series can only be forecast (output.timeseries), not continued as {modality}",
        )
    if modality in ("image", "audio") and (
        len(parts) != 1 or not isinstance(parts[0], TextPart) or not parts[0].text.strip()
    ):
        raise FieldError("prompt", f"an {modality} prompt is one non-empty text part, its caption")


def _part_name(part: PromptPart) -> str:
    return {TextPart: "text", TokenIdsPart: "token_ids", TimeSeriesPart: "timeseries"}.get(
        type(part), type(part).__name__
    )


# -- output specs ------------------------------------------------------------------------


def _output(output: OutputSpec, modality: str, caps: Capabilities) -> OutputSpec:
    field = f"output.{modality}"
    try:
        checked = _check_spec(output, caps)  # a malformed spec is named before the capability
    except FieldError as err:
        raise err.under(field) from None
    if (
        modality == "image"
        and not caps.image_heads
        or modality == "motion"
        or (modality in _OUTPUT_TOKENIZER and _OUTPUT_TOKENIZER[modality] not in caps.tokenizers)
    ):
        raise FieldError(
            field,
            f"this model cannot generate {modality} "
            f"(output modalities: {', '.join(caps.output_modalities)})",
        )
    return checked


def _check_spec(output: OutputSpec, caps: Capabilities) -> OutputSpec:
    limits = caps.limits
    if isinstance(output, TextOutput):
        return TextOutput(_max_tokens(output.max_tokens, DEFAULT_TEXT_TOKENS, limits))
    if isinstance(output, TokensOutput):
        _at_most("stop_ids", len(output.stop_ids), limits.max_stop_ids, "max_stop_ids", "ids")
        stops = check_ids(output.stop_ids, caps.vocab_size, "stop_ids")
        return TokensOutput(
            _max_tokens(output.max_tokens, DEFAULT_RAW_TOKENS, limits), tuple(stops)
        )
    if isinstance(output, TimeSeriesOutput):
        return _forecast_spec(output, caps)
    if isinstance(output, ImageOutput):
        return _image_spec(output, caps)
    if isinstance(output, AudioOutput):
        return _audio_spec(output, limits)
    if isinstance(output, MotionOutput):
        int_in("frames", output.frames, 1)
        return output
    raise FieldError("", f"unknown output spec {type(output).__name__}")


def _max_tokens(value: int | None, default: int, limits: Limits) -> int:
    if value is None:
        return min(default, limits.max_output_tokens)
    return int_in("max_tokens", value, 1, limits.max_output_tokens)


def _fits_a_patch(part: TimeSeriesPart, caps: Capabilities) -> None:
    """The patch head reads whole patches: the context must hold at least one."""
    n = len(np.asarray(part.values)[-caps.limits.timeseries_context_length :])
    if n < caps.patch_width:
        raise FieldError(
            "prompt[0].timeseries",
            f"the patch head needs at least {caps.patch_width} context values, got {n}",
        )


def _series_head(head: str | None, caps: Capabilities) -> str:
    if head is None and caps.series_heads:
        return caps.series_heads[0]  # the model's default
    if head not in SERIES_HEADS:
        raise FieldError("head", f"must be tokens or patch, got {head!r}")
    if head not in caps.series_heads:
        raise FieldError(
            "head",
            f"{head!r} is not available on this model (heads: {', '.join(caps.series_heads)})",
        )
    return head


def _forecast_spec(spec: TimeSeriesOutput, caps: Capabilities) -> TimeSeriesOutput:
    limits = caps.limits
    head = _series_head(spec.head, caps)
    horizon = int_in("horizon", spec.horizon, 1, limits.timeseries_max_horizon)
    num_samples = spec.num_samples
    if num_samples is None:
        num_samples = min(DEFAULT_NUM_SAMPLES, limits.timeseries_max_samples)
    num_samples = int_in("num_samples", num_samples, 1, limits.timeseries_max_samples)
    _at_most("quantiles", len(spec.quantiles), limits.max_quantiles, "max_quantiles", "levels")
    quantiles = tuple(spec.quantiles)
    if not quantiles:
        raise FieldError("quantiles", "must name at least one level")
    for j, q in enumerate(quantiles):
        if not 0.0 < finite(f"quantiles[{j}]", q) < 1.0:
            raise FieldError(f"quantiles[{j}]", f"must lie strictly in (0, 1), got {q}")
    order = np.argsort(np.asarray(quantiles, dtype=np.float64), kind="stable")
    levels = np.asarray(quantiles, dtype=np.float64)[order]
    twice = np.flatnonzero(levels[1:] == levels[:-1])  # n log n, whatever the count
    if twice.size:
        j = int(order[twice[0] + 1])
        raise FieldError(f"quantiles[{j}]", f"level {quantiles[j]} is given twice")
    return TimeSeriesOutput(horizon, num_samples, tuple(float(q) for q in levels), head)


def _image_spec(spec: ImageOutput, caps: Capabilities) -> ImageOutput:
    width = int_in("width", spec.width, 0)
    height = int_in("height", spec.height, 0)
    if (width or height) * (height or width) > caps.limits.max_image_pixels:
        raise FieldError(
            "", f"{width}x{height} exceeds max_image_pixels {caps.limits.max_image_pixels}"
        )
    if spec.head not in IMAGE_HEADS:
        raise FieldError("head", f"must be vq, flow or diffusion, got {spec.head!r}")
    if caps.image_heads and spec.head not in caps.image_heads:  # none: refused by modality
        raise FieldError(
            "head",
            f"{spec.head!r} is not available on this model (heads: {', '.join(caps.image_heads)})",
        )
    every = int_in("preview_every_rows", spec.preview_every_rows, 0)
    return replace(spec, width=width, height=height, preview_every_rows=every)


def _audio_spec(spec: AudioOutput, limits: Limits) -> AudioOutput:
    seconds = spec.seconds
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise FieldError("seconds", f"must be a number, got {seconds!r}")
    if not 0 < seconds <= limits.max_audio_seconds:  # also false for NaN
        raise FieldError(
            "seconds", f"must lie in (0, {limits.max_audio_seconds:g}], got {spec.seconds}"
        )
    for name in ("first_chunk_frames", "chunk_frames"):
        int_in(name, getattr(spec, name), 0)
    return replace(spec, seconds=float(seconds))
