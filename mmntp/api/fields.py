"""Flat request fields -> api objects: the one mapping that `mmntp generate`'s options and a
batch line's `request` object share.

The fields are named as the CLI's options are (`modality`, `prompt`, `prompt_ids`,
`context`, `horizon`, `num_samples`, `quantiles`, `max_tokens`, `head`, `guidance`,
`steps`, `seconds`, `temperature`, `top_p`, `top_k`, `seed`, ...). `request_from_fields`
turns them into a prompt, an output spec and SamplingParams whose unset fields stay None,
so the pipeline's one validation step fills the modality's defaults and checks ranges.
Only what the mapping itself can get wrong is raised here, as a FieldError naming the
field: an unknown field, a field that does not apply to the modality, a missing one, a
value of the wrong type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mmntp.api.errors import FieldError
from mmntp.api.outputs import (
    DEFAULT_QUANTILES,
    AudioOutput,
    ImageOutput,
    MotionOutput,
    OutputSpec,
    TextOutput,
    TimeSeriesOutput,
    TokensOutput,
)
from mmntp.api.parts import TimeSeriesPart, TokenIdsPart
from mmntp.api.sampling import SamplingParams

MODALITIES = ("text", "tokens", "timeseries", "image", "audio", "motion")
SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "seed")
# The fields each modality reads besides `modality` and the sampling fields.
OUTPUT_FIELDS: dict[str, tuple[str, ...]] = {
    "text": ("prompt", "max_tokens"),
    "tokens": ("prompt_ids", "max_tokens", "stop_ids"),
    "timeseries": ("context", "timestamps", "horizon", "num_samples", "quantiles", "head"),
    "image": ("prompt", "width", "height", "head", "guidance", "steps"),
    "audio": ("prompt", "seconds", "guidance"),
    "motion": ("prompt", "frames"),
}
FIELDS = frozenset(
    {"modality", *SAMPLING_FIELDS, *(f for fs in OUTPUT_FIELDS.values() for f in fs)}
)
# SamplingParams' names for the two fields the CLI spells shorter.
_SAMPLING_NAME = {"guidance": "guidance_scale", "steps": "num_steps"}
_FIELD_NAME = {v: k for k, v in _SAMPLING_NAME.items()}


@dataclass
class FieldRequest:
    """A request in api terms: what `Pipeline.stream` and `Client.generate` take."""

    modality: str
    prompt: Any  # a str or a prompt part
    output: OutputSpec
    sampling: SamplingParams


def infer_modality(fields: Mapping[str, Any]) -> str:
    """The modality when none is named: a forecast with `context`, raw ids with
    `prompt_ids`, else text."""
    if fields.get("context") is not None:
        return "timeseries"
    if fields.get("prompt_ids") is not None:
        return "tokens"
    return "text"


def request_from_fields(fields: Mapping[str, Any], *, strict: bool = True) -> FieldRequest:
    """Map flat request fields (None = not given) to api objects; FieldError names the field.

    `strict` refuses a field the modality does not read; the CLI, whose options all have
    values, passes False to ignore them.
    """
    given = {k: v for k, v in fields.items() if v is not None}
    unknown = sorted(k for k in given if k not in FIELDS)
    if unknown:
        raise FieldError(unknown[0], f"is not a request field (known: {', '.join(sorted(FIELDS))})")
    modality = given.get("modality", infer_modality(given))
    if modality not in MODALITIES:
        raise FieldError("modality", f"must be one of {', '.join(MODALITIES)}, got {modality!r}")
    reads = OUTPUT_FIELDS[modality]
    if strict:
        stray = sorted(k for k in given if k not in reads and k not in SAMPLING_FIELDS)
        stray = [k for k in stray if k != "modality"]
        if stray:
            raise FieldError(stray[0], f"does not apply to {modality} requests")
    prompt, output = _PROMPT_OUTPUT[modality](given)
    return FieldRequest(modality, prompt, output, _sampling(given, reads))


def _sampling(given: dict[str, Any], reads: tuple[str, ...]) -> SamplingParams:
    kwargs = {k: given[k] for k in SAMPLING_FIELDS if k in given}
    kwargs.update(
        {_SAMPLING_NAME[k]: given[k] for k in ("guidance", "steps") if k in reads and k in given}
    )
    try:
        return SamplingParams(**kwargs)
    except FieldError as err:
        raise FieldError(_FIELD_NAME.get(err.field, err.field), err.problem) from None


def _required(given: dict[str, Any], name: str, modality: str) -> Any:
    if name not in given:
        raise FieldError(name, f"is required for {modality} requests")
    return given[name]


def _text_prompt(given: dict[str, Any], modality: str) -> str:
    prompt = _required(given, "prompt", modality)
    if not isinstance(prompt, str):
        raise FieldError("prompt", f"must be a string, got {type(prompt).__name__}")
    return prompt


def _number_list(given: dict[str, Any], name: str, modality: str) -> list:
    values = _required(given, name, modality)
    if not isinstance(values, list | tuple) and not hasattr(values, "__array__"):
        raise FieldError(name, f"must be a list of numbers, got {type(values).__name__}")
    return values


def _text(given):
    return _text_prompt(given, "text"), TextOutput(given.get("max_tokens"))


def _tokens(given):
    ids = _number_list(given, "prompt_ids", "tokens")
    stops = given.get("stop_ids", ())
    if not isinstance(stops, list | tuple):
        raise FieldError("stop_ids", f"must be a list of ids, got {type(stops).__name__}")
    return TokenIdsPart(list(ids)), TokensOutput(given.get("max_tokens"), tuple(stops))


def _timeseries(given):
    values = _number_list(given, "context", "timeseries")
    stamps = given.get("timestamps")
    if stamps is not None and not isinstance(stamps, list | tuple):
        raise FieldError("timestamps", f"must be a list of strings, got {type(stamps).__name__}")
    quantiles = given.get("quantiles", DEFAULT_QUANTILES)
    if not isinstance(quantiles, list | tuple):
        raise FieldError("quantiles", f"must be a list of levels, got {type(quantiles).__name__}")
    output = TimeSeriesOutput(
        _required(given, "horizon", "timeseries"),
        given.get("num_samples"),
        tuple(quantiles),
        head=given.get("head"),
    )
    return TimeSeriesPart(values, stamps), output


def _image(given):
    output = ImageOutput(given.get("width", 0), given.get("height", 0), given.get("head", "vq"))
    return _text_prompt(given, "image"), output


def _audio(given):
    return _text_prompt(given, "audio"), AudioOutput(seconds=given.get("seconds", 1.0))


def _motion(given):
    return _text_prompt(given, "motion"), MotionOutput(_required(given, "frames", "motion"))


_PROMPT_OUTPUT = {
    "text": _text,
    "tokens": _tokens,
    "timeseries": _timeseries,
    "image": _image,
    "audio": _audio,
    "motion": _motion,
}
