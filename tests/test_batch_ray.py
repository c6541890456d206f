"""`mmntp batch run --backend ray` on a 2-CPU local Ray runtime started here: the same
results as the local runner, for a batch Arrow can type (read_json) and one it cannot
(read_text); and resume under Ray after a local run was killed mid-way."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmntp.batch.ray_backend import arrow_regular, run_batch_ray
from mmntp.batch.results import CRASH_ENV, RESULTS_FILE
from mmntp.batch.runner import LocalBackend, run_batch
from mmntp.generation import Pipeline

# In the default suite (the dev extra installs Ray): about 80 s on 2 cores, Ray's start and
# two actors loading the model per run included.
ray = pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[1]
SERIES = [10 + (i % 12) + 0.1 * i for i in range(48)]


def _batch(path: Path, n: int, extra: list | None = None) -> Path:
    lines = []
    for i in range(n):
        if i % 2:
            req = {"modality": "text", "prompt": f"line {i} ", "max_tokens": 6, "seed": i}
        else:
            req = {"modality": "timeseries", "context": SERIES, "horizon": 4, "num_samples": 4}
        lines.append({"custom_id": f"{i:03d}", "request": req})  # "000": stays a string
    lines += extra or []
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def _results(out: Path) -> dict[str, dict]:
    rows = [json.loads(x) for x in (out / RESULTS_FILE).read_text().splitlines()]
    assert len(rows) == len({r["custom_id"] for r in rows}), "a custom_id twice"
    return {r["custom_id"]: r for r in rows}


@pytest.fixture(scope="module")
def ray_runtime():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    return Pipeline.from_pretrained(tiny_model_dir)


def _local(pipe, batch: Path, out: Path) -> dict[str, dict]:
    run_batch(batch, out, lambda: LocalBackend(pipe), progress=False)
    return _results(out)


def _ray(model: Path, batch: Path, out: Path):
    return run_batch_ray(batch, out, str(model), workers=2, progress=False, batch_size=4)


def test_ray_writes_the_local_results_for_typed_and_untyped_inputs(
    ray_runtime, pipe, tiny_model_dir, tmp_path
):
    # A number where other lines have a string: one Arrow column cannot hold both.
    odd = [{"custom_id": "odd", "request": {"modality": "text", "prompt": 3}}]
    for name, extra, typed in (("typed", None, True), ("untyped", odd, False)):
        batch = _batch(tmp_path / f"{name}.jsonl", 10, extra)
        assert arrow_regular(batch) is typed
        local = _local(pipe, batch, tmp_path / f"{name}-local")
        report = _ray(tiny_model_dir, batch, tmp_path / f"{name}-ray")
        assert report.counts.complete and not report.already_complete
        assert _results(tmp_path / f"{name}-ray") == local
    assert local["odd"]["error"]["field"] == "prompt"


def test_ray_resumes_a_killed_batch_exactly_once(ray_runtime, pipe, tiny_model_dir, tmp_path):
    batch = _batch(tmp_path / "in.jsonl", 12)
    clean = _local(pipe, batch, tmp_path / "clean")
    out = tmp_path / "out"
    # A local run that dies halfway through writing its 4th line: a torn file to repair.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", CRASH_ENV: "torn:4"}
    cmd = [sys.executable, "-m", "mmntp.cli", "batch", "run", str(batch), "--out", str(out)]
    proc = subprocess.run(
        [*cmd, "--model", str(tiny_model_dir), "--no-progress"], env=env, capture_output=True
    )
    assert proc.returncode == 86, proc.stderr.decode()
    assert not (out / RESULTS_FILE).read_bytes().endswith(b"\n")
    report = _ray(tiny_model_dir, batch, out)
    assert report.counts.complete
    assert _results(out) == clean
    assert _ray(tiny_model_dir, batch, out).already_complete
