"""The continuous next-patch series head: patching, training documents, the forecast job
through the pipeline on a tiny random model, and the errors that name the field."""

from pathlib import Path

import numpy as np
import pytest
import torch

from mmntp.api import FieldError, SamplingParams, TimeSeriesOutput, TimeSeriesPart
from mmntp.format import sequence
from mmntp.generation import Pipeline
from mmntp.model.checkpoint import save_model
from mmntp.model.config import preset
from mmntp.model.heads import DenoiserConfig, FlowHead, FlowHeadConfig, register_head
from mmntp.model.transformer import ContinuousInput, Transformer
from mmntp.serve.convert import output_spec
from mmntp.tokenizers.series_patches import SeriesPatcher
from mmntp.train.data import TimeSeriesPatchSource, build_tokenizers, build_vocab
from mmntp.v1 import generation_pb2 as pb

PATCH = 4
WIDE = 16  # the pipeline model's patch: wider than the service's 8-value minimum context


def test_patcher_round_trip_drops_the_oldest_remainder():
    x = np.arange(11.0) ** 1.5
    patcher = SeriesPatcher(PATCH)
    patches, state = patcher.encode(x)
    assert patches.shape == (2, PATCH) and patches.dtype == np.float32
    np.testing.assert_allclose(patcher.decode(patches, state), x[3:], rtol=1e-6)
    # The state is the whole context's (mean / std), not only the kept patches'.
    assert state.loc == pytest.approx(x.mean()) and state.scale == pytest.approx(x.std())


def test_patcher_fills_gaps_and_handles_flat_contexts():
    patcher = SeriesPatcher(PATCH)
    patches, state = patcher.encode(np.array([np.nan, 2.0, np.nan, 4.0]))
    np.testing.assert_allclose(patcher.decode(patches, state), [2.0, 2.0, 2.0, 4.0], rtol=1e-6)
    flat, state = patcher.encode(np.full(8, 5.0))
    assert state.scale == 5.0 and np.all(flat == 0.0)
    with pytest.raises(ValueError, match="at least one patch"):
        patcher.encode(np.ones(3))
    with pytest.raises(ValueError, match="no observed"):
        patcher.encode(np.full(8, np.nan))
    with pytest.raises(ValueError, match="patch must be"):
        SeriesPatcher(0)


def test_patch_documents_scale_by_the_context_only():
    tokenizers = build_tokenizers()
    vocab = build_vocab(tokenizers)
    source = TimeSeriesPatchSource(
        vocab, tokenizers["timeseries"], kernel_synth_prob=1.0, patch=PATCH, min_length=8,
        max_length=40, max_horizon=8,
    )  # fmt: skip
    doc = source.document(np.random.default_rng(0), 64)
    n = len(doc.vectors)
    header = sequence.forecast_header(vocab)
    assert doc.ids[: len(header)] == header and 2 <= n <= 10
    assert sorted(doc.vectors) == list(range(len(header), len(header) + n))
    assert doc.ids[-2:] == [vocab.special("<end_timeseries>"), vocab.special("<eos>")]
    values = torch.stack([doc.vectors[p] for p in sorted(doc.vectors)]).reshape(-1)
    # Some leading run of whole patches (the context) is standardised exactly.
    stats = [(values[:k].mean().item(), values[:k].std(False).item()) for k in range(4, 41, 4)]
    assert any(abs(m) < 1e-4 and abs(s - 1) < 1e-4 for m, s in stats[: n - 1])
    with pytest.raises(ValueError, match="min_length"):
        TimeSeriesPatchSource(vocab, tokenizers["timeseries"], patch=PATCH, min_length=4)


def _patch_model_dir(root, meta=None):
    tokenizers = build_tokenizers()
    vocab = build_vocab(tokenizers)
    torch.manual_seed(0)
    model = Transformer(preset("test", vocab.size, continuous_inputs={"timeseries": WIDE}))
    dim = model.config.dim
    head = FlowHead(FlowHeadConfig(DenoiserConfig(WIDE, dim, hidden=16, depth=1), num_steps=3))
    register_head(model, head, "patch")
    save_model(root, model.eval(), vocab, tokenizers, meta)
    return root


@pytest.fixture(scope="module")
def patch_pipe(tmp_path_factory):
    return Pipeline.from_pretrained(_patch_model_dir(tmp_path_factory.mktemp("models") / "p"))


def test_a_patch_only_model_defaults_to_the_patch_head(tmp_path, patch_pipe):
    # A model that trained tokens and patches offers both, tokens first (the default).
    assert patch_pipe.capabilities().series_heads == ("tokens", "patch")
    recipe = {"data": {"mixture": [{"source": "timeseries_patch", "weight": 1.0}]}}
    pipe = Pipeline.from_pretrained(_patch_model_dir(tmp_path / "m", {"recipe": recipe}))
    assert pipe.capabilities().series_heads == ("patch",)
    out = pipe(TimeSeriesPart(CONTEXT), TimeSeriesOutput(horizon=5, num_samples=2))
    assert out.forecast.samples.shape == (2, 5)
    with pytest.raises(FieldError, match="'tokens' is not available.*heads: patch"):
        pipe(TimeSeriesPart(CONTEXT), TimeSeriesOutput(horizon=5, head="tokens"))


CONTEXT = np.sin(np.arange(40) / 3.0) * 10 + 50


def test_patch_forecast_has_every_step_and_follows_the_seed(patch_pipe):
    out = TimeSeriesOutput(horizon=20, num_samples=3, head="patch")  # two patches, 12 dropped
    result = patch_pipe(TimeSeriesPart(CONTEXT), out, SamplingParams(seed=5))
    fc = result.forecast
    assert fc.samples.shape == (3, 20) and np.isfinite(fc.samples).all()
    assert fc.median.shape == (20,) and set(fc.quantiles) == set(out.quantiles)
    assert not np.allclose(fc.samples[0], fc.samples[1])  # rows are independent paths
    again = patch_pipe(TimeSeriesPart(CONTEXT), out, SamplingParams(seed=5)).forecast
    np.testing.assert_array_equal(again.samples, fc.samples)
    chunks = list(patch_pipe.stream(TimeSeriesPart(CONTEXT), out, SamplingParams(seed=5)))
    steps = [c.step for c in chunks if hasattr(c, "step") and hasattr(c, "median")]
    assert steps == list(range(20))


def test_first_patch_equals_the_head_on_the_context(patch_pipe):
    """The engine's first patch is the head's sample on a full forward of the context."""
    out = TimeSeriesOutput(horizon=WIDE, num_samples=1, head="patch")
    got = patch_pipe(TimeSeriesPart(CONTEXT), out, SamplingParams(seed=11)).forecast
    model = patch_pipe.bundle.model
    vocab = patch_pipe.vocab
    patcher = SeriesPatcher(WIDE)
    patches, state = patcher.encode(CONTEXT)
    ids, where = sequence.patch_forecast_prompt(vocab, patches.shape[0])
    mask = torch.zeros(1, len(ids), dtype=torch.bool)
    mask[0, where] = True
    cont = [ContinuousInput("timeseries", mask, torch.from_numpy(patches))]
    with torch.no_grad():
        hidden = model.hidden_states(torch.tensor([ids]), continuous=cont)[0, -1:]
        params = SamplingParams(seed=11, temperature=1.0)
        req = type("R", (), {"params": params, "request_id": "r"})()
        vec = model.heads["patch"].sample(hidden, [torch.Generator().manual_seed(11)], [req])
    expected = patcher.decode(vec.numpy()[:, None, :], state)
    np.testing.assert_allclose(got.samples, expected, rtol=1e-4, atol=1e-4)


def test_patch_head_errors_name_the_field(patch_pipe):
    part = TimeSeriesPart(CONTEXT)
    with pytest.raises(FieldError, match="must be tokens or patch") as err:
        patch_pipe(part, TimeSeriesOutput(horizon=4, head="bins"))
    assert err.value.field.endswith("head")
    with pytest.raises(FieldError, match=f"at least {WIDE} context values") as err:
        patch_pipe(TimeSeriesPart(CONTEXT[:10]), TimeSeriesOutput(4, head="patch"))
    assert "timeseries" in err.value.field


def test_a_model_without_the_patch_head_refuses_it():
    pipe = Pipeline.from_pretrained(None)  # the bundled default: tokens only
    with pytest.raises(FieldError, match="'patch' is not available.*heads: tokens"):
        pipe(TimeSeriesPart(CONTEXT), TimeSeriesOutput(horizon=4, head="patch"))


def test_proto_head_reaches_the_api():
    spec = pb.OutputSpec(timeseries=pb.TimeSeriesSpec(horizon=3, head="patch"))
    assert output_spec(spec).head == "patch"
    # Empty is the model's default, chosen by validation.
    assert output_spec(pb.OutputSpec(timeseries=pb.TimeSeriesSpec(horizon=3))).head is None


def test_the_client_sends_the_head():
    from mmntp.client.messages import _output_spec, forecast_request

    _, output, _ = forecast_request([1.0] * 20, 4, None, (0.5,), None, None, "patch")
    assert output.head == "patch"
    assert output_spec(_output_spec(output, False)).head == "patch"
    _, output, _ = forecast_request([1.0] * 20, 4, None, (0.5,), None, None)
    assert output_spec(_output_spec(output, False)).head is None


def test_generate_cli_takes_the_series_head(capsys):
    from mmntp.cli import main

    nile = Path(__file__).resolve().parents[1] / "examples" / "nile.csv"
    args = ["generate", "--modality", "timeseries", "--context", str(nile), "--horizon", "4"]
    assert main([*args, "--head", "patch"]) == 2
    assert "'patch' is not available on this model" in capsys.readouterr().err
    assert main([*args, "--head", "flow"]) == 2
    assert "must be tokens or patch" in capsys.readouterr().err


def test_the_bundled_patch_service_forecasts_with_its_head():
    root = Path(__file__).resolve().parents[1]
    pipe = Pipeline.from_pretrained(root / "services" / "forecast-patch")
    assert pipe.capabilities().series_heads == ("patch",)
    nile = np.loadtxt(root / "examples" / "nile.csv", skiprows=1)
    out = pipe(TimeSeriesPart(nile), TimeSeriesOutput(horizon=24, num_samples=4),
               SamplingParams(seed=0))  # fmt: skip
    fc = out.forecast
    assert fc.samples.shape == (4, 24) and np.isfinite(fc.samples).all()
    # A trained forecaster stays near the river's level (500..1400 in the record).
    assert 400 < fc.median.mean() < 1500
