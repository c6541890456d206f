"""A cochlear audio tokenizer in the style of AuriStream's WavCoch: 200 tokens per second.

Front end (`Cochleagram`, plain torch): an ERB-spaced bank of 4th-order gammatone FIR
filters (impulse responses t^3 exp(-2 pi 1.019 ERB(fc) t) cos(2 pi fc t), unit gain at
the centre frequency) applied causally by FFT convolution; half-wave rectification; a
causal Hann low-pass of two hops that also samples the envelope every `hop` samples;
power-law compression (x + eps)^0.3. Frame i sees samples up to (i + 1) * hop only.

Quantiser: a k-means codebook over cochleagram frames (nearest centroid, Euclidean),
fitted by `mmntp.train.cochlear`.

Way back (`CarrierDecoder`): codes -> their codebook vectors -> a causal dilated conv
net at the frame rate -> one log-amplitude per frame for each of a fixed bank of
log-spaced sinusoidal carriers -> amplitudes interpolated linearly from the previous
frame to this one -> additive synthesis sum_m a_m(n) sin(2 pi f_m n / sr + phi_m) on the
absolute sample index n. Everything is causal and each frame yields exactly `hop` samples
from its own and earlier frames, so the stream decoder carries explicit state (each conv's
input tail, the last amplitudes, the sample index) and frame-by-frame decoding equals the
one-shot decode. Why carriers and not conv upsampling to samples: a time-invariant decoder
fed a stationary code sequence (a held tone) through nearest/transposed upsampling outputs
a signal periodic in `hop` (a 200 Hz buzz), so it cannot hold a 110 Hz tone; the fixed
carriers (a fraction of a semitone apart) keep their own phase and can.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmntp.api.errors import FieldError, check_int
from mmntp.tokenizers.base import (
    DiscreteTokenizer,
    Encoded,
    StreamDecoder,
    as_codes,
    check_tensors,
    register_tokenizer,
)

# -- the front end ----------------------------------------------------------------------


def erb(f: torch.Tensor | float) -> torch.Tensor:
    """Equivalent rectangular bandwidth (Glasberg & Moore 1990) in Hz at frequency f."""
    return 24.7 * (4.37 * torch.as_tensor(f, dtype=torch.float64) / 1000.0 + 1.0)


def hz_to_erb_number(f: torch.Tensor | float) -> torch.Tensor:
    """ERB-rate scale: 21.4 log10(1 + 0.00437 f)."""
    return 21.4 * torch.log10(1.0 + 0.00437 * torch.as_tensor(f, dtype=torch.float64))


def erb_number_to_hz(e: torch.Tensor) -> torch.Tensor:
    return (10 ** (e / 21.4) - 1.0) / 0.00437


def erb_space(f_min: float, f_max: float, n: int) -> torch.Tensor:
    """`n` centre frequencies (float64, ascending) equally spaced on the ERB-rate scale."""
    # The two ends are numbers, computed on the CPU even while a card is built on the
    # meta device (its size check): a meta tensor has no value to read.
    with torch.device("cpu"):
        lo, hi = float(hz_to_erb_number(f_min)), float(hz_to_erb_number(f_max))
    return erb_number_to_hz(torch.linspace(lo, hi, n).double())


def gammatone_bank(
    centres: torch.Tensor, sample_rate: int, length: int, order: int = 4, analytic: bool = False
) -> torch.Tensor:
    """FIR impulse responses [channels, length] (float64), unit magnitude at each centre;
    `analytic`: complex (a complex exponential carrier instead of a cosine), whose output
    magnitude is the channel's envelope."""
    t = torch.arange(length, dtype=torch.float64) / sample_rate  # t: [L]
    fc = centres.double()[:, None]  # fc: [C, 1]
    b = 2 * math.pi * 1.019 * erb(fc)
    carrier = torch.exp(2j * math.pi * fc * t) if analytic else torch.cos(2 * math.pi * fc * t)
    h = t ** (order - 1) * torch.exp(-b * t) * carrier  # h: [C, L]
    response = (h * torch.exp(-2j * math.pi * fc * t)).sum(-1).abs()  # |H(fc)|: [C]
    return h / response[:, None]


def fft_convolve_causal(x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Causal linear convolution by FFT: x [B, T], h [C, L] -> [B, C, T] (first T samples)."""
    n = x.shape[-1] + h.shape[-1] - 1
    n_fft = 1 << (n - 1).bit_length()
    spec = torch.fft.rfft(x, n_fft)[:, None, :] * torch.fft.rfft(h, n_fft)[None]
    return torch.fft.irfft(spec, n_fft)[..., : x.shape[-1]]


ENVELOPES = ("rectified", "analytic")


class Cochleagram(nn.Module):
    """Waveforms [B, T] (T a multiple of hop) -> compressed envelopes [B, channels, T / hop].

    `envelope`: "rectified" (half-wave rectification of each channel, then the low-pass) or
    "analytic" (the magnitude of a complex gammatone's output, then the low-pass). A
    rectified channel ripples at its input's frequency, which a 10 ms low-pass sampled
    every 5 ms cannot remove below ~200 Hz: a steady low sine gives frames that cycle
    through several codes. The analytic magnitude of a steady tone is flat.
    """

    def __init__(
        self,
        channels: int,
        f_min: float,
        f_max: float,
        sample_rate: int,
        hop: int,
        fir_length: int,
        compression: float,
        eps: float = 1e-5,
        envelope: str = "rectified",
    ) -> None:
        super().__init__()
        if envelope not in ENVELOPES:
            raise ValueError(f"envelope must be one of {ENVELOPES}, got {envelope!r}")
        self.hop, self.compression, self.eps = hop, compression, eps
        self.analytic = envelope == "analytic"
        centres = erb_space(f_min, f_max, channels)
        self.register_buffer("centres", centres.float(), persistent=False)
        bank = gammatone_bank(centres, sample_rate, fir_length, analytic=self.analytic)
        if self.analytic:  # real and imaginary parts as 2C real filters
            bank = torch.cat([bank.real, bank.imag])
        self.register_buffer("bank", bank.float(), persistent=False)  # [C or 2C, L]
        window = torch.hann_window(2 * hop + 2, periodic=False, dtype=torch.float64)[1:-1]
        self.register_buffer("lowpass", (window / window.sum()).float(), persistent=False)

    def filter(self, x: torch.Tensor) -> torch.Tensor:
        """The gammatone outputs [B, C, T] (causal)."""
        return fft_convolve_causal(x, self.bank)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape
        out = self.filter(x)
        if self.analytic:
            re, im = out.chunk(2, dim=1)
            rect = torch.sqrt(re * re + im * im)  # the channel's envelope: [B, C, T]
        else:
            rect = out.clamp(min=0)  # half-wave rectification: [B, C, T]
        c = rect.shape[1]
        win = self.lowpass.numel()
        # Causal low-pass + decimation: frame i averages samples [i*hop - hop, i*hop + hop).
        padded = F.pad(rect.reshape(b * c, 1, t), (win - self.hop, 0))
        env = F.conv1d(padded, self.lowpass.view(1, 1, -1), stride=self.hop)  # [B*C, 1, F]
        env = env.reshape(b, c, -1)
        return (env.clamp(min=0) + self.eps) ** self.compression


# -- the decoder -----------------------------------------------------------------------


class CausalConv(nn.Module):
    """A causal 1-D conv whose left context is passed in and returned (streaming state)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, dilation=dilation)
        self.context = (kernel - 1) * dilation

    def initial_state(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, self.conv.in_channels, self.context)

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, C, F], state [B, C, context] -> (y [B, C', F], new state)."""
        full = torch.cat([state.to(x.dtype), x], dim=-1)
        tail = full[..., full.shape[-1] - self.context :] if self.context else full[..., :0]
        return self.conv(full), tail


class CarrierDecoder(nn.Module):
    """Codebook vectors [B, D, F] -> waveform [B, F * hop] by carrier additive synthesis."""

    def __init__(
        self,
        in_dim: int,
        width: int,
        dilations: list[int],
        carriers: int,
        carrier_range: tuple[float, float],
        sample_rate: int,
        hop: int,
    ) -> None:
        super().__init__()
        self.sample_rate, self.hop = sample_rate, hop
        self.inp = CausalConv(in_dim, width, 3)
        self.blocks = nn.ModuleList(CausalConv(width, width, 3, d) for d in dilations)
        self.mix = nn.ModuleList(nn.Conv1d(width, width, 1) for _ in dilations)
        self.out = nn.Conv1d(width, carriers, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.constant_(self.out.bias, -5.0)
        lo, hi = carrier_range
        freqs = torch.logspace(math.log10(lo), math.log10(hi), carriers, dtype=torch.float64)
        self.register_buffer("freqs", freqs, persistent=False)
        # Fixed carrier phases, saved: a sum of carriers at one phase would be a click train.
        gen = torch.Generator().manual_seed(1234)
        self.register_buffer("phases", 2 * math.pi * torch.rand(carriers, generator=gen))

    def initial_state(self, batch: int) -> dict[str, Any]:
        return {
            "convs": [self.inp.initial_state(batch)]
            + [blk.initial_state(batch) for blk in self.blocks],
            "amps": torch.zeros(batch, self.out.out_channels),
            "sample": 0,
        }

    def amplitudes(
        self, z: torch.Tensor, state: dict[str, Any]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """z [B, D, F] -> carrier amplitudes [B, M, F] and the convs' new tails."""
        h, tail = self.inp(z, state["convs"][0])
        tails = [tail]
        for blk, mix, s in zip(self.blocks, self.mix, state["convs"][1:]):
            y, tail = blk(F.silu(h), s)
            h = h + mix(F.silu(y))
            tails.append(tail)
        return torch.exp(self.out(F.silu(h)).clamp(-15.0, 3.0)), tails

    def carrier_table(self, start: int, samples: int) -> torch.Tensor:
        """The carriers sin(2 pi f_m n / sr + phi_m) for n in [start, start + samples): [M, T]."""
        n = torch.arange(start, start + samples, dtype=torch.float64)
        cycles = torch.remainder(self.freqs[:, None] * n / self.sample_rate, 1.0)
        return torch.sin(2 * math.pi * cycles + self.phases.double()[:, None]).float()

    def _frame_phases(self, start: int, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """sin and cos [M, F] of each carrier's phase at the first sample of each frame
        (float64 on the absolute sample index, so chunking never changes them)."""
        n0 = start + self.hop * torch.arange(frames, dtype=torch.float64)
        cycles = torch.remainder(self.freqs[:, None] * n0 / self.sample_rate, 1.0)
        theta = 2 * math.pi * cycles + self.phases.double()[:, None]
        return torch.sin(theta).float(), torch.cos(theta).float()

    def _within_frame(self) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin [M, hop] of each carrier's phase advance over one frame's samples."""
        cached = getattr(self, "_advance", None)
        if cached is None:
            k = torch.arange(self.hop, dtype=torch.float64)
            w = 2 * math.pi * self.freqs[:, None] * k / self.sample_rate
            cached = self._advance = (torch.cos(w).float(), torch.sin(w).float())
        return cached

    def synthesise(
        self,
        amps: torch.Tensor,
        prev: torch.Tensor,
        start: int,
        carriers: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """amps [B, M, F] with the frame before them prev [B, M] -> samples [B, F * hop].

        Within frame f the amplitudes ramp linearly from frame f - 1's to frame f's, so
        y[b, f, k] = sum_m (before + (amps - before) * ramp[k]) * carrier[m, f * hop + k].
        By angle addition, carrier[m, f * hop + k] = sin(theta_mf) cos(w_m k) +
        cos(theta_mf) sin(w_m k): four [B*F, M] x [M, hop] products instead of building
        the [M, F * hop] table of sines (`carriers` still takes an explicit table).
        """
        b, m, f = amps.shape
        ramp = torch.arange(1, self.hop + 1, dtype=amps.dtype) / self.hop  # [hop]
        before = torch.cat([prev[:, :, None].to(amps.dtype), amps[:, :, :-1]], dim=-1)
        if carriers is not None:
            table = carriers.to(amps.dtype).reshape(m, f, self.hop)  # [M, F, hop]
            y = torch.einsum("bmf,mfk->bfk", before, table)
            y = y + torch.einsum("bmf,mfk->bfk", amps - before, table * ramp)
            return y.reshape(b, f * self.hop)
        sin_t, cos_t = self._frame_phases(start, f)  # [M, F]
        cos_w, sin_w = self._within_frame()  # [M, hop]
        cos_w, sin_w = cos_w.to(amps.dtype), sin_w.to(amps.dtype)
        delta = amps - before
        rows = lambda x: x.transpose(1, 2).reshape(b * f, m)  # noqa: E731 - [B*F, M]
        y = rows(before * sin_t) @ cos_w + rows(before * cos_t) @ sin_w
        y = y + (rows(delta * sin_t) @ cos_w + rows(delta * cos_t) @ sin_w) * ramp
        return y.reshape(b, f * self.hop)

    def forward(
        self, z: torch.Tensor, state: dict[str, Any] | None = None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        state = state if state is not None else self.initial_state(z.shape[0])
        amps, tails = self.amplitudes(z, state)
        wave = self.synthesise(amps, state["amps"], state["sample"])
        new = {"convs": tails, "amps": amps[:, :, -1], "sample": state["sample"] + wave.shape[-1]}
        return wave, new


# -- the tokenizer ----------------------------------------------------------------------


class CochlearStreamDecoder(StreamDecoder):
    """push(codes (n,)) -> the next n * hop samples; flush() -> an empty tensor (no lag)."""

    def __init__(self, tok: CochlearTokenizer) -> None:
        self._tok = tok
        self._state = tok.decoder.initial_state(1)

    @torch.no_grad()
    def push(self, codes: torch.Tensor) -> torch.Tensor:
        codes = self._tok._check_codes(codes, "CochlearTokenizer stream push")
        if codes.numel() == 0:
            return torch.zeros(0)
        wave, self._state = self._tok.decoder(self._tok._vectors(codes), self._state)
        return wave[0].clamp(-1.0, 1.0)

    def flush(self) -> torch.Tensor:
        return torch.zeros(0)


@register_tokenizer
class CochlearTokenizer(DiscreteTokenizer):
    """16 kHz mono audio <-> one code per 5 ms cochleagram frame (200 tokens per second)."""

    type_name: ClassVar[str] = "audio_cochlear"
    modality: ClassVar[str] = "audio"
    num_codebooks = 1

    def __init__(
        self,
        sample_rate: int = 16_000,
        hop: int = 80,
        channels: int = 64,
        f_min: float = 50.0,
        f_max: float = 7600.0,
        fir_length: int = 1024,
        compression: float = 0.3,
        codebook_size: int = 1024,
        width: int = 192,
        dilations: list[int] | tuple[int, ...] = (1, 2, 4, 8),
        carriers: int = 256,
        carrier_range: list[float] | tuple[float, float] = (40.0, 7800.0),
        seed: int = 0,
        envelope: str = "rectified",
    ) -> None:
        sizes = {"sample_rate": sample_rate, "hop": hop, "channels": channels}
        sizes.update(fir_length=fir_length, codebook_size=codebook_size, width=width)
        _check_sizes({**sizes, "carriers": carriers, "seed": seed}, dilations)
        if not 0 < f_min < f_max < sample_rate / 2:
            raise ValueError(f"need 0 < f_min < f_max < sample_rate / 2, got {f_min}, {f_max}")
        if not 0 < compression <= 1:
            raise ValueError(f"compression must be in (0, 1], got {compression}")
        self.sample_rate, self.hop, self.channels = int(sample_rate), int(hop), int(channels)
        self.f_min, self.f_max, self.fir_length = float(f_min), float(f_max), int(fir_length)
        self.compression, self.codebook_size = float(compression), int(codebook_size)
        self.width, self.dilations = int(width), [int(d) for d in dilations]
        self.carriers, self.carrier_range = int(carriers), [float(f) for f in carrier_range]
        self.seed, self.envelope = int(seed), str(envelope)
        self.frame_rate = self.sample_rate / self.hop
        self.codebook_sizes = [self.codebook_size]
        self.sample_range = (0, self.codebook_size)
        self.front = Cochleagram(
            channels, f_min, f_max, sample_rate, hop, fir_length, compression, envelope=envelope
        )
        with torch.random.fork_rng():  # a fresh tokenizer depends on `seed` only
            torch.manual_seed(self.seed)
            self.codebook = torch.rand(self.codebook_size, channels) * 0.5  # [K, C]
            self.decoder = CarrierDecoder(
                channels,
                self.width,
                self.dilations,
                self.carriers,
                (self.carrier_range[0], self.carrier_range[1]),
                sample_rate,
                hop,
            )
        # Per-channel statistics of the training cochleagram frames (decoder input scaling).
        self.frame_mean = torch.zeros(channels)
        self.frame_std = torch.ones(channels)
        self.decoder.eval()

    # -- front end and codes --

    @property
    def centres(self) -> torch.Tensor:
        """The gammatone centre frequencies (Hz), ascending."""
        return self.front.centres

    def _waveform(self, clip: Any) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(clip) if not isinstance(clip, torch.Tensor) else clip)
        if x.dim() != 1:
            raise ValueError(f"audio clip must be 1-D (samples,), got shape {tuple(x.shape)}")
        if x.numel() == 0:
            raise ValueError("audio clip is empty")
        if not x.is_floating_point():
            raise ValueError(f"audio clip must be float, got dtype {x.dtype}")
        x = x.detach().cpu().float()
        if not torch.isfinite(x).all():
            raise ValueError("audio clip contains NaN or ±inf")
        return x

    def frames_for(self, samples: int) -> int:
        """Codes for a clip of `samples` samples: ceil(samples / hop)."""
        return -(-samples // self.hop)

    def cochleagram_batch(self, x: torch.Tensor) -> torch.Tensor:
        """Waveforms [B, T] -> [B, channels, ceil(T / hop)] (zero-padded to whole frames)."""
        pad = self.frames_for(x.shape[-1]) * self.hop - x.shape[-1]
        return self.front(F.pad(x, (0, pad)))

    @torch.no_grad()
    def cochleagram(self, clip: Any) -> torch.Tensor:
        """One clip (1-D, at sample_rate) -> cochleagram [channels, frames]."""
        return self.cochleagram_batch(self._waveform(clip)[None])[0]

    @torch.no_grad()
    def quantize(self, frames: torch.Tensor) -> torch.Tensor:
        """Cochleagram frames [N, channels] -> nearest codebook index [N]."""
        return nearest_code(frames, self.codebook)

    def encode(self, clip: Any, state: dict[str, Any] | None = None) -> Encoded:
        """A 1-D float clip at sample_rate -> codes (ceil(samples / hop),)."""
        return Encoded(self.quantize(self.cochleagram(clip).T))

    def _check_codes(self, codes: Any, what: str) -> torch.Tensor:
        codes = as_codes(codes, self.codebook_size, what)
        if codes.dim() != 1:
            raise ValueError(f"{what}: codes must be shaped (frames,), got {tuple(codes.shape)}")
        return codes

    def _vectors(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (F,) -> normalised codebook vectors [1, channels, F] (the decoder's input)."""
        z = (self.codebook[codes] - self.frame_mean) / self.frame_std  # [F, C]
        return z.T[None]

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, state: dict[str, Any] | None = None) -> torch.Tensor:
        """Codes (frames,) -> float32 waveform (frames * hop,) in [-1, 1]."""
        codes = self._check_codes(codes, "CochlearTokenizer.decode")
        if codes.numel() == 0:
            return torch.zeros(0)
        wave, _ = self.decoder(self._vectors(codes))
        return wave[0].clamp(-1.0, 1.0)

    def stream_decoder(self, state: dict[str, Any] | None = None) -> CochlearStreamDecoder:
        return CochlearStreamDecoder(self)

    # -- the card --

    def num_parameters(self) -> int:
        """Decoder parameters plus the codebook's entries."""
        return sum(p.numel() for p in self.decoder.parameters()) + self.codebook.numel()

    def config(self) -> dict[str, Any]:
        return {
            "sample_rate": self.sample_rate,
            "hop": self.hop,
            "channels": self.channels,
            "f_min": self.f_min,
            "f_max": self.f_max,
            "fir_length": self.fir_length,
            "compression": self.compression,
            "codebook_size": self.codebook_size,
            "width": self.width,
            "dilations": self.dilations,
            "carriers": self.carriers,
            "carrier_range": self.carrier_range,
            "seed": self.seed,
            "envelope": self.envelope,
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {f"decoder.{k}": v for k, v in self.decoder.state_dict().items()}
        out["codebook"] = self.codebook
        out["frame_mean"], out["frame_std"] = self.frame_mean, self.frame_std
        return out

    def code_identity(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """The front end, the codebook and the frame statistics decide the codes; the
        decoder (its weights, its shape and the carrier phases that `seed` draws) does not."""
        config = {k: v for k, v in self.config().items() if k not in DECODER_CONFIG}
        tensors = {k: v for k, v in self.tensors().items() if not k.startswith("decoder.")}
        return config, tensors

    @classmethod
    def from_config(
        cls,
        config: dict[str, Any],
        tensors: dict[str, torch.Tensor],
        directory: Path | None = None,
    ) -> CochlearTokenizer:
        try:
            tok = cls(**config)
        except TypeError as err:
            raise ValueError(f"{cls.__name__}: bad config {config}: {err}") from err
        if not tensors:
            return tok
        check_tensors(tok.tensors(), tensors, cls.__name__)
        tok.codebook = tensors["codebook"].float().clone()
        tok.frame_mean = tensors["frame_mean"].float().clone()
        tok.frame_std = tensors["frame_std"].float().clone()
        prefix = "decoder."
        tok.decoder.load_state_dict(
            {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        )
        return tok


# Sizes a config may give: the front end allocates a channels x fir_length float64 bank
# (and FFTs over it) that no tensor of the card bounds, so these are checked first.
SIZE_LIMITS = {
    "sample_rate": (1, 384_000),
    "hop": (1, 1 << 16),
    "channels": (2, 4096),
    "fir_length": (1, 1 << 16),
    "codebook_size": (2, 1 << 20),
    "width": (1, 1 << 14),
    "carriers": (1, 1 << 14),
    "seed": (0, (1 << 63) - 1),
}


def _check_sizes(sizes: dict[str, Any], dilations: Any) -> None:
    """FieldError naming the first constructor size that is not an int in its range."""
    for name, (lo, hi) in SIZE_LIMITS.items():
        check_int(name, sizes[name], lo, hi)
    if not isinstance(dilations, (list, tuple)) or not 1 <= len(dilations) <= 16:
        raise FieldError("dilations", f"must be a list of 1 to 16 integers, got {dilations!r:.40}")
    for i, d in enumerate(dilations):
        check_int(f"dilations[{i}]", d, 1, 1 << 12)


# Constructor arguments that shape only the decoder (code_identity leaves them out).
DECODER_CONFIG = ("width", "dilations", "carriers", "carrier_range", "seed")


def nearest_code(frames: torch.Tensor, codebook: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """Rows [N, D] -> index [N] of the nearest codebook row (squared Euclidean), chunked."""
    sq = (codebook * codebook).sum(-1)  # [K]
    out = []
    for rows in frames.split(chunk):
        out.append((sq[None] - 2 * rows @ codebook.T).argmin(-1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)
