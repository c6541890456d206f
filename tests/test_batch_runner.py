"""`mmntp batch run` on the tiny model: exactly once through kill -9 and through each
crash window (a test hook makes the runner die at an exact point), equal to a clean run;
refused inputs; error lines; the --server backend."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmntp.batch.results import CRASH_ENV, RESULTS_FILE
from mmntp.batch.runner import LocalBackend, RemoteBackend, run_batch
from mmntp.cli import main
from mmntp.client import AsyncClient
from mmntp.generation import Pipeline
from mmntp.serve.thread import ServerThread

ROOT = Path(__file__).resolve().parents[1]
SERIES = [10 + (i % 12) + 0.1 * i for i in range(48)]


def _requests(n: int) -> list[dict]:
    """n lines alternating forecasts and text, some without a seed (custom_id's seed)."""
    lines = []
    for i in range(n):
        if i % 2:
            req = {"modality": "text", "prompt": f"line {i} ", "max_tokens": 6}
        else:
            req = {"modality": "timeseries", "context": SERIES, "horizon": 4, "num_samples": 4}
        if i % 3:
            req["seed"] = i
        lines.append({"custom_id": f"req/{i}", "request": req})
    return lines


BAD = [
    {"custom_id": "bad-modality", "request": {"modality": "smell", "prompt": "x"}},
    {"custom_id": "bad-field", "request": {"prompt": "x", "colour": "red"}},
    {
        "custom_id": "bad-horizon",
        "request": {"modality": "timeseries", "context": SERIES, "horizon": 1000},
    },
    {"custom_id": "bad-context", "request": {"context": ["a", "b"], "horizon": 2}},
    {"custom_id": "bad-ids", "request": {"modality": "tokens", "prompt_ids": ["x"]}},
]
BAD_IDS = {line["custom_id"] for line in BAD}


def _write(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def _results(out: Path) -> dict[str, dict]:
    """results.jsonl by custom_id, asserting every line is whole and ids are unique."""
    text = (out / RESULTS_FILE).read_text()
    assert text.endswith("\n")
    rows = [json.loads(line) for line in text.splitlines()]
    ids = [r["custom_id"] for r in rows]
    assert len(ids) == len(set(ids)), "a custom_id is in results.jsonl twice"
    return {r["custom_id"]: r for r in rows}


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    return Pipeline.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("batch") / "in.jsonl", _requests(16) + BAD)


@pytest.fixture(scope="module")
def clean_dir(pipe, batch, tmp_path_factory):
    """A clean run's folder (in-process)."""
    out = tmp_path_factory.mktemp("clean")
    report = run_batch(batch, out, lambda: LocalBackend(pipe), progress=False)
    assert report.counts.total == 21 and report.counts.complete
    return out


@pytest.fixture(scope="module")
def clean(clean_dir):
    return _results(clean_dir)


def _cli(*args, env=None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "mmntp.cli", "batch", "run", *map(str, args), "--no-progress"]
    full = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen(cmd, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_clean_run_makes_every_line_once_with_error_lines_naming_fields(clean):
    assert len(clean) == 21
    ok = [r for r in clean.values() if r["status"] == "ok"]
    assert len(ok) == 16 and all(r["error"] is None for r in ok)
    forecast = clean["req/0"]["response"]
    assert len(forecast["median"]) == 4 and set(forecast["quantiles"]) >= {"0.1", "0.5", "0.9"}
    assert isinstance(clean["req/1"]["response"]["text"], str)
    errors = {cid: clean[cid]["error"] for cid in BAD_IDS}
    assert all(clean[cid]["status"] == "error" for cid in errors)
    assert errors["bad-modality"]["field"] == "modality"
    assert errors["bad-field"]["field"] == "colour"
    assert errors["bad-horizon"]["field"] == "output.timeseries.horizon"
    assert errors["bad-context"]["field"] == "prompt[0].timeseries.values"
    assert all(e["code"] == "INVALID_ARGUMENT" and e["message"] for e in errors.values())


def _resume(pipe, batch, out):
    """The same batch again, in this process (the killed one was another)."""
    report = run_batch(batch, out, lambda: LocalBackend(pipe), progress=False)
    assert not report.already_complete and report.counts.complete


def test_each_crash_window_then_resume_equals_the_clean_run(
    pipe, tiny_model_dir, batch, clean, tmp_path
):
    """Die after storing a result (not written), after writing (not marked) and halfway
    through a line; each resume repairs and goes on; the end equals the clean run."""
    out = tmp_path / "out"
    for point in ("recorded:3", "written:2", "torn:2"):
        proc = _cli(batch, "--out", out, "--model", tiny_model_dir, env={CRASH_ENV: point})
        assert proc.wait(120) == 86, proc.stderr.read().decode()
        if point.startswith("torn"):
            assert not (out / RESULTS_FILE).read_bytes().endswith(b"\n")
    _resume(pipe, batch, out)
    assert _results(out) == clean


@pytest.mark.parametrize("kill_after", [1, 5, 11])
def test_kill_9_after_k_results_then_resume_equals_the_clean_run(
    pipe, tiny_model_dir, batch, clean, tmp_path, kill_after
):
    out = tmp_path / "out"
    # Two requests at a time keeps the run long enough to be killed in the middle.
    proc = _cli(batch, "--out", out, "--model", tiny_model_dir, "--concurrency", "2")
    results = out / RESULTS_FILE
    while proc.poll() is None:
        if results.exists() and results.read_bytes().count(b"\n") >= kill_after:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    assert proc.wait(60) == -signal.SIGKILL, "the batch finished before it could be killed"
    done_before = results.read_bytes().count(b"\n")
    assert done_before < len(clean)
    _resume(pipe, batch, out)
    assert _results(out) == clean


def test_finished_batch_reruns_as_a_no_op_without_loading_a_model(
    batch, clean_dir, tmp_path, capsys
):
    out = tmp_path / "out"
    shutil.copytree(clean_dir, out)
    before = (out / RESULTS_FILE).read_bytes()
    # A model folder that does not exist: loading it would fail, so nothing is loaded.
    assert main(["batch", "run", str(batch), "--out", str(out), "--model", "/nowhere"]) == 0
    assert "batch already complete: 21 requests, 16 ok, 5 errors" in capsys.readouterr().out
    assert (out / RESULTS_FILE).read_bytes() == before


def test_refused_inputs_exit_2_naming_the_line_before_any_work(tmp_path, capsys):
    good = {"custom_id": "a", "request": {"prompt": "x"}}
    cases = {
        "not-json": ([good, "{oops"], "line 2: not valid JSON"),
        "no-id": ([good, {"request": {"prompt": "y"}}], "line 2: custom_id is missing"),
        "dup": ([good, {"custom_id": "b", "request": {}}, good], "custom_id 'a' duplicates line 1"),
    }
    for name, (lines, message) in cases.items():
        out = tmp_path / name
        path = _write(tmp_path / f"{name}.jsonl", lines)
        assert main(["batch", "run", str(path), "--out", str(out), "--model", "/nowhere"]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
        assert not (out / "batch.sqlite").exists()


def test_server_backend_writes_the_local_results(pipe, tiny_model_dir, batch, clean, tmp_path):
    server_pipe = Pipeline.from_pretrained(tiny_model_dir)
    with ServerThread(server_pipe) as server:
        out = tmp_path / "out"
        report = run_batch(
            batch, out, lambda: RemoteBackend(AsyncClient(server.target), 4), progress=False
        )
    assert report.counts.complete
    got = _results(out)
    strip = lambda r: {**r, "response": r["response"] and _no_usage(r["response"])}  # noqa: E731
    assert {k: strip(v) for k, v in got.items() if v["status"] == "ok"} == {
        k: strip(v) for k, v in clean.items() if v["status"] == "ok"
    }
    assert {k for k, v in got.items() if v["status"] == "error"} == BAD_IDS


def _no_usage(response: dict) -> dict:
    return {k: v for k, v in response.items() if k != "usage"}


def test_a_full_engine_queue_is_waited_out_not_an_error(tiny_model_dir, batch, clean, tmp_path):
    """A window far past the engine's waiting queue: QueueFullError answers are retried."""
    small = Pipeline.from_pretrained(tiny_model_dir)
    small.engine_config = dataclasses.replace(
        small.engine_config, max_num_seqs=4, max_waiting_requests=1
    )

    def backend():
        wide = LocalBackend(small)
        wide.window_rows = 1000
        return wide

    report = run_batch(batch, tmp_path / "out", backend, progress=False)
    assert report.counts.complete
    assert _results(tmp_path / "out") == clean
