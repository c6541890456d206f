"""Multi-token frame heads: one forward emits a whole frame, sampled jointly; the engine's
frames equal a full-forward reference loop, arrive with the prefill step, and follow the
seed only."""

import random

import pytest
import torch

from mmntp.api import SamplingParams
from mmntp.engine import Engine, EngineConfig, Request, frames_plan
from mmntp.model.checkpoint import load_model, save_model
from mmntp.model.config import preset
from mmntp.model.heads import FrameHead, FrameHeadConfig, frame_starts, register_head
from mmntp.model.transformer import Transformer
from mmntp.model.vocab import VocabLayout

VOCAB = 320
SPANS = [[100, 116], [116, 132], [132, 148]]  # three "levels" of 16 codes
BEGIN = 7


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = Transformer(preset("test", VOCAB)).eval()
    register_head(m, FrameHead(FrameHeadConfig(m.config.dim, SPANS, hidden=32, depth=1)), "frame")
    return m


def _engine(model, **overrides):
    settings = dict(block_size=4, kv_cache_bytes=1 << 20, max_num_batched_tokens=64)
    return Engine(model, EngineConfig(**{**settings, **overrides}))


def _argmax_pick(local, step):
    ids = local.argmax(-1) + SPANS[step][0]
    return ids, torch.log_softmax(local.float(), -1).max(-1).values


def _reference(model, prompt, frames, uncond=None, scale=1.0):
    """Greedy frames by full forwards over the whole sequence so far (no cache)."""
    ids, null = list(prompt), list(uncond) if uncond else None
    head = model.heads["frame"]
    with torch.no_grad():
        for _ in range(frames):
            h = model.hidden_states(torch.tensor([ids]))[0, -1:]
            hu = model.hidden_states(torch.tensor([null]))[0, -1:] if null else None
            scales = torch.tensor([scale]) if null else None
            frame, _ = head.sample(h, _argmax_pick, hu, scales)
            ids += frame[0].tolist()
            if null:
                null += frame[0].tolist()
    return ids[len(prompt) :]


@pytest.mark.parametrize("chunk", [1, 7, 64])
@pytest.mark.parametrize("prefix_caching", [True, False])
def test_engine_frames_equal_the_reference_loop(model, chunk, prefix_caching):
    rng = random.Random(chunk)
    engine = _engine(model, max_prefill_chunk=chunk, enable_prefix_caching=prefix_caching)
    cases = []
    for i in range(8):
        prompt = [1] + [rng.randrange(8, 100) for _ in range(rng.randrange(1, 30))] + [BEGIN]
        cases.append((prompt, 2 + i % 4))
    requests = [
        Request(f"r{i}", p, frames_plan(n, SPANS, "audio", "frame"), SamplingParams(temperature=0))
        for i, (p, n) in enumerate(cases)
    ]
    pending, step = list(requests), 0
    while pending or engine.has_unfinished():
        if pending and step % 2 == 0:
            engine.add_request(pending.pop(0))
        engine.step()
        step += 1
    for req, (prompt, n) in zip(requests, cases):
        assert req.finish_reason == "length"
        assert req.output_ids == _reference(model, prompt, n)


def test_guided_frames_equal_the_reference_and_scale_one_is_unguided(model):
    prompt, null = [1, 20, 30, 40, BEGIN], [1, BEGIN]
    outs = {}
    for scale in (3.0, 1.0):
        engine = _engine(model)
        params = SamplingParams(temperature=0, guidance_scale=scale)
        plan = frames_plan(4, SPANS, "audio", "frame")
        req = Request("g", prompt, plan, params, uncond_prompt_ids=null)
        engine.run_to_completion([req])
        assert req.output_ids == _reference(model, prompt, 4, null, scale)
        outs[scale] = req.output_ids
    assert outs[1.0] == _reference(model, prompt, 4)


def test_the_first_frame_comes_with_the_prefill_step(model):
    engine = _engine(model)
    req = Request("a", [1, 9, 9, BEGIN], frames_plan(5, SPANS, "audio", "frame"))
    engine.add_request(req)
    (out,) = engine.step()
    assert len(out.new_token_ids) == len(SPANS) and not out.finished
    for step, token in enumerate(out.new_token_ids):
        assert SPANS[step][0] <= token < SPANS[step][1]
    steps = 1
    while engine.has_unfinished():
        engine.step()
        steps += 1
    assert steps == 5 and len(req.output_ids) == 15  # one forward per frame


def test_flattened_plan_without_the_head_takes_a_forward_per_token(model):
    engine = _engine(model)
    req = Request("flat", [1, 9, BEGIN], frames_plan(2, SPANS, "audio"))
    engine.add_request(req)
    steps = 0
    while engine.has_unfinished():
        engine.step()
        steps += 1
    assert steps == 6
    for k, token in enumerate(req.output_ids):
        assert SPANS[k % 3][0] <= token < SPANS[k % 3][1]


def test_sampled_frames_follow_the_seed_not_the_batch(model):
    plan = frames_plan(6, SPANS, "audio", "frame")
    params = SamplingParams(temperature=1.0, top_k=8, seed=1234)
    alone = _engine(model)
    a = Request("x", [1, 50, BEGIN], plan, params)
    alone.run_to_completion([a])
    crowd = _engine(model)
    others = [
        Request(f"o{i}", [1, 60 + i, BEGIN], plan, SamplingParams(temperature=1.0, seed=i))
        for i in range(6)
    ]
    b = Request("x", [1, 50, BEGIN], plan, params)
    crowd.run_to_completion([*others[:3], b, *others[3:]])
    assert a.output_ids == b.output_ids


def test_a_trained_head_samples_frames_jointly():
    """Frames are (a, a + 16, a + 32): only the depth conditioning can get them right."""
    torch.manual_seed(0)
    head = FrameHead(FrameHeadConfig(8, SPANS, hidden=32, depth=1))
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    hidden = torch.zeros(256, 8)  # no information in the condition: the joint is all
    for _ in range(300):
        a = torch.randint(0, 16, (256,))
        targets = torch.stack([a + 100, a + 116, a + 132], 1)
        loss = head.loss(hidden, targets) / 256
        opt.zero_grad()
        loss.backward()
        opt.step()
    gen = torch.Generator().manual_seed(0)

    def pick(local, step):
        probs = torch.softmax(local, -1)
        ids = torch.multinomial(probs, 1, generator=gen)[:, 0]
        return ids + SPANS[step][0], torch.log(probs.gather(1, ids[:, None]))[:, 0]

    frames, _ = head.sample(torch.zeros(500, 8), pick)
    first = frames[:, 0] - 100
    consistent = (frames[:, 1] - 116 == first) & (frames[:, 2] - 132 == first)
    assert consistent.float().mean() > 0.95
    assert len(first.unique()) >= 12  # and the first token still covers the codes


def test_frame_starts_finds_every_complete_frame():
    ids = torch.tensor(
        [
            [1, BEGIN, 100, 116, 132, 101, 117, 133, 9, 0],
            [1, 5, BEGIN, 102, 118, 134, 103, 119, 0, 0],  # the second frame is cut short
        ]
    )
    rows, positions = frame_starts(ids, BEGIN, 3, SPANS)
    assert rows.tolist() == [0, 0, 1] and positions.tolist() == [1, 4, 2]


def test_frame_head_saves_and_loads(model, tmp_path):
    vocab = VocabLayout.build(text_size=VOCAB - 64)
    vocab = VocabLayout(vocab.specials, vocab.ranges, VOCAB)
    save_model(tmp_path / "m", model, vocab, {})
    loaded = load_model(tmp_path / "m").model
    h = torch.randn(3, model.config.dim)
    a, _ = model.heads["frame"].sample(h, _argmax_pick)
    b, _ = loaded.heads["frame"].sample(h, _argmax_pick)
    assert torch.equal(a, b)


def test_bad_frame_head_configs_name_the_field():
    with pytest.raises(ValueError, match="spans"):
        FrameHeadConfig(8, [])
    with pytest.raises(ValueError, match="hidden"):
        FrameHeadConfig(8, SPANS, hidden=0)
    with pytest.raises(ValueError, match="whole number of frames"):
        from mmntp.engine import SegmentPlan

        SegmentPlan(5, cycle=(((100, 116),), ((116, 132),)), frame_head="frame")
