"""Chronos mean-scale uniform-bin tokenizer: round-trip bound, codes, state, errors, IO."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmntp.tokenizers import MeanScaleUniformBins, load_tokenizer

TOK = MeanScaleUniformBins()
BIN_WIDTH = 30 / 4092


def _values(x) -> torch.Tensor:
    """The input as float64, the reference the round trip is measured against."""
    return (
        torch.as_tensor(np.asarray(x, dtype=np.float64)) if not torch.is_tensor(x) else x.double()
    )


def _assert_round_trip(x) -> None:
    """Inside ±15·scale the error is at most half a bin; outside, values clip to ±15·scale."""
    enc = TOK.encode(x)
    scale = enc.state["scale"]
    out = TOK.decode(enc.codes, enc.state)
    assert out.dtype == torch.float32
    out, ref = out.double(), _values(x)
    assert out.shape == ref.shape
    expected = ref.clamp(-15 * scale, 15 * scale)
    tol = (BIN_WIDTH / 2 + 1e-5) * scale  # 1e-5: float32 rounding of x / scale and centres
    assert torch.all((out - expected).abs() <= tol), (out - expected).abs().max()


def test_attributes() -> None:
    assert (TOK.type_name, TOK.modality, TOK.kind) == ("chronos_bins", "timeseries", "discrete")
    assert TOK.num_codebooks == 1 and TOK.codebook_sizes == [4096]
    assert TOK.sample_range == (3, 4096)
    assert (TOK.pad_id, TOK.eos_id) == (0, 1)
    assert TOK.bin_width == pytest.approx(BIN_WIDTH, rel=1e-12)
    assert TOK.centers.shape == (4093,) and TOK.centers.dtype == torch.float32
    assert TOK.centers[0] == -15 and TOK.centers[-1] == 15 and TOK.frame_rate is None


@pytest.mark.parametrize(
    "make",
    [
        lambda a: a.tolist(),
        lambda a: a.astype(np.float32),
        lambda a: a.astype(np.float64),
        lambda a: torch.tensor(a, dtype=torch.float32),
        lambda a: torch.tensor(a, dtype=torch.float64),
        lambda a: torch.tensor(a, dtype=torch.bfloat16),
    ],
    ids=["list", "np32", "np64", "torch32", "torch64", "bf16"],
)
def test_round_trip_float_inputs(make) -> None:
    rng = np.random.default_rng(0)
    series = rng.normal(3.0, 5.0, size=500)
    series[::97] *= 60  # spikes beyond ±15·scale exercise the clipping
    _assert_round_trip(make(series))


@pytest.mark.parametrize(
    "x",
    [
        [1, 2, 3, 40, -7],
        np.arange(-50, 50, dtype=np.int64),
        np.arange(0, 300, dtype=np.uint16),
        torch.arange(-20, 20, dtype=torch.int32),
    ],
    ids=["list", "np_int64", "np_uint16", "torch_int32"],
)
def test_round_trip_int_inputs(x) -> None:
    _assert_round_trip(x)


def test_clipping_outside_range() -> None:
    x = [1.0] * 100 + [1000.0, -1000.0]
    enc = TOK.encode(x)
    out = TOK.decode(enc.codes, enc.state)
    scale = enc.state["scale"]
    assert enc.codes[-2:].tolist() == [4095, 3]
    assert out[-2].item() == pytest.approx(15 * scale) and out[-1].item() == pytest.approx(
        -15 * scale
    )


def test_known_codes() -> None:
    state = {"scale": 1.0}
    w = BIN_WIDTH
    x = [0.0, 0.49 * w, 0.51 * w, w, -w, 15.0, -15.0, 100.0, -100.0]
    codes = TOK.encode(x, state).codes.tolist()
    # Centre 2046 of linspace(-15, 15, 4093) is 0; code = centre index + 3.
    assert codes == [2049, 2049, 2050, 2050, 2048, 4095, 3, 4095, 3]


def test_codes_pick_nearest_centre() -> None:
    gen = torch.Generator().manual_seed(0)
    scaled = torch.rand(2000, generator=gen, dtype=torch.float64) * 34 - 17  # a bit beyond ±15
    codes = TOK.encode(scaled, {"scale": 1.0}).codes
    dist = (TOK.centers.double()[codes - 3] - scaled).abs()
    nearest = (TOK.centers.double()[None, :] - scaled[:, None]).abs().min(dim=1).values
    assert torch.all(dist <= nearest + 1e-5)
    assert codes.min() >= 3 and codes.max() <= 4095


def test_code_two_never_produced_even_for_huge_values() -> None:
    codes = TOK.encode([-1e30, 1e30, 0.0], {"scale": 1.0}).codes
    assert codes.tolist() == [3, 4095, 2049]


def test_scale_is_mean_abs_of_observed() -> None:
    enc = TOK.encode([1.0, float("nan"), -3.0, float("nan")])
    assert enc.state["scale"] == 2.0
    assert enc.codes[1] == TOK.pad_id and enc.codes[3] == TOK.pad_id
    out = TOK.decode(enc.codes, enc.state)
    assert torch.isnan(out[1]) and torch.isnan(out[3])
    assert out[0].item() == pytest.approx(1.0, abs=BIN_WIDTH * 2.0 / 2 + 1e-5)


def test_all_zero_scale_is_one() -> None:
    enc = TOK.encode(np.zeros(5))
    assert enc.state["scale"] == 1.0 and enc.codes.tolist() == [2049] * 5
    # linspace's middle centre is 1.4e-8, not exactly 0 (float32; Chronos has the same).
    assert torch.all(TOK.decode(enc.codes, enc.state).abs() < 1e-6)


def test_state_reuse_for_future_window() -> None:
    context = TOK.encode([1.0, 2.0, 3.0])  # scale 2
    future = TOK.encode([10.0, 20.0], state=context.state)
    assert future.state == {"scale": 2.0}
    assert future.codes.tolist() != TOK.encode([10.0, 20.0]).codes.tolist()
    assert TOK.decode(future.codes, context.state).tolist() == pytest.approx([10.0, 20.0], abs=0.01)
    # Tensor and numpy scalars are accepted as the scale too.
    for scale in (torch.tensor(2.0), np.float32(2.0)):
        assert torch.equal(TOK.encode([10.0, 20.0], {"scale": scale}).codes, future.codes)


@pytest.mark.parametrize(
    "state",
    [
        {},
        {"scale": "2"},
        {"scale": 0.0},
        {"scale": -1.0},
        {"scale": math.nan},
        {"scale": math.inf},
        {"scale": True},
    ],
)
def test_bad_state(state) -> None:
    with pytest.raises(ValueError, match=r"state\['scale'\]"):
        TOK.encode([1.0], state)
    with pytest.raises(ValueError, match=r"state\['scale'\]"):
        TOK.decode(torch.tensor([5]), state)


def test_batched_decode() -> None:
    enc = TOK.encode(np.linspace(-3, 3, 12))
    paths = torch.stack([enc.codes, enc.codes.flip(0), torch.full((12,), 1)])  # (S=3, T=12)
    out = TOK.decode(paths, enc.state)
    assert out.shape == (3, 12)
    for row, codes in zip(out, paths):
        torch.testing.assert_close(row, TOK.decode(codes, enc.state), equal_nan=True)
    assert torch.isnan(out[2]).all()  # EOS rows
    batched = TOK.decode(paths.expand(2, 3, 12), enc.state)  # (B, S, T)
    torch.testing.assert_close(batched[1], out, equal_nan=True)


def test_decode_specials() -> None:
    out = TOK.decode(torch.tensor([0, 1, 2, 3, 4095]), {"scale": 2.0})
    assert torch.isnan(out[:2]).all()
    assert out[2:].tolist() == [-30.0, -30.0, 30.0]  # code 2 decodes like code 3 (Chronos)


@pytest.mark.parametrize(
    ("x", "match"),
    [
        ([], "empty"),
        (np.array([], dtype=np.float32), "empty"),
        (torch.tensor([]), "empty"),
        ([math.nan, math.nan], "all NaN"),
        ([1.0, math.inf], "inf"),
        (np.array([1.0, -np.inf]), "inf"),
        (["1", "2"], "numeric"),
        ([1.0, None], "numeric"),
        ([1.0, "a"], "numeric"),
        ("123", "numeric"),
        ([True, False], "numeric"),
        (torch.tensor([True]), "numeric"),
        (torch.tensor([1 + 1j]), "numeric"),
        ([[1.0, 2.0], [3.0, 4.0]], "1-D"),
        (torch.zeros(2, 3), "1-D"),
        (3.0, "1-D"),
        ([[1.0], [2.0, 3.0]], "1-D"),
        ([3e38, 3e38], "too large"),
    ],
)
def test_encode_errors(x, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TOK.encode(x)


def test_decode_errors() -> None:
    with pytest.raises(ValueError, match="needs state"):
        TOK.decode(torch.tensor([5]))
    with pytest.raises(ValueError, match=r"must lie in \[0, 4096\)"):
        TOK.decode(torch.tensor([4096]), {"scale": 1.0})
    with pytest.raises(ValueError, match="integer tensor"):
        TOK.decode(torch.tensor([5.0]), {"scale": 1.0})


def test_stream_equals_one_shot() -> None:
    enc = TOK.encode(np.sin(np.arange(50) / 3) * 7)
    decoder = TOK.stream_decoder(enc.state)
    pieces = [decoder.push(enc.codes[a : a + 7]) for a in range(0, 50, 7)]
    pieces.append(decoder.push(torch.tensor(TOK.eos_id)))  # 0-d: one code
    tail = decoder.flush()
    assert tail.shape == (0,)
    streamed = torch.cat([p.reshape(-1) for p in pieces] + [tail])
    one_shot = TOK.decode(torch.cat([enc.codes, torch.tensor([TOK.eos_id])]), enc.state)
    torch.testing.assert_close(streamed, one_shot, equal_nan=True)
    with pytest.raises(ValueError, match="needs state"):
        TOK.stream_decoder()


def test_constructor_errors() -> None:
    with pytest.raises(ValueError, match="n_special"):
        MeanScaleUniformBins(n_special=1)
    with pytest.raises(ValueError, match="n_tokens"):
        MeanScaleUniformBins(n_tokens=4)
    with pytest.raises(ValueError, match="low must be below high"):
        MeanScaleUniformBins(low=1.0, high=1.0)
    with pytest.raises(ValueError, match="centers must have shape"):
        MeanScaleUniformBins(centers=torch.zeros(10))


def test_small_vocab_matches_definition() -> None:
    tok = MeanScaleUniformBins(n_tokens=8, n_special=2, low=-1.0, high=1.0)
    assert tok.centers.tolist() == pytest.approx([-1.0, -0.5, 0.0, 0.5, 1.0])
    assert tok.sample_range == (3, 8) and tok.bin_width == 0.5
    codes = tok.encode([-2.0, -0.74, -0.26, 0.0, 0.24, 0.76, 5.0], {"scale": 1.0}).codes
    assert codes.tolist() == [3, 4, 4, 5, 5, 7, 7]


def test_save_load_round_trip(tmp_path) -> None:
    tok = MeanScaleUniformBins(n_tokens=1024, low=-10.0, high=10.0)
    tok.save(tmp_path / "card")
    assert "chronos_bins" in (tmp_path / "card" / "CARD.md").read_text()
    loaded = load_tokenizer(tmp_path / "card")
    assert isinstance(loaded, MeanScaleUniformBins) and loaded.config() == tok.config()
    assert torch.equal(loaded.centers, tok.centers)
    x = np.random.default_rng(1).normal(size=64)
    a, b = tok.encode(x), loaded.encode(x)
    assert torch.equal(a.codes, b.codes) and a.state == b.state
    assert torch.equal(tok.decode(a.codes, a.state), loaded.decode(b.codes, b.state))


def test_from_config_errors() -> None:
    with pytest.raises(ValueError, match="bad config"):
        MeanScaleUniformBins.from_config({"n_bins": 5}, {})
    with pytest.raises(ValueError, match="unexpected tensors"):
        MeanScaleUniformBins.from_config({}, {"boundaries": torch.zeros(3)})
