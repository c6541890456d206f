"""One per-step interface for every head: the runner's one path serves token, frame and
latent rows, guided and not, in the same step, each head called once with its rows."""

import pytest
import torch
from test_heads import _perturb, one_thread  # noqa: F401 - one_thread is autouse

from mmntp.api import SamplingParams
from mmntp.engine import Engine, EngineConfig, Request, continuous_plan, frames_plan, free_plan
from mmntp.model.config import preset
from mmntp.model.guidance import guidance_scale
from mmntp.model.heads import (
    DenoiserConfig,
    FlowHead,
    FlowHeadConfig,
    FrameHead,
    FrameHeadConfig,
    OutputHead,
    head_from_spec,
    register_head,
)
from mmntp.model.transformer import Transformer

SPANS = [[100, 116], [116, 132], [132, 148]]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = Transformer(preset("test", 300, continuous_inputs={"image": 4}))
    flow = FlowHead(FlowHeadConfig(DenoiserConfig(4, m.config.dim, 16, 2, above=2), 3))
    register_head(m, _perturb(flow, 1), "flow")
    register_head(m, FrameHead(FrameHeadConfig(m.config.dim, SPANS, hidden=32, depth=1)), "frame")
    return m.eval()


def _requests():
    """A token, a frame and a flow request, each once guided and once not."""
    reqs = []
    for k, scale in enumerate((None, 2.0)):
        null = [1, 2] if scale else None
        for name, plan in (
            ("token", free_plan(4)),
            ("frame", frames_plan(4, SPANS, "audio", "frame")),
            ("flow", continuous_plan(4, "flow", 0, "image")),
        ):
            params = SamplingParams(seed=10 * k + len(name), top_k=8, guidance_scale=scale)
            prompt = [1, 30 + k, 40 + len(name), 7]  # one length: every step serves all six
            reqs.append(Request(f"{name}{k}", prompt, plan, params, uncond_prompt_ids=null))
    return reqs


def _engine(model):
    return Engine(model, EngineConfig(block_size=4, kv_cache_bytes=1 << 20))


def test_every_head_implements_the_step_interface(model):
    assert all(isinstance(head, OutputHead) for head in model.heads.values())


def test_one_step_serves_token_frame_and_latent_rows_together(model, monkeypatch):
    calls = []
    for name in ("token", "frame", "flow"):
        head = model.heads[name]

        def spy(rows, name=name, step=head.step):
            g = rows.guidance.rows if rows.guidance is not None else []
            guided = [rows.requests[k].request_id for k in g]
            calls.append((name, [r.request_id for r in rows.requests], guided))
            return step(rows)

        monkeypatch.setattr(head, "step", spy)
    together = _engine(model)
    done = together.run_to_completion(_requests())
    assert together.stats.steps == 4  # six requests, four steps: all in every step
    expected = [
        (name, [f"{name}0", f"{name}1"], [f"{name}1"]) for name in ("token", "frame", "flow")
    ]
    assert sorted(calls) == sorted(expected * 4)  # each head once a step, its rows only
    # Each output is the one the request gets alone (its seed, not its batch).
    for req in _requests():
        alone = _engine(model).run_to_completion([req])[req.request_id]
        ours = done[req.request_id]
        assert ours.output_ids == alone.output_ids, req.request_id
        assert len(ours.output_ids) == (12 if req.plan.frame_head else 4)
        for step, vec in alone.output_vectors.items():
            torch.testing.assert_close(ours.output_vectors[step], vec, atol=1e-4, rtol=1e-4)
        assert len(ours.output_vectors) == (4 if req.plan.continuous else 0)


def test_guidance_left_unset_is_no_guidance_and_heads_keep_no_default():
    assert guidance_scale(None) == 1.0 and guidance_scale(2.5) == 2.5
    config = FlowHeadConfig(DenoiserConfig(4, 8))
    assert not hasattr(config, "guidance_scale")
    # A stored config from before (the bundled model's holds guidance_scale 1.0) loads.
    stored = {"denoiser": {"width": 4, "cond_dim": 8}, "num_steps": 5, "guidance_scale": 1.0}
    head = head_from_spec({"type": "diffusion", "config": stored})
    assert head.config.num_steps == 5 and "guidance_scale" not in head.spec()["config"]
