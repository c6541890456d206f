"""`mmntp serve` as a user runs it: a real process, the CLI client, and SIGTERM mid-stream."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serving import ROOT, wait_until

from mmntp.api import SamplingParams, TextOutput, TokenIdsPart, TokensOutput
from mmntp.cli import main
from mmntp.client import Client, ClientError, Final, TokensChunk

LISTENING = re.compile(r"serving '(\w+)' on grpc://127\.0\.0\.1:(\d+)")


class ServeProcess:
    """`python -m mmntp.cli serve --port 0` with its log collected on a thread."""

    def __init__(self, *args: str) -> None:
        cmd = [sys.executable, "-m", "mmntp.cli", "serve", "--port", "0", *args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self.listening = threading.Event()
        self.name = self.target = ""
        threading.Thread(target=self._read, daemon=True).start()
        if not self.listening.wait(120):
            self.proc.kill()
            raise AssertionError("server never listened:\n" + "".join(self.lines))

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            found = LISTENING.search(line)
            if found:
                self.name, self.target = found[1], f"127.0.0.1:{found[2]}"
                self.listening.set()

    @property
    def log(self) -> str:
        return "".join(self.lines)


@pytest.fixture(scope="module")
def served():
    server = ServeProcess()  # no folder: the bundled default service
    yield server
    if server.proc.poll() is None:
        server.proc.kill()
        server.proc.wait(10)


def test_serve_without_a_folder_serves_the_bundled_default(served):
    assert served.name == "default"
    with Client(served.target, timeout=10) as client:
        assert client.health() == "SERVING"
        assert [m.name for m in client.list_models()] == ["default"]


def test_cli_health_and_remote_generate_write_what_the_local_form_writes(served, tmp_path, capsys):
    assert main(["health", "--server", served.target]) == 0
    assert capsys.readouterr().out.strip() == "SERVING"
    common = ["generate", "--modality", "timeseries", "--horizon", "12", "--seed", "0"]
    common += ["--context", str(ROOT / "examples" / "elec_equip.csv")]
    remote, local = tmp_path / "remote.csv", tmp_path / "local.csv"
    assert main([*common, "--server", served.target, "-o", str(remote)]) == 0
    assert main([*common, "-o", str(local)]) == 0
    assert remote.read_text() == local.read_text()
    # the input's timestamps continue into the forecast (elec_equip is monthly, to 2016-05)
    assert remote.read_text().splitlines()[0].startswith("timestamp,median,q0.1,")
    assert remote.read_text().splitlines()[1].startswith("2016-06,")
    assert len(remote.read_text().splitlines()) == 13


def test_one_json_log_line_per_request(served):
    with Client(served.target, timeout=30) as client:
        chunks = list(client.generate("a", TextOutput(max_tokens=3), request_id="log-line-1"))
    final = chunks[-1]
    assert isinstance(final, Final)

    def ours() -> list[dict]:
        lines = [
            ln.split("mmntp.requests INFO ", 1)[1] for ln in served.lines if "mmntp.requests" in ln
        ]
        return [json.loads(ln) for ln in lines if '"log-line-1"' in ln]

    wait_until(lambda: ours(), what="the request's log line")
    (record,) = ours()
    # The model may stop at its end-of-text id before 3 tokens: the line says what it sent.
    assert record["status"] == "OK" and record["modality"] == "text"
    assert record["output_tokens"] == final.output_tokens <= 3
    assert record["finish_reason"] == final.finish_reason
    assert {"id", "prompt_tokens", "time_to_first_chunk", "total", "queue"} <= set(record)


def test_cli_health_of_no_server_fails(capsys):
    assert main(["health", "--server", "127.0.0.1:1", "--timeout", "1"]) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_sigterm_lets_the_open_stream_finish_then_exits_zero(served):
    client = Client(served.target, timeout=120, retries=0)
    stream = client.generate(
        TokenIdsPart([1, 2]), TokensOutput(max_tokens=300), SamplingParams(0.0)
    )
    first = next(stream)  # a slow reader may get several ids merged into one chunk
    assert isinstance(first, TokensChunk)
    channel = grpc.insecure_channel(served.target)
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=60)
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    served.proc.send_signal(signal.SIGTERM)
    assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
    watch.cancel()  # an open Watch would otherwise hold the shutdown for the whole grace
    channel.close()
    rest = list(stream)
    assert isinstance(rest[-1], Final) and rest[-1].finish_reason == "length"
    assert len(first.ids) + sum(len(c.ids) for c in rest if isinstance(c, TokensChunk)) == 300
    assert served.proc.wait(60) == 0
    assert "signal received" in served.log and "stopped" in served.log
    time.sleep(0.1)
    with pytest.raises(ClientError) as err:
        Client(served.target, timeout=2, retries=0).health()
    assert err.value.code.name == "UNAVAILABLE"
    client.close()


def test_served_process_runs_one_torch_thread_by_default(served):
    # service.json sets no server.torch_threads: the server's default of 1 applies
    assert ", 1 torch threads)" in served.log
