"""Heads conditioned on the cell above (`DenoiserConfig.above`): where the vector comes
from in training and in the engine, that a head given it starts as the head it extends,
and that a head uses it."""

import pytest
import torch
from test_heads import _gens, _perturb, one_thread  # noqa: F401 - one_thread is autouse

from mmntp.api import SamplingParams
from mmntp.engine.engine import Engine, EngineConfig
from mmntp.engine.plans import continuous_plan
from mmntp.engine.request import Request
from mmntp.model.config import preset
from mmntp.model.heads import (
    DenoiserConfig,
    DiffusionHead,
    DiffusionHeadConfig,
    FlowHead,
    FlowHeadConfig,
    above_in_sequence,
    above_rows,
    register_head,
)
from mmntp.model.transformer import ContinuousInput, Transformer

HEADS = {
    "flow": lambda den, **kw: FlowHead(FlowHeadConfig(den, **kw)),
    "diffusion": lambda den, **kw: DiffusionHead(DiffusionHeadConfig(den, prediction="v", **kw)),
}


# -- where the vector above comes from --------------------------------------------------


def test_above_in_sequence_finds_the_cell_above_within_each_image():
    # two images of 2 rows x 3 cells at flat positions 5-10 and 30-35
    positions = torch.tensor([5, 6, 7, 8, 9, 10, 30, 31, 32, 33, 34, 35])
    values = torch.arange(12.0)[:, None].repeat(1, 2)  # vector i is [i, i]
    got = above_in_sequence(values, positions, 3)
    has = [0, 0, 0, 1, 1, 1] * 2
    assert got[:, 2].tolist() == has
    for i, flag in enumerate(has):
        want = [i - 3.0, i - 3.0] if flag else [0.0, 0.0]
        assert got[i, :2].tolist() == want, i
    assert above_in_sequence(values[:0], positions[:0], 3).shape == (0, 3)


def test_above_rows_marks_rows_without_a_vector():
    rows = above_rows([torch.tensor([1.0, 2.0]), None], 2)
    assert rows.tolist() == [[1.0, 2.0, 1.0], [0.0, 0.0, 0.0]]


def test_training_gives_the_head_each_vectors_cell_above(monkeypatch):
    from mmntp.train.losses import TrainingLosses, add_continuous_heads

    torch.manual_seed(0)
    model = Transformer(preset("test", vocab_size=97, continuous_inputs={"image": 4}))
    spec = {"type": "flow", "modality": "image", "hidden": 16, "depth": 1, "above": 2}
    losses = TrainingLosses(model, continuous_losses=add_continuous_heads(model, {"flow": spec}))
    assert model.heads["flow"].above == 2
    seen = {}

    def spy(z, x0, generator=None, above=None):
        seen.update(x0=x0, above=above)
        return x0.sum() * 0

    monkeypatch.setattr(model.heads["flow"], "loss", spy)
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[0, 3:7] = mask[1, 0:4] = True  # the second row's first vector has no position before
    values = torch.randn(8, 4)
    ids = torch.randint(0, 97, (2, 12))
    losses(ids, torch.full_like(ids, -100), {"image": (mask, values)})
    # predicted: row 0's four vectors, row 1's last three; above: two positions back
    torch.testing.assert_close(seen["x0"], values[[0, 1, 2, 3, 5, 6, 7]])
    expected = torch.zeros(7, 5)
    for k, j in enumerate([None, None, 0, 1, None, 4, 5]):  # index of each one's vector above
        if j is not None:
            expected[k, :4], expected[k, 4] = values[j], 1.0
    torch.testing.assert_close(seen["above"], expected)


# -- the head ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_a_head_given_above_starts_as_the_head_it_extends(kind):
    plain = _perturb(HEADS[kind](DenoiserConfig(width=3, cond_dim=4, hidden=16), num_steps=5))
    head = HEADS[kind](DenoiserConfig(width=3, cond_dim=4, hidden=16, above=2), num_steps=5)
    missing = head.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing == ["net.above_proj.weight", "net.above_proj.bias"]
    z, above = torch.randn(3, 4), above_rows([torch.randn(3), None, torch.randn(3)], 3)
    assert torch.equal(head.sample(z, _gens(1, 2, 3), above=above), plain.sample(z, _gens(1, 2, 3)))
    _perturb(head.net.above_proj, 5)  # once trained it does read the vector above
    assert not torch.equal(
        head.sample(z, _gens(1, 2, 3), above=above), plain.sample(z, _gens(1, 2, 3))
    )


def _train_copy(head, steps=200):
    """Fit x0 = the vector above + small noise; the hidden state tells nothing."""
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    for _ in range(steps):
        above = torch.randn(256, 2, generator=g)
        x0 = above + 0.05 * torch.randn(256, 2, generator=g)
        loss = head.loss(torch.zeros(256, 2), x0, g, above_rows(list(above), 2))
        opt.zero_grad()
        loss.backward()
        opt.step()
    above = torch.randn(200, 2, generator=g)
    out = head.sample(torch.zeros(200, 2), _gens(*range(200)), above=above_rows(list(above), 2))
    return (out - above).norm(dim=-1).mean().item()


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_a_head_learns_to_continue_the_cell_above(kind):
    torch.manual_seed(0)
    den = dict(width=2, cond_dim=2, hidden=64, depth=2)
    error = _train_copy(HEADS[kind](DenoiserConfig(**den, above=1), num_steps=20))
    # Stated bound: within 0.3 of the vector above on average. A head without it can
    # only draw from N(0, I): its error is ~1.8 (E|a - b| for two 2-D unit normals).
    assert error < 0.3, error
    blind = _train_copy(HEADS[kind](DenoiserConfig(**den), num_steps=20))
    assert blind > 1.2, blind


def test_config_refuses_a_bad_above():
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="above"):
            DenoiserConfig(width=2, cond_dim=2, above=bad)


# -- the engine -------------------------------------------------------------------------


def _model():
    torch.manual_seed(0)
    model = Transformer(preset("test", 300, continuous_inputs={"image": 4}))
    head = FlowHead(FlowHeadConfig(DenoiserConfig(4, model.config.dim, 16, 2, above=2), 3))
    register_head(model, _perturb(head, 1), "flow")
    return model.eval()


def _hidden(model, ids, start, values):
    mask = torch.zeros(1, len(ids), dtype=torch.bool)
    mask[0, start:] = True
    cont = [ContinuousInput("image", mask, torch.stack(values))] if values else None
    return model.hidden_states(torch.tensor([ids]), continuous=cont)[0, -1:]


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_engine_gives_the_head_the_vector_above(scale):
    """Vectors from the engine equal a hand loop that feeds the head vector s - 2."""
    model, placeholder = _model(), 0
    prompt, uncond = [1, 2, 3, 4, 5], [1, 2]
    req = Request(
        "c",
        prompt,
        continuous_plan(5, "flow", placeholder, "image"),
        SamplingParams(seed=9, guidance_scale=scale),
        uncond_prompt_ids=uncond if scale != 1.0 else None,
    )
    Engine(model, EngineConfig(block_size=4, kv_cache_bytes=1 << 20)).run_to_completion([req])
    head, gen = model.heads["flow"], torch.Generator().manual_seed(9)
    values: list[torch.Tensor] = []
    with torch.no_grad():
        for step in range(5):
            above = above_rows([values[step - 2] if step >= 2 else None], 4)
            hc = _hidden(model, prompt + [placeholder] * step, len(prompt), values)
            if scale == 1.0:
                expected = head.sample(hc, [gen], [req], above=above)[0]
            else:
                hu = _hidden(model, uncond + [placeholder] * step, len(uncond), values)
                expected = head.sample_guided(hc, hu, scale, [gen], [req], above=above)[0]
            torch.testing.assert_close(req.output_vectors[step], expected, atol=1e-4, rtol=1e-4)
            values.append(expected)
