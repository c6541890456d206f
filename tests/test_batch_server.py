"""The server's BatchService in-process: results equal the local runner's, bad input is
refused naming the line, auth, cancel within one engine step, streaming results, and
interactive requests scheduled before batch rows."""

from __future__ import annotations

import asyncio
import json
import re

import grpc
import pytest
from serving import DEFAULT_SERVICE, ServerThread, wait_until

from mmntp.batch.results import RESULTS_FILE
from mmntp.batch.runner import LocalBackend, run_batch
from mmntp.cli import main
from mmntp.client import Client, ClientError
from mmntp.engine import BACKGROUND_PRIORITY
from mmntp.generation import Pipeline
from mmntp.serve.server import ServerConfig


def line(cid, **request):
    return json.dumps({"custom_id": cid, "request": request})


def forecast(cid, n=16, **kw):
    context = [float((i * 7) % 11) for i in range(n)]
    return line(cid, modality="timeseries", context=context, horizon=4, num_samples=4, **kw)


def long_line(cid, max_tokens=400):
    """Raw tokens without a stop id: exactly max_tokens engine steps, never ended early."""
    return line(cid, modality="tokens", prompt_ids=[5, 6, 7], max_tokens=max_tokens)


MIXED = [
    forecast("f1"),
    forecast("f2", seed=5),
    line("t1", modality="text", prompt="The ", max_tokens=6),
    line("bad-modality", modality="smell", prompt="x"),
    line("bad-field", modality="timeseries", context=[1.0, 2.0], horizon=10_000),
    line("img", modality="image", prompt="a red circle", head="vq", seed=0),
]


@pytest.fixture(scope="module")
def pipe():
    return Pipeline.from_pretrained(DEFAULT_SERVICE)


@pytest.fixture()
def server(pipe, tmp_path):
    config = ServerConfig(port=0, warmup=False, state_dir=str(tmp_path / "state"))
    with ServerThread(pipe, config) as srv:
        yield srv


def finish(client, batch_id, timeout=120.0):
    wait_until(lambda: client.get_batch(batch_id).ended, timeout, f"batch {batch_id}")
    return client.get_batch(batch_id)


def test_server_batch_equals_the_local_runner(server, tmp_path):
    infile = tmp_path / "in.jsonl"
    infile.write_text("\n".join(MIXED) + "\n")
    with Client(server.target, timeout=60) as client:
        job = client.submit_batch(infile, name="mixed")
        assert job.status == "in_progress" and job.total == len(MIXED)
        assert client.submit_batch(infile, name="mixed").id == job.id  # idempotent name
        job = finish(client, job.id)
        assert (job.status, job.done, job.failed, job.cancelled) == ("completed", 4, 2, 0)
        assert [b.id for b in client.list_batches()] == [job.id]
    out = tmp_path / "fetched"
    assert main(["batch", "results", job.id, "--server", server.target, "--out", str(out)]) == 0
    local = tmp_path / "local"
    run_batch(infile, local, lambda: LocalBackend(Pipeline.from_pretrained(DEFAULT_SERVICE)), False)

    def results(folder):
        rows = [json.loads(x) for x in (folder / RESULTS_FILE).read_text().splitlines()]
        return {r["custom_id"]: r for r in rows}

    fetched, expected = results(out), results(local)
    assert len(fetched) == len(MIXED)
    assert fetched == expected
    assert fetched["bad-field"]["error"]["field"].startswith("output.timeseries.horizon")
    image = fetched["img"]["response"]["file"]
    assert (out / image).read_bytes() == (local / image).read_bytes()


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([forecast("a"), "{not json"], "line 2: not valid JSON"),
        ([forecast("a"), json.dumps({"request": {}})], "line 2: custom_id is missing"),
        ([forecast("a"), forecast("b"), forecast("a")], "line 3: custom_id 'a' duplicates line 1"),
        ([forecast(f"x{i}") for i in range(4)], "line 4: the batch has more than max_lines=3"),
        ([forecast("a"), forecast("b", n=400)], "line 2: longer than max_line_bytes=2000"),
    ],
)
def test_bad_input_is_refused_naming_the_line_and_no_batch_is_made(pipe, tmp_path, lines, message):
    config = ServerConfig(
        port=0,
        warmup=False,
        state_dir=str(tmp_path),
        batch_max_lines=3,
        batch_max_line_bytes=2000,
    )
    with ServerThread(pipe, config) as srv, Client(srv.target, timeout=30) as client:
        with pytest.raises(ClientError) as err:
            client.submit_batch(lines)
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert message in err.value.details
        assert client.list_batches() == []
    assert [p.name for p in (tmp_path / "batches").iterdir()] == []  # no half batch left


def test_every_batch_method_needs_an_api_key(pipe, tmp_path):
    config = ServerConfig(port=0, warmup=False, state_dir=str(tmp_path))
    with ServerThread(pipe, config, api_keys=["secret"]) as srv:
        with Client(srv.target, timeout=30) as anonymous:
            calls = [
                lambda: anonymous.submit_batch([forecast("a")]),
                lambda: anonymous.get_batch("b-0000000000000000"),
                anonymous.list_batches,
                lambda: anonymous.cancel_batch("b-0000000000000000"),
                lambda: list(anonymous.batch_results("b-0000000000000000")),
            ]
            for call in calls:
                with pytest.raises(ClientError) as err:
                    call()
                assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
        with Client(srv.target, api_key="secret", timeout=30) as client:
            with pytest.raises(ClientError) as err:
                client.get_batch("b-0000000000000000")
            assert err.value.code == grpc.StatusCode.NOT_FOUND
            assert client.list_batches() == []


def test_a_key_sees_reads_and_cancels_only_its_own_batches(pipe, tmp_path):
    config = ServerConfig(port=0, warmup=False, state_dir=str(tmp_path))
    keys = ["alice-key", "bob-key"]
    long = [long_line(f"t{i}", 300) for i in range(2)]

    def list_or_value(got):
        return got if hasattr(got, "id") else list(got)  # results stream: read it

    def refused(call):
        with pytest.raises(ClientError) as err:
            call()
        return err.value.code, err.value.details

    with (
        ServerThread(pipe, config, api_keys=keys) as srv,
        Client(srv.target, api_key="alice-key", timeout=60) as alice,
        Client(srv.target, api_key="bob-key", timeout=60) as bob,
    ):
        done = finish(alice, alice.submit_batch([forecast("a")], name="nightly").id)
        running = alice.submit_batch(long)
        theirs = bob.submit_batch([forecast("b")], name="nightly")  # same name, own batch
        assert theirs.id not in (done.id, running.id)
        assert [b.id for b in bob.list_batches()] == [theirs.id]
        assert {b.id for b in alice.list_batches()} == {done.id, running.id}
        unknown = refused(lambda: bob.get_batch("b-0000000000000000"))
        for batch_id in (done.id, running.id):  # answered exactly as an unknown id
            for method in (bob.get_batch, bob.cancel_batch, bob.batch_results):
                code, details = refused(lambda m=method, b=batch_id: list_or_value(m(b)))
                assert code == unknown[0] == grpc.StatusCode.NOT_FOUND
                assert details == unknown[1].replace("b-0000000000000000", batch_id)
        assert alice.get_batch(running.id).status == "in_progress"  # bob's cancel did nothing
        assert [r.custom_id for r in alice.batch_results(done.id)] == ["a"]
        assert alice.cancel_batch(running.id).status == "cancelled"
    # The owner is kept in the batch's store: a restarted server still tells them apart.
    with (
        ServerThread(pipe, config, api_keys=keys) as srv,
        Client(srv.target, api_key="alice-key", timeout=60) as alice,
        Client(srv.target, api_key="bob-key", timeout=60) as bob,
    ):
        assert {b.id for b in alice.list_batches()} == {done.id, running.id}
        assert [b.id for b in bob.list_batches()] == [theirs.id]
        assert refused(lambda: bob.get_batch(done.id))[0] == grpc.StatusCode.NOT_FOUND
    # A server without keys keeps no owners apart: every caller sees every batch.
    with ServerThread(pipe, config) as srv, Client(srv.target, timeout=60) as anyone:
        assert {b.id for b in anyone.list_batches()} == {done.id, running.id, theirs.id}
        assert anyone.get_batch(theirs.id).total == 1


def test_without_a_state_dir_batches_are_a_failed_precondition(pipe):
    with ServerThread(pipe) as srv, Client(srv.target, timeout=30) as client:
        with pytest.raises(ClientError) as err:
            client.list_batches()
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "--state-dir" in err.value.details


def batch_rows(engine, batch_id):
    owner = f"batch:{batch_id}"
    return [r for r in engine.scheduler._requests.values() if r.owner == owner]


def test_cancel_stops_the_batch_within_one_engine_step(server, pipe):
    """Counted in steps, not time: the steps done when the cancel reaches the server (its
    BatchManager.cancel) against the batch rows each later step computed. The cancel's
    status write is made to outlast two steps, so work left to stop after it would show."""
    engine, manager = pipe.engine, server.server.batches
    computed = []  # per step: (its number, batch rows it computed)
    arrived = []  # engine steps done when the cancel arrived
    schedule, cancel = engine.scheduler.schedule, manager.cancel

    def logged():
        out = schedule()
        rows = sum(s.request.owner.startswith("batch:") for s in out.scheduled)
        computed.append((engine.stats.steps + 1, rows))
        return out

    async def noted(*args):
        arrived.append(engine.stats.steps)
        return await cancel(*args)

    async def slow_disk(batch, *args):  # the status write outlasts two engine steps
        start = engine.stats.steps
        await set_status(batch, *args)  # first: the writes keep their order
        while engine.stats.steps < start + 3 and engine.has_unfinished():
            await asyncio.sleep(0.005)

    set_status = manager._set_status
    engine.scheduler.schedule, manager.cancel, manager._set_status = logged, noted, slow_disk
    try:
        long_text = [long_line(f"t{i}", 400) for i in range(8)]
        with Client(server.target, timeout=60) as client:
            job = client.submit_batch(long_text)
            wait_until(lambda: batch_rows(engine, job.id), 30, "batch rows in the engine")
            job = client.cancel_batch(job.id)
            wait_until(lambda: not engine.has_unfinished(), 10, "the engine idle")
            done = engine.stats.steps
    finally:
        engine.scheduler.schedule, manager.cancel, manager._set_status = (
            schedule,
            cancel,
            set_status,
        )
    (at,) = arrived
    assert any(rows for step, rows in computed if step <= at + 1), "the batch never ran"
    # Only the step running when the cancel arrived may compute batch rows; the next one
    # only hands the aborted rows their last output.
    assert [(step, rows) for step, rows in computed if step > at + 1 and rows] == []
    assert done <= at + 2
    assert batch_rows(engine, job.id) == []
    assert job.status == "cancelled" and job.cancelled >= 1
    assert job.done + job.failed + job.cancelled == job.total == 8
    with Client(server.target, timeout=60) as client:
        results = list(client.batch_results(job.id))
        assert sorted(r.custom_id for r in results) == sorted(f"t{i}" for i in range(8))
        cancelled = [json.loads(r.line) for r in results if r.status == "cancelled"]
        assert len(cancelled) == job.cancelled
        assert all(c["error"]["code"] == "cancelled" for c in cancelled)
        assert client.cancel_batch(job.id).status == "cancelled"  # a no-op once ended


def test_results_stream_while_the_batch_runs_and_grow_to_all(server):
    lines = [forecast(f"f{i}") for i in range(6)]
    with Client(server.target, timeout=60) as client:
        job = client.submit_batch(lines)
        seen = [r.custom_id for r in client.batch_results(job.id)]  # whatever is written yet
        job = finish(client, job.id)
        final = list(client.batch_results(job.id))
        assert seen == [r.custom_id for r in final][: len(seen)]
        assert sorted(r.custom_id for r in final) == sorted(f"f{i}" for i in range(6))
        assert all(r.status == "ok" and not r.files for r in final)
        with pytest.raises(ClientError) as err:
            list(client.batch_results("b-ffffffffffffffff"))
        assert err.value.code == grpc.StatusCode.NOT_FOUND


def test_interactive_request_is_scheduled_before_queued_batch_rows(server, pipe):
    engine = pipe.engine
    steps = []  # per step: (interactive rows scheduled, batch rows scheduled, batch waiting)
    schedule = engine.scheduler.schedule

    def logged():
        out = schedule()
        ids = [s.request for s in out.scheduled]
        waiting = [
            r
            for r in engine.scheduler._requests.values()
            if r.request_id not in {s.request.request_id for s in out.scheduled}
        ]
        steps.append(
            (
                sum(r.priority < BACKGROUND_PRIORITY for r in ids),
                sum(r.priority >= BACKGROUND_PRIORITY for r in ids),
                sum(r.priority >= BACKGROUND_PRIORITY for r in waiting),
            )
        )
        return out

    engine.scheduler.schedule = logged
    try:
        lines = [long_line(f"t{i}", 200) for i in range(8)]
        with Client(server.target, timeout=60) as client:
            job = client.submit_batch(lines)
            wait_until(lambda: batch_rows(engine, job.id), 30, "batch rows in the engine")
            text = client.complete("Hello", max_tokens=8, timeout=30)
            assert isinstance(text, str)
            client.cancel_batch(job.id)
    finally:
        engine.scheduler.schedule = schedule
    interactive = [i for i, s in enumerate(steps) if s[0]]
    assert interactive, "the interactive request never ran"
    first = interactive[0]
    assert steps[first - 1][1] > 0  # batch rows ran just before it arrived
    # From its first step to its last, no batch row computes, though batch rows wait.
    for i in range(first, interactive[-1] + 1):
        assert steps[i][1] == 0, steps[first - 1 : interactive[-1] + 2]
    assert steps[first][2] > 0


def test_a_restarted_server_resumes_its_batch(pipe, tmp_path):
    config = ServerConfig(port=0, warmup=False, state_dir=str(tmp_path), batch_rows=2)
    lines = [long_line(f"t{i}", 60) for i in range(6)]
    with ServerThread(pipe, config) as first, Client(first.target, timeout=60) as client:
        batch_id = client.submit_batch(lines).id
        wait_until(lambda: client.get_batch(batch_id).done >= 1, 60, "a first result")
    # Stopped mid-batch (not cancelled): the next server on the folder goes on.
    with ServerThread(pipe, config) as second, Client(second.target, timeout=60) as client:
        before = client.get_batch(batch_id)
        assert before.done >= 1 and before.status in ("in_progress", "completed")
        job = finish(client, batch_id)
        ids = [r.custom_id for r in client.batch_results(batch_id)]
    assert (job.status, job.done) == ("completed", 6)
    assert sorted(ids) == sorted(f"t{i}" for i in range(6))


def test_max_batches_evicts_the_oldest_ended_batch_or_refuses(pipe, tmp_path):
    config = ServerConfig(port=0, warmup=False, state_dir=str(tmp_path), max_batches=2)
    # Long enough (12 x 500 steps of rows taking turns) never to end during the test.
    long = [long_line(f"t{i}", 500) for i in range(12)]
    with ServerThread(pipe, config) as srv, Client(srv.target, timeout=60) as client:
        old = finish(client, client.submit_batch([forecast("a")]).id)
        running = client.submit_batch(long)
        newest = client.submit_batch([forecast("b")])  # evicts `old`, which had ended
        assert {b.id for b in client.list_batches()} == {running.id, newest.id}
        assert not (tmp_path / "batches" / old.id).exists()
        with pytest.raises(ClientError) as err:
            client.get_batch(old.id)
        assert err.value.code == grpc.StatusCode.NOT_FOUND
        assert client.cancel_batch(newest.id).ended
        client.submit_batch(long)  # evicts `newest` (cancelled): `running` has not ended
        with pytest.raises(ClientError) as err:
            client.submit_batch([forecast("d")])  # both kept batches are running
        assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_batches=2" in err.value.details
        client.cancel_batch(running.id)


def test_cli_submit_status_cancel(server, tmp_path, capsys):
    infile = tmp_path / "in.jsonl"
    infile.write_text("\n".join(long_line(f"t{i}", 300) for i in range(3)))
    common = ["--server", server.target]
    assert main(["batch", "submit", str(infile), *common, "--name", "cli"]) == 0
    batch_id = capsys.readouterr().out.strip()
    assert re.fullmatch(r"b-[0-9a-f]{16}", batch_id)
    assert main(["batch", "status", batch_id, *common, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["id"] == batch_id and status["total"] == 3 and status["name"] == "cli"
    assert main(["batch", "cancel", batch_id, *common]) == 0
    assert capsys.readouterr().out.startswith(f"{batch_id}  cancelled")
    assert main(["batch", "status", *common]) == 0  # every batch, one line each
    assert capsys.readouterr().out.startswith(f"{batch_id}  cancelled  3/3")
    assert main(["batch", "status", "b-0000000000000000", *common]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"batch_rows": 0}, "server.batch_rows must be positive"),
        ({"batch_max_lines": 0}, "server.batch_max_lines must be positive"),
        ({"max_batches": -1}, "server.max_batches must be positive"),
        ({"batch_idle_seconds": -0.1}, "server.batch_idle_seconds must be >= 0"),
    ],
)
def test_batch_settings_are_checked(setting, message):
    with pytest.raises(ValueError, match=message):
        ServerConfig(**setting)


def test_async_client_has_the_same_batch_methods(server):
    from mmntp.client import AsyncClient

    async def main():
        async with AsyncClient(server.target, timeout=60) as client:
            job = await client.submit_batch([forecast("a"), forecast("b")], name="async")
            assert (await client.get_batch(job.id)).total == 2
            assert [b.id for b in await client.list_batches()] == [job.id]
            while not (await client.get_batch(job.id)).ended:
                await asyncio.sleep(0.05)
            ids = sorted([r.custom_id async for r in client.batch_results(job.id)])
            assert ids == ["a", "b"]
            assert (await client.cancel_batch(job.id)).status == "completed"
            with pytest.raises(ClientError) as err:
                await client.get_batch("b-0000000000000000")
            assert err.value.code == grpc.StatusCode.NOT_FOUND

    asyncio.run(main())
