"""A server's batch survives `kill -9` of the server: restarted on the same state folder,
it finishes with every custom_id exactly once, finished work is not redone, and the
results equal the local runner's for the same input."""

from __future__ import annotations

import json
import re
import signal

from serving import DEFAULT_SERVICE, wait_until
from test_serve_process import ServeProcess

from mmntp.batch.results import RESULTS_FILE
from mmntp.batch.runner import LocalBackend, run_batch
from mmntp.client import Client
from mmntp.generation import Pipeline


def forecast(cid: str, seed: int) -> str:
    context = [float((i * 5) % 13) for i in range(24)]
    request = {"modality": "timeseries", "context": context, "horizon": 6, "num_samples": 8}
    return json.dumps({"custom_id": cid, "request": {**request, "seed": seed}})


LINES = [forecast(f"f{i}", i) for i in range(12)]
KILL_AFTER = 3


def stop(server: ServeProcess) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()
        server.proc.wait(30)


# Two server processes, ~20 s: in the default suite, since it is the proof that a server
# batch is exactly once after kill -9.
def test_batch_survives_kill_9_and_finishes_exactly_once(tmp_path):
    state, infile = tmp_path / "state", tmp_path / "in.jsonl"
    infile.write_text("\n".join(LINES) + "\n")
    first = ServeProcess("--state-dir", str(state), "--no-warmup")
    try:
        with Client(first.target, timeout=60) as client:
            batch_id = client.submit_batch(infile).id
            done = lambda: client.get_batch(batch_id).done >= KILL_AFTER  # noqa: E731
            wait_until(done, 120, f"{KILL_AFTER} results")
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
    finally:
        stop(first)
    second = ServeProcess("--state-dir", str(state), "--no-warmup")
    try:
        with Client(second.target, timeout=60) as client:
            wait_until(lambda: client.get_batch(batch_id).ended, 180, "the batch to end")
            job = client.get_batch(batch_id)
            streamed = [r.line for r in client.batch_results(batch_id)]
    finally:
        stop(second)
    assert (job.status, job.done, job.failed) == ("completed", len(LINES), 0)
    resumed = re.search(rf"batch {batch_id}: (\d+) of {len(LINES)} requests to run", second.log)
    assert resumed and int(resumed[1]) <= len(LINES) - KILL_AFTER  # finished work not redone
    written = (state / "batches" / batch_id / RESULTS_FILE).read_text().splitlines()
    assert written == streamed
    ids = [json.loads(x)["custom_id"] for x in written]
    assert sorted(ids) == sorted(f"f{i}" for i in range(len(LINES)))  # each exactly once
    local = tmp_path / "local"
    run_batch(infile, local, lambda: LocalBackend(Pipeline.from_pretrained(DEFAULT_SERVICE)), False)
    expected = (local / RESULTS_FILE).read_text().splitlines()
    assert sorted(written) == sorted(expected)
