from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Modality(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODALITY_UNSPECIFIED: _ClassVar[Modality]
    MODALITY_TEXT: _ClassVar[Modality]
    MODALITY_IMAGE: _ClassVar[Modality]
    MODALITY_AUDIO: _ClassVar[Modality]
    MODALITY_TIMESERIES: _ClassVar[Modality]
    MODALITY_MOTION: _ClassVar[Modality]
    MODALITY_TOKENS: _ClassVar[Modality]

class FinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINISH_REASON_UNSPECIFIED: _ClassVar[FinishReason]
    FINISH_REASON_STOP: _ClassVar[FinishReason]
    FINISH_REASON_LENGTH: _ClassVar[FinishReason]
    FINISH_REASON_ABORT: _ClassVar[FinishReason]
    FINISH_REASON_DEADLINE: _ClassVar[FinishReason]
MODALITY_UNSPECIFIED: Modality
MODALITY_TEXT: Modality
MODALITY_IMAGE: Modality
MODALITY_AUDIO: Modality
MODALITY_TIMESERIES: Modality
MODALITY_MOTION: Modality
MODALITY_TOKENS: Modality
FINISH_REASON_UNSPECIFIED: FinishReason
FINISH_REASON_STOP: FinishReason
FINISH_REASON_LENGTH: FinishReason
FINISH_REASON_ABORT: FinishReason
FINISH_REASON_DEADLINE: FinishReason

class PromptPart(_message.Message):
    __slots__ = ("text", "image", "audio", "timeseries", "motion", "token_ids")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    TIMESERIES_FIELD_NUMBER: _ClassVar[int]
    MOTION_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    text: str
    image: ImageInput
    audio: AudioInput
    timeseries: TimeSeriesInput
    motion: MotionInput
    token_ids: TokenIds
    def __init__(self, text: _Optional[str] = ..., image: _Optional[_Union[ImageInput, _Mapping]] = ..., audio: _Optional[_Union[AudioInput, _Mapping]] = ..., timeseries: _Optional[_Union[TimeSeriesInput, _Mapping]] = ..., motion: _Optional[_Union[MotionInput, _Mapping]] = ..., token_ids: _Optional[_Union[TokenIds, _Mapping]] = ...) -> None: ...

class ImageInput(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class AudioInput(_message.Message):
    __slots__ = ("wav", "pcm")
    WAV_FIELD_NUMBER: _ClassVar[int]
    PCM_FIELD_NUMBER: _ClassVar[int]
    wav: bytes
    pcm: PcmAudio
    def __init__(self, wav: _Optional[bytes] = ..., pcm: _Optional[_Union[PcmAudio, _Mapping]] = ...) -> None: ...

class PcmAudio(_message.Message):
    __slots__ = ("data", "sample_rate")
    DATA_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    sample_rate: int
    def __init__(self, data: _Optional[bytes] = ..., sample_rate: _Optional[int] = ...) -> None: ...

class TimeSeriesInput(_message.Message):
    __slots__ = ("values", "timestamps")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPS_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    timestamps: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Iterable[float]] = ..., timestamps: _Optional[_Iterable[str]] = ...) -> None: ...

class MotionInput(_message.Message):
    __slots__ = ("num_features", "values")
    NUM_FEATURES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    num_features: int
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, num_features: _Optional[int] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class TokenIds(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ids: _Optional[_Iterable[int]] = ...) -> None: ...

class OutputSpec(_message.Message):
    __slots__ = ("text", "image", "audio", "timeseries", "motion", "tokens")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    TIMESERIES_FIELD_NUMBER: _ClassVar[int]
    MOTION_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    text: TextSpec
    image: ImageSpec
    audio: AudioSpec
    timeseries: TimeSeriesSpec
    motion: MotionSpec
    tokens: TokensSpec
    def __init__(self, text: _Optional[_Union[TextSpec, _Mapping]] = ..., image: _Optional[_Union[ImageSpec, _Mapping]] = ..., audio: _Optional[_Union[AudioSpec, _Mapping]] = ..., timeseries: _Optional[_Union[TimeSeriesSpec, _Mapping]] = ..., motion: _Optional[_Union[MotionSpec, _Mapping]] = ..., tokens: _Optional[_Union[TokensSpec, _Mapping]] = ...) -> None: ...

class TextSpec(_message.Message):
    __slots__ = ("max_tokens",)
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    max_tokens: int
    def __init__(self, max_tokens: _Optional[int] = ...) -> None: ...

class TokensSpec(_message.Message):
    __slots__ = ("max_tokens", "stop_ids", "logprobs")
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STOP_IDS_FIELD_NUMBER: _ClassVar[int]
    LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    max_tokens: int
    stop_ids: _containers.RepeatedScalarFieldContainer[int]
    logprobs: bool
    def __init__(self, max_tokens: _Optional[int] = ..., stop_ids: _Optional[_Iterable[int]] = ..., logprobs: _Optional[bool] = ...) -> None: ...

class ImageSpec(_message.Message):
    __slots__ = ("width", "height", "head", "preview_every_rows")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_EVERY_ROWS_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    head: str
    preview_every_rows: int
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., head: _Optional[str] = ..., preview_every_rows: _Optional[int] = ...) -> None: ...

class AudioSpec(_message.Message):
    __slots__ = ("seconds",)
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    seconds: float
    def __init__(self, seconds: _Optional[float] = ...) -> None: ...

class TimeSeriesSpec(_message.Message):
    __slots__ = ("horizon", "num_samples", "quantiles", "return_samples", "head")
    HORIZON_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    QUANTILES_FIELD_NUMBER: _ClassVar[int]
    RETURN_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    horizon: int
    num_samples: int
    quantiles: _containers.RepeatedScalarFieldContainer[float]
    return_samples: bool
    head: str
    def __init__(self, horizon: _Optional[int] = ..., num_samples: _Optional[int] = ..., quantiles: _Optional[_Iterable[float]] = ..., return_samples: _Optional[bool] = ..., head: _Optional[str] = ...) -> None: ...

class MotionSpec(_message.Message):
    __slots__ = ("frames",)
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    frames: int
    def __init__(self, frames: _Optional[int] = ...) -> None: ...

class SamplingParams(_message.Message):
    __slots__ = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "seed", "guidance_scale", "num_steps")
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    MIN_P_FIELD_NUMBER: _ClassVar[int]
    REPETITION_PENALTY_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    NUM_STEPS_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    top_k: int
    top_p: float
    min_p: float
    repetition_penalty: float
    seed: int
    guidance_scale: float
    num_steps: int
    def __init__(self, temperature: _Optional[float] = ..., top_k: _Optional[int] = ..., top_p: _Optional[float] = ..., min_p: _Optional[float] = ..., repetition_penalty: _Optional[float] = ..., seed: _Optional[int] = ..., guidance_scale: _Optional[float] = ..., num_steps: _Optional[int] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("model", "prompt", "output", "sampling", "priority", "request_id")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    prompt: _containers.RepeatedCompositeFieldContainer[PromptPart]
    output: OutputSpec
    sampling: SamplingParams
    priority: int
    request_id: str
    def __init__(self, model: _Optional[str] = ..., prompt: _Optional[_Iterable[_Union[PromptPart, _Mapping]]] = ..., output: _Optional[_Union[OutputSpec, _Mapping]] = ..., sampling: _Optional[_Union[SamplingParams, _Mapping]] = ..., priority: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("request_id", "text", "image", "audio", "series", "motion", "tokens", "final")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    MOTION_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    text: TextChunk
    image: ImageChunk
    audio: AudioChunk
    series: SeriesChunk
    motion: MotionChunk
    tokens: TokensChunk
    final: Final
    def __init__(self, request_id: _Optional[str] = ..., text: _Optional[_Union[TextChunk, _Mapping]] = ..., image: _Optional[_Union[ImageChunk, _Mapping]] = ..., audio: _Optional[_Union[AudioChunk, _Mapping]] = ..., series: _Optional[_Union[SeriesChunk, _Mapping]] = ..., motion: _Optional[_Union[MotionChunk, _Mapping]] = ..., tokens: _Optional[_Union[TokensChunk, _Mapping]] = ..., final: _Optional[_Union[Final, _Mapping]] = ...) -> None: ...

class TextChunk(_message.Message):
    __slots__ = ("delta",)
    DELTA_FIELD_NUMBER: _ClassVar[int]
    delta: str
    def __init__(self, delta: _Optional[str] = ...) -> None: ...

class TokensChunk(_message.Message):
    __slots__ = ("ids", "logprobs")
    IDS_FIELD_NUMBER: _ClassVar[int]
    LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    logprobs: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, ids: _Optional[_Iterable[int]] = ..., logprobs: _Optional[_Iterable[float]] = ...) -> None: ...

class ImageChunk(_message.Message):
    __slots__ = ("png", "rows_done", "total_rows", "final")
    PNG_FIELD_NUMBER: _ClassVar[int]
    ROWS_DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ROWS_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    png: bytes
    rows_done: int
    total_rows: int
    final: bool
    def __init__(self, png: _Optional[bytes] = ..., rows_done: _Optional[int] = ..., total_rows: _Optional[int] = ..., final: _Optional[bool] = ...) -> None: ...

class AudioChunk(_message.Message):
    __slots__ = ("pcm", "sample_rate", "first_sample")
    PCM_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    FIRST_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    pcm: bytes
    sample_rate: int
    first_sample: int
    def __init__(self, pcm: _Optional[bytes] = ..., sample_rate: _Optional[int] = ..., first_sample: _Optional[int] = ...) -> None: ...

class SeriesChunk(_message.Message):
    __slots__ = ("step", "median", "quantile_levels", "quantile_values", "samples")
    STEP_FIELD_NUMBER: _ClassVar[int]
    MEDIAN_FIELD_NUMBER: _ClassVar[int]
    QUANTILE_LEVELS_FIELD_NUMBER: _ClassVar[int]
    QUANTILE_VALUES_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    step: int
    median: float
    quantile_levels: _containers.RepeatedScalarFieldContainer[float]
    quantile_values: _containers.RepeatedScalarFieldContainer[float]
    samples: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, step: _Optional[int] = ..., median: _Optional[float] = ..., quantile_levels: _Optional[_Iterable[float]] = ..., quantile_values: _Optional[_Iterable[float]] = ..., samples: _Optional[_Iterable[float]] = ...) -> None: ...

class MotionChunk(_message.Message):
    __slots__ = ("first_frame", "num_features", "values")
    FIRST_FRAME_FIELD_NUMBER: _ClassVar[int]
    NUM_FEATURES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    first_frame: int
    num_features: int
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, first_frame: _Optional[int] = ..., num_features: _Optional[int] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("prompt_tokens", "output_tokens")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    output_tokens: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("queue_seconds", "first_chunk_seconds", "total_seconds")
    QUEUE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FIRST_CHUNK_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    queue_seconds: float
    first_chunk_seconds: float
    total_seconds: float
    def __init__(self, queue_seconds: _Optional[float] = ..., first_chunk_seconds: _Optional[float] = ..., total_seconds: _Optional[float] = ...) -> None: ...

class Final(_message.Message):
    __slots__ = ("finish_reason", "usage", "timings")
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    finish_reason: FinishReason
    usage: Usage
    timings: Timings
    def __init__(self, finish_reason: _Optional[_Union[FinishReason, str]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "output_modalities", "input_modalities", "parameters", "max_seq_len", "vocab_size", "limits")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_MODALITIES_FIELD_NUMBER: _ClassVar[int]
    INPUT_MODALITIES_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQ_LEN_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    name: str
    output_modalities: _containers.RepeatedScalarFieldContainer[Modality]
    input_modalities: _containers.RepeatedScalarFieldContainer[Modality]
    parameters: int
    max_seq_len: int
    vocab_size: int
    limits: Limits
    def __init__(self, name: _Optional[str] = ..., output_modalities: _Optional[_Iterable[_Union[Modality, str]]] = ..., input_modalities: _Optional[_Iterable[_Union[Modality, str]]] = ..., parameters: _Optional[int] = ..., max_seq_len: _Optional[int] = ..., vocab_size: _Optional[int] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_prompt_tokens", "max_output_tokens", "timeseries_context_length", "timeseries_max_horizon", "timeseries_max_samples", "max_image_pixels", "max_audio_seconds")
    MAX_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TIMESERIES_CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    TIMESERIES_MAX_HORIZON_FIELD_NUMBER: _ClassVar[int]
    TIMESERIES_MAX_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_AUDIO_SECONDS_FIELD_NUMBER: _ClassVar[int]
    max_prompt_tokens: int
    max_output_tokens: int
    timeseries_context_length: int
    timeseries_max_horizon: int
    timeseries_max_samples: int
    max_image_pixels: int
    max_audio_seconds: float
    def __init__(self, max_prompt_tokens: _Optional[int] = ..., max_output_tokens: _Optional[int] = ..., timeseries_context_length: _Optional[int] = ..., timeseries_max_horizon: _Optional[int] = ..., timeseries_max_samples: _Optional[int] = ..., max_image_pixels: _Optional[int] = ..., max_audio_seconds: _Optional[float] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class TokenizeRequest(_message.Message):
    __slots__ = ("model", "part")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    model: str
    part: PromptPart
    def __init__(self, model: _Optional[str] = ..., part: _Optional[_Union[PromptPart, _Mapping]] = ...) -> None: ...

class TokenizeResponse(_message.Message):
    __slots__ = ("ids", "scale")
    IDS_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    scale: float
    def __init__(self, ids: _Optional[_Iterable[int]] = ..., scale: _Optional[float] = ...) -> None: ...

class DetokenizeRequest(_message.Message):
    __slots__ = ("model", "modality", "ids", "scale")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    model: str
    modality: Modality
    ids: _containers.RepeatedScalarFieldContainer[int]
    scale: float
    def __init__(self, model: _Optional[str] = ..., modality: _Optional[_Union[Modality, str]] = ..., ids: _Optional[_Iterable[int]] = ..., scale: _Optional[float] = ...) -> None: ...

class DetokenizeResponse(_message.Message):
    __slots__ = ("text", "timeseries")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TIMESERIES_FIELD_NUMBER: _ClassVar[int]
    text: str
    timeseries: TimeSeriesInput
    def __init__(self, text: _Optional[str] = ..., timeseries: _Optional[_Union[TimeSeriesInput, _Mapping]] = ...) -> None: ...
