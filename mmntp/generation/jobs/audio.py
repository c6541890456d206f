"""Text-to-audio: codec frames from the model, streamed as PCM through the causal decoder.

With the model's frame head, one forward emits a whole frame (all codec levels), so the
first audio chunk is ready after the prefill forward; without it (`frame_head=False`)
the same frames come one token per forward (the flattened baseline). Frames go to the
tokenizer's stream decoder as they complete: the first chunk is small
(`first_chunk_frames`), later ones `chunk_frames`; nothing is ever decoded twice, and the
chunks joined equal the final clip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mmntp.api import AudioChunk, AudioOutput, FieldError, GenerationOutput
from mmntp.engine import frames_plan
from mmntp.format import sequence
from mmntp.generation.jobs.base import Job, guidance_prompt


@dataclass
class AudioJob(Job):
    heavy_decode = True
    frame_size: int = 1  # tokens per codec frame (its levels)
    first: int = 1
    every: int = 5
    decoder: Any = None
    sample_rate: int = 0
    pending: list[int] = field(default_factory=list)  # tokens of the frame in progress
    frames: list[list[int]] = field(default_factory=list)  # complete, not yet decoded
    sent_frames: int = 0
    sent_samples: int = 0
    pieces: list[np.ndarray] = field(default_factory=list)

    @classmethod
    def build(cls, ctx, parts, output: AudioOutput, sampling):
        """`parts` is the validated caption; the clip's token count is checked here, where
        the codec's frame rate is known."""
        tok, text, vocab = ctx.tokenizer("audio"), ctx.tokenizer("text"), ctx.vocab
        # round first: a float32 0.3 from the wire is 0.30000001 s, not 16 frames but 15
        frames = max(1, math.ceil(round(output.seconds * tok.frame_rate, 4)))
        spans = sequence.frame_spans(vocab, tok, "audio")
        head = "audio" if output.frame_head and "audio" in ctx.heads else None
        # A head may emit several codec frames per forward (e.g. 4 cochlear tokens): the
        # clip is then rounded up to whole groups of frames.
        per_forward = len(ctx.heads[head].config.spans) if head else len(spans)
        group = per_forward // len(spans)
        frames = -(-frames // group) * group
        tokens = frames * len(spans)
        if tokens > ctx.limits.max_output_tokens:
            raise FieldError(
                "output.audio.seconds",
                f"{output.seconds} s is {tokens} tokens, "
                f"more than max_output_tokens {ctx.limits.max_output_tokens}",
            )
        segment = frames_plan(frames // group, spans * group, "audio", head)
        ids = ctx.checked_prompt(sequence.audio_prompt(vocab, text, parts[0].text))
        uncond = guidance_prompt(sampling, lambda: sequence.audio_prompt(vocab, text, None))
        job = cls(ctx, ids, segment, sampling, uncond_ids=uncond, frame_size=len(spans))
        job.first = output.first_chunk_frames or group
        job.every = output.chunk_frames or max(1, round(0.1 * tok.frame_rate))
        job.decoder, job.sample_rate = tok.stream_decoder(), int(tok.sample_rate)
        return job

    def _codes(self, frames: list[list[int]]) -> torch.Tensor:
        """Global ids of whole frames -> local codes (n, levels)."""
        return sequence.frame_codes(self.ctx.vocab, "audio", frames, self.frame_size)

    def _decode(self, frames: list[list[int]]) -> AudioChunk:
        samples = self.decoder.push(self._codes(frames)).detach().cpu().numpy()
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        chunk = AudioChunk(samples, self.sample_rate, self.sent_samples, len(frames))
        self.sent_frames += len(frames)
        self.sent_samples += len(samples)
        self.pieces.append(samples)
        return chunk

    def chunks(self, step, ids, lps, vectors=None):
        self.pending.append(int(ids[0]))
        if len(self.pending) < self.frame_size:
            return
        self.frames.append(self.pending)
        self.pending = []
        need = self.first if self.sent_frames == 0 else self.every
        if len(self.frames) >= need:
            frames, self.frames = self.frames, []
            yield self._decode(frames)

    def flush(self):
        if self.frames:
            frames, self.frames = self.frames, []
            yield self._decode(frames)
        tail = np.asarray(self.decoder.flush(), dtype=np.float32).reshape(-1)
        if tail.size:
            self.pieces.append(tail)
            yield AudioChunk(tail, self.sample_rate, self.sent_samples, 0)
            self.sent_samples += tail.size

    def output(self, ids, lps, reason):
        audio = np.concatenate(self.pieces) if self.pieces else np.zeros(0, np.float32)
        return GenerationOutput(
            "audio", ids, lps, reason, audio=audio, sample_rate=self.sample_rate
        )
