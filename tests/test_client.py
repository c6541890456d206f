"""SDK and auth pieces that need no server: key loading, bearer parsing, retries, savers."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import soundfile

from mmntp.api import TextOutput, TimeSeriesOutput, TimeSeriesPart
from mmntp.client import (
    AudioChunk,
    ImageChunk,
    _Attempts,
    build_request,
    save_png,
    save_wav,
)
from mmntp.serve.auth import ApiKeyInterceptor, bearer_token, load_api_keys


def test_api_keys_from_file_skip_comments_and_blank_lines(tmp_path):
    path = tmp_path / "keys"
    path.write_text("# team keys\nalpha\n\n  beta  \n")
    assert load_api_keys(path) == ["alpha", "beta"]
    path.write_text("# nothing\n")
    with pytest.raises(ValueError, match="holds no keys"):
        load_api_keys(path)


def test_api_keys_from_the_environment():
    assert load_api_keys(env={"MMNTP_API_KEYS": "a, b,,c"}) == ["a", "b", "c"]
    assert load_api_keys(env={}) == []
    with pytest.raises(ValueError, match="unprintable"):
        load_api_keys(env={"MMNTP_API_KEYS": "ok,bad\x07"})


def test_bearer_token_parsing():
    assert bearer_token([("authorization", "Bearer k1")]) == "k1"
    assert bearer_token([("authorization", b"bearer  k2 ")]) == "k2"
    assert bearer_token([("authorization", "Basic abc")]) is None
    assert bearer_token([("x-other", "Bearer k")]) is None
    assert bearer_token(None) is None
    interceptor = ApiKeyInterceptor(["k1", "k2"])
    assert interceptor.is_valid("k2") and not interceptor.is_valid("k3")
    assert not interceptor.is_valid(None)
    with pytest.raises(ValueError, match="at least one key"):
        ApiKeyInterceptor([])


class _Err(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


def test_only_unavailable_before_any_response_is_retried_with_growing_backoff():
    attempts = _Attempts(timeout=None, retries=3, backoff=0.1)
    delays = [attempts.retry_delay(_Err(grpc.StatusCode.UNAVAILABLE), False) for _ in range(4)]
    assert delays[3] is None  # three re-sends, then give up
    for k, delay in enumerate(delays[:3]):  # jittered in [base/2, base], base doubling
        assert 0.1 * 2**k / 2 <= delay <= 0.1 * 2**k
    fresh = _Attempts(timeout=None, retries=3, backoff=0.1)
    assert fresh.retry_delay(_Err(grpc.StatusCode.UNAVAILABLE), received=True) is None
    for code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED):
        assert fresh.retry_delay(_Err(code), False) is None


def test_retries_stay_inside_the_deadline():
    attempts = _Attempts(timeout=0.05, retries=5, backoff=1.0)
    assert attempts.retry_delay(_Err(grpc.StatusCode.UNAVAILABLE), False) is None


def test_build_request_maps_outputs_and_rejects_empty_prompts():
    request = build_request("hi", TextOutput(max_tokens=7), request_id="r1")
    assert request.prompt[0].text == "hi" and request.output.text.max_tokens == 7
    forecast = build_request(
        TimeSeriesPart([1.0, 2.0]), TimeSeriesOutput(horizon=3, num_samples=5), return_samples=True
    )
    spec = forecast.output.timeseries
    assert (spec.horizon, spec.num_samples, spec.return_samples) == (3, 5, True)
    with pytest.raises(ValueError, match="empty prompt"):
        build_request([], TextOutput())


def test_save_wav_joins_chunks_in_sample_order(tmp_path):
    a = np.arange(4, dtype="<i2")
    b = np.arange(4, 10, dtype="<i2")
    chunks = [
        AudioChunk.from_pcm16(b.tobytes(), 16000, 4),
        AudioChunk.from_pcm16(a.tobytes(), 16000, 0),
    ]
    path = save_wav(chunks, tmp_path / "out.wav")
    data, rate = soundfile.read(path, dtype="int16")
    assert rate == 16000 and data.tolist() == list(range(10))
    with pytest.raises(ValueError, match="does not follow"):
        save_wav(
            [
                AudioChunk.from_pcm16(a.tobytes(), 16000, 0),
                AudioChunk.from_pcm16(b.tobytes(), 16000, 9),
            ],
            path,
        )
    with pytest.raises(ValueError, match="different sample rates"):
        save_wav(
            [
                AudioChunk.from_pcm16(a.tobytes(), 16000, 0),
                AudioChunk.from_pcm16(b.tobytes(), 8000, 4),
            ],
            path,
        )


def test_save_png_prefers_the_final_image(tmp_path):
    chunks = [ImageChunk(b"preview", 1, 4, False), ImageChunk(b"final", 4, 4, True)]
    assert save_png(chunks, tmp_path / "a.png").read_bytes() == b"final"
    assert save_png(chunks[:1], tmp_path / "b.png").read_bytes() == b"preview"
    with pytest.raises(ValueError, match="no ImageChunk"):
        save_png([], tmp_path / "c.png")
