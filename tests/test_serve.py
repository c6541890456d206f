"""The gRPC service end to end: a real server on a free port, the SDK and raw stubs.

Covers every chunk kind the bundled model produces (and that streams equal the offline
pipeline for the same seed), each bad-input class (INVALID_ARGUMENT naming the field, and
the server keeps serving), auth, TLS, cancellation and deadlines freeing the engine, a
full queue, reflection, health and metrics.
"""

from __future__ import annotations

import io
import math
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image
from serving import DEFAULT_SERVICE, ServerThread, wait_until

from mmntp.api import (
    ImageOutput,
    SamplingParams,
    TextOutput,
    TimeSeriesOutput,
    TimeSeriesPart,
    TokenIdsPart,
    TokensOutput,
)
from mmntp.api.series_io import read_series
from mmntp.client import (
    Client,
    ClientError,
    Final,
    ImageChunk,
    SeriesChunk,
    TextChunk,
    TokensChunk,
)
from mmntp.data.audio import tone, wav_bytes
from mmntp.engine import EngineConfig
from mmntp.generation import Pipeline
from mmntp.serve.server import ServerConfig
from mmntp.v1 import generation_pb2 as pb
from mmntp.v1 import generation_pb2_grpc

SERIES = read_series(DEFAULT_SERVICE.parents[1] / "examples" / "elec_equip.csv")[0]


def fresh_pipe() -> Pipeline:
    """A pipeline of its own: an engine serves one server's event loop."""
    return Pipeline.from_pretrained(DEFAULT_SERVICE)


@pytest.fixture(scope="module")
def pipe():
    return fresh_pipe()


@pytest.fixture(scope="module")
def server(pipe):
    with ServerThread(pipe, ServerConfig(port=0), metrics_port=0) as srv:
        yield srv


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.target) as channel:
        yield generation_pb2_grpc.GenerationServiceStub(channel)


def engine_idle(pipe) -> bool:
    return not pipe.engine.has_unfinished()


def generate(stub, **fields) -> list[pb.GenerateResponse]:
    return list(stub.Generate(pb.GenerateRequest(**fields), timeout=60))


# -- health, reflection, models -----------------------------------------------------


def test_health_serving_after_warm_up_and_unknown_service_not_found(server):
    with grpc.insecure_channel(server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "mmntp.v1.GenerationService"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as err:
            health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_every_service(server):
    with grpc.insecure_channel(server.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (reply,) = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
    names = {s.name for s in reply.list_services_response.service}
    assert names == {
        "mmntp.v1.GenerationService",
        "mmntp.v1.BatchService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


def test_list_models_reports_modalities_and_limits(server, pipe):
    with Client(server.target, timeout=10) as client:
        (info,) = client.list_models()
    assert info.name == "default" and info.parameters == pipe.bundle.model.num_parameters()
    media = {m for m in ("image", "audio") if m in pipe.bundle.tokenizers}
    assert set(info.output_modalities) == {"text", "timeseries", "tokens"} | media
    assert "audio" in media  # the bundled model speaks
    assert info.limits["timeseries_max_horizon"] == pipe.limits.timeseries_max_horizon


# -- every chunk kind, streaming equals offline ------------------------------------------


def test_series_chunks_one_per_step_equal_the_offline_forecast(server, pipe):
    sampling = SamplingParams(temperature=1.0, top_k=50, seed=7)
    with Client(server.target, timeout=60) as client:
        chunks = list(
            client.generate(
                TimeSeriesPart(SERIES),
                TimeSeriesOutput(horizon=6, num_samples=8),
                sampling,
                return_samples=True,
            )
        )
    series = [c for c in chunks if isinstance(c, SeriesChunk)]
    assert [c.step for c in series] == list(range(6))
    assert isinstance(chunks[-1], Final) and chunks[-1].finish_reason == "length"
    assert chunks[-1].output_tokens == 6 * 8
    offline = pipe(TimeSeriesPart(SERIES), TimeSeriesOutput(horizon=6, num_samples=8), sampling)
    np.testing.assert_allclose([c.median for c in series], offline.forecast.median, rtol=1e-6)
    for q, values in offline.forecast.quantiles.items():
        np.testing.assert_allclose([c.quantiles[q] for c in series], values, rtol=1e-6)
    np.testing.assert_allclose(
        np.array([c.samples for c in series]).T, offline.forecast.samples, rtol=1e-6
    )


def test_text_deltas_join_to_the_offline_text(server, pipe):
    sampling = SamplingParams(temperature=0.8, top_k=40, seed=3)
    with Client(server.target, timeout=60) as client:
        chunks = list(client.generate("The ", TextOutput(max_tokens=24), sampling))
    text = "".join(c.text for c in chunks if isinstance(c, TextChunk))
    assert text == pipe("The ", TextOutput(max_tokens=24), sampling).text
    final = chunks[-1]
    assert isinstance(final, Final) and final.prompt_tokens == 5
    assert 0 <= final.queue_seconds <= final.first_chunk_seconds <= final.total_seconds


def test_token_chunks_carry_ids_and_logprobs_of_the_reference(server, pipe):
    prompt = TokenIdsPart([5, 17, 42])
    with Client(server.target, timeout=60) as client:
        chunks = list(client.generate(prompt, TokensOutput(max_tokens=8), SamplingParams(0.0)))
    tokens = [c for c in chunks if isinstance(c, TokensChunk)]
    ids = [i for c in tokens for i in c.ids]
    logprobs = [lp for c in tokens for lp in c.logprobs]
    offline = pipe(prompt, TokensOutput(max_tokens=8), SamplingParams(0.0))
    assert ids == offline.token_ids
    np.testing.assert_allclose(logprobs, offline.logprobs, atol=1e-5)


def test_image_previews_stream_before_the_final_png(server):
    with Client(server.target, timeout=60) as client:
        chunks = list(
            client.generate(
                "a red circle on a blue background", ImageOutput(), SamplingParams(seed=0)
            )
        )
    images = [c for c in chunks if isinstance(c, ImageChunk)]
    assert [c.final for c in images] == [False] * (len(images) - 1) + [True]
    rows = [c.rows_done for c in images]
    assert rows == sorted(set(rows)) and len(rows) > 2 and rows[-1] == images[-1].total_rows
    for chunk in images:
        picture = Image.open(io.BytesIO(chunk.png))
        assert picture.format == "PNG" and picture.size == (32, 32)
    assert isinstance(chunks[-1], Final) and chunks[-1].output_tokens == rows[-1] ** 2


def test_request_id_is_echoed(stub):
    responses = generate(
        stub,
        request_id="my-id-1",
        prompt=[pb.PromptPart(text="a")],
        output=pb.OutputSpec(text=pb.TextSpec(max_tokens=2)),
    )
    assert {r.request_id for r in responses} == {"my-id-1"}
    assert responses[-1].HasField("final")


def test_tokenize_detokenize_round_trip(stub):
    reply = stub.Tokenize(pb.TokenizeRequest(part=pb.PromptPart(text="héllo")), timeout=10)
    text = stub.Detokenize(
        pb.DetokenizeRequest(modality=pb.MODALITY_TEXT, ids=reply.ids), timeout=10
    )
    assert text.text == "héllo"
    series = pb.PromptPart(timeseries=pb.TimeSeriesInput(values=[1.0, 2.0, 3.0, 4.0]))
    reply = stub.Tokenize(pb.TokenizeRequest(part=series), timeout=10)
    assert reply.scale == pytest.approx(2.5)
    back = stub.Detokenize(
        pb.DetokenizeRequest(modality=pb.MODALITY_TIMESERIES, ids=reply.ids, scale=reply.scale),
        timeout=10,
    )
    bin_width = 30 / 4092 * reply.scale  # tokenizers/chronos-4096/CARD.md
    np.testing.assert_allclose(back.timeseries.values, [1, 2, 3, 4], atol=bin_width / 2 + 1e-9)


# -- bad input: INVALID_ARGUMENT naming the field, and the server keeps serving -----------


def _png(width: int = 8, height: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), "red").save(buf, format="PNG")
    return buf.getvalue()


TEXT = pb.PromptPart(text="hi")
FORECAST = pb.OutputSpec(timeseries=pb.TimeSeriesSpec(horizon=4))
TEXT_OUT = pb.OutputSpec(text=pb.TextSpec(max_tokens=4))


def _series(values) -> pb.PromptPart:
    return pb.PromptPart(timeseries=pb.TimeSeriesInput(values=values))


BAD_REQUESTS = {
    "empty prompt": (dict(output=TEXT_OUT), "prompt: empty prompt"),
    "part without modality": (dict(prompt=[pb.PromptPart()], output=TEXT_OUT), "prompt[0]"),
    "no output spec": (dict(prompt=[TEXT]), "output: no output spec"),
    "infinite value": (
        dict(prompt=[_series([1.0, math.inf] + [1.0] * 10)], output=FORECAST),
        r"prompt[0].timeseries.values[1]",
    ),
    "all NaN": (
        dict(prompt=[_series([math.nan] * 12)], output=FORECAST),
        "prompt[0].timeseries.values: every value is NaN",
    ),
    "too short context": (
        dict(prompt=[_series([1.0, 2.0])], output=FORECAST),
        "prompt[0].timeseries",
    ),
    "horizon past the limit": (
        dict(
            prompt=[_series([1.0] * 16)],
            output=pb.OutputSpec(timeseries=pb.TimeSeriesSpec(horizon=100000)),
        ),
        "output.timeseries.horizon",
    ),
    "quantile out of range": (
        dict(
            prompt=[_series([1.0] * 16)],
            output=pb.OutputSpec(timeseries=pb.TimeSeriesSpec(horizon=2, quantiles=[1.5])),
        ),
        "output.timeseries.quantiles[0]",
    ),
    "max_tokens past the limit": (
        dict(prompt=[TEXT], output=pb.OutputSpec(text=pb.TextSpec(max_tokens=10**6))),
        "output.text.max_tokens",
    ),
    "token id outside the vocabulary": (
        dict(
            prompt=[pb.PromptPart(token_ids=pb.TokenIds(ids=[1, 10**7]))],
            output=pb.OutputSpec(tokens=pb.TokensSpec(max_tokens=2)),
        ),
        "prompt[0].token_ids.ids[1]",
    ),
    "corrupt image": (
        dict(prompt=[pb.PromptPart(image=pb.ImageInput(data=b"\x89PNG garbage"))], output=TEXT_OUT),
        "prompt[0].image: not a PNG or JPEG",
    ),
    "truncated image": (
        dict(prompt=[pb.PromptPart(image=pb.ImageInput(data=_png()[:40]))], output=TEXT_OUT),
        "prompt[0].image",
    ),
    "oversized image": (
        dict(
            prompt=[pb.PromptPart(image=pb.ImageInput(data=_png(1100, 1000)))],
            output=TEXT_OUT,
        ),
        "prompt[0].image: 1100x1000 = 1100000 pixels exceeds max_image_pixels",
    ),
    "corrupt audio": (
        dict(prompt=[pb.PromptPart(audio=pb.AudioInput(wav=b"RIFF...."))], output=TEXT_OUT),
        "prompt[0].audio.wav: not a WAV file",
    ),
    "odd PCM bytes": (
        dict(
            prompt=[
                pb.PromptPart(audio=pb.AudioInput(pcm=pb.PcmAudio(data=b"\x00", sample_rate=16000)))
            ],
            output=TEXT_OUT,
        ),
        "prompt[0].audio.pcm.data",
    ),
    "unsupported WAV sample rate": (
        dict(
            prompt=[
                pb.PromptPart(
                    audio=pb.AudioInput(wav=wav_bytes(tone("sine", 440, 0.1, 11025), 11025))
                )
            ],
            output=TEXT_OUT,
        ),
        "prompt[0].audio.wav: sample rate 11025 Hz is not supported",
    ),
    "unsupported PCM sample rate": (
        dict(
            prompt=[
                pb.PromptPart(audio=pb.AudioInput(pcm=pb.PcmAudio(data=b"\x00\x00", sample_rate=7)))
            ],
            output=TEXT_OUT,
        ),
        "prompt[0].audio.pcm.sample_rate: 7 Hz is not supported",
    ),
    "over-long WAV": (
        dict(
            prompt=[
                pb.PromptPart(audio=pb.AudioInput(wav=wav_bytes(np.zeros(16000 * 61, np.float32))))
            ],
            output=TEXT_OUT,
        ),
        "prompt[0].audio: 61.00 s exceeds max_audio_seconds",
    ),
    "NaN motion": (
        dict(
            prompt=[pb.PromptPart(motion=pb.MotionInput(num_features=2, values=[1.0, math.nan]))],
            output=TEXT_OUT,
        ),
        "prompt[0].motion.values[1]",
    ),
    "motion output this model cannot make": (
        dict(prompt=[TEXT], output=pb.OutputSpec(motion=pb.MotionSpec(frames=8))),
        "output.motion: this model cannot generate motion",
    ),
    "audio duration out of range": (
        dict(prompt=[TEXT], output=pb.OutputSpec(audio=pb.AudioSpec(seconds=-1.0))),
        "output.audio.seconds must lie in",
    ),
    "negative temperature": (
        dict(prompt=[TEXT], output=TEXT_OUT, sampling=pb.SamplingParams(temperature=-1.0)),
        "sampling.temperature",
    ),
    "unknown model": (dict(model="other", prompt=[TEXT], output=TEXT_OUT), "model: unknown model"),
    "request id with spaces": (
        dict(request_id="a b", prompt=[TEXT], output=TEXT_OUT),
        "request_id",
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_is_invalid_argument_naming_the_field(case, stub, pipe):
    fields, field_path = BAD_REQUESTS[case]
    with pytest.raises(grpc.RpcError) as err:
        generate(stub, **fields)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert field_path in err.value.details()
    assert engine_idle(pipe)
    # The server keeps serving after every bad request.
    responses = generate(stub, prompt=[TEXT], output=pb.OutputSpec(text=pb.TextSpec(max_tokens=1)))
    assert responses[-1].final.finish_reason in (pb.FINISH_REASON_LENGTH, pb.FINISH_REASON_STOP)


def test_unknown_detokenize_modality_is_invalid_argument(stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.Detokenize(pb.DetokenizeRequest(modality=pb.MODALITY_IMAGE, ids=[1]), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "modality" in err.value.details()


def test_a_real_png_prompt_is_refused_by_modality_not_as_corrupt(stub, pipe):
    with pytest.raises(grpc.RpcError) as err:
        generate(stub, prompt=[pb.PromptPart(image=pb.ImageInput(data=_png()))], output=TEXT_OUT)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    if "image" in pipe.bundle.tokenizers:
        assert "image prompts are not supported by this server yet" in err.value.details()
    else:
        assert "no image tokenizer" in err.value.details()


def test_oversized_message_is_refused_by_grpc():
    config = ServerConfig(port=0, warmup=False, max_message_bytes=1024)
    with ServerThread(fresh_pipe(), config) as srv, grpc.insecure_channel(srv.target) as channel:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        big = pb.PromptPart(token_ids=pb.TokenIds(ids=[1] * 2000))
        with pytest.raises(grpc.RpcError) as err:
            generate(stub, prompt=[big], output=pb.OutputSpec(tokens=pb.TokensSpec()))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


# -- cancellation, deadlines, overload ---------------------------------------------------


def in_flight(pipe) -> list:
    """The engine's waiting and running Request objects (read from the test thread)."""
    return list(pipe.engine.scheduler._requests.values())


def test_cancelled_stream_aborts_the_engine_request_and_frees_its_cache(server, pipe):
    wait_until(lambda: engine_idle(pipe), what="an idle engine")
    usage = pipe.engine.kv.usage
    with Client(server.target, timeout=60) as client:
        # Raw tokens never stop early (no <eos>), so the request is surely still running.
        stream = client.generate(TokenIdsPart([1, 2]), TokensOutput(max_tokens=500))
        assert isinstance(next(stream), TokensChunk)
        (request,) = in_flight(pipe)
        stream.close()  # leaving the loop cancels the call
    wait_until(lambda: engine_idle(pipe), what="the engine to drop the cancelled request")
    assert request.status.value == "abort" and len(request.output_ids) < 500
    assert pipe.engine.kv.usage == usage


def test_deadline_ends_the_call_and_frees_the_engine(server, pipe):
    wait_until(lambda: engine_idle(pipe), what="an idle engine")
    usage = pipe.engine.kv.usage
    seen: list = []
    ended = None
    with Client(server.target, retries=0) as client:
        # 500 tokens take the engine about 0.5 s on a quiet machine: 0.2 s always expires.
        stream = client.generate(TokenIdsPart([1, 3]), TokensOutput(max_tokens=500), timeout=0.2)
        try:
            for chunk in stream:
                seen = seen or in_flight(pipe)
                if isinstance(chunk, Final):
                    ended = chunk.finish_reason
        except ClientError as err:
            ended = err.code
    # The engine holds the same deadline and may end the request itself a moment before
    # gRPC does: then the stream's last message says so.
    assert ended in (grpc.StatusCode.DEADLINE_EXCEEDED, "deadline")
    wait_until(lambda: engine_idle(pipe), what="the engine to drop the expired request")
    (request,) = seen
    assert request.status.value in ("deadline", "abort") and len(request.output_ids) < 500
    assert pipe.engine.kv.usage == usage


def test_full_queue_is_resource_exhausted_and_accepted_requests_finish():
    config = EngineConfig(max_num_seqs=1, max_waiting_requests=1)
    small = fresh_pipe()
    small.engine_config = config
    long = TokensOutput(max_tokens=200)
    with ServerThread(small) as srv, Client(srv.target, timeout=60, retries=0) as client:
        running = client.generate(TokenIdsPart([1, 2]), long, SamplingParams(0.0))
        next(running)  # the first request holds the only running slot
        waiting = client.generate(
            TokenIdsPart([1, 3]), TokensOutput(max_tokens=3), SamplingParams(0.0)
        )
        waiting_chunks: list = []
        import threading

        reader = threading.Thread(target=lambda: waiting_chunks.extend(waiting))
        reader.start()
        wait_until(lambda: small.engine.scheduler.num_waiting == 1, what="a waiting request")
        with pytest.raises(ClientError) as err:
            list(client.generate(TokenIdsPart([1, 4]), long, SamplingParams(0.0)))
        assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "retry" in err.value.details
        rest = list(running)  # nothing already accepted is lost
        reader.join(60)
        assert sum(len(c.ids) for c in rest if isinstance(c, TokensChunk)) == 199
        assert isinstance(waiting_chunks[-1], Final) and waiting_chunks[-1].output_tokens == 3


# -- auth and TLS --------------------------------------------------------------------------


def test_api_keys_guard_generation_but_not_health():
    with ServerThread(fresh_pipe(), api_keys=["k-one", "k-two"]) as srv:
        for key, ok in ((None, False), ("wrong", False), ("k-two", True)):
            with Client(srv.target, api_key=key, timeout=10, retries=0) as client:
                assert client.health() == "SERVING"
                if ok:
                    assert client.complete("a", max_tokens=2) is not None
                    continue
                with pytest.raises(ClientError) as err:
                    client.complete("a", max_tokens=2)
                assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
                assert ("missing" if key is None else "invalid") in err.value.details


def _self_signed(tmp_path):
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_server_talks_to_a_client_trusting_its_certificate(tmp_path):
    from mmntp.serve.server import TlsFiles

    cert, key = _self_signed(tmp_path)
    with ServerThread(fresh_pipe(), tls=TlsFiles(cert, key)) as srv:
        with Client(srv.target, tls_ca=cert, timeout=10) as client:
            assert client.health() == "SERVING"
            assert isinstance(client.complete("a", max_tokens=2), str)
        with Client(srv.target, timeout=3, retries=0) as plain:  # plaintext to a TLS port
            with pytest.raises(ClientError) as err:
                plain.health()
            assert err.value.code == grpc.StatusCode.UNAVAILABLE


# -- metrics ---------------------------------------------------------------------------------


def test_metrics_endpoint_has_latency_histograms_and_status_counts(server):
    with Client(server.target, timeout=30) as client:
        client.complete("x", max_tokens=2)
        with pytest.raises(ClientError):
            client.complete("x", max_tokens=10**6)
    port = server.server.metrics._http.server_port
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for name in (
        'mmntp_time_to_first_chunk_seconds_bucket{le="0.001",modality="text"}',
        "mmntp_inter_chunk_latency_seconds_bucket",
        "mmntp_queue_time_seconds_bucket",
        'mmntp_e2e_latency_seconds_count{modality="text"}',
        'mmntp_requests_total{modality="text",status="OK"}',
        'mmntp_requests_total{modality="text",status="INVALID_ARGUMENT"}',
        "mmntp_requests_running",
        "mmntp_requests_waiting",
        "mmntp_kv_cache_usage",
    ):
        assert name in body, name


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_server_config_rejects_bad_torch_threads(bad):
    with pytest.raises(ValueError, match="server.torch_threads"):
        ServerConfig(torch_threads=bad)
