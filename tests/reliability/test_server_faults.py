"""The server process under faults (issue 29): a dying engine, a broken tokenizer card, a
busy port, malformed protobuf bytes and SIGTERM during warm-up.

Each answers with a clear status or one clear line: health tells the truth (readiness and
liveness), in-flight callers get UNAVAILABLE rather than INTERNAL, a second server never
shares a port, undecodable bytes are INVALID_ARGUMENT without an ERROR line each, and a
signal during start-up exits 0.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serving import DEFAULT_SERVICE, ROOT, ServerThread, wait_until

from mmntp.cli import main
from mmntp.generation import Pipeline
from mmntp.serve.server import ServeError, ServerConfig
from mmntp.v1 import generation_pb2 as pb
from mmntp.v1 import generation_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
READINESS = ("", "readiness", "mmntp.v1.GenerationService", "mmntp.v1.BatchService")


def health_of(target: str, name: str) -> int:
    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=name), timeout=5
        )
    return reply.status


def metric(srv: ServerThread, name: str, **labels: str) -> float | None:
    return srv.server.metrics.registry.get_sample_value(name, labels)


def ids_request(n: int = 4) -> pb.GenerateRequest:
    return pb.GenerateRequest(
        prompt=[pb.PromptPart(token_ids=pb.TokenIds(ids=[1, 2]))],
        output=pb.OutputSpec(tokens=pb.TokensSpec(max_tokens=n)),
    )


def error_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


# -- the engine dies ---------------------------------------------------------------------


def test_engine_step_fault_fails_calls_unavailable_and_flips_health(tiny_model_dir, caplog):
    pipe = Pipeline.from_pretrained(tiny_model_dir)
    with ServerThread(pipe) as srv, grpc.insecure_channel(srv.target) as channel:
        for name in (*READINESS, "liveness"):
            assert health_of(srv.target, name) == SERVING
        assert metric(srv, "mmntp_ready") == 1
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        assert list(stub.Generate(ids_request(), timeout=30))[-1].HasField("final")

        def broken(scheduled):
            raise RuntimeError("injected fault")

        pipe.engine.runner.execute = broken
        for _ in range(2):  # the one that meets the fault, and one after the engine died
            with pytest.raises(grpc.RpcError) as err:
                list(stub.Generate(ids_request(), timeout=30))
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert err.value.details() == "engine failed: RuntimeError: injected fault"
        wait_until(lambda: health_of(srv.target, "") == NOT_SERVING, what="readiness down")
        for name in (*READINESS, "liveness"):  # a dead engine is not coming back here
            assert health_of(srv.target, name) == NOT_SERVING
        assert metric(srv, "mmntp_ready") == 0
        assert metric(srv, "mmntp_engine_failures_total", reason="engine") == 1
        assert srv.server.failed.is_set()
        # the servicer's own records say UNAVAILABLE too, not INTERNAL
        assert metric(srv, "mmntp_requests_total", modality="tokens", status="UNAVAILABLE") == 2
    engine_lines = [m for m in error_lines(caplog) if m.startswith("engine failed")]
    assert len(engine_lines) == 1  # the reason once, not per request
    assert not [m for m in error_lines(caplog) if m.startswith("request ")]  # no traceback each


def test_engine_failure_exits_the_serve_process_nonzero(tiny_model_dir, tmp_path):
    # Every engine step raises: the first request meets the fault (no warm-up ran one).
    boot = tmp_path / "sitecustomize.py"
    boot.write_text(
        "import mmntp.engine.runner as r\n"
        "def execute(self, scheduled):\n"
        "    raise RuntimeError('injected fault')\n"
        "r.ModelRunner.execute = execute\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "mmntp.cli", "serve", str(tiny_model_dir), "--port", "0"]
    proc = subprocess.Popen(
        [*cmd, "--no-warmup"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    found: list[str] = []
    listening = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            hit = re.search(r"on grpc://(127\.0\.0\.1:\d+)", line)
            if hit:
                found.append(hit[1])
                listening.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert listening.wait(120), "".join(lines)
        with grpc.insecure_channel(found[0]) as channel:
            stub = generation_pb2_grpc.GenerationServiceStub(channel)
            with pytest.raises(grpc.RpcError) as err:
                list(stub.Generate(ids_request(), timeout=30))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert err.value.details() == "engine failed: RuntimeError: injected fault"
        assert proc.wait(60) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    reader.join(10)
    log = "".join(lines)
    assert "mmntp serve: error: engine failed: RuntimeError: injected fault" in log
    assert "stopped" in log


# -- tokenizers that do not load -----------------------------------------------------------


def test_broken_tokenizer_refuses_to_start_even_without_warm_up(
    tiny_model_dir, monkeypatch, caplog
):
    pipe = Pipeline.from_pretrained(tiny_model_dir)

    def corrupt(path, cls, config):
        raise ValueError(f"{path.name}/tokenizer.safetensors: truncated")

    monkeypatch.setattr("mmntp.model.checkpoint.build_tokenizer", corrupt)
    with pytest.raises(ServeError, match=r"failed to load: tokenizer '\w+': ValueError: "):
        ServerThread(pipe, ServerConfig(port=0, warmup=False))
    assert any("not ready" in m and "truncated" in m for m in error_lines(caplog))


def test_serve_with_a_corrupt_card_is_one_line_and_never_serving(tiny_model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    card = broken / "tokenizers" / "text" / "config.json"
    config = json.loads(card.read_text())
    card.write_text(json.dumps({**config, "no_such_argument": 1}))
    cmd = [sys.executable, "-m", "mmntp.cli", "serve", str(broken), "--port", "0"]
    done = subprocess.run(
        [*cmd, "--no-warmup"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    # Refused when the card is checked (2) or when the server builds it (1): one line.
    assert done.returncode in (1, 2), done.stderr
    assert "Traceback" not in done.stderr and "serving" not in done.stderr
    (line,) = [ln for ln in done.stderr.splitlines() if ln.startswith("mmntp serve: error:")]
    assert "text" in line


# -- the port ------------------------------------------------------------------------------


def test_second_server_on_a_busy_port_fails_naming_the_port(tiny_model_dir):
    with ServerThread(Pipeline.from_pretrained(tiny_model_dir)) as first:
        config = ServerConfig(port=first.port, warmup=False)
        with pytest.raises(ServeError, match=f"port {first.port} is already in use"):
            ServerThread(Pipeline.from_pretrained(tiny_model_dir), config)
        assert health_of(first.target, "") == SERVING  # the first one still owns it


def test_serve_on_a_busy_port_exits_1_with_one_line(tiny_model_dir, capfd):
    with ServerThread(Pipeline.from_pretrained(tiny_model_dir)) as first:
        argv = ["serve", str(tiny_model_dir), "--port", str(first.port), "--no-warmup"]
        assert main(argv) == 1
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("mmntp serve: error:")]
    assert lines == [
        f"mmntp serve: error: cannot bind 127.0.0.1:{first.port}: port {first.port} is "
        "already in use (is another server running?)"
    ]
    assert "Traceback" not in err


# -- malformed protobuf bytes --------------------------------------------------------------

GARBAGE = (b"\xff", b"\x0a\x05ab", b"\xff\xff\xff\xff")
METHODS = {
    "/mmntp.v1.GenerationService/Generate": "unary_stream",
    "/mmntp.v1.GenerationService/ListModels": "unary_unary",
    "/mmntp.v1.GenerationService/Tokenize": "unary_unary",
    "/mmntp.v1.GenerationService/Detokenize": "unary_unary",
    "/grpc.health.v1.Health/Check": "unary_unary",
}


def send_raw(channel: grpc.Channel, method: str, data: bytes, **kwargs) -> None:
    call = getattr(channel, METHODS[method])(method)  # no serializers: bytes as they are
    reply = call(data, timeout=10, **kwargs)
    if METHODS[method] == "unary_stream":
        list(reply)


def test_malformed_bytes_are_invalid_argument_counted_without_error_lines(tiny_model_dir, caplog):
    with ServerThread(Pipeline.from_pretrained(tiny_model_dir)) as srv:
        with grpc.insecure_channel(srv.target) as channel:
            for method in METHODS:
                for data in GARBAGE:
                    with pytest.raises(grpc.RpcError) as err:
                        send_raw(channel, method, data)
                    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
                    assert err.value.details().startswith("malformed request: Error parsing")
                count = metric(srv, "mmntp_malformed_requests_total", method=method)
                assert count == len(GARBAGE)
            send_raw(channel, "/mmntp.v1.GenerationService/ListModels", b"")  # still fine
        assert health_of(srv.target, "") == SERVING
    assert error_lines(caplog) == []
    warnings = [r for r in caplog.records if "malformed request(s)" in r.getMessage()]
    assert len(warnings) == 1  # rate-limited: one line for all fifteen


def test_malformed_bytes_without_a_key_are_unauthenticated_first(tiny_model_dir):
    pipe = Pipeline.from_pretrained(tiny_model_dir)
    with ServerThread(pipe, api_keys=["k1"]) as srv, grpc.insecure_channel(srv.target) as channel:
        method = "/mmntp.v1.GenerationService/Tokenize"
        with pytest.raises(grpc.RpcError) as err:
            send_raw(channel, method, b"\xff")
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as err:
            send_raw(channel, method, b"\xff", metadata=[("authorization", "Bearer k1")])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- SIGTERM while starting ----------------------------------------------------------------


def test_sigterm_during_warm_up_exits_zero_without_a_traceback():
    cmd = [sys.executable, "-m", "mmntp.cli", "serve", str(DEFAULT_SERVICE), "--port", "0"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    warming = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if "loading tokenizers" in line:
                warming.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert warming.wait(120), "".join(lines)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    reader.join(10)
    log = "".join(lines)
    assert "signal received during start-up" in log and "stopped" in log
    assert "Traceback" not in log and "serving 'default'" not in log
