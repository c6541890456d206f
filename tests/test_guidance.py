"""Classifier-free guidance in the engine: a guided request runs beside its unconditional
shadow row, and every step samples from their mixed logits — exactly as the reference loop
does with two caches."""

import random

import pytest
import torch

from mmntp.api import SamplingParams
from mmntp.engine import Engine, EngineConfig, Request, codes_plan, free_plan
from mmntp.engine.kv_cache import KVCacheManager
from mmntp.engine.request import shadow_of
from mmntp.engine.scheduler import Scheduler, SchedulerConfig
from mmntp.model.config import preset
from mmntp.model.reference import generate_reference
from mmntp.model.transformer import Transformer

VOCAB = 300


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Transformer(preset("test", VOCAB)).eval()


def _engine(model, **overrides):
    settings = dict(block_size=4, kv_cache_bytes=1 << 20, max_num_batched_tokens=64)
    return Engine(model, EngineConfig(**{**settings, **overrides}))


def _cases(n=8, seed=0):
    """(prompt, uncond prompt, guidance scale, max tokens): conditions of varied lengths."""
    rng = random.Random(seed)
    cases = []
    for i in range(n):
        null = [1, 7]  # a shared "no condition" prefix, like <bos> <begin_image>
        cond = [1] + [rng.randrange(8, VOCAB) for _ in range(rng.randrange(1, 40))] + [7]
        cases.append((cond, null, [3.0, 1.5, 0.5, 4.0][i % 4], 3 + i % 6))
    return cases


@pytest.mark.parametrize("chunk", [1, 7, 64])
@pytest.mark.parametrize("prefix_caching", [True, False])
def test_guided_requests_equal_the_reference_loop(model, chunk, prefix_caching):
    engine = _engine(model, max_prefill_chunk=chunk, enable_prefix_caching=prefix_caching)
    cases = _cases()
    requests = []
    for i, (cond, null, scale, n) in enumerate(cases):
        params = SamplingParams(temperature=1.0, top_k=20, seed=i, guidance_scale=scale)
        requests.append(Request(f"g{i}", cond, free_plan(n), params, uncond_prompt_ids=null))
    plain = Request("plain", [5, 6, 7, 8], free_plan(6), SamplingParams(temperature=0))
    pending, step = [*requests[:4], plain, *requests[4:]], 0
    while pending or engine.has_unfinished():
        if pending and step % 2 == 0:  # arrivals spread over the run
            engine.add_request(pending.pop(0))
        engine.step()
        step += 1
    for req, (cond, null, _, n) in zip(requests, cases):
        ref = generate_reference(model, cond, n, req.params, uncond_prompt=null)
        assert req.output_ids == ref.token_ids[0], req.request_id
        torch.testing.assert_close(req.output_logprobs, ref.logprobs[0], atol=1e-4, rtol=0)
    assert plain.output_ids == generate_reference(model, [5, 6, 7, 8], 6, plain.params).token_ids[0]
    assert engine.kv.usage == 0.0 and not engine.has_unfinished()


def test_scale_one_is_conditional_and_scale_zero_unconditional(model):
    cond, null = [1, 40, 41, 42], [1, 9]  # this random model repeats the last id
    greedy = SamplingParams(temperature=0)
    alone = {
        name: Request(name, prompt, free_plan(8), greedy)
        for name, prompt in (("cond", cond), ("null", null))
    }
    _engine(model).run_to_completion(list(alone.values()))

    def guided(name, scale):
        params = SamplingParams(temperature=0, guidance_scale=scale)
        return Request(name, cond, free_plan(8), params, uncond_prompt_ids=null)

    done = _engine(model).run_to_completion([guided("one", 1.0), guided("zero", 0.0)])
    assert done["one"].output_ids == alone["cond"].output_ids
    assert done["zero"].output_ids == alone["null"].output_ids  # only the shadow's logits
    assert alone["cond"].output_ids != alone["null"].output_ids  # so the two tell apart


def test_guided_pair_streams_one_output_and_frees_both_rows_on_abort(model):
    engine = _engine(model)
    params = SamplingParams(guidance_scale=2.0, seed=0)
    req = Request("g", list(range(1, 30)), free_plan(40), params, uncond_prompt_ids=[1, 2])
    engine.add_request(req)
    outputs = engine.step() + engine.step()
    assert {o.request_id for o in outputs} == {"g"}  # the shadow row is internal
    assert engine.kv.num_blocks_of("g") > 0 and engine.kv.num_blocks_of("g#uncond") > 0
    assert engine.abort("g")
    (last,) = engine.step()
    assert last.finished and last.finish_reason == "abort"
    assert engine.kv.usage == 0.0 and not engine.has_unfinished()


def test_preempted_guided_request_still_matches_the_reference(model):
    # A cache too small for everything at once: pairs get preempted and recompute.
    engine = _engine(model, kv_cache_bytes=_blocks_bytes(model, 24), max_num_batched_tokens=32)
    cases = _cases(6, seed=2)
    requests = [
        Request(
            f"g{i}",
            cond,
            free_plan(n + 6),
            SamplingParams(temperature=0, guidance_scale=scale),
            uncond_prompt_ids=null,
        )
        for i, (cond, null, scale, n) in enumerate(cases)
    ]
    engine.run_to_completion(requests)
    assert engine.stats.num_preemptions > 0
    for req, (cond, null, _, n) in zip(requests, cases):
        ref = generate_reference(model, cond, n + 6, req.params, uncond_prompt=null)
        assert req.output_ids == ref.token_ids[0], req.request_id


def test_constrained_guided_plan_stays_in_its_span(model):
    plan = codes_plan(12, [(100, 164)], "image")
    params = SamplingParams(temperature=1.0, seed=3, guidance_scale=3.0)
    req = Request("img", [1, 50, 51, 6], plan, params, uncond_prompt_ids=[1, 6])
    _engine(model).run_to_completion([req])
    assert len(req.output_ids) == 12 and all(100 <= t < 164 for t in req.output_ids)
    ref = generate_reference(
        model, [1, 50, 51, 6], 12, params, uncond_prompt=[1, 6], allowed=_span_mask(100, 164)
    )
    assert req.output_ids == ref.token_ids[0]


def test_guidance_errors_name_the_field(model):
    with pytest.raises(ValueError, match="uncond_prompt_ids: the unconditional prompt is empty"):
        Request("x", [1, 2], free_plan(2), uncond_prompt_ids=[])
    with pytest.raises(ValueError, match="uncond_prompt_ids must lie in"):
        _engine(model).add_request(
            Request("x", [1, 2], free_plan(2), uncond_prompt_ids=[VOCAB + 5])
        )
    with pytest.raises(ValueError, match="max_num_batched_tokens >= 2"):
        engine = _engine(model, max_num_batched_tokens=1, max_prefill_chunk=1)
        engine.add_request(Request("x", [1, 2], free_plan(2), uncond_prompt_ids=[1]))


# -- the scheduler alone (no tensors) ---------------------------------------------------


def test_a_guided_pair_always_samples_in_the_same_step():
    config = SchedulerConfig(max_num_batched_tokens=10, max_prefill_chunk=4)
    sched = Scheduler(config, KVCacheManager(64, 4))
    req = Request("g", list(range(1, 24)), free_plan(5), uncond_prompt_ids=[1, 2, 3])
    shadow_of(req)
    sched.add_request(req)
    other = Request("o", list(range(1, 12)), free_plan(5))
    sched.add_request(other)
    for _ in range(40):
        if not sched.has_unfinished():
            break
        out = sched.schedule()
        samples = {s.request.request_id for s in out.scheduled if s.samples}
        assert ("g" in samples) == ("g#uncond" in samples)
        assert out.num_batched_tokens <= config.max_num_batched_tokens
        sched.update(out, {rid: (9, 0.0) for rid in samples})
    assert not sched.has_unfinished()
    assert req.output_ids == req.partner.output_ids == [9] * 5


def _blocks_bytes(model, n_blocks: int, block_size: int = 4) -> int:
    cfg = model.config
    return n_blocks * 2 * cfg.n_layers * block_size * cfg.n_kv_heads * cfg.head_dim * 4


def _span_mask(lo: int, hi: int) -> torch.Tensor:
    mask = torch.zeros(VOCAB, dtype=torch.bool)
    mask[lo:hi] = True
    return mask
