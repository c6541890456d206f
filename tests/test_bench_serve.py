"""`mmntp bench serve` against a real in-process server: behaviour only, never times."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from serving import DEFAULT_SERVICE, ServerThread

from mmntp.cli import main
from mmntp.generation import Pipeline

MODALITIES = ("text", "timeseries")


@pytest.fixture(scope="module")
def server_port():
    """The bundled default service on a free port (the bench runs its own event loop)."""
    with ServerThread(Pipeline.from_pretrained(DEFAULT_SERVICE)) as server:
        yield server.port


def _bench(port: int, out: Path, *extra: str) -> int:
    return main(["bench", "serve", "--server", f"127.0.0.1:{port}", "--out", str(out), *extra])


SMALL = ("--requests", "6", "--concurrency", "2", "--max-tokens", "4", "--horizon", "3")


def _check_section(section: dict, requests: int) -> None:
    assert section["requests"] == requests
    assert section["ok"] == requests
    assert section["errors"] == {}
    assert section["chunks"] >= requests  # every request streamed at least one chunk
    for key in ("ttft_ms", "latency_ms"):
        p = section[key]
        assert p["p50"] <= p["p90"] <= p["p99"], (key, p)
    gaps = section["inter_chunk_ms"]
    if gaps["p50"] is not None:  # null when every stream had a single chunk
        assert gaps["p50"] <= gaps["p90"] <= gaps["p99"]


def test_json_report_counts_every_request(server_port, tmp_path, capsys):
    out = tmp_path / "nested" / "serve.json"
    assert _bench(server_port, out, *SMALL, "--json", "--seed", "3") == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads(out.read_text())
    assert printed == saved
    assert saved["benchmark"] == "serve"
    assert "cpu" in saved["machine"]
    assert saved["settings"]["load"] == {"mode": "concurrency", "concurrency": 2}
    assert saved["settings"]["modalities"] == list(MODALITIES)
    _check_section(saved["overall"], 6)
    assert set(saved["modalities"]) == set(MODALITIES)
    for modality in MODALITIES:
        _check_section(saved["modalities"][modality], 3)
        assert saved["idle"][modality]["requests"] == 2  # the one-at-a-time baseline
        assert saved["load_over_idle"][modality]["ttft_p50"] > 0
    # A forecast streams one chunk per step.
    assert saved["modalities"]["timeseries"]["chunks"] == 3 * 3


def test_table_by_default_with_poisson_arrivals(server_port, tmp_path, capsys):
    out = tmp_path / "serve.json"
    args = ("--requests", "4", "--rate", "inf", "--max-tokens", "4", "--horizon", "3")
    assert _bench(server_port, out, *args, "--modalities", "timeseries,text") == 0
    captured = capsys.readouterr()
    for word in ("first chunk", "end-to-end", "req/s", "load ttft p50", *MODALITIES):
        assert word in captured.out
    assert "[bench]" in captured.err and "[bench]" not in captured.out
    saved = json.loads(out.read_text())
    assert saved["settings"]["load"] == {"mode": "poisson", "rate": "inf"}
    assert saved["overall"]["ok"] == 4


def test_no_server_fails_with_unavailable(tmp_path, capsys):
    with socket.socket() as sock:  # a port nothing listens on once the socket closes
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "serve.json"
    args = ("--requests", "4", "--rate", "inf", "--timeout", "2", "--json")
    assert _bench(port, out, *args) == 1
    printed = json.loads(capsys.readouterr().out)
    assert printed["overall"]["ok"] == 0
    assert printed["overall"]["errors"] == {"UNAVAILABLE": 4}
    assert printed["modalities"]["text"]["errors"] == {"UNAVAILABLE": 2}
    assert printed["overall"]["latency_ms"]["p50"] is None  # no successful request
    assert json.loads(out.read_text())["overall"]["errors"] == {"UNAVAILABLE": 4}
