"""`mmntp eval audio`: tone-prompt adherence and streaming speed of text-to-audio.

Adherence: clips generated for "a {waveform} tone at {frequency} Hz" captions
(combinations drawn from a seed) are judged by their pitch (`estimate_pitch`,
autocorrelation): the fraction within one semitone of the prompt's frequency, per
guidance scale and per sequence layout (the frame head, one forward per frame, against
the flattened layout, one forward per token through the token head).

Speed, one request alone: time to the first PCM chunk, to the whole clip, and the
real-time factor (generation wall time / audio seconds), locally and over gRPC; against
the non-streaming way, generating every frame and then decoding the whole clip once
(first audio = that total).

The card's ceiling: the same prompts' tones rendered and passed through the audio card's
own round trip (encode, decode), judged alike. A model that emitted exactly the codes of
the true tone would score this; the gap between it and the model's figure is the
model's, the rest is the card's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from mmntp.api import AudioChunk, AudioOutput, GenerationOutput
from mmntp.api.sampling import defaults as sampling_defaults
from mmntp.data.audio import caption, random_tone, tone
from mmntp.eval.audio import estimate_pitch, semitones
from mmntp.eval.audio_tokenizers import round_trip_pitch
from mmntp.format import sequence

Progress = Callable[[str], None]
HELDOUT_SEED = 77_001  # prompts are drawn from a stream training never uses


@dataclass(frozen=True)
class AudioEvalSettings:
    num_prompts: int = 48
    seconds: float = 1.0
    guidance: tuple[float, ...] = (1.0, sampling_defaults("audio").guidance_scale, 3.0)
    seed: int = 0
    grpc: bool = True

    def __post_init__(self) -> None:
        if self.num_prompts < 1 or not self.seconds > 0:
            raise ValueError("num_prompts must be >= 1 and seconds > 0")
        if not self.guidance or any(g < 0 for g in self.guidance):
            raise ValueError(f"guidance scales must be >= 0, got {self.guidance}")


def tone_prompts(n: int, seed: int = HELDOUT_SEED) -> list[tuple[str, int]]:
    """n (caption, frequency): waveforms and log-uniform integer frequencies from `seed`."""
    rng = np.random.default_rng(seed)
    tones = [random_tone(rng) for _ in range(n)]
    return [(caption(waveform, hz), hz) for waveform, hz in tones]


def adherence(
    pipe: Any,
    prompts: Sequence[tuple[str, int]],
    scale: float,
    seconds: float,
    seed: int,
    frame_head: bool = True,
) -> dict:
    """Pitch accuracy of one guidance scale and layout over `prompts`."""
    sampling = replace(sampling_defaults("audio"), guidance_scale=scale)
    output = AudioOutput(seconds=seconds, frame_head=frame_head)
    items = [
        (text, output, replace(sampling, seed=seed + i)) for i, (text, _) in enumerate(prompts)
    ]
    results = pipe.generate_many(items)
    errors = [
        semitones(estimate_pitch(r.audio, r.sample_rate), hz)
        for r, (_, hz) in zip(results, prompts)
    ]
    layout = "frame head" if frame_head else "flattened"
    return {"layout": layout, "guidance": scale} | _accuracy(errors)


def card_ceiling(tok: Any, prompts: Sequence[tuple[str, int]], seconds: float) -> dict:
    """Pitch accuracy of the prompts' own tones through the card's round trip."""
    rate = int(getattr(tok, "sample_rate", 16_000))
    errors = [
        semitones(round_trip_pitch(tok, tone(text.split()[1], hz, seconds, rate), rate), hz)
        for text, hz in prompts
    ]
    return _accuracy(errors)


def _accuracy(errors: list[float]) -> dict:
    finite = [e for e in errors if math.isfinite(e)]
    return {
        "clips": len(errors),
        "within_semitone": sum(e <= 1.0 for e in errors) / len(errors),
        "median_semitones": float(np.median(finite)) if finite else math.inf,
        "unpitched": len(errors) - len(finite),
    }


def speed_local(pipe: Any, prompt: str, seconds: float, frame_head: bool = True) -> dict:
    """One request alone: first chunk, whole clip, real-time factor; and decode-at-end."""
    output = AudioOutput(seconds=seconds, frame_head=frame_head)
    sampling = replace(sampling_defaults("audio"), seed=0)
    start, first, result = time.perf_counter(), None, None
    for chunk in pipe.stream(prompt, output, sampling):
        if isinstance(chunk, AudioChunk) and first is None:
            first = time.perf_counter() - start
        elif isinstance(chunk, GenerationOutput):
            result = chunk
    total = time.perf_counter() - start
    return {
        "layout": "frame head" if frame_head else "flattened",
        "first_chunk_s": first,
        "total_s": total,
        "audio_s": len(result.audio) / result.sample_rate,
        "rtf": total / (len(result.audio) / result.sample_rate),
        "decode_at_end_first_audio_s": total + _one_shot_decode_s(pipe, result),
    }


def _one_shot_decode_s(pipe: Any, result: GenerationOutput) -> float:
    """Seconds to decode the whole clip at once (the non-streaming path's last step)."""
    tok = pipe.tokenizer("audio")
    codes = sequence.frame_codes(pipe.vocab, "audio", result.token_ids, tok.num_codebooks)
    begin = time.perf_counter()
    tok.decode(codes)
    return time.perf_counter() - begin


def speed_grpc(pipe: Any, prompt: str, seconds: float) -> dict:
    """The same request over a loopback gRPC server: first chunk, total, real-time factor;
    and whether the joined chunks equal the local pipeline's clip for the same seed.

    The server runs with the torch threads `mmntp serve` sets (server.torch_threads)."""
    import torch

    from mmntp.serve.server import ServerConfig

    output = AudioOutput(seconds=seconds)
    sampling = replace(sampling_defaults("audio"), seed=0)
    threads, serve_threads = torch.get_num_threads(), ServerConfig().torch_threads
    try:
        if serve_threads:
            torch.set_num_threads(serve_threads)
        return _grpc_run(pipe, prompt, output, sampling) | {"torch_threads": serve_threads}
    finally:
        torch.set_num_threads(threads)


def _grpc_run(pipe: Any, prompt: str, output: AudioOutput, sampling) -> dict:
    from mmntp.api.chunks import pcm16
    from mmntp.client import AudioChunk as WireChunk
    from mmntp.client import Client
    from mmntp.serve.thread import ServerThread

    with ServerThread(pipe) as server, Client(server.target) as client:
        list(client.generate(prompt, output, sampling))  # warm-up: channel, server caches
        start, first, pieces = time.perf_counter(), None, []
        for chunk in client.generate(prompt, output, sampling):
            if isinstance(chunk, WireChunk):
                first = first if first is not None else time.perf_counter() - start
                pieces.append(chunk.pcm16())  # the wire bytes, as the server sent them
        total = time.perf_counter() - start
    offline = pipe(prompt, output, sampling)
    pcm = b"".join(pieces)
    return {
        "first_chunk_s": first,
        "total_s": total,
        "rtf": total / (len(pcm) / 2 / offline.sample_rate),
        "equals_offline": pcm == pcm16(offline.audio),
    }


def evaluate(pipe: Any, settings: AudioEvalSettings, progress: Progress = lambda _: None) -> dict:
    prompts = tone_prompts(settings.num_prompts)
    pipe(prompts[0][0], AudioOutput(seconds=settings.seconds))  # warm-up
    rows = []
    for frame_head in (True, False):
        # the flattened layout at the default scale only (or the last one asked for)
        default = sampling_defaults("audio").guidance_scale
        flat = [default] if default in settings.guidance else settings.guidance[-1:]
        scales = settings.guidance if frame_head else flat
        for scale in scales:
            layout = "frame head" if frame_head else "flattened"
            progress(f"{layout}, guidance {scale:g}: {len(prompts)} clips")
            rows.append(
                adherence(pipe, prompts, scale, settings.seconds, settings.seed, frame_head)
            )
    progress("speed: one request alone")
    speed = [speed_local(pipe, prompts[0][0], settings.seconds, fh) for fh in (True, False)]
    report = {
        "benchmark": "audio",
        "settings": {
            "num_prompts": settings.num_prompts,
            "seconds": settings.seconds,
            "guidance": list(settings.guidance),
            "seed": settings.seed,
            "sampling": {
                "temperature": sampling_defaults("audio").temperature,
                "top_k": sampling_defaults("audio").top_k,
            },
        },
        "adherence": rows,
        "card_ceiling": card_ceiling(pipe.tokenizer("audio"), prompts, settings.seconds),
        "speed": speed,
    }
    if settings.grpc:
        progress("speed: over gRPC")
        report["grpc"] = speed_grpc(pipe, prompts[0][0], settings.seconds)
    return report


def format_table(report: dict) -> str:
    lines = ["layout      guidance  within 1 semitone  median error  unpitched"]
    for a in report["adherence"]:
        lines.append(
            f"{a['layout']:<11} {a['guidance']:<9g} {a['within_semitone']:17.1%} "
            f"{a['median_semitones']:10.2f} st {a['unpitched']:6d}"
        )
    if "card_ceiling" in report:
        c = report["card_ceiling"]
        lines.append(
            f"{'card only':<11} {'-':<9} {c['within_semitone']:17.1%} "
            f"{c['median_semitones']:10.2f} st {c['unpitched']:6d}   (the prompts' own tones "
            "through the card's round trip: the ceiling)"
        )
    lines.append("")
    lines.append("layout      first chunk  whole clip  RTF    decode-at-end first audio")
    for s in report["speed"]:
        lines.append(
            f"{s['layout']:<11} {s['first_chunk_s'] * 1e3:8.0f} ms {s['total_s'] * 1e3:8.0f} ms "
            f"{s['rtf']:6.3f} {s['decode_at_end_first_audio_s'] * 1e3:10.0f} ms"
        )
    if "grpc" in report:
        g = report["grpc"]
        lines.append(
            f"{'gRPC':<11} {g['first_chunk_s'] * 1e3:8.0f} ms {g['total_s'] * 1e3:8.0f} ms "
            f"{g['rtf']:6.3f}   chunks equal offline: {g['equals_offline']}"
        )
    return "\n".join(lines)
