"""Engine equivalences: continuous batching reproduces the reference loop exactly."""

import asyncio
import random

import pytest
import torch
from torch import nn

from mmntp.api import SamplingParams
from mmntp.engine import (
    AsyncEngine,
    Engine,
    EngineConfig,
    PromptVector,
    QueueFullError,
    Request,
    codes_plan,
    continuous_plan,
    free_plan,
)
from mmntp.model.config import preset
from mmntp.model.reference import generate_reference
from mmntp.model.sampling import make_generator
from mmntp.model.transformer import ContinuousInput, Transformer

VOCAB = 300
GREEDY = SamplingParams(temperature=0)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Transformer(preset("test", VOCAB, continuous_inputs={"audio": 8})).eval()


def _engine(model, **overrides):
    settings = dict(block_size=4, kv_cache_bytes=1 << 20, max_num_batched_tokens=96)
    return Engine(model, EngineConfig(**{**settings, **overrides}))


def _prompts(n=16, seed=0):
    rng = random.Random(seed)
    shared = [rng.randrange(VOCAB) for _ in range(24)]  # a common prefix for some requests
    prompts = []
    for i in range(n):
        length = rng.randrange(1, 60)
        own = [rng.randrange(VOCAB) for _ in range(length)]
        prompts.append(shared[: rng.randrange(4, 24)] + own if i % 3 == 0 else own)
    return prompts


@pytest.mark.parametrize("chunk", [1, 7, 64])
@pytest.mark.parametrize("prefix_caching", [True, False])
def test_staggered_requests_equal_reference_greedy(model, chunk, prefix_caching):
    engine = _engine(model, max_prefill_chunk=chunk, enable_prefix_caching=prefix_caching)
    prompts = _prompts()
    max_tokens = [4 + (i * 5) % 13 for i in range(len(prompts))]
    requests = [
        Request(f"r{i}", p, free_plan(m), GREEDY)
        for i, (p, m) in enumerate(zip(prompts, max_tokens))
    ]
    pending = list(requests)
    step = 0
    while pending or engine.has_unfinished():
        # requests arrive at different times: one or two every other step
        if pending and step % 2 == 0:
            for _ in range(1 + step % 3):
                if pending:
                    engine.add_request(pending.pop(0))
        engine.step()
        step += 1
    for req, prompt, m in zip(requests, prompts, max_tokens):
        expected = generate_reference(model, prompt, m, GREEDY).token_ids[0]
        assert req.output_ids == expected, req.request_id
        assert req.finish_reason == "length"
    if prefix_caching:
        assert engine.kv.prefix_cache_hit_rate > 0
    assert engine.kv.usage == 0.0  # everything freed at the end


def test_sampled_output_depends_on_seed_only(model):
    params = SamplingParams(temperature=1.0, top_k=40, top_p=0.9, seed=1234)
    alone = _engine(model).run_to_completion([Request("x", [5, 6, 7], free_plan(20), params)])["x"]
    engine = _engine(model)
    others = [
        Request(f"o{i}", p, free_plan(15), SamplingParams(temperature=1.0, seed=i))
        for i, p in enumerate(_prompts(12, seed=3))
    ]
    crowd = engine.run_to_completion(
        others[:6] + [Request("x", [5, 6, 7], free_plan(20), params)] + others[6:]
    )
    assert crowd["x"].output_ids == alone.output_ids
    # and the engine draws exactly what the reference loop draws for that seed
    ref = generate_reference(model, [5, 6, 7], 20, params).token_ids[0]
    assert alone.output_ids == ref


def test_abort_frees_every_block(model):
    engine = _engine(model)
    before = engine.kv.usage
    engine.add_request(Request("keep", list(range(30)), free_plan(5), GREEDY))
    engine.add_request(Request("drop", list(range(40, 90)), free_plan(50), GREEDY))
    engine.step()
    engine.step()
    assert engine.kv.num_blocks_of("drop") > 0
    assert engine.abort("drop")
    outputs = engine.step()
    dropped = [o for o in outputs if o.request_id == "drop"]
    assert dropped and dropped[0].finished and dropped[0].finish_reason == "abort"
    while engine.has_unfinished():
        engine.step()
    assert engine.kv.usage == before
    assert not engine.abort("drop")  # already gone


def test_full_queue_rejects_with_distinct_error(model):
    engine = _engine(model, max_waiting_requests=2)
    engine.add_request(Request("a", [1, 2], free_plan(2)))
    engine.add_request(Request("b", [1, 2], free_plan(2)))
    with pytest.raises(QueueFullError):
        engine.add_request(Request("c", [1, 2], free_plan(2)))
    by_tokens = _engine(model, max_waiting_tokens=50)
    by_tokens.add_request(Request("a", list(range(40)), free_plan(2)))
    with pytest.raises(QueueFullError):
        by_tokens.add_request(Request("b", list(range(20)), free_plan(2)))


def test_preempted_requests_complete_correctly(model):
    # 2 KiB of cache = 2 blocks... too small; pick a budget that holds ~2 long requests
    per_block = 2 * 2 * 4 * 2 * 16 * 4  # K+V, layers, block, kv heads, head dim, fp32
    engine = _engine(model, kv_cache_bytes=per_block * 24, max_num_batched_tokens=64)
    prompts = [list(range(i, i + 30)) for i in range(0, 120, 30)]
    requests = [Request(f"p{i}", p, free_plan(24), GREEDY) for i, p in enumerate(prompts)]
    engine.run_to_completion(requests)
    assert engine.stats.num_preemptions > 0
    assert any(r.num_preemptions for r in requests)
    for r, p in zip(requests, prompts):
        assert r.output_ids == generate_reference(model, p, 24, GREEDY).token_ids[0]


def test_bad_requests_name_the_field(model):
    engine = _engine(model)
    with pytest.raises(ValueError, match=r"prompt_ids must lie in \[0, 300\)"):
        engine.add_request(Request("a", [1, 999], free_plan(2)))
    with pytest.raises(ValueError, match="prompt_ids: the prompt is empty"):
        Request("a", [], free_plan(2))
    with pytest.raises(ValueError, match="max_tokens must be a positive integer"):
        free_plan(0)
    with pytest.raises(ValueError, match="exceeds the model's max_seq_len"):
        engine.add_request(Request("a", [1] * 500, free_plan(100)))
    with pytest.raises(ValueError, match=r"prompt_vectors\[0\].position 9 is outside"):
        Request(
            "a", [1, 2], free_plan(2), prompt_vectors=[PromptVector(9, "audio", torch.zeros(8))]
        )
    engine.add_request(Request("dup", [1], free_plan(2)))
    with pytest.raises(ValueError, match="already in flight"):
        engine.add_request(Request("dup", [1], free_plan(2)))


def test_deadline_aborts_within_a_step(model):
    import time

    engine = _engine(model)
    engine.add_request(
        Request("late", [1, 2, 3], free_plan(200), GREEDY, deadline=time.monotonic() + 3600)
    )
    engine.add_request(
        Request("now", [1, 2, 3], free_plan(200), GREEDY, deadline=time.monotonic() - 1)
    )
    outputs = {o.request_id: o for o in engine.step()}
    assert outputs["now"].finished and outputs["now"].finish_reason == "deadline"
    assert engine.kv.num_blocks_of("now") == 0
    assert not outputs["late"].finished


class FakeHead(nn.Module):
    """A deterministic 'flow head': a projection of the hidden state plus seeded noise."""

    def __init__(self, dim, width):
        super().__init__()
        self.proj = nn.Linear(dim, width)

    def sample(self, hidden, generators, requests):
        noise = torch.stack([torch.randn(self.proj.out_features, generator=g) for g in generators])
        return self.proj(hidden) + 0.1 * noise


def test_continuous_positions_use_the_head_and_feed_back(model):
    torch.manual_seed(3)
    model.add_head("fake", FakeHead(model.config.dim, 8)) if "fake" not in model.heads else None
    prompt = [1, 2, 3, 4, 5]
    vec = torch.randn(8)
    placeholder = 0
    req = Request(
        "c",
        prompt,
        continuous_plan(3, "fake", placeholder, "audio"),
        SamplingParams(seed=9),
        prompt_vectors=[PromptVector(2, "audio", vec)],
    )
    _engine(model, max_prefill_chunk=2).run_to_completion([req])
    assert req.output_ids == [placeholder] * 3 and len(req.output_vectors) == 3
    # recompute by hand with full forwards: each vector fed back as input
    gen = torch.Generator().manual_seed(9)
    ids, mask_pos, values = list(prompt), [2], [vec]
    with torch.no_grad():
        for step in range(3):
            mask = torch.zeros(1, len(ids), dtype=torch.bool)
            mask[0, mask_pos] = True
            hidden = model.hidden_states(
                torch.tensor([ids]),
                continuous=[ContinuousInput("audio", mask, torch.stack(values))],
            )[0, -1:]
            expected = model.heads["fake"].sample(hidden, [gen], [req])[0]
            torch.testing.assert_close(req.output_vectors[step], expected, atol=1e-5, rtol=1e-5)
            mask_pos.append(len(ids))
            values.append(expected)
            ids.append(placeholder)


def test_async_engine_streams_merges_and_aborts_on_cancel(model):
    async def main():
        engine = AsyncEngine(_engine(model))
        # streaming equals the one-shot result
        deltas = []
        async for out in engine.generate(Request("s", [4, 5, 6], free_plan(12), GREEDY)):
            deltas.extend(out.new_token_ids)
        assert deltas == generate_reference(model, [4, 5, 6], 12, GREEDY).token_ids[0]
        # a slow consumer receives merged deltas, nothing lost
        slow, chunks = [], 0
        async for out in engine.generate(Request("slow", [7, 8], free_plan(30), GREEDY)):
            slow.extend(out.new_token_ids)
            chunks += 1
            await asyncio.sleep(0.05)
        assert slow == generate_reference(model, [7, 8], 30, GREEDY).token_ids[0]
        assert chunks < 30
        # cancelling the consumer aborts the request and frees its blocks
        before = engine.engine.kv.usage

        async def consume():
            async for _ in engine.generate(
                Request("gone", list(range(50)), free_plan(400), GREEDY)
            ):
                pass

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(100):
            await asyncio.sleep(0.01)
            if not engine.engine.has_unfinished():
                break
        assert engine.engine.kv.usage == before
        # intake errors surface on iteration
        with pytest.raises(ValueError, match="prompt_ids must lie"):
            async for _ in engine.generate(Request("bad", [10**6], free_plan(2))):
                pass
        summary = engine.stats.summary()
        assert summary["time_to_first_token_p50"] > 0 and summary["num_finished"] >= 3
        await engine.stop()

    asyncio.run(main())


def test_codebook_plan_cycles_through_ranges(model):
    """A two-codebook frame plan alternates between the codebooks' id ranges."""
    from mmntp.engine import codes_plan

    plan = codes_plan(10, [(100, 150), (200, 230)], "audio")
    req = Request("frames", [1, 2, 3], plan, SamplingParams(seed=4))
    _engine(model).run_to_completion([req])
    assert len(req.output_ids) == 10 and req.finish_reason == "length"
    for k, tok in enumerate(req.output_ids):
        assert (100 <= tok < 150) if k % 2 == 0 else (200 <= tok < 230)


def test_priority_runs_first_under_a_tight_budget(model):
    engine = _engine(model, max_num_seqs=1)
    engine.add_request(Request("low", [1, 2], free_plan(3), GREEDY, priority=5))
    engine.add_request(Request("high", [3, 4], free_plan(3), GREEDY, priority=0))
    order = []
    while engine.has_unfinished():
        order += [o.request_id for o in engine.step() if o.finished]
    assert order == ["high", "low"]


def test_kv_slots_slice_consecutive_blocks_and_list_fragmented_ones():
    from mmntp.engine.runner import _slot_matrix, _slots

    # blocks 3, 4 (consecutive) with block size 4: positions 2..6 sit in slots 14..18
    assert _slots([3, 4], 2, 7, 4) == slice(14, 19)
    # fragmented blocks 5, 2: positions 1..6 are slots 21, 22, 23, 8, 9, 10
    fragmented = _slots([5, 2], 1, 7, 4)
    assert fragmented.tolist() == [21, 22, 23, 8, 9, 10]
    # one row per table, padded with block 0 past a short table
    matrix = _slot_matrix([[5, 2], [3]], 7, 4, "cpu")
    assert matrix.tolist() == [[20, 21, 22, 23, 8, 9, 10], [12, 13, 14, 15, 0, 1, 2]]


def test_batch_one_decode_reads_keys_in_place_and_equals_reference(model):
    """A lone request's consecutive blocks are sliced (no gather, no mask); the result
    still equals the reference loop token for token."""
    from mmntp.engine import runner

    seen = []
    original = runner.PagedAttention._decode

    def spy(d, q, kc, vc):
        seen.append(isinstance(d.key_slots, slice) and d.mask is None)
        return original(d, q, kc, vc)

    runner.PagedAttention._decode = staticmethod(spy)
    try:
        engine = _engine(model)
        req = Request("solo", list(range(1, 30)), free_plan(12), GREEDY)
        engine.run_to_completion([req])
    finally:
        runner.PagedAttention._decode = staticmethod(original)
    assert seen and all(seen)
    assert req.output_ids == generate_reference(model, list(range(1, 30)), 12, GREEDY).token_ids[0]


def test_concurrent_requests_keep_consecutive_blocks_and_attend_in_place(model):
    """Requests growing side by side each get an extent, so every long decode row reads its
    keys as one slice of the store (no gather); outputs still equal the reference loop."""
    from mmntp.engine import runner

    seen = []
    original = runner.PagedAttention._decode

    def spy(d, q, kc, vc):
        if not isinstance(d.rows, torch.Tensor):  # a row attending over its own slots
            seen.append(isinstance(d.key_slots, slice))
        return original(d, q, kc, vc)

    runner.PagedAttention._decode = staticmethod(spy)
    rng = random.Random(5)
    prompts = [[rng.randrange(VOCAB) for _ in range(n)] for n in (70, 66, 81, 75)]
    try:
        engine = _engine(model, enable_prefix_caching=False)
        reqs = [Request(f"grow-{i}", p, free_plan(20), GREEDY) for i, p in enumerate(prompts)]
        engine.run_to_completion(reqs)
    finally:
        runner.PagedAttention._decode = staticmethod(original)
    assert len(seen) >= 4 * 19 * model.config.n_layers and all(seen)
    for req, prompt in zip(reqs, prompts):
        assert req.output_ids == generate_reference(model, prompt, 20, GREEDY).token_ids[0]


def test_same_length_rows_attend_as_one_batch_and_keep_their_seeded_tokens(model):
    """Sample paths of one shared prompt (prefix-cached, so fragmented slots) plus other
    prompts of the same length: rows of equal length attend in one gathered batch, and
    each seeded request still draws what it draws alone and what the reference draws."""
    from mmntp.engine import runner

    batched = []
    original = runner.PagedAttention._decode

    def spy(d, q, kc, vc):
        if not isinstance(d.key_slots, slice) and d.key_slots.dim() == 2 and d.mask is None:
            batched.append(d.key_slots.shape[0])
        return original(d, q, kc, vc)

    rng = random.Random(9)
    shared = [rng.randrange(VOCAB) for _ in range(70)]
    prompts = [shared] * 4 + [[rng.randrange(VOCAB) for _ in range(70)] for _ in range(2)]
    params = [SamplingParams(temperature=1.0, top_k=20, seed=i) for i in range(len(prompts))]

    def make():
        return [Request(f"r{i}", p, free_plan(10), params[i]) for i, p in enumerate(prompts)]

    runner.PagedAttention._decode = staticmethod(spy)
    try:
        crowd = _engine(model).run_to_completion(make())
    finally:
        runner.PagedAttention._decode = staticmethod(original)
    assert batched and min(batched) >= 2  # groups of several rows (prefills split them)
    for req in make():
        alone = _engine(model).run_to_completion([req])[req.request_id]
        assert crowd[req.request_id].output_ids == alone.output_ids
        ref = generate_reference(model, req.prompt_ids, 10, req.params).token_ids[0]
        assert alone.output_ids == ref


def _run_both(model, make_requests, every=1):
    """The same requests through an eager engine and a compile_decode one -> both dicts,
    (gave a row, read its keys by gather) per compiled call, and the compiled engine's
    step count."""
    from mmntp.engine import compiled_decode

    results, compiled_steps = [], []
    for compile_decode in (False, True):
        engine = _engine(model, compile_decode=compile_decode)
        if compile_decode:
            original = engine.runner.compiled.run

            def spy(*args, original=original, **kwargs):
                row = original(*args, **kwargs)
                gathered = isinstance(args[4], torch.Tensor)  # keys after a prefix hit
                compiled_steps.append((isinstance(row, compiled_decode.CompiledRow), gathered))
                return row

            engine.runner.compiled.run = spy
        requests, step = make_requests(), 0
        pending = list(requests)
        while pending or engine.has_unfinished():
            if pending and step % every == 0:
                engine.add_request(pending.pop(0))
            engine.step()
            step += 1
        results.append({r.request_id: r for r in requests})
        assert engine.kv.usage == 0.0
    return results[0], results[1], compiled_steps, engine.stats.steps


def test_compile_decode_equals_the_eager_engine(model):
    """compile_decode runs one-row decode steps through torch.compile: the same tokens as
    the eager engine for greedy, penalised and seeded sampled requests (staggered, so steps
    alternate between one row, compiled, and several, eager; some prompts share a cached
    prefix, so their keys are gathered), logprobs to float rounding."""

    def requests():
        prompts = _prompts(6, seed=5)
        penalised = SamplingParams(temperature=0, repetition_penalty=1.3)
        sampled = SamplingParams(temperature=1.0, top_k=40, seed=77)
        return [
            Request(f"g{i}", p, free_plan(9), [GREEDY, penalised, sampled][i % 3])
            for i, p in enumerate(prompts)
        ]

    eager, compiled, steps, total = _run_both(model, requests, every=8)
    assert all(ok for ok, _ in steps) and len(steps) >= 10
    assert len(steps) < total  # compiled one-row steps, eager others
    assert any(g for _, g in steps) and not all(g for _, g in steps)  # runs and gathers
    for rid, req in eager.items():
        assert compiled[rid].output_ids == req.output_ids, rid
        torch.testing.assert_close(
            torch.tensor(compiled[rid].output_logprobs),
            torch.tensor(req.output_logprobs),
            atol=1e-4,
            rtol=1e-4,
        )
    solo = compiled["g0"]  # and greedy alone still equals the reference loop
    ref = generate_reference(model, _prompts(6, seed=5)[0], 9, GREEDY).token_ids[0]
    assert solo.output_ids == ref


def test_compile_decode_continuous_rows_and_stale_weights(model):
    """A continuous row's hidden state comes from the compiled trunk (its token logits
    unused; vectors equal the eager engine's to float rounding); once a weight is replaced
    the compiled path steps aside and the engine still answers as the eager one."""
    if "fake" not in model.heads:
        model.add_head("fake", FakeHead(model.config.dim, 8))

    def requests():
        vec = torch.linspace(-1, 1, 8)
        return [
            Request(
                "c",
                [1, 2, 3, 4, 5],
                continuous_plan(4, "fake", 0, "audio"),
                SamplingParams(seed=9),
                prompt_vectors=[PromptVector(2, "audio", vec)],
            )
        ]

    eager, compiled, steps, _ = _run_both(model, requests)
    assert len(steps) >= 2 and all(ok for ok, _ in steps)
    for a, b in zip(eager["c"].output_vectors.values(), compiled["c"].output_vectors.values()):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)

    copy = Transformer(model.config).eval()
    copy.load_state_dict(model.state_dict(), strict=False)  # not the fake head
    engine = _engine(copy, compile_decode=True)
    norm = copy.layers[0].mlp_norm
    norm.weight = nn.Parameter(norm.weight.detach() * 1.5)  # the FlatTrunk is stale now
    prompt = list(range(3, 20))
    req = Request("s", prompt, free_plan(6), GREEDY)
    engine.run_to_completion([req])
    assert req.output_ids == generate_reference(copy, prompt, 6, GREEDY).token_ids[0]


def test_compile_decode_warm_up_and_a_failed_compile(model):
    """warm_up makes every compile happen before any caller's request (afterwards, rows
    reading their keys as a run or gathering them after a prefix hit, token or vector
    rows, recompile nothing) and leaves clean statistics (a no-op without compile_decode);
    a compiler failure turns compile_decode off for good and the step, and every later
    one, runs eagerly with the same tokens."""
    plain = _engine(model)
    plain.warm_up()
    assert plain.stats.steps == 0 and plain.kv.usage == 0.0

    engine = _engine(model, compile_decode=True)
    engine.warm_up()
    assert engine.stats.steps == 0 and engine.stats.num_finished == 0
    assert engine.kv.usage == 0.0 and not engine.runner.compiled.failed
    if "fake" not in model.heads:
        model.add_head("fake", FakeHead(model.config.dim, 8))
    shared = list(range(100, 112))  # three full blocks of 4: the second request hits them
    traffic = [
        Request("run", shared + [7, 8, 9], free_plan(5), GREEDY),
        Request("hit", shared + [20, 21], free_plan(9), GREEDY),
        Request("vec", [1, 2, 3, 4, 5], continuous_plan(3, "fake", 0, "audio"), SamplingParams()),
    ]
    with torch._dynamo.config.patch(error_on_recompile=True):  # a recompile would raise
        for req in traffic:
            engine.run_to_completion([req])
    assert not engine.runner.compiled.failed and engine.stats.steps > 10

    def broken(*args):
        raise RuntimeError("no C++ compiler")

    engine.runner.compiled._fn = broken
    prompt = list(range(40, 71))
    req = Request("after", prompt, free_plan(7), GREEDY)
    engine.run_to_completion([req])
    assert engine.runner.compiled.failed
    assert req.output_ids == generate_reference(model, prompt, 7, GREEDY).token_ids[0]


def test_span_constrained_sampling_equals_the_full_vocabulary_draw(monkeypatch):
    """Rows limited to one span (codes_plan) sample over that slice only: the same ids and
    logprobs as the reference loop's full-vocabulary draw with everything else masked."""
    from mmntp.engine.sampler import Sampler

    widths = []
    over_span = Sampler.sample_span
    monkeypatch.setattr(
        Sampler,
        "sample_span",
        lambda self, local, *a: widths.append(local.shape[1]) or over_span(self, local, *a),
    )
    from mmntp.model.sampling import sample_next, token_logprobs

    torch.manual_seed(4)
    lo, hi, vocab = 40, 170, 300
    mask = torch.zeros(vocab, dtype=torch.bool)
    mask[lo:hi] = True
    params = [
        SamplingParams(temperature=0.8, top_k=50, top_p=0.9, seed=1),
        SamplingParams(temperature=1.3, min_p=0.05, seed=2),
        SamplingParams(temperature=0, seed=3),
    ]
    requests = [
        Request(f"s{i}", [1], codes_plan(8, [(lo, hi)], "x"), p) for i, p in enumerate(params)
    ]
    for r in requests:
        r.generator = make_generator(r.params)
    references = [make_generator(p) for p in params]
    sampler = Sampler(vocab)
    for _ in range(8):
        logits = 3 * torch.randn(len(params), vocab)
        ids, lps = sampler.sample(logits, requests)
        for i, (p, gen) in enumerate(zip(params, references)):
            expected = sample_next(logits[i : i + 1], p, gen, allowed=mask)
            assert ids[i].item() == expected.item() and lo <= expected.item() < hi
        torch.testing.assert_close(lps, token_logprobs(logits, ids))
    assert widths == [hi - lo] * 8  # every step drew over the span's slice
