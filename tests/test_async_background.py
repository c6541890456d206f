"""AsyncEngine's side of background work: foreground requests are counted (batch work waits
for `wait_foreground_idle`), and background rows stay parked for `background_delay` after
the last foreground request, then finish with the same tokens as when run alone."""

import asyncio

import pytest
import torch

from mmntp.api import SamplingParams
from mmntp.engine import BACKGROUND_PRIORITY, AsyncEngine, Engine, EngineConfig, Request, free_plan
from mmntp.model.config import preset
from mmntp.model.transformer import Transformer

GREEDY = SamplingParams(temperature=0)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Transformer(preset("test", 300)).eval()


def engine_for(model):
    config = EngineConfig(block_size=4, kv_cache_bytes=1 << 20, max_num_batched_tokens=96)
    return AsyncEngine(Engine(model, config))


async def collect(engine, request):
    ids = []
    async for out in engine.generate(request):
        ids.extend(out.new_token_ids)
    return ids


def background(rid, max_tokens=40):
    return Request(rid, [5, 6, 7], free_plan(max_tokens), GREEDY, priority=BACKGROUND_PRIORITY)


def test_foreground_is_counted_and_idle_is_awaitable(model):
    async def main():
        engine = engine_for(model)
        await asyncio.wait_for(engine.wait_foreground_idle(), 1)  # idle from the start
        task = asyncio.create_task(collect(engine, Request("fg", [1, 2], free_plan(30), GREEDY)))
        await asyncio.sleep(0)
        waiter = asyncio.create_task(engine.wait_foreground_idle())
        while not engine.num_foreground:
            await asyncio.sleep(0)
        assert not waiter.done()
        await task
        await asyncio.wait_for(waiter, 5)
        assert engine.num_foreground == 0
        bg = await collect(engine, background("bg", 4))  # background is never counted
        assert len(bg) == 4 and engine.num_foreground == 0
        await engine.stop()

    asyncio.run(main())


def test_background_rows_wait_out_the_delay_after_foreground_work(model):
    async def main():
        alone_engine = engine_for(model)
        alone = await collect(alone_engine, background("alone"))
        await alone_engine.stop()
        engine = engine_for(model)
        engine.background_delay = 1.5
        await collect(engine, Request("fg", [1, 2], free_plan(3), GREEDY))
        steps = engine.stats.steps
        task = asyncio.create_task(collect(engine, background("bg")))
        await asyncio.sleep(0.2)  # inside the delay: the background row does not step
        assert engine.stats.steps == steps and not task.done()
        assert await asyncio.wait_for(task, 30) == alone  # then it runs, unchanged
        assert engine.stats.steps > steps
        await engine.stop()

    asyncio.run(main())


def test_a_consumer_cancelled_before_intake_is_skipped_not_fatal(model):
    async def main():
        engine = engine_for(model)

        async def consume():
            return await collect(engine, background("gone"))

        task = asyncio.create_task(consume())
        while not engine._adds:  # queued, waiting for intake
            await asyncio.sleep(0)
        task.cancel()  # cancels its `accepted` future now; its finally runs later
        engine._apply_pending()  # what the loop may do in between: must not raise
        with pytest.raises(asyncio.CancelledError):
            await task
        assert engine.engine.scheduler.get("gone") is None and engine.dead is None
        assert len(await collect(engine, background("next", 3))) == 3
        await engine.stop()

    asyncio.run(main())


def test_abort_owner_stops_that_owners_requests_before_the_next_step(model):
    async def main():
        engine = engine_for(model)

        async def run(request):
            ids, reason = [], None
            async for out in engine.generate(request):
                ids.extend(out.new_token_ids)
                reason = out.finish_reason
            return ids, reason

        def owned(rid, owner, max_tokens=40):
            request = background(rid, max_tokens)
            request.owner = owner
            return request

        gone = [asyncio.create_task(run(owned(f"a{i}", "batch:a"))) for i in range(2)]
        kept = asyncio.create_task(run(owned("b0", "batch:b", 12)))
        while engine.stats.steps < 2:
            await asyncio.sleep(0.001)
        queued = asyncio.create_task(run(owned("a2", "batch:a")))
        while not engine._adds:  # queued, not yet taken in: added and aborted in one pass
            await asyncio.sleep(0)
        steps = engine.stats.steps
        assert engine.abort_owner("batch:a") == 3
        assert engine.abort_owner("batch:none") == 0
        for ids, reason in await asyncio.gather(*gone, queued):
            assert reason == "abort" and len(ids) <= steps + 1
        assert (await kept)[1] == "length" and len(kept.result()[0]) == 12
        await engine.stop()

    asyncio.run(main())
