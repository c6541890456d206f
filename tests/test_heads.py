"""Flow-matching and diffusion heads: conventions against diffusers, training on a toy
distribution, per-request seeds and settings, guidance, checkpoints and the engine path."""

import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from mmntp.api import SamplingParams
from mmntp.engine.engine import Engine, EngineConfig
from mmntp.engine.plans import continuous_plan
from mmntp.engine.request import Request
from mmntp.model.checkpoint import load_model, save_model
from mmntp.model.config import preset
from mmntp.model.heads import (
    AdaLNDenoiser,
    ContinuousSettings,
    DenoiserConfig,
    DiffusionHead,
    DiffusionHeadConfig,
    FlowHead,
    FlowHeadConfig,
    guided,
    head_from_spec,
    register_head,
)
from mmntp.model.transformer import ContinuousInput, Transformer
from mmntp.model.vocab import VocabLayout

CENTERS = torch.tensor([[1.5, 1.5], [-1.5, -0.5]])  # class 0 / class 1 blob means
BLOB_STD = 0.15
# Same computation, different batch: CPU matmul kernels differ between 1 and 3 rows
# (measured up to 3e-5 after DDIM's 1/sqrt(alpha) steps); a wrong seed differs by O(1).
ROUNDING = dict(atol=1e-4, rtol=1e-4)


@pytest.fixture(autouse=True)
def one_thread():
    # tiny MLPs: one thread is faster than two contending for shared cores (restored after)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _den(width=2, cond_dim=2, **kw):
    return DenoiserConfig(width=width, cond_dim=cond_dim, **{"hidden": 32, "depth": 2, **kw})


def _gens(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def _perturb(head, seed=0):
    """Random weights everywhere (the zero-initialised layers would hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return head


HEADS = {
    "flow": lambda den, **kw: FlowHead(FlowHeadConfig(den, **kw)),
    "diffusion-eps": lambda den, **kw: DiffusionHead(DiffusionHeadConfig(den, **kw)),
    "diffusion-v": lambda den, **kw: DiffusionHead(DiffusionHeadConfig(den, prediction="v", **kw)),
}


# -- shapes -----------------------------------------------------------------------------


def test_denoiser_shapes_and_zero_init():
    cfg = DenoiserConfig(width=16 * 4, cond_dim=24, hidden=32, depth=3, cells=4)
    assert cfg.token_dim == 16
    net = AdaLNDenoiser(cfg)
    x, t, z = torch.randn(5, 64), torch.rand(5) * 1000, torch.randn(5, 24)
    out = net(x, t, z)
    assert out.shape == (5, 64)
    assert torch.equal(out, torch.zeros_like(out))  # output layer and gates start at zero


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_sample_and_loss_shapes(kind):
    head = _perturb(HEADS[kind](_den(width=12, cond_dim=8, cells=3), num_steps=4))
    z = torch.randn(3, 8)
    assert head.sample(z, _gens(1, 2, 3)).shape == (3, 12)
    assert head.sample(z[:0], []).shape == (0, 12)
    loss = head.loss(z, torch.randn(3, 12), torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and loss.requires_grad


# -- conventions against the schedulers -------------------------------------------------


def test_flow_noising_matches_the_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler()
    sched.set_timesteps(7)
    x0, noise = torch.randn(7, 3), torch.randn(7, 3)
    ours = FlowHead.noisy(x0, noise, sched.sigmas[:-1])
    theirs = torch.stack([sched.scale_noise(x0[i : i + 1], t[None], noise[i : i + 1])[0]
                          for i, t in enumerate(sched.timesteps)])  # fmt: skip
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


def test_one_euler_step_with_the_exact_velocity_lands_on_x0():
    """From sigma 1 the one step is x + (0 - 1) v; with x = noise, v = noise - x0: x0."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler()
    sched.set_timesteps(1)
    assert sched.sigmas.tolist() == [1.0, 0.0]
    x0, noise = torch.randn(4, 3), torch.randn(4, 3)
    out = sched.step(noise - x0, sched.timesteps[0], noise).prev_sample
    torch.testing.assert_close(out, x0, atol=1e-6, rtol=0)


class _Oracle(nn.Module):
    """Stands in for the denoiser: z carries the true x0, so it returns the exact target."""

    def __init__(self, kind: str, alphas_cumprod: torch.Tensor | None = None) -> None:
        super().__init__()
        self.kind, self.alphas = kind, alphas_cumprod

    def forward(self, x, t, z, above=None):
        if self.kind == "flow":
            sigma = (t / 1000)[:, None]  # x = (1 - s) x0 + s noise  ->  v = (x - x0) / s
            return (x - z) / sigma
        a = self.alphas[t.long()][:, None]
        eps = (x - a.sqrt() * z) / (1 - a).sqrt()
        return eps if self.kind == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * z


@pytest.mark.parametrize("num_steps", [1, 10])
def test_flow_head_with_the_exact_velocity_recovers_x0(num_steps):
    head = FlowHead(FlowHeadConfig(_den(width=3, cond_dim=3), num_steps=num_steps))
    head.net = _Oracle("flow")
    x0 = torch.randn(4, 3)
    torch.testing.assert_close(head.sample(x0, _gens(0, 1, 2, 3)), x0, atol=1e-5, rtol=0)


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
@pytest.mark.parametrize("num_steps", [1, 20])
def test_ddim_with_the_exact_prediction_recovers_x0(prediction, num_steps):
    head = DiffusionHead(
        DiffusionHeadConfig(_den(width=3, cond_dim=3), num_steps=num_steps, prediction=prediction)
    )
    head.net = _Oracle(prediction, head.train_scheduler().alphas_cumprod)
    x0 = torch.randn(4, 3)
    torch.testing.assert_close(head.sample(x0, _gens(0, 1, 2, 3)), x0, atol=1e-4, rtol=0)


# -- training on a toy distribution -----------------------------------------------------


def _toy_batch(n, g):
    c = torch.randint(0, 2, (n,), generator=g)
    z = nn.functional.one_hot(c, 2).float()  # z: [n, 2], the "hidden state" is the class
    return z, CENTERS[c] + BLOB_STD * torch.randn(n, 2, generator=g)


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_training_learns_two_conditional_blobs(kind):
    torch.manual_seed(0)
    head = HEADS[kind](DenoiserConfig(width=2, cond_dim=2, hidden=64, depth=2), num_steps=20)
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        loss = head.loss(*_toy_batch(256, g), g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.5 * first, (first, last)
    classes = torch.arange(2).repeat_interleave(100)  # 100 samples per class
    x = head.sample(nn.functional.one_hot(classes, 2).float(), _gens(*range(200)))
    for k in range(2):
        xs = x[classes == k]
        # stated tolerance: the class mean within 0.25 of its blob centre (blobs 3.2 apart),
        # at least 90% of samples within 0.6 (4 blob std) of their own centre
        assert (xs.mean(0) - CENTERS[k]).norm() < 0.25, (k, xs.mean(0))
        assert ((xs - CENTERS[k]).norm(dim=-1) < 0.6).float().mean() >= 0.9


# -- seeds and per-request settings -----------------------------------------------------


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_a_row_depends_on_its_seed_not_its_batch(kind):
    head = _perturb(HEADS[kind](_den(width=6, cond_dim=5), num_steps=8))
    z = torch.randn(3, 5)
    batch = head.sample(z, _gens(11, 22, 33))
    alone = head.sample(z[1:2], _gens(22))
    torch.testing.assert_close(batch[1:2], alone, **ROUNDING)
    assert torch.equal(head.sample(z, _gens(11, 22, 33)), batch)  # reproducible
    other = head.sample(z, _gens(11, 23, 33))
    assert not torch.allclose(other[1], batch[1], atol=1e-3)  # the seed matters
    torch.testing.assert_close(other[[0, 2]], batch[[0, 2]], **ROUNDING)


def test_noise_comes_from_each_rows_generator_scaled_by_temperature():
    """An untrained flow head predicts velocity 0, so its sample is its initial noise."""
    head = FlowHead(FlowHeadConfig(_den(width=4, cond_dim=3), num_steps=3))
    reqs = [_Req("a", _Params(temperature=0.5)), _Req("b", _Params(temperature=2.0))]
    out = head.sample(torch.randn(2, 3), _gens(5, 6), reqs)
    expected = torch.stack([0.5 * torch.randn(4, generator=_gens(5)[0]),
                            2.0 * torch.randn(4, generator=_gens(6)[0])])  # fmt: skip
    assert torch.equal(out, expected)


@dataclass
class _Params:
    temperature: float | None = None
    num_steps: int | None = None
    guidance_scale: float | None = None


@dataclass
class _Req:
    request_id: str
    params: object = None


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_per_request_settings_from_params_and_the_mapping(kind):
    head = _perturb(HEADS[kind](_den(width=4, cond_dim=3), num_steps=8))
    z = torch.randn(3, 3)
    reqs = [_Req("a", _Params(num_steps=3)), _Req("b", _Params(temperature=0.7)), _Req("c")]
    settings = {"c": ContinuousSettings(num_steps=5, temperature=0.9)}
    mixed = head.sample(z, _gens(1, 2, 3), reqs, settings)
    one = [
        head.sample(z[0:1], _gens(1), [_Req("x", _Params(num_steps=3))]),
        head.sample(z[1:2], _gens(2), [_Req("y", _Params(num_steps=8, temperature=0.7))]),
        head.sample(z[2:3], _gens(3), [_Req("z", _Params(num_steps=5, temperature=0.9))]),
    ]
    torch.testing.assert_close(mixed, torch.cat(one), **ROUNDING)
    # the mapping wins over params, field by field
    over = head.sample(z[0:1], _gens(1), reqs[:1], {"a": ContinuousSettings(num_steps=8)})
    torch.testing.assert_close(over, head.sample(z[0:1], _gens(1)), **ROUNDING)
    assert not torch.allclose(over, mixed[0:1], atol=1e-4)


# -- classifier-free guidance -----------------------------------------------------------


def test_guidance_mix():
    c, u = torch.randn(3, 4), torch.randn(3, 4)
    s = torch.tensor([1.0, 3.0, 0.0])
    out = guided(c, u, s)
    assert torch.equal(out[0], c[0])
    torch.testing.assert_close(out[1], u[1] + 3 * (c[1] - u[1]))
    assert torch.equal(out[2], u[2])


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_guidance_scale_one_is_conditional_sampling_exactly(kind):
    head = _perturb(HEADS[kind](_den(width=4, cond_dim=5), num_steps=6))
    zc, zu = torch.randn(3, 5), torch.randn(3, 5)
    plain = head.sample(zc, _gens(1, 2, 3))
    assert torch.equal(head.sample_guided(zc, zu, 1.0, _gens(1, 2, 3)), plain)
    # per-row scales: the scale-1 row is still exactly conditional, the others are not
    mixed = head.sample_guided(zc, zu, torch.tensor([1.0, 3.0, 0.0]), _gens(1, 2, 3))
    assert torch.equal(mixed[0], plain[0])
    assert not torch.allclose(mixed[1], plain[1], atol=1e-3)
    torch.testing.assert_close(
        mixed[2], head.sample(zu[2:3], _gens(3))[0], **ROUNDING
    )  # scale 0 = unconditional
    # scale None: each request's guidance_scale
    reqs = [_Req("a", _Params(guidance_scale=3.0)), _Req("b"), _Req("c")]
    by_req = head.sample_guided(zc, zu, None, _gens(1, 2, 3), reqs)
    torch.testing.assert_close(
        by_req[0:1], head.sample_guided(zc[:1], zu[:1], 3.0, _gens(1)), **ROUNDING
    )
    assert torch.equal(by_req[1:], plain[1:])  # head default scale 1
    with pytest.raises(ValueError, match="sample_guided"):
        head.sample(zc, _gens(1, 2, 3), reqs)


# -- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: DenoiserConfig(width=0, cond_dim=2), "width"),
        (lambda: DenoiserConfig(width=4, cond_dim=2, hidden=-1), "hidden"),
        (lambda: DenoiserConfig(width=4, cond_dim=2, depth=1.5), "depth"),
        (lambda: DenoiserConfig(width=6, cond_dim=2, cells=4), "cells"),
        (lambda: FlowHeadConfig(_den(), num_steps=0), "num_steps"),
        (lambda: FlowHeadConfig(_den(), temperature=float("nan")), "temperature"),
        (lambda: FlowHeadConfig(_den(), logit_std=0.0), "logit_std"),
        (lambda: FlowHeadConfig({"width": 2, "cond_dim": 2, "bogus": 1}), "bogus"),
        (lambda: DiffusionHeadConfig(_den(), prediction="x0"), "prediction"),
        (lambda: DiffusionHeadConfig(_den(), spacing="karras"), "spacing"),
        (lambda: DiffusionHeadConfig(_den(), num_steps=1001), "num_steps"),
        (lambda: ContinuousSettings(guidance_scale=-1.0), "guidance_scale"),
        (lambda: head_from_spec({"type": "mystery", "config": {}}), "type"),
        (lambda: head_from_spec({"type": "flow", "config": {"denoiser": {}}}), "width"),
    ],
)
def test_config_errors_name_the_field(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_sampling_errors_name_the_argument():
    head = FlowHead(FlowHeadConfig(_den(width=2, cond_dim=3)))
    with pytest.raises(ValueError, match="hidden"):
        head.sample(torch.randn(2, 4), _gens(1, 2))
    with pytest.raises(ValueError, match="generators"):
        head.sample(torch.randn(2, 3), _gens(1))
    with pytest.raises(ValueError, match=r"requests\[1\]: num_steps"):
        head.sample(torch.randn(2, 3), _gens(1, 2), [_Req("a"), _Req("b", _Params(num_steps=0))])
    with pytest.raises(ValueError, match="hidden_uncond"):
        head.sample_guided(torch.randn(2, 3), torch.randn(1, 3), 2.0, _gens(1, 2))
    with pytest.raises(ValueError, match="scale"):
        head.sample_guided(torch.randn(2, 3), torch.randn(2, 3), [1.0, 2.0, 3.0], _gens(1, 2))


# -- the model: registration, checkpoints, the engine -----------------------------------


def _model_with_heads(dim=64):
    vocab = VocabLayout.build(text_size=256)
    torch.manual_seed(0)
    model = Transformer(preset("test", vocab.size, continuous_inputs={"image": 8}))
    register_head(model, _perturb(FlowHead(FlowHeadConfig(_den(8, dim), num_steps=4)), 1))
    diff = DiffusionHead(DiffusionHeadConfig(_den(8, dim, cells=2), num_steps=4, prediction="v"))
    register_head(model, _perturb(diff, 2))
    return model.eval(), vocab


def test_heads_register_and_round_trip_through_a_model_folder(tmp_path):
    model, vocab = _model_with_heads()
    assert set(model.heads) == {"token", "flow", "diffusion"}
    with pytest.raises(ValueError, match="cond_dim"):
        register_head(model, FlowHead(FlowHeadConfig(_den(8, 32))), "other")
    save_model(tmp_path / "m", model, vocab)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["heads"]["flow"]["type"] == "flow"
    assert config["heads"]["diffusion"]["config"]["denoiser"]["cells"] == 2
    again = load_model(tmp_path / "m").model
    state, loaded = model.state_dict(), again.state_dict()
    assert state.keys() == loaded.keys() and any(k.startswith("heads.flow.") for k in state)
    assert all(torch.equal(state[k], loaded[k]) for k in state)
    z = torch.randn(2, 64)
    for name in ("flow", "diffusion"):
        assert torch.equal(again.heads[name].sample(z, _gens(1, 2)),
                           model.heads[name].sample(z, _gens(1, 2)))  # fmt: skip
    # a head that cannot describe itself is refused at save time, not at load time
    model.heads["mystery"] = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="'mystery'.*spec"):
        save_model(tmp_path / "bad", model, vocab)
    # a spec that does not fit the model is refused at load time
    config["heads"]["flow"]["config"]["denoiser"]["cond_dim"] = 32
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"heads\['flow'\].*cond_dim"):
        load_model(tmp_path / "m")


def test_folders_without_extra_heads_have_no_heads_entry(tmp_path):
    vocab = VocabLayout.build(text_size=256)
    save_model(tmp_path / "m", Transformer(preset("test", vocab.size)), vocab)
    assert "heads" not in json.loads((tmp_path / "m" / "config.json").read_text())
    assert set(load_model(tmp_path / "m").model.heads) == {"token"}


@pytest.mark.parametrize("name", ["flow", "diffusion"])
def test_engine_continuous_plan_uses_the_head(name):
    """The engine's vectors equal the head's sample on hand-computed hidden states."""
    model, _ = _model_with_heads()
    prompt, placeholder = [1, 2, 3, 4], 0
    req = Request(
        "c", prompt, continuous_plan(3, name, placeholder, "image"), SamplingParams(seed=9)
    )
    engine = Engine(model, EngineConfig(block_size=4, kv_cache_bytes=1 << 20))
    engine.run_to_completion([req])
    assert len(req.output_vectors) == 3
    gen = torch.Generator().manual_seed(9)
    ids, values = list(prompt), []
    with torch.no_grad():
        for step in range(3):
            mask = torch.zeros(1, len(ids), dtype=torch.bool)
            mask[0, len(prompt) :] = True
            cont = [ContinuousInput("image", mask, torch.stack(values))] if values else None
            hidden = model.hidden_states(torch.tensor([ids]), continuous=cont)[0, -1:]
            expected = model.heads[name].sample(hidden, [gen], [req])[0]
            torch.testing.assert_close(req.output_vectors[step], expected, atol=1e-4, rtol=1e-4)
            values.append(expected)
            ids.append(placeholder)


# -- training: noise draws per vector ----------------------------------------------------


def _losses_with_repeats(repeats: int):
    from mmntp.train.losses import TrainingLosses, add_continuous_heads

    torch.manual_seed(0)
    model = Transformer(preset("test", vocab_size=97, continuous_inputs={"image": 4}))
    spec = {"type": "flow", "modality": "image", "hidden": 16, "depth": 1, "repeats": repeats}
    return TrainingLosses(model, continuous_losses=add_continuous_heads(model, {"flow": spec}))


def test_continuous_loss_repeats_lower_the_variance_not_the_scale():
    data = torch.Generator().manual_seed(1)  # fixed inputs, whatever ran before
    ids = torch.randint(0, 97, (2, 12), generator=data)
    targets = torch.full_like(ids, -100)  # token CE off: the head's loss alone
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[:, 4:8] = True
    values = torch.randn(int(mask.sum()), 4, generator=data)
    draws = {}
    for repeats in (1, 16):
        losses = _losses_with_repeats(repeats)
        draws[repeats] = torch.stack(
            [
                losses(ids, targets, {"image": (mask, values)}, torch.Generator().manual_seed(s))
                for s in range(40)
            ]
        ).detach()
    # Same weights (seeded), same expectation; 16 draws a vector cut the variance ~16x.
    assert abs(draws[16].mean() - draws[1].mean()) < 3 * draws[1].std() / 40**0.5
    assert draws[16].var() < 0.3 * draws[1].var()


@pytest.mark.parametrize("repeats", [0, 1.5, True])
def test_continuous_loss_repeats_must_be_a_positive_integer(repeats):
    with pytest.raises(ValueError, match=r"continuous_heads\.flow\.repeats"):
        _losses_with_repeats(repeats)
