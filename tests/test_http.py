"""The HTTP API (serve/http_api.py) end to end, beside gRPC on one real server.

SSE events equal the gRPC stream's messages for the same seeded request (text, forecast,
image with previews, audio) and the non-stream answer equals the stream; keys guard /v1/*
with the gRPC server's metric; errors map to HTTP statuses with gRPC's messages (the same
validation step); a disconnect frees the engine; the probes tell the health service's
truth; the OpenAPI document covers every request field and accepts samples of every
modality.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import socket
import ssl
import threading
import time
from concurrent.futures import Future

import grpc
import httpx
import jsonschema
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serving import DEFAULT_SERVICE, ServerThread, wait_until

from mmntp.api.series_io import read_series
from mmntp.cli import build_parser
from mmntp.engine import EngineConfig
from mmntp.generation import Pipeline
from mmntp.serve.openapi import openapi_document
from mmntp.serve.quotas import AdmissionConfig, KeyPolicy, key_id
from mmntp.serve.server import ServeError, ServerConfig, server_config_for
from mmntp.v1 import generation_pb2 as pb
from mmntp.v1 import generation_pb2_grpc

SERIES = read_series(DEFAULT_SERVICE.parents[1] / "examples" / "elec_equip.csv")[0]
KEY = "k-http-test"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# One JSON body per output modality (the proto's JSON mapping, camelCase and proto names).
SAMPLES = {
    "text": {
        "prompt": [{"text": "the weather today"}],
        "output": {"text": {"maxTokens": 6}},
        "sampling": {"seed": 3, "temperature": 0.8},
    },
    "timeseries": {
        "prompt": [{"timeseries": {"values": [float(v) for v in SERIES[-64:]]}}],
        "output": {"timeseries": {"horizon": 4, "num_samples": 8, "quantiles": [0.1, 0.5, 0.9]}},
        "sampling": {"seed": "7"},
    },
    "image": {
        "prompt": [{"text": "a red circle on a blue background"}],
        "output": {"image": {"previewEveryRows": 2}},
        "sampling": {"seed": 0},
    },
    "audio": {
        "prompt": [{"text": "a sine tone at 440 Hz"}],
        "output": {"audio": {"seconds": 0.3}},
        "sampling": {"seed": 5},
    },
    "tokens": {
        "prompt": [{"tokenIds": {"ids": [1, 2]}}],
        "output": {"tokens": {"maxTokens": 4, "logprobs": True}},
        "sampling": {"seed": 11},
    },
}


def fresh_pipe(config: EngineConfig | None = None) -> Pipeline:
    pipe = Pipeline.from_pretrained(DEFAULT_SERVICE)
    if config is not None:
        pipe.engine_config = config
    return pipe


@pytest.fixture(scope="module")
def pipe():
    return fresh_pipe()


@pytest.fixture(scope="module")
def server(pipe):
    with ServerThread(pipe, ServerConfig(port=0, http_port=0, warmup=False)) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.http_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.target) as channel:
        yield generation_pb2_grpc.GenerationServiceStub(channel)


def sse_events(http: httpx.Client, body: dict, **kwargs) -> list[tuple[str, dict]]:
    """(event name, data) of every SSE event of a streamed /v1/generate."""
    events, name = [], "message"
    with http.stream("POST", "/v1/generate", json=body | {"stream": True}, **kwargs) as reply:
        assert reply.status_code == 200, reply.read()
        assert reply.headers["content-type"].startswith("text/event-stream")
        for line in reply.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
                name = "message"
    return events


def comparable(responses: list[pb.GenerateResponse]) -> list[pb.GenerateResponse]:
    """The responses without what differs between two runs (timings)."""
    out = []
    for response in responses:
        copy = pb.GenerateResponse()
        copy.CopyFrom(response)
        if copy.HasField("final"):
            copy.final.ClearField("timings")
        out.append(copy)
    return out


def as_messages(dicts: list[dict]) -> list[pb.GenerateResponse]:
    return [json_format.ParseDict(d, pb.GenerateResponse()) for d in dicts]


def engine_idle(pipe) -> bool:
    return not pipe.engine.has_unfinished()


def metric(srv: ServerThread, name: str, **labels: str) -> float:
    return srv.server.metrics.registry.get_sample_value(name, labels) or 0.0


# -- the same stream as gRPC -------------------------------------------------------------


@pytest.mark.parametrize("modality", ["text", "timeseries", "image", "audio", "tokens"])
def test_sse_events_equal_the_grpc_stream(modality, http, stub):
    body = SAMPLES[modality] | {"requestId": f"same-{modality}"}
    expected = list(stub.Generate(json_format.ParseDict(body, pb.GenerateRequest()), timeout=60))
    events = sse_events(http, body)
    assert {name for name, _ in events} == {"message"}
    got = as_messages([data for _, data in events])
    assert comparable(got) == comparable(expected)
    assert got[-1].HasField("final") and len(got) > 2
    if modality == "image":  # previews, then the final picture
        images = [r.image for r in got if r.HasField("image")]
        assert [i.final for i in images] == [False] * (len(images) - 1) + [True]
        assert images[-1].png.startswith(b"\x89PNG")


def test_non_stream_answer_holds_the_streams_messages(http):
    body = SAMPLES["timeseries"] | {"requestId": "one-shot"}
    reply = http.post("/v1/generate", json=body)
    assert reply.status_code == 200
    whole = as_messages(reply.json()["responses"])
    streamed = as_messages([data for _, data in sse_events(http, body)])
    assert comparable(whole) == comparable(streamed)
    assert [r.series.step for r in whole if r.HasField("series")] == [0, 1, 2, 3]


def test_models_tokenize_and_detokenize(http, stub):
    models = http.get("/v1/models").json()
    expected = stub.ListModels(pb.ListModelsRequest(), timeout=10)
    assert json_format.ParseDict(models, pb.ListModelsResponse()) == expected
    ids = http.post("/v1/tokenize", json={"part": {"text": "héllo"}}).json()["ids"]
    text = http.post("/v1/detokenize", json={"modality": "MODALITY_TEXT", "ids": ids}).json()
    assert text == {"text": "héllo"}
    refused = http.post("/v1/detokenize", json={"ids": ids})
    assert refused.status_code == 400 and refused.json()["error"]["field"] == "modality"


# -- errors ------------------------------------------------------------------------------


def test_a_bug_in_tokenize_is_500_json_and_logged(http, pipe, monkeypatch, caplog):
    def boom(part):
        raise RuntimeError("a bug")

    monkeypatch.setattr(pipe, "tokenize", boom)
    reply = http.post("/v1/tokenize", json={"part": {"text": "a"}})
    assert reply.status_code == 500
    assert reply.json()["error"]["message"] == "internal error; see the server log"
    assert any(r.exc_info and "a bug" in str(r.exc_info[1]) for r in caplog.records)


def test_a_client_leaving_mid_body_leaves_no_traceback(server, pipe, caplog):
    host, port = server.http_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
    time.sleep(0.2)  # the server notices the close (nothing to poll for: it answers no one)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert engine_idle(pipe)


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": [{"text": "a"}], "output": {"timeseries": {"horizon": 0}}},
        {"prompt": [{"text": "a"}], "output": {"text": {}}, "sampling": {"temperature": -1}},
        {"prompt": [], "output": {"text": {}}},
        {"prompt": [{"text": "a"}], "output": {"text": {}}, "model": "other"},
        {"prompt": [{"text": "a"}]},
    ],
)
def test_invalid_values_are_400_with_grpcs_message_and_field(body, http, stub, pipe):
    with pytest.raises(grpc.RpcError) as err:
        list(stub.Generate(json_format.ParseDict(body, pb.GenerateRequest()), timeout=30))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for stream in (False, True):
        reply = http.post("/v1/generate", json=body | {"stream": stream})
        assert reply.status_code == 400
        error = reply.json()["error"]
        assert (error["code"], error["status"]) == ("INVALID_ARGUMENT", 400)
        assert error["message"] == err.value.details()
        assert error["message"].startswith(error["field"])
    assert engine_idle(pipe)


@pytest.mark.parametrize(
    "content, field, words",
    [
        (b'{"prompt": [}', None, "not JSON: Expecting value at line 1 column 13"),
        (b"[1, 2]", None, "must be a JSON object"),
        (b'{"prompt": [{"text": "a"}], "outptu": {}}', "outptu", 'no field named "outptu"'),
        (b'{"output": {"timeseries": {"horizon": "x"}}}', "output.timeseries.horizon", "x"),
        (b'{"output": {"timeseries": {"numSamples": 1.5}}}', "output.timeseries.num_samples", ""),
        (b'{"prompt": [{"text": "a"}, {"text": "b", "image": {}}]}', "prompt[1]", "oneof"),
        (
            b'{"prompt": [{"timeseries": {"values": [1, "x"]}}]}',
            "prompt[0].timeseries.values[1]",
            "",
        ),
        (b'{"stream": "yes"}', "stream", "true or false"),
        (b'{"timeout": -1}', "timeout", "positive number"),
    ],
)
def test_malformed_bodies_are_400_naming_the_field(content, field, words, http):
    reply = http.post("/v1/generate", content=content)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["code"] == "INVALID_ARGUMENT" and error["field"] == field
    assert words in error["message"]


def test_deadline_is_504_and_frees_the_engine(http, pipe, server):
    wait_until(lambda: engine_idle(pipe), what="an idle engine")
    usage = pipe.engine.kv.usage
    long = {"prompt": [{"tokenIds": {"ids": [1, 3]}}], "output": {"tokens": {"maxTokens": 500}}}
    before = metric(server, "mmntp_requests_total", modality="tokens", status="DEADLINE_EXCEEDED")
    # 500 tokens take the engine about 0.5 s on a quiet machine: 0.1 s always expires.
    for kwargs in ({"json": long | {"timeout": 0.1}}, {"json": long, "headers": _timeout(0.1)}):
        reply = http.post("/v1/generate", **kwargs)
        assert reply.status_code == 504
        assert reply.json()["error"]["code"] == "DEADLINE_EXCEEDED"
        wait_until(lambda: engine_idle(pipe), what="the engine to drop the expired request")
    assert pipe.engine.kv.usage == usage
    after = metric(server, "mmntp_requests_total", modality="tokens", status="DEADLINE_EXCEEDED")
    assert 1 <= after - before <= 2  # or the engine ended its rows at the deadline first
    # Streamed, the deadline ends the stream: an error event or the engine's own final.
    events = sse_events(http, long | {"timeout": 0.1})
    name, last = events[-1]
    assert (name == "error" and last["error"]["status"] == 504) or (
        last["final"]["finishReason"] == "FINISH_REASON_DEADLINE"
    )
    wait_until(lambda: engine_idle(pipe), what="the engine to drop the expired stream")


def _timeout(seconds: float) -> dict[str, str]:
    return {"X-Request-Timeout": str(seconds)}


@pytest.mark.parametrize("stream", [True, False])
def test_disconnect_aborts_the_engine_request_and_frees_its_cache(stream, pipe, server):
    wait_until(lambda: engine_idle(pipe), what="an idle engine")
    usage = pipe.engine.kv.usage
    before = metric(server, "mmntp_requests_total", modality="tokens", status="CANCELLED")
    # Raw tokens never stop early (no <eos>), so the request is surely still running.
    body = {"prompt": [{"tokenIds": {"ids": [1, 2]}}], "output": {"tokens": {"maxTokens": 500}}}
    # Steps of 10 ms at least: the 500 tokens cannot all be made before the client leaves.
    with engine_held(pipe, each_step=0.01):
        with raw_post(server, body | {"stream": stream}) as sock:
            wait_until(lambda: pipe.engine.scheduler._requests, what="the engine request")
            (request,) = list(pipe.engine.scheduler._requests.values())
            wait_until(lambda: len(request.output_ids) > 2, what="a few tokens")
            if stream:
                assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        wait_until(lambda: engine_idle(pipe), what="the engine to drop the abandoned request")
    assert request.status.value == "abort" and len(request.output_ids) < 500
    assert pipe.engine.kv.usage == usage
    wait_until(
        lambda: (
            metric(server, "mmntp_requests_total", modality="tokens", status="CANCELLED")
            == before + 1
        ),
        what="the call recorded CANCELLED",
    )


def raw_post(server: ServerThread, body: dict) -> socket.socket:
    """A connection that has sent POST /v1/generate; closing it is the disconnect."""
    host, port = server.http_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    data = json.dumps(body).encode()
    head = f"POST /v1/generate HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(data)}\r\n"
    sock.sendall(head.encode() + b"Content-Type: application/json\r\n\r\n" + data)
    return sock


def test_readiness_follows_the_health_service(http, server):
    health = health_pb2.HealthCheckRequest
    with grpc.insecure_channel(server.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for ready in (False, True):
            server.call(server.server._set_ready(ready))
            expected = SERVING if ready else NOT_SERVING
            assert stub.Check(health(service=""), timeout=5).status == expected
            assert http.get("/readyz").status_code == (200 if ready else 503)
            assert http.get("/healthz").json() == {"status": "SERVING"}


def test_playground_and_openapi_are_served(http):
    page = http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert http.get("/playground/index.html").text == page.text
    missing = http.get("/playground/absent.js")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"
    wrong = http.get("/v1/generate")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert wrong.json()["error"]["code"] == "UNIMPLEMENTED"
    assert http.get("/openapi.json").json() == json.loads(json.dumps(openapi_document()))


# -- keys, overload, size, a dead engine -------------------------------------------------


@pytest.fixture(scope="module")
def guarded():
    """A server with a key whose policy allows one call at a time, and a 4 KiB body limit."""
    admission = AdmissionConfig(keys={key_id(KEY): KeyPolicy(max_concurrent=1)})
    config = ServerConfig(port=0, http_port=0, warmup=False, max_message_bytes=4096)
    with ServerThread(fresh_pipe(), config, api_keys=[KEY], admission=admission) as srv:
        yield srv


def test_keys_guard_the_api_but_not_the_probes(guarded):
    body = SAMPLES["tokens"]
    missing = lambda: metric(guarded, "mmntp_auth_failures_total", reason="missing")  # noqa: E731
    invalid = lambda: metric(guarded, "mmntp_auth_failures_total", reason="invalid")  # noqa: E731
    counts = missing(), invalid()
    with httpx.Client(base_url=guarded.http_url, timeout=60) as http:
        for headers, why in (({}, "missing"), ({"Authorization": "Bearer nope"}, "invalid")):
            for path in ("/v1/generate", "/v1/models"):
                reply = http.request(
                    "POST" if "gen" in path else "GET", path, json=body, headers=headers
                )
                assert reply.status_code == 401 and reply.headers["WWW-Authenticate"] == "Bearer"
                assert reply.json()["error"]["code"] == "UNAUTHENTICATED"
                assert reply.json()["error"]["message"].startswith(why)
        assert (missing(), invalid()) == (counts[0] + 2, counts[1] + 2)
        ok = http.post("/v1/generate", json=body, headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200 and "final" in ok.json()["responses"][-1]
        for open_path in ("/healthz", "/readyz", "/openapi.json", "/"):
            assert http.get(open_path).status_code == 200


def test_over_the_keys_quota_is_429_with_retry_after(guarded):
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=guarded.http_url, timeout=60, headers=headers) as http:
        with engine_held(guarded.pipe):
            first = in_background(http, SAMPLES["tokens"])  # the key's one call in flight
            wait_until(guarded.pipe.engine.has_unfinished, what="the first call admitted")
            reply = http.post("/v1/generate", json=SAMPLES["tokens"])
        assert first.result(60).status_code == 200
    assert reply.status_code == 429
    assert int(reply.headers["Retry-After"]) >= 1
    error = reply.json()["error"]
    assert error["code"] == "RESOURCE_EXHAUSTED" and "retry in" in error["message"]
    assert metric(guarded, "mmntp_admission_rejections_total", reason="concurrency") >= 1


def test_a_keys_quota_counts_its_calls_over_both_transports(guarded):
    headers = {"Authorization": f"Bearer {KEY}"}
    request = json_format.ParseDict(SAMPLES["tokens"], pb.GenerateRequest())
    with (
        httpx.Client(base_url=guarded.http_url, timeout=60, headers=headers) as http,
        grpc.insecure_channel(guarded.target) as channel,
    ):
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        with engine_held(guarded.pipe):
            first = in_background(http, SAMPLES["tokens"])  # the key's one call, over HTTP
            wait_until(guarded.pipe.engine.has_unfinished, what="the HTTP call admitted")
            with pytest.raises(grpc.RpcError) as err:
                list(stub.Generate(request, metadata=[("authorization", f"Bearer {KEY}")]))
        assert first.result(60).status_code == 200
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_concurrent=1" in err.value.details()


def test_a_body_over_max_message_bytes_is_413(guarded):
    body = {"prompt": [{"text": "a" * 5000}], "output": {"text": {}}}
    headers = {"Authorization": f"Bearer {KEY}"}
    reply = httpx.post(f"{guarded.http_url}/v1/generate", json=body, headers=headers, timeout=30)
    assert reply.status_code == 413
    assert reply.json()["error"]["message"] == "body over max_message_bytes (4096 bytes)"


def test_a_full_engine_queue_is_429(tiny_model_dir):
    small = Pipeline.from_pretrained(tiny_model_dir)
    small.engine_config = EngineConfig(max_num_seqs=1, max_waiting_requests=1)
    body = SAMPLES["tokens"]
    config = ServerConfig(port=0, http_port=0, warmup=False)
    with (
        ServerThread(small, config) as srv,
        httpx.Client(base_url=srv.http_url, timeout=60) as http,
    ):
        with engine_held(small):
            running = in_background(http, body)  # holds the only running slot
            wait_until(lambda: small.engine.scheduler.num_running == 1, what="a running request")
            # The engine takes new requests between steps: both wait for the held one.
            more = [in_background(http, body), in_background(http, body)]
            wait_until(lambda: len(small.async_engine._adds) == 2, what="two more requests")
        assert running.result(60).status_code == 200
        # The first of the two to reach the engine waits, then runs; the other is refused.
        ok, reply = sorted((f.result(60) for f in more), key=lambda r: r.status_code)
        assert ok.status_code == 200
    assert reply.status_code == 429 and reply.headers["Retry-After"] == "1"
    assert reply.json()["error"]["code"] == "RESOURCE_EXHAUSTED"


@contextlib.contextmanager
def engine_held(pipe, each_step: float | None = None):
    """Engine steps wait (in the engine's thread) until the block ends, or `each_step`
    seconds each."""
    gate, execute = threading.Event(), pipe.engine.runner.execute

    def held(scheduled):
        gate.wait(60 if each_step is None else each_step)
        return execute(scheduled)

    pipe.engine.runner.execute = held
    try:
        yield
    finally:
        gate.set()
        pipe.engine.runner.execute = execute


def in_background(http: httpx.Client, body: dict) -> Future:
    """POST /v1/generate from another thread."""
    future: Future = Future()

    def post() -> None:
        future.set_result(http.post("/v1/generate", json=body))

    threading.Thread(target=post, daemon=True).start()
    return future


def test_a_dead_engine_is_503_and_both_probes_fail(tiny_model_dir):
    pipe = Pipeline.from_pretrained(tiny_model_dir)
    config = ServerConfig(port=0, http_port=0, warmup=False)
    with ServerThread(pipe, config) as srv, httpx.Client(base_url=srv.http_url, timeout=30) as http:
        assert http.get("/healthz").status_code == http.get("/readyz").status_code == 200

        def broken(scheduled):
            raise RuntimeError("injected fault")

        pipe.engine.runner.execute = broken
        for stream in (False, True):
            reply = http.post("/v1/generate", json=SAMPLES["tokens"] | {"stream": stream})
            assert reply.status_code == 503
            assert reply.json()["error"] == {
                "code": "UNAVAILABLE",
                "status": 503,
                "message": "engine failed: RuntimeError: injected fault",
                "field": None,
            }
        wait_until(lambda: http.get("/readyz").status_code == 503, what="readiness down")
        assert http.get("/healthz").status_code == 503


def test_a_busy_http_port_fails_naming_it(tiny_model_dir, server):
    port = int(server.http_url.rsplit(":", 1)[1])
    with pytest.raises(ServeError, match=f"cannot bind HTTP 127.0.0.1:{port}: port {port} is"):
        ServerThread(Pipeline.from_pretrained(tiny_model_dir), ServerConfig(port=0, http_port=port))


def test_http_port_comes_from_service_json_or_the_command_line(tmp_path):
    (tmp_path / "service.json").write_text(json.dumps({"server": {"http_port": 8081}}))
    assert server_config_for(tmp_path).http_port == 8081
    assert server_config_for(tmp_path, http_port=0).http_port == 0
    assert server_config_for(DEFAULT_SERVICE).http_port is None  # no HTTP unless asked
    args = build_parser().parse_args(["serve", "--http-port", "8082"])
    assert args.http_port == 8082


def test_https_with_the_grpc_servers_certificate(tiny_model_dir, tmp_path):
    from test_serve import _self_signed  # the TLS tests' certificate maker

    from mmntp.serve.server import TlsFiles

    cert, key = _self_signed(tmp_path)
    config = ServerConfig(port=0, http_port=0, warmup=False)
    pipe = Pipeline.from_pretrained(tiny_model_dir)
    with ServerThread(pipe, config, tls=TlsFiles(cert, key)) as srv:
        url = srv.http_url.replace("http://", "https://")
        trust = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=url, verify=trust, timeout=30) as http:
            assert http.get("/readyz").json() == {"status": "SERVING"}
            reply = http.post("/v1/generate", json=SAMPLES["tokens"])
            assert reply.status_code == 200 and "final" in reply.json()["responses"][-1]


@pytest.mark.parametrize("bad", [-1, 70000, True, "80"])
def test_server_config_rejects_bad_http_ports(bad):
    with pytest.raises(ValueError, match="server.http_port"):
        ServerConfig(http_port=bad)


# -- the OpenAPI document --------------------------------------------------------------


def schema_of(document: dict, name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}", "components": document["components"]}


def test_openapi_document_is_valid_openapi_3_1():
    from openapi_spec_validator import validate

    validate(copy.deepcopy(openapi_document()))  # raises, naming the problem


def test_openapi_names_every_field_of_the_request_recursively():
    schemas = openapi_document()["components"]["schemas"]
    seen: set[str] = set()

    def walk(descriptor) -> None:
        if descriptor.full_name in seen:
            return
        seen.add(descriptor.full_name)
        properties = schemas[descriptor.name]["properties"]
        for field in descriptor.fields:
            assert field.json_name in properties, f"{descriptor.name}.{field.json_name}"
            assert field.name in properties  # the proto name, which ParseDict accepts too
            if field.message_type is not None:
                walk(field.message_type)

    walk(pb.GenerateRequest.DESCRIPTOR)
    assert {"mmntp.v1.OutputSpec", "mmntp.v1.PcmAudio", "mmntp.v1.SamplingParams"} <= seen
    assert schemas["PromptPart"]["x-oneof"]["part"][0] == "text"
    assert "temperature" not in str(schemas["SamplingParams"].get("x-oneof"))  # optional


def test_openapi_accepts_the_samples_and_refuses_what_parsedict_refuses():
    document = openapi_document()
    jsonschema.Draft202012Validator.check_schema(schema_of(document, "HttpGenerateRequest"))
    request = jsonschema.Draft202012Validator(schema_of(document, "HttpGenerateRequest"))
    for name, body in SAMPLES.items():
        assert not list(request.iter_errors(body | {"stream": True})), name
    extra = {
        "prompt": [
            {"image": {"data": "iVBORw0KGgo="}},
            {"audio": {"pcm": {"data": "AAABAA==", "sample_rate": 16000}}},
            {"motion": {"values": [0.5, 1.0], "numFeatures": 2}},
        ],
        "output": {"motion": {"frames": 4}},
    }
    assert not list(request.iter_errors(extra))
    for body in (
        {"outptu": {}},
        {"output": {"timeseries": {"horizon": "x"}}},
        {"sampling": {"seed": -1}},
        {"prompt": "a"},
    ):
        assert list(request.iter_errors(body)), body
        with pytest.raises(json_format.ParseError):
            json_format.ParseDict(body, pb.GenerateRequest())
