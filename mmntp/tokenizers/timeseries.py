"""Time-series tokenizer: Chronos' mean scaling + uniform binning, reimplemented.

Follows `MeanScaleUniformBins` of amazon-science/chronos-forecasting: divide the context
by the mean absolute value of its observed entries, then bin uniformly in [low, high].
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from mmntp.tokenizers.base import (
    DiscreteTokenizer,
    Encoded,
    StreamDecoder,
    as_codes,
    register_tokenizer,
)

CHRONOS_4096_CARD = """\
# chronos-4096

Chronos mean-scale uniform-bin tokenizer (`MeanScaleUniformBins`, type `chronos_bins`),
a reimplementation of the scheme in amazon-science/chronos-forecasting.

- Scale: mean of |x| over the observed (non-NaN) context entries; 1.0 if that is 0.
  A future window is encoded with its context's scale (`encode(window, state)`).
- Codes: 4096 = 2 special (PAD=0, EOS=1) + bin codes 2..4095. The 4093 bin centres are
  `linspace(-15, 15, 4093)` (stored in `tokenizer.safetensors` as `centers`), so the
  bin width is 30/4092 ≈ 0.00733 in scaled units.
- Encoding: `bucketize(x / scale, [-1e20, midpoints, 1e20], right=True) + 2`. Code 2 is
  never produced (a Chronos quirk: its bin would hold x / scale < -1e20, which Chronos can
  only reach with a reused scale; we clamp that case to code 3, the same decoded value),
  so a generator samples codes in [3, 4096).
  NaN encodes to PAD; ±inf, empty, all-NaN and non-numeric input are errors. No EOS is
  appended.
- Decoding: `centers[clamp(code - 3, 0, 4092)] * scale`; PAD and EOS decode to NaN
  (Chronos decodes them to the lowest centre).
- Round trip: |decode(encode(x)) - x| <= scale · bin_width / 2 (+ float32 rounding) for
  |x| <= 15 · scale; values beyond are clipped to ±15 · scale.
"""


def _as_series(values: Any) -> torch.Tensor:
    """A 1-D list / numpy array / tensor of ints or floats -> float32 tensor (T,)."""
    if isinstance(values, torch.Tensor):
        if values.dtype == torch.bool or values.is_complex():
            raise ValueError(f"time series values must be numeric, got dtype {values.dtype}")
        series = values.detach().cpu()
    else:
        try:
            array = np.asarray(values)
        except ValueError as err:  # ragged nested lists
            raise ValueError(f"time series values must be 1-D numeric: {err}") from err
        if array.dtype.kind not in "iuf":
            raise ValueError(
                f"time series values must be numeric (int or float), got dtype {array.dtype}"
            )
        series = torch.from_numpy(np.array(array, dtype=np.float32))
    if series.dim() != 1:
        raise ValueError(f"time series values must be 1-D, got shape {tuple(series.shape)}")
    if series.numel() == 0:
        raise ValueError("time series values are empty")
    # Chronos works in float32 throughout; matching it keeps codes identical.
    series = series.to(torch.float32)
    if torch.isinf(series).any():
        raise ValueError("time series values contain ±inf (or exceed the float32 range)")
    if torch.isnan(series).all():
        raise ValueError("time series values are all NaN")
    return series


def _scale_from(state: dict[str, Any]) -> float:
    scale = state.get("scale") if isinstance(state, dict) else None
    if isinstance(scale, torch.Tensor) and scale.numel() == 1:
        scale = scale.item()
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise ValueError(f"state['scale'] must be a number, got {scale!r}")
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"state['scale'] must be positive and finite, got {scale!r}")
    return float(scale)


@register_tokenizer
class MeanScaleUniformBins(DiscreteTokenizer):
    """Real values <-> codes in [0, n_tokens); one codebook, PAD=0, EOS=1."""

    type_name: ClassVar[str] = "chronos_bins"
    modality: ClassVar[str] = "timeseries"
    num_codebooks = 1
    pad_id = 0
    eos_id = 1

    def __init__(
        self,
        n_tokens: int = 4096,
        n_special: int = 2,
        low: float = -15.0,
        high: float = 15.0,
        centers: torch.Tensor | None = None,
    ) -> None:
        if n_special < 2:
            raise ValueError(f"n_special must be >= 2 (PAD and EOS), got {n_special}")
        if n_tokens - n_special - 1 < 2:
            raise ValueError(f"n_tokens={n_tokens} leaves fewer than 2 bins")
        if not low < high:
            raise ValueError(f"low must be below high, got low={low}, high={high}")
        self.n_tokens, self.n_special = int(n_tokens), int(n_special)
        self.low, self.high = float(low), float(high)
        n_centers = self.n_tokens - self.n_special - 1
        if centers is None:
            centers = torch.linspace(self.low, self.high, n_centers)
        elif tuple(centers.shape) != (n_centers,):
            raise ValueError(f"centers must have shape ({n_centers},), got {tuple(centers.shape)}")
        self.centers = centers.to(torch.float32)  # (n_centers,)
        mids = (self.centers[1:] + self.centers[:-1]) / 2
        self.boundaries = torch.cat([torch.tensor([-1e20]), mids, torch.tensor([1e20])])
        self.codebook_sizes = [self.n_tokens]
        self.sample_range = (self.n_special + 1, self.n_tokens)

    @property
    def bin_width(self) -> float:
        """Distance between neighbouring centres, in scaled units (30/4092 by default)."""
        return (self.high - self.low) / (len(self.centers) - 1)

    def encode(self, values: Any, state: dict[str, Any] | None = None) -> Encoded:
        """Values (T,) -> codes (T,) LongTensor and state {"scale": float}.

        `state` (a previous `Encoded.state`) fixes the scale instead of computing it, so
        a future window is tokenized on its context's scale.
        """
        series = _as_series(values)  # (T,) float32
        observed = ~torch.isnan(series)
        if state is None:
            # Chronos' expression (nansum skips the NaN entries), so scales match bit for bit.
            scale = (torch.nansum(series.abs()) / observed.sum()).item()
            if not math.isfinite(scale):
                raise ValueError(
                    "time series values are too large: their mean |x| overflows float32"
                )
            scale = scale if scale > 0 else 1.0
        else:
            scale = _scale_from(state)
        scaled = series / torch.tensor(scale, dtype=torch.float32)
        codes = torch.bucketize(scaled, self.boundaries, right=True) + self.n_special
        # Chronos clamps to [0, n_tokens): x / scale < -1e20 (only reachable with a reused
        # scale) would give code n_special, outside sample_range. Clamping to the first bin
        # code decodes to the same value (low · scale) and keeps that code unused.
        codes = codes.clamp_(self.n_special + 1, self.n_tokens - 1)
        codes[~observed] = self.pad_id
        return Encoded(codes, {"scale": float(scale)})

    def decode(self, codes: torch.Tensor, state: dict[str, Any] | None = None) -> torch.Tensor:
        """Codes (..., T) -> float32 values (..., T); PAD and EOS decode to NaN.

        Leading dims are free, e.g. (num_samples, T) sample paths of one series.
        """
        if state is None:
            raise ValueError("decode needs state with 'scale' (the Encoded.state of the context)")
        scale = _scale_from(state)
        codes = as_codes(codes, self.n_tokens, "MeanScaleUniformBins.decode")
        index = (codes - self.n_special - 1).clamp(0, len(self.centers) - 1)
        values = self.centers[index] * scale
        return values.masked_fill(codes < self.n_special, float("nan"))

    def stream_decoder(self, state: dict[str, Any] | None = None) -> TimeSeriesStreamDecoder:
        return TimeSeriesStreamDecoder(self, state)

    def config(self) -> dict[str, Any]:
        return {
            "n_tokens": self.n_tokens,
            "n_special": self.n_special,
            "low": self.low,
            "high": self.high,
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        # Saved so a card pins the exact float32 centres, whatever linspace does elsewhere.
        return {"centers": self.centers}

    @classmethod
    def from_config(
        cls,
        config: dict[str, Any],
        tensors: dict[str, torch.Tensor],
        directory: Path | None = None,
    ) -> MeanScaleUniformBins:
        extra = set(tensors) - {"centers"}
        if extra:
            raise ValueError(f"MeanScaleUniformBins: unexpected tensors {sorted(extra)}")
        try:
            return cls(**config, centers=tensors.get("centers"))
        except TypeError as err:
            raise ValueError(f"MeanScaleUniformBins: bad config {config}: {err}") from err


class TimeSeriesStreamDecoder(StreamDecoder):
    """Each push decodes at once (a value depends only on its own code); nothing is held."""

    def __init__(self, tokenizer: MeanScaleUniformBins, state: dict[str, Any] | None) -> None:
        if state is None:
            raise ValueError("stream_decoder needs state with 'scale'")
        self._tokenizer = tokenizer
        self._state = {"scale": _scale_from(state)}

    def push(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (..., t) (0-d = one code) -> float32 values of the same shape."""
        return self._tokenizer.decode(codes, self._state)

    def flush(self) -> torch.Tensor:
        return torch.empty(0, dtype=torch.float32)
