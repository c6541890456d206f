"""Chunked prefill against the reference loop on values, not only ids: each token's
logprob and each continuous vector must match what full forwards give. A wrong causal mask
in a chunk that starts past position 0 changes these values even when the greedy argmax
happens to survive."""

import random

import pytest
import torch
from torch import nn

from mmntp.api import SamplingParams
from mmntp.engine import Engine, EngineConfig, Request, continuous_plan, free_plan
from mmntp.model.config import preset
from mmntp.model.reference import generate_reference
from mmntp.model.transformer import Transformer

VOCAB = 300


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(1)
    return Transformer(preset("test", VOCAB, continuous_inputs={"audio": 8})).eval()


def _engine(model, chunk, prefix_caching=False):
    config = EngineConfig(
        block_size=4,
        kv_cache_bytes=1 << 20,
        max_num_batched_tokens=96,
        max_prefill_chunk=chunk,
        enable_prefix_caching=prefix_caching,
    )
    return Engine(model, config)


def _prompts(n, seed):
    rng = random.Random(seed)
    return [[rng.randrange(3, VOCAB) for _ in range(rng.randrange(9, 41))] for _ in range(n)]


@pytest.mark.parametrize("chunk", [2, 5, 7])
@pytest.mark.parametrize(
    "params",
    [SamplingParams(temperature=0), SamplingParams(temperature=1.0, seed=11)],
    ids=["greedy", "sampled"],
)
def test_chunked_prefill_logprobs_equal_reference(model, chunk, params):
    prompts = _prompts(4, seed=chunk)
    requests = [Request(f"r{i}", p, free_plan(5), params) for i, p in enumerate(prompts)]
    _engine(model, chunk).run_to_completion(requests)
    for req, prompt in zip(requests, prompts):
        ref = generate_reference(model, prompt, 5, params)
        assert req.output_ids == ref.token_ids[0], req.request_id
        torch.testing.assert_close(
            torch.tensor(req.output_logprobs),
            torch.tensor(ref.logprobs[0]),
            atol=1e-4,
            rtol=0,
            msg=lambda m, rid=req.request_id: f"{rid}: {m}",
        )


def test_chunked_prefill_after_a_prefix_hit_equals_reference(model):
    """A prefix-cache hit makes the first computed chunk start past 0 as well."""
    engine = _engine(model, 3, prefix_caching=True)
    shared = _prompts(1, seed=99)[0][:16]
    first = Request("a", [*shared, 7, 8], free_plan(3), SamplingParams(temperature=0))
    engine.run_to_completion([first])
    tail = [9, 10, 11, 12, 13, 14, 15]
    second = Request("b", [*shared, *tail], free_plan(4), SamplingParams(temperature=0))
    engine.run_to_completion([second])
    assert engine.kv.prefix_cache_hit_rate > 0
    ref = generate_reference(model, [*shared, *tail], 4, SamplingParams(temperature=0))
    assert second.output_ids == ref.token_ids[0]
    torch.testing.assert_close(
        torch.tensor(second.output_logprobs), torch.tensor(ref.logprobs[0]), atol=1e-4, rtol=0
    )


class ProjectionHead(nn.Module):
    """A deterministic continuous head: a projection of the hidden state."""

    def __init__(self, dim, width):
        super().__init__()
        self.proj = nn.Linear(dim, width)

    def sample(self, hidden, generators, requests):
        return self.proj(hidden)


@pytest.mark.parametrize("chunk", [3, 6])
def test_chunked_prefill_vectors_equal_full_forwards(model, chunk):
    torch.manual_seed(4)
    if "proj" not in model.heads:
        model.add_head("proj", ProjectionHead(model.config.dim, 8))
    prompt = _prompts(1, seed=chunk + 50)[0][:23]
    req = Request("v", prompt, continuous_plan(1, "proj", 0, "audio"), SamplingParams(seed=1))
    _engine(model, chunk).run_to_completion([req])
    with torch.no_grad():
        hidden = model.hidden_states(torch.tensor([prompt]))[0, -1:]
        expected = model.heads["proj"].sample(hidden, None, [req])[0]
    torch.testing.assert_close(req.output_vectors[0], expected, atol=1e-5, rtol=1e-5)
