"""Trainer: recipes, schedule, learning, exact resume, checkpoints, metrics, DDP."""

import json
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from mmntp.model.checkpoint import load_model, relative_paths
from mmntp.model.config import preset
from mmntp.model.transformer import Transformer
from mmntp.model.vocab import VocabLayout
from mmntp.train import (
    OptimSection,
    Recipe,
    latest_checkpoint,
    list_checkpoints,
    load_recipe,
    lr_at,
    param_groups,
    train,
)
from mmntp.train import state as state_module
from mmntp.train.trainer import IGNORE_INDEX

# -- a learnable synthetic source -----------------------------------------------------------


class PatternSource:
    """Rows cut at a random phase from one repeating id pattern; a random tail is ignored.

    Deterministic in (seed, step, rank, world_size), as the trainer requires.
    """

    PATTERN = (11, 42, 7, 99, 23, 5, 180)

    def __init__(self, vocab: VocabLayout, seq_len: int, batch_size: int, seed: int = 0):
        self.pattern = np.asarray(self.PATTERN) + vocab.range("text").start
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed

    def batch(self, step: int, rank: int, world_size: int):
        rng = np.random.default_rng([self.seed, step, rank, world_size])
        phase = rng.integers(0, len(self.pattern), size=(self.batch_size, 1))
        rows = self.pattern[(phase + np.arange(self.seq_len + 1)) % len(self.pattern)]
        rows = torch.from_numpy(rows).long()  # [B, L + 1]
        ids, targets = rows[:, :-1].clone(), rows[:, 1:].clone()
        keep = rng.integers(self.seq_len // 2, self.seq_len + 1, size=(self.batch_size, 1))
        targets[torch.arange(self.seq_len) >= torch.from_numpy(keep)] = IGNORE_INDEX
        return ids, targets


def build_pattern_data(recipe):
    vocab = VocabLayout.build(text_size=256)
    return vocab, {}, PatternSource(vocab, recipe.data.seq_len, recipe.data.batch_size, recipe.seed)


def data_with(source_factory):
    """A build_data hook whose source wraps the pattern source."""

    def build(recipe):
        vocab, tokenizers, source = build_pattern_data(recipe)
        return vocab, tokenizers, source_factory(source)

    return build


class CrashAt:
    """Raises when asked for step `step`: a run killed mid-way."""

    def __init__(self, inner, step):
        self.inner, self.step = inner, step

    def batch(self, step, rank, world_size):
        if step == self.step:
            raise RuntimeError("simulated crash")
        return self.inner.batch(step, rank, world_size)


class Concat:
    """One big batch made of the `parts` virtual ranks that accumulation would draw."""

    def __init__(self, inner, parts):
        self.inner, self.parts = inner, parts

    def batch(self, step, rank, world_size):
        pieces = [
            self.inner.batch(step, rank * self.parts + m, world_size * self.parts)
            for m in range(self.parts)
        ]
        return torch.cat([p[0] for p in pieces]), torch.cat([p[1] for p in pieces])


def make_recipe(out_dir, **sections) -> Recipe:
    base = {
        "name": "tiny",
        "seed": 0,
        "out_dir": str(out_dir),
        "model": {"preset": "test"},
        "data": {"seq_len": 16, "batch_size": 4},
        "optim": {"lr": 3e-3, "warmup_steps": 2, "max_steps": 6},
        "train": {"checkpoint_every": 0, "keep_checkpoints": 2, "log_every": 1, "autocast": "off"},
    }
    for name, values in sections.items():
        base[name] = {**base[name], **values} if isinstance(base.get(name), dict) else values
    return Recipe.from_dict(base)


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_model(checkpoint / "model").model.state_dict()


def assert_same_weights(a: Path, b: Path, atol: float = 0.0) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=0, atol=atol, msg=name)


# -- recipes ----------------------------------------------------------------------------------

EXAMPLE = """
name = "default"
seed = 0
out_dir = "runs/default"
[model]
preset = "default-tiny"
qk_norm = true
[data]
seq_len = 512
batch_size = 16
[[data.mixture]]
source = "timeseries"
weight = 0.8
max_horizon = 64
[[data.mixture]]
source = "text"
weight = 1
[optim]
lr = 1e-3
min_lr_ratio = 0.1
weight_decay = 0.1
betas = [0.9, 0.95]
eps = 1e-8
warmup_steps = 100
max_steps = 2000
grad_clip = 1.0
grad_accum = 1
[train]
checkpoint_every = 500
keep_checkpoints = 2
log_every = 10
autocast = "auto"
export = "models/out"
threads = 0
"""


def test_load_recipe_reads_every_section_and_resolves_paths(tmp_path):
    (tmp_path / "recipes").mkdir()
    path = tmp_path / "recipes" / "default.toml"
    path.write_text(EXAMPLE)
    recipe = load_recipe(path)
    assert recipe.out_dir == str((tmp_path / "recipes" / "runs" / "default").resolve())
    assert recipe.train.export == str((tmp_path / "recipes" / "models" / "out").resolve())
    assert recipe.model.preset == "default-tiny"
    assert recipe.model.overrides == {"qk_norm": True}
    assert recipe.data.mixture == [
        {"source": "timeseries", "weight": 0.8, "max_horizon": 64},
        {"source": "text", "weight": 1.0},
    ]
    assert recipe.optim.betas == (0.9, 0.95)
    assert recipe.optim.lr == 1e-3 and recipe.optim.max_steps == 2000
    assert recipe.train.autocast == "auto" and recipe.train.checkpoint_every == 500


def test_recipe_defaults_round_trip_and_json(tmp_path):
    path = tmp_path / "empty.toml"
    path.write_text("")
    recipe = load_recipe(path)
    assert recipe.name == "default" and recipe.model.preset == "default-tiny"
    assert recipe.out_dir == str((tmp_path / "runs" / "default").resolve())
    assert recipe.train.export == ""  # empty stays empty, not resolved to the folder
    full = make_recipe(tmp_path, model={"preset": "test", "dim": 32}, data={"mixture": []})
    as_dict = json.loads(json.dumps(full.to_dict()))
    assert as_dict["model"] == {"preset": "test", "dim": 32}
    assert Recipe.from_dict(as_dict) == full


@pytest.mark.parametrize(
    "toml, match",
    [
        ("nme = 'x'", r"unknown recipe key nme"),
        ("[optim]\nlrr = 1", r"unknown recipe key optim\.lrr"),
        ("[train]\ncheckpoints = 1", r"unknown recipe key train\.checkpoints"),
        ("[data]\nseqlen = 1", r"unknown recipe key data\.seqlen"),
        ("[model]\nwidth = 1", r"unknown recipe key model\.width"),
        ("optim = 3", r"optim must be a table, got 3"),
        ("model = 3", r"model must be a table, got 3"),
        ("name = ''", r"name must be a non-empty string"),
        ("seed = -1", r"seed must be >= 0, got -1"),
        ("seed = 1.5", r"seed must be an integer, got 1.5"),
        ("out_dir = 3", r"out_dir must be a non-empty string, got 3"),
        ("[model]\npreset = 'huge'", r"model\.preset must be one of"),
        ("[model]\nvocab_size = 10", r"model\.vocab_size is set by the vocabulary"),
        ("[model]\npreset = 'test'\ndim = 65", r"model: dim=65 is not divisible by n_heads=4"),
        ("[model]\npreset = 'test'\nn_layers = 0", r"model: n_layers must be a positive integer"),
        ("[data]\nseq_len = 0", r"data\.seq_len must be > 0, got 0"),
        ("[data]\nbatch_size = true", r"data\.batch_size must be an integer, got True"),
        ("[data]\nmixture = 'text'", r"data\.mixture must be an array of tables"),
        ("[[data.mixture]]\nweight = 1", r"data\.mixture\[0\]\.source must be a non-empty string"),
        (
            "[[data.mixture]]\nsource = 'text'\n[[data.mixture]]\nsource = 'x'\nweight = 0",
            r"data\.mixture\[1\]\.weight must be > 0, got 0",
        ),
        ("[optim]\nlr = -1", r"^optim\.lr must be > 0, got -1$"),
        ("[optim]\nlr = 'fast'", r"optim\.lr must be a number, got 'fast'"),
        ("[optim]\nmin_lr_ratio = 1.5", r"optim\.min_lr_ratio must be <= 1, got 1.5"),
        ("[optim]\nweight_decay = -0.1", r"optim\.weight_decay must be >= 0, got -0.1"),
        ("[optim]\nbetas = [0.9]", r"optim\.betas must be two numbers"),
        ("[optim]\nbetas = [0.9, 1.0]", r"optim\.betas\[1\] must be < 1, got 1.0"),
        ("[optim]\neps = 0", r"optim\.eps must be > 0, got 0"),
        ("[optim]\nmax_steps = 0", r"optim\.max_steps must be > 0, got 0"),
        ("[optim]\nwarmup_steps = -1", r"optim\.warmup_steps must be >= 0, got -1"),
        (
            "[optim]\nwarmup_steps = 20\nmax_steps = 10",
            r"optim\.warmup_steps must be <= 10, got 20",
        ),
        ("[optim]\ngrad_clip = -1", r"optim\.grad_clip must be >= 0, got -1"),
        ("[optim]\ngrad_accum = 0", r"optim\.grad_accum must be >= 1, got 0"),
        ("[train]\ncheckpoint_every = -5", r"train\.checkpoint_every must be >= 0, got -5"),
        ("[train]\nkeep_checkpoints = 0", r"train\.keep_checkpoints must be >= 1, got 0"),
        ("[train]\nlog_every = 0", r"train\.log_every must be >= 1, got 0"),
        ("[train]\nautocast = 'fp16'", r"train\.autocast must be one of .*got 'fp16'"),
        ("[train]\nexport = 1", r"train\.export must be a string, got 1"),
        ("[train]\nthreads = -1", r"train\.threads must be >= 0, got -1"),
        ("[train]\ntrainable = 'heads'", r"train\.trainable must be a list of parameter-name"),
        ("[train]\ntrainable = ['']", r"train\.trainable must be a list of parameter-name"),
        ("[optim\nlr = 1", r"invalid TOML"),
    ],
)
def test_recipe_errors_name_the_field(tmp_path, toml, match):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ValueError, match=match):
        load_recipe(path)


def test_sections_validate_when_built_directly():
    with pytest.raises(ValueError, match=r"optim\.lr must be > 0, got 0"):
        OptimSection(lr=0)
    with pytest.raises(ValueError, match=r"optim must be of type OptimSection"):
        Recipe(optim={"lr": 1})
    with pytest.raises(ValueError, match=r"recipe must be a table"):
        Recipe.from_dict([])


def test_load_recipe_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_recipe(tmp_path / "nope.toml")


# -- schedule and optimiser ---------------------------------------------------------------------


def test_lr_schedule_warms_up_then_follows_the_cosine():
    optim = OptimSection(lr=1.0, min_lr_ratio=0.1, warmup_steps=10, max_steps=111)
    assert lr_at(0, optim) == pytest.approx(0.1)
    assert lr_at(4, optim) == pytest.approx(0.5)
    assert lr_at(9, optim) == pytest.approx(1.0)  # peak at the end of warm-up
    assert lr_at(10, optim) == pytest.approx(1.0)
    assert lr_at(35, optim) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 4)))
    assert lr_at(60, optim) == pytest.approx(0.55)  # half-way: mean of peak and floor
    assert lr_at(110, optim) == pytest.approx(0.1)  # the last step sits on the floor
    assert lr_at(500, optim) == pytest.approx(0.1)
    lrs = [lr_at(s, optim) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_lr_schedule_edge_cases():
    no_warmup = OptimSection(lr=2.0, min_lr_ratio=0.0, warmup_steps=0, max_steps=3)
    assert [lr_at(s, no_warmup) for s in range(3)] == pytest.approx([2.0, 1.0, 0.0])
    all_warmup = OptimSection(lr=1.0, warmup_steps=4, max_steps=4)
    assert [lr_at(s, all_warmup) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])


def test_weight_decay_skips_norms_biases_and_embeddings():
    model = Transformer(preset("test", 320, attention_bias=True, qk_norm=True))
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    plain = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert decayed | plain == set(names.values()) and not decayed & plain
    assert "tok_embeddings.weight" in plain  # the tied head shares it
    assert all(n.endswith(("norm.weight", "bias")) or "embeddings" in n for n in plain)
    assert all(n.endswith("proj.weight") for n in decayed)
    assert "layers.0.attn.q_proj.weight" in decayed and "layers.0.attn.q_proj.bias" in plain


# -- training -------------------------------------------------------------------------------------


def test_loss_decreases_on_a_learnable_source(tmp_path):
    recipe = make_recipe(
        tmp_path, data={"seq_len": 32, "batch_size": 8}, optim={"max_steps": 30, "lr": 1e-2}
    )
    result = train(recipe, build_pattern_data, resume=None, progress=False)
    assert result.step == 30 and len(result.losses) == 30 and result.start_step == 0
    assert result.losses[0] > math.log(320) - 0.5  # starts near uniform over the vocabulary
    assert sum(result.losses[-5:]) / 5 < 0.5 * result.losses[0]


def test_trainable_prefixes_train_only_those_parameters(tmp_path):
    recipe = make_recipe(tmp_path, optim={"max_steps": 3}, train={"trainable": ["layers.1"]})
    result = train(recipe, build_pattern_data, None, progress=False)
    torch.manual_seed(recipe.seed)  # the trainer's own start: same seed, same preset
    start = Transformer(preset("test", 320)).state_dict()
    end = weights(result.checkpoint)
    changed = {n for n in start if not torch.equal(start[n], end[n])}
    assert changed and all(n.startswith("layers.1.") for n in changed)
    assert "layers.1.attn.q_proj.weight" in changed and "tok_embeddings.weight" not in changed
    with pytest.raises(ValueError, match=r"train\.trainable: 'heads\.flow' names no parameter"):
        recipe = make_recipe(tmp_path / "b", train={"trainable": ["heads.flow"]})
        train(recipe, build_pattern_data, None, progress=False)


def test_resume_continues_the_same_loss_curve(tmp_path):
    """N steps in one go == k steps, a crash, then the rest from the checkpoint."""
    sections = {
        "optim": {"max_steps": 8, "grad_accum": 2, "grad_clip": 0.5},
        "train": {"checkpoint_every": 3, "keep_checkpoints": 5},
    }
    full = train(make_recipe(tmp_path / "a", **sections), build_pattern_data, None, progress=False)

    crashed = make_recipe(tmp_path / "b", **sections)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(crashed, data_with(lambda s: CrashAt(s, 5)), resume="auto", progress=False)
    assert [s for s, _ in list_checkpoints(crashed.out_dir)] == [3]
    resumed = train(crashed, build_pattern_data, resume="auto", progress=False)
    assert resumed.start_step == 3 and resumed.step == 8
    torch.testing.assert_close(
        torch.tensor(resumed.losses), torch.tensor(full.losses[3:]), rtol=1e-6, atol=1e-6
    )
    assert_same_weights(full.checkpoint, resumed.checkpoint)
    # Lines logged between the checkpoint and the crash were replaced, not duplicated.
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(1, 9))
    assert json.loads(lines[-1])["loss"] == pytest.approx(full.losses[-1], abs=1e-6)

    # A path resumes that checkpoint, here into a fresh out_dir.
    branch = make_recipe(tmp_path / "c", **sections)
    path = tmp_path / "b" / "checkpoints" / "step_0000003"
    again = train(branch, build_pattern_data, resume=path, progress=False)
    torch.testing.assert_close(
        torch.tensor(again.losses), torch.tensor(full.losses[3:]), rtol=1e-6, atol=1e-6
    )
    assert_same_weights(full.checkpoint, again.checkpoint)


def test_grad_accumulation_equals_one_big_batch(tmp_path):
    small = make_recipe(tmp_path / "accum", optim={"grad_accum": 3, "max_steps": 4})
    big = make_recipe(tmp_path / "big", optim={"max_steps": 4})  # 3 x 4 rows per step
    a = train(small, build_pattern_data, None, progress=False)
    b = train(big, data_with(lambda s: Concat(s, 3)), None, progress=False)
    torch.testing.assert_close(torch.tensor(a.losses), torch.tensor(b.losses), rtol=1e-5, atol=1e-5)
    assert_same_weights(a.checkpoint, b.checkpoint, atol=1e-5)


def test_resume_when_finished_runs_nothing(tmp_path):
    recipe = make_recipe(tmp_path, optim={"max_steps": 2})
    first = train(recipe, build_pattern_data, resume="auto", progress=False)
    again = train(recipe, build_pattern_data, resume="auto", progress=False)
    assert again.losses == [] and again.step == 2 and again.start_step == 2
    assert again.checkpoint == first.checkpoint


# -- checkpoints --------------------------------------------------------------------------------


def test_checkpoints_are_pruned_to_the_newest(tmp_path):
    recipe = make_recipe(
        tmp_path,
        optim={"max_steps": 7},
        train={"checkpoint_every": 2, "keep_checkpoints": 2},
    )
    result = train(recipe, build_pattern_data, None, progress=False)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_0000006", "step_0000007"]  # 2 and 4 pruned, the end saved too
    assert result.checkpoint == tmp_path / "checkpoints" / "step_0000007"
    assert latest_checkpoint(tmp_path) == result.checkpoint


def test_every_checkpoint_is_a_model_folder_with_full_state(tmp_path):
    recipe = make_recipe(tmp_path, optim={"max_steps": 4}, train={"checkpoint_every": 2})
    train(recipe, build_pattern_data, None, progress=False)
    found = list_checkpoints(tmp_path)
    assert [s for s, _ in found] == [2, 4]
    n_params = len(list(Transformer(preset("test", 320)).parameters()))
    for step, path in found:
        bundle = load_model(path / "model")
        # Saved with the recipe's absolute paths made relative to the model folder.
        recipe_meta = relative_paths(recipe.to_dict(), path / "model")
        assert bundle.meta == {"recipe": recipe_meta, "step": step}
        assert bundle.vocab.size == 320 and bundle.model.config.dim == 64
        logits = bundle.model(torch.zeros(1, 4, dtype=torch.long))
        assert logits.shape == (1, 4, 320) and torch.isfinite(logits).all()
        info = json.loads((path / "trainer.json").read_text())
        assert info["step"] == step and info["tokens"] == step * 4 * 16
        assert info["scheduler"] == {
            "kind": "warmup_cosine",
            "step": step,
            "last_lr": lr_at(step - 1, recipe.optim),
        }
        assert [g["weight_decay"] for g in info["param_groups"]] == [0.1, 0.0]
        assert len(info["param_names"]) == n_params and info["recipe"] == recipe.to_dict()
        assert set(info["rng"]) >= {"torch", "numpy", "python"}
        from safetensors.torch import load_file

        optim = load_file(str(path / "optimizer.safetensors"))
        assert all(re.fullmatch(r"state\.\d+\.(step|exp_avg|exp_avg_sq)", k) for k in optim)
        assert {int(k.split(".")[1]) for k in optim} == set(range(n_params))
        assert float(optim["state.0.step"]) == step


def test_a_crash_while_saving_leaves_the_previous_checkpoint_latest(tmp_path, monkeypatch):
    recipe = make_recipe(tmp_path, optim={"max_steps": 4}, train={"checkpoint_every": 2})
    real_save = state_module.save_file
    calls = []

    def failing_save(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(state_module, "save_file", failing_save)
    with pytest.raises(OSError, match="disk full"):
        train(recipe, build_pattern_data, None, progress=False)
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir())[0].startswith(".tmp-step_0000004")
    assert latest_checkpoint(tmp_path) == root / "step_0000002"
    monkeypatch.setattr(state_module, "save_file", real_save)
    result = train(recipe, build_pattern_data, "auto", progress=False)
    assert result.start_step == 2
    assert sorted(p.name for p in root.iterdir()) == ["step_0000002", "step_0000004"]


def test_resume_errors(tmp_path):
    recipe = make_recipe(tmp_path / "run", optim={"max_steps": 2})
    with pytest.raises(FileNotFoundError, match="not a training checkpoint"):
        train(recipe, build_pattern_data, resume=tmp_path / "missing", progress=False)
    train(recipe, build_pattern_data, None, progress=False)
    with pytest.raises(ValueError, match=r"checkpoints past step 0 \(step_0000002\)"):
        train(recipe, build_pattern_data, resume=None, progress=False)
    other = make_recipe(tmp_path / "other", model={"preset": "test", "dim": 32})
    with pytest.raises(ValueError, match=r"checkpoint model differs .*'dim'"):
        train(other, build_pattern_data, resume=latest_checkpoint(tmp_path / "run"), progress=False)


# -- metrics, progress, hooks ---------------------------------------------------------------------


def test_metrics_lines_are_well_formed(tmp_path):
    recipe = make_recipe(tmp_path, optim={"max_steps": 5}, train={"log_every": 2})
    result = train(recipe, build_pattern_data, None, progress=False)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    keys = {"step", "loss", "lr", "grad_norm", "tokens", "tokens_per_s", "elapsed_s"}
    assert [line["step"] for line in lines] == [2, 4]
    for line in lines:
        assert set(line) == keys
        assert line["loss"] == pytest.approx(result.losses[line["step"] - 1])
        assert line["lr"] == pytest.approx(lr_at(line["step"] - 1, recipe.optim))
        assert line["tokens"] == line["step"] * 4 * 16
        assert line["grad_norm"] > 0 and line["tokens_per_s"] > 0 and line["elapsed_s"] > 0
    assert lines[1]["elapsed_s"] > lines[0]["elapsed_s"]


def test_progress_bar_and_summary_line(tmp_path, capsys):
    recipe = make_recipe(tmp_path, optim={"max_steps": 2})
    train(recipe, build_pattern_data, None, progress=True)
    err = capsys.readouterr().err
    assert "loss=" in err and "lr=" in err and "tok_s=" in err
    assert re.search(r"tiny: step 2/2, loss \d+\.\d+, 128 tokens, .*step_0000002", err)


def test_export_hook_gets_the_final_model(tmp_path):
    calls = []

    def export(model, vocab, tokenizers, recipe):
        calls.append((vocab.size, tokenizers, recipe.name))
        from mmntp.model.checkpoint import save_model

        return save_model(tmp_path / "export", model, vocab, tokenizers)

    recipe = make_recipe(tmp_path / "run", optim={"max_steps": 2})
    result = train(recipe, build_pattern_data, None, export_fn=export, progress=False)
    assert calls == [(320, {}, "tiny")]
    assert result.export == tmp_path / "export"
    exported = load_model(tmp_path / "export").model.state_dict()
    for name, tensor in weights(result.checkpoint).items():
        assert torch.equal(tensor, exported[name]), name


@pytest.mark.parametrize("avx512_bf16,amx", [(True, False), (False, True), (False, False)])
def test_auto_autocast_picks_bf16_only_where_the_cpu_has_it(monkeypatch, avx512_bf16, amx):
    from mmntp.train.trainer import native_bf16

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert native_bf16(torch.device("cpu")) is (avx512_bf16 or amx)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert native_bf16(torch.device("cpu")) is False  # no probe: fp32, the safe choice


def test_bf16_autocast_runs_on_cpu(tmp_path):
    steps = {"optim": {"max_steps": 2}}
    fp32 = train(make_recipe(tmp_path / "a", **steps), build_pattern_data, None, progress=False)
    recipe = make_recipe(tmp_path / "b", **steps, train={"autocast": "bf16"})
    bf16 = train(recipe, build_pattern_data, None, progress=False)
    assert bf16.losses != fp32.losses  # it did run in bf16
    torch.testing.assert_close(
        torch.tensor(bf16.losses), torch.tensor(fp32.losses), atol=0.05, rtol=0
    )


def test_threads_setting_is_restored(tmp_path):
    before = torch.get_num_threads()
    recipe = make_recipe(tmp_path, optim={"max_steps": 2}, train={"threads": 1})
    train(recipe, build_pattern_data, None, progress=False)
    assert torch.get_num_threads() == before


def test_bad_batches_and_lengths_are_rejected(tmp_path):
    def floats(source):
        class Floats:
            def batch(self, step, rank, world_size):
                ids, targets = source.batch(step, rank, world_size)
                return ids.float(), targets

        return Floats()

    def ragged(source):
        class Ragged:
            def batch(self, step, rank, world_size):
                ids, targets = source.batch(step, rank, world_size)
                return ids, targets[:, :-1]

        return Ragged()

    with pytest.raises(ValueError, match="must return int64"):
        train(make_recipe(tmp_path / "a"), data_with(floats), None, progress=False)
    with pytest.raises(ValueError, match=r"of one shape, got \(4, 16\) and \(4, 15\)"):
        train(make_recipe(tmp_path / "b"), data_with(ragged), None, progress=False)
    with pytest.raises(ValueError, match=r"data\.seq_len=1024 exceeds the model's max_seq_len=512"):
        recipe = make_recipe(tmp_path / "c", data={"seq_len": 1024})
        train(recipe, build_pattern_data, None, progress=False)


# -- DDP ------------------------------------------------------------------------------------------

DDP_SCRIPT = """
import json, os, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_train import build_pattern_data
from mmntp.train import Recipe, train

recipe = Recipe.from_dict(json.loads(sys.argv[1]))
result = train(recipe, build_pattern_data, resume=None, progress=False)
# One file per rank: the ranks share stdout, where their lines can interleave.
out = Path(sys.argv[2]) / f"result_{{os.environ['RANK']}}.json"
out.write_text(json.dumps({{"step": result.step, "losses": result.losses}}))
"""


def test_ddp_two_ranks_match_one_process_accumulating(tmp_path):
    """torchrun with 2 gloo ranks == one process drawing both ranks' batches by accumulation."""
    recipe = make_recipe(tmp_path / "ddp", optim={"max_steps": 2})
    script = tmp_path / "ddp_train.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT.format(tests=str(Path(__file__).parent))))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
    proc = subprocess.run(
        [*cmd, str(script), json.dumps(recipe.to_dict()), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = sorted(tmp_path.glob("result_*.json"))
    assert [f.name for f in files] == ["result_0.json", "result_1.json"], proc.stdout[-3000:]
    results = [json.loads(f.read_text()) for f in files]
    assert results[0] == results[1]  # every rank sees the global loss
    checkpoint = tmp_path / "ddp" / "checkpoints" / "step_0000002"
    info = json.loads((checkpoint / "trainer.json").read_text())
    assert info["world_size"] == 2 and info["tokens"] == 2 * 2 * 4 * 16
    metrics = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 2  # only rank 0 writes

    single = make_recipe(tmp_path / "single", optim={"max_steps": 2, "grad_accum": 2})
    local = train(single, build_pattern_data, None, progress=False)
    torch.testing.assert_close(
        torch.tensor(results[0]["losses"]), torch.tensor(local.losses), rtol=1e-5, atol=1e-5
    )
    assert_same_weights(checkpoint, local.checkpoint, atol=1e-5)
