"""The training curriculum: services/default/curriculum.toml expands to exactly the 17 stage
recipes it replaced, the card's stage list is generated from it, and `mmntp train
CURRICULUM` resumes at the first unfinished stage (or runs the one `--stage` names).

tests/data/default_stage_recipes.json froze the 17 recipe files as they parsed
(`Recipe.from_dict(toml).to_dict()`, paths as written), generated from them in the commit
that added the curriculum, where a test checked the freeze against the files themselves.
"""

import json
import os
import tomllib
from pathlib import Path

import pytest

from mmntp.cli import main
from mmntp.train.curriculum import (
    card_path,
    card_with_stages,
    expand,
    load_curriculum,
    model_complete,
    run_curriculum,
)
from mmntp.train.recipe import Recipe

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "services" / "default"
CURRICULUM = DEFAULT / "curriculum.toml"
FROZEN = json.loads((Path(__file__).parent / "data" / "default_stage_recipes.json").read_text())


def canonical(recipe: Recipe) -> str:
    """JSON with sorted keys: 1 and 1.0 differ, as they would in a saved recipe."""
    return json.dumps(recipe.to_dict(), sort_keys=True)


def test_curriculum_expands_to_the_frozen_stage_recipes():
    expanded = expand(tomllib.loads(CURRICULUM.read_text()))
    assert [name for name, _, _ in expanded] == [s["stage"] for s in FROZEN["stages"]]
    for (name, _, raw), frozen in zip(expanded, FROZEN["stages"], strict=True):
        assert canonical(Recipe.from_dict(raw)) == canonical(Recipe.from_dict(frozen["recipe"])), (
            name
        )


def test_resolved_stage_recipes_equal_the_frozen_ones_resolved():
    curriculum = load_curriculum(CURRICULUM)
    assert [s.index for s in curriculum.stages] == list(range(1, 18))
    for stage, frozen in zip(curriculum.stages, FROZEN["stages"], strict=True):
        expected = Recipe.from_dict(frozen["recipe"], base_dir=DEFAULT)
        assert canonical(stage.recipe) == canonical(expected), stage.name
    # The chain: stage k starts from stage k-1's model; the last writes the bundled one.
    for before, stage in zip(curriculum.stages, curriculum.stages[1:]):
        assert stage.recipe.model.init_from == before.recipe.train.export
    assert curriculum.stages[-1].model_dir == DEFAULT / "model"
    assert curriculum.stages[0].model_dir == ROOT / "runs" / "default-base" / "model"


def test_the_card_lists_the_curriculum_stages():
    """CARD.md's stage list is generated: `mmntp train services/default/curriculum.toml
    --write-card` rewrites it from the stages' notes."""
    curriculum = load_curriculum(CURRICULUM)
    card = card_path(curriculum).read_text()
    assert card == card_with_stages(card, curriculum), "stale: run the --write-card command"
    for stage in curriculum.stages:
        assert f"| {stage.index} | `{stage.name}` | {stage.note} |" in card
    assert "mmntp train services/default/curriculum.toml --stage NAME" in card


# -- the loader's checks --------------------------------------------------------------------------

TINY = """
name = "tiny"
out_dir = "runs/{stage}"
export = "final"

[defaults]
seed = 1
[defaults.model]
preset = "test"
[defaults.data]
seq_len = 64
batch_size = 2
[defaults.data.mixture.timeseries]
max_length = 48
max_horizon = 8
[defaults.data.mixture.text]
[defaults.optim]
warmup_steps = 1
max_steps = 2
[defaults.train]
checkpoint_every = 1
log_every = 1

[[stages]]
name = "one"
note = "series and text"
data.mixture.timeseries.weight = 1.0
data.mixture.text.weight = 0.5

[[stages]]
name = "two"
note = "text only, one more step"
seed = 2
optim.max_steps = 3
data.mixture.timeseries.weight = 0
"""


def write(tmp_path: Path, text: str = TINY) -> Path:
    path = tmp_path / "curriculum.toml"
    path.write_text(text)
    return path


def test_stages_carry_changes_forward_and_derive_paths(tmp_path):
    curriculum = load_curriculum(write(tmp_path))
    one, two = curriculum.stages
    assert [e["source"] for e in one.recipe.data.mixture] == ["timeseries", "text"]
    assert [e["source"] for e in two.recipe.data.mixture] == ["text"]  # weight 0: left out
    assert (one.recipe.seed, two.recipe.seed, two.recipe.optim.max_steps) == (1, 2, 3)
    assert one.recipe.out_dir == str(tmp_path / "runs" / "one")
    assert one.model_dir == tmp_path / "runs" / "one" / "model"
    assert two.model_dir == tmp_path / "final"  # the last stage: the curriculum's export
    assert (one.recipe.model.init_from, two.recipe.model.init_from) == ("", str(one.model_dir))
    assert one.recipe.name == two.recipe.name == "tiny"


@pytest.mark.parametrize(
    "change, match",
    [
        ('model.init_from = "x"', r"stage 2 \(two\): model\.init_from follows from the stage"),
        ('train.export = "x"', r"train\.export follows from the stage order"),
        ("data.mixture.audio.weight = 1", r"data\.mixture\.audio is not in \[defaults"),
        ('data.mixture.text.weight = "x"', r"data\.mixture\.text\.weight must be >= 0"),
        ("bogus = 1", r"stage 2 \(two\): unknown recipe key bogus"),
        ("optim.lr = -1", r"stage 2 \(two\): optim\.lr must be > 0"),
        ('note = "two\\nlines"', r"stage 2 \(two\): note must be one line"),
        ('name = "one"', r"stage 2 \(one\): a second stage of that name"),
    ],
)
def test_curriculum_errors_name_the_stage_and_field(tmp_path, change, match):
    """`change` replaces or adds one line of stage two."""
    key = change.split(" = ")[0]
    lines = ['name = "two"', 'note = "text only"']
    lines = [line for line in lines if not line.startswith(key + " ")] + [change]
    text = TINY[: TINY.rindex("[[stages]]")] + "[[stages]]\n" + "\n".join(lines) + "\n"
    with pytest.raises(ValueError, match=match):
        load_curriculum(write(tmp_path, text))


# -- running: which stages run ----------------------------------------------------------------


def fake_train(calls):
    """A train_fn that writes a complete model folder (what the real export leaves)."""

    def train_fn(recipe, resume):
        calls.append((recipe.out_dir.rsplit("/", 1)[-1], resume, recipe.optim.max_steps))
        folder = Path(recipe.train.export)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.safetensors").write_bytes(b"weights")
        (folder / "config.json").write_text('{"format": "mmntp-model"}')
        return None

    return train_fn


def test_a_run_resumes_at_the_first_unfinished_stage(tmp_path):
    curriculum = load_curriculum(write(tmp_path))
    one, two = curriculum.stages
    calls, logs = [], []
    run = lambda **kw: run_curriculum(curriculum, train_fn=fake_train(calls), log=logs.append, **kw)  # noqa: E731
    run()
    assert calls == [("one", "auto", 2), ("two", "auto", 3)]
    assert logs == [
        f"stage 1/2 one: series and text -> {one.model_dir}",
        f"stage 2/2 two: text only, one more step -> {two.model_dir}",
    ]
    calls.clear(), logs.clear()
    run()
    assert calls == [] and logs[-1].endswith("all 2 stages finished")
    assert logs[0] == f"stage 1/2 one: finished ({one.model_dir}), skipped"
    # A half-written model (no config.json yet) is unfinished: that stage runs again.
    (two.model_dir / "config.json").unlink()
    assert not model_complete(two.model_dir)
    run(max_steps=5, resume=None)
    assert calls == [("two", None, 5)]
    # A retrained stage 1 makes stage 2 stale (make's rule): both run from stage 1 on...
    calls.clear()
    os.utime(two.model_dir / "config.json", (1, 1))
    run()
    assert calls == [("two", "auto", 3)]
    # ...and --stage runs one stage, finished or not.
    calls.clear()
    run(stage="one")
    assert calls == [("one", "auto", 2)]
    with pytest.raises(ValueError, match="has no stage 'three'"):
        run(stage="three")
    with pytest.raises(ValueError, match="needs --stage"):
        run(resume=str(tmp_path))


def test_a_stage_needs_the_previous_stage_model(tmp_path):
    curriculum = load_curriculum(write(tmp_path))
    with pytest.raises(ValueError, match="starts from the model of stage 'one', .* not finished"):
        run_curriculum(curriculum, stage="two", train_fn=fake_train([]), log=lambda _: None)


def test_mmntp_train_runs_a_tiny_curriculum_and_one_stage(tmp_path, capsys):
    """The real trainer, through the CLI: 2 stages of a few steps, then one again."""
    path = write(tmp_path)
    assert main(["train", str(path)]) == 0
    err = capsys.readouterr().err
    assert "stage 1/2 one:" in err and "stage 2/2 two:" in err
    assert model_complete(tmp_path / "runs" / "one" / "model")
    assert model_complete(tmp_path / "final")
    steps = [json.loads(x)["step"] for x in (tmp_path / "runs/two/metrics.jsonl").open()]
    assert steps == [1, 2, 3]
    assert main(["train", str(path)]) == 0
    assert "all 2 stages finished" in capsys.readouterr().err
    assert main(["train", str(path), "--stage", "two", "--max-steps", "4"]) == 0
    steps = [json.loads(x)["step"] for x in (tmp_path / "runs/two/metrics.jsonl").open()]
    assert steps == [1, 2, 3, 4]  # resumed from its step-3 checkpoint
    assert main(["train", str(path), "--out-dir", "x"]) == 2
    assert "--out-dir" in capsys.readouterr().err
