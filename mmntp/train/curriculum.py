"""A training curriculum: one TOML file of shared defaults and ordered stages, each stage
holding only what differs from the one before it (`services/default/curriculum.toml`).

Expansion: stage k's recipe is `[defaults]` with the changes of stages 1..k applied in
order (tables merge key by key; anything else, lists included, is replaced). A stage's
`name`, `note`, `recipe_name`, `out_dir` and `model.init_layers` are its own and do not
carry over. `model.init_from` and `train.export` are derived, never written: stage 1
starts from scratch, stage k from stage k-1's model; a stage's model is OUT_DIR/model
(OUT_DIR from the curriculum's `out_dir` template, `{stage}` replaced by the stage name),
and the last stage's is the curriculum's `export`. The data mixture is a table keyed by
entry (the key is the source unless the entry sets `source`), in the order of
`[defaults.data.mixture]`; an entry is in a stage's mix while its weight is > 0.

Running (`mmntp train CURRICULUM`): a stage is finished when its model folder is complete
(`model_complete`: a `config.json` of format mmntp-model beside `model.safetensors`;
`save_model` writes the weights first and the config last, each atomically, and removes an
old config before it starts) and, past stage 1, not older than the previous stage's model
(make's rule: a retrained stage makes every later one stale). The run starts at the first
unfinished stage and trains it and every stage after it; `--stage NAME` trains one.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmntp.train.recipe import Recipe
from mmntp.train.state import TRAINER, latest_checkpoint
from mmntp.train.toml_fields import read_toml, reject_unknown, string, table

TOP_KEYS = {"name", "out_dir", "export", "defaults", "stages"}
OWN_KEYS = {"name", "note", "recipe_name", "out_dir"}  # a stage's own; never carried over
RECIPE_KEYS = {"seed", "model", "data", "optim", "train"}
DERIVED = (("model", "init_from"), ("train", "export"))
CARD_BEGIN = "<!-- stages:begin -->"
CARD_END = "<!-- stages:end -->"


@dataclass
class Stage:
    """One stage: its 1-based place, name, one-line note and resolved recipe."""

    index: int
    name: str
    note: str
    recipe: Recipe

    @property
    def model_dir(self) -> Path:
        return Path(self.recipe.train.export)


@dataclass
class Curriculum:
    path: Path
    name: str
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        names = ", ".join(s.name for s in self.stages)
        raise ValueError(f"{self.path} has no stage {name!r} (stages: {names})")


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with `changes` applied: tables merge key by key, other values replace."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _check_no_derived(where: str, values: dict[str, Any]) -> None:
    for section, key in DERIVED:
        if key in table(f"{where}{section}", values.get(section, {})):
            raise ValueError(
                f"{where}{section}.{key} follows from the stage order; remove it "
                f"(stage k starts from stage k-1's model, and writes OUT_DIR/model)"
            )


def _mixture(keyed: dict[str, Any], order: list[str]) -> list[dict[str, Any]]:
    """The keyed mixture -> the recipe's list: entries with a weight > 0, in `order`."""
    entries = []
    for key in order:
        entry = dict(table(f"data.mixture.{key}", keyed[key]))
        weight = entry.get("weight", 0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise ValueError(f"data.mixture.{key}.weight must be >= 0, got {weight!r}")
        if weight > 0:
            entries.append({"source": entry.pop("source", key), **entry})
    return entries


def expand(data: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """A parsed curriculum -> (stage name, note, recipe table) per stage, paths as written."""
    reject_unknown("", table("curriculum", data), TOP_KEYS)
    name = string("name", data.get("name", "default"), empty=False)
    out_template = string("out_dir", data.get("out_dir", "runs/{stage}"), empty=False)
    export = string("export", data.get("export", ""))
    defaults = dict(table("defaults", data.get("defaults", {})))
    reject_unknown("defaults.", defaults, RECIPE_KEYS)
    _check_no_derived("defaults.", defaults)
    order = list(table("defaults.data.mixture", defaults.get("data", {}).get("mixture", {})))
    stages = data.get("stages")
    if not isinstance(stages, list) or not stages:
        raise ValueError("stages must be a non-empty array of tables ([[stages]])")
    carried, seen, out = defaults, set(), []
    for i, stage in enumerate(stages, 1):
        stage = table(f"stages[{i - 1}]", stage)
        stage_name = string(f"stages[{i - 1}].name", stage.get("name"), empty=False)
        try:
            if stage_name in seen:
                raise ValueError("a second stage of that name")
            seen.add(stage_name)
            carried, recipe = _stage(stage, carried, order)
        except ValueError as err:
            raise ValueError(f"stage {i} ({stage_name}): {err}") from None
        recipe["name"] = recipe.get("name") or name
        recipe.setdefault("out_dir", out_template.replace("{stage}", stage_name))
        if out:
            recipe["model"]["init_from"] = out[-1][2]["train"]["export"]
        last = i == len(stages)
        model_dir = export if last and export else f"{recipe['out_dir']}/model"
        recipe["train"]["export"] = model_dir
        out.append((stage_name, stage["note"], recipe))
    return out


def _stage(
    stage: dict[str, Any], carried: dict[str, Any], order: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what carries on to the next stage, this stage's recipe table without derived paths)."""
    note = string("note", stage.get("note"), empty=False)
    if "\n" in note:
        raise ValueError("note must be one line")
    reject_unknown("", stage, OWN_KEYS | RECIPE_KEYS)
    _check_no_derived("", stage)
    changes = {k: v for k, v in stage.items() if k in RECIPE_KEYS}
    model_changes = dict(table("model", changes.get("model", {})))
    init_layers = model_changes.pop("init_layers", None)
    mixture = table("data.mixture", table("data", changes.get("data", {})).get("mixture", {}))
    unknown = sorted(set(mixture) - set(order))
    if unknown:
        raise ValueError(
            f"data.mixture.{unknown[0]} is not in [defaults.data.mixture]: declare it there "
            "(that fixes its place in the mixture's order)"
        )
    carried = merge(carried, {**changes, "model": model_changes})
    recipe = copy.deepcopy(carried)
    if "recipe_name" in stage:
        recipe["name"] = string("recipe_name", stage["recipe_name"], empty=False)
    if "out_dir" in stage:
        recipe["out_dir"] = string("out_dir", stage["out_dir"], empty=False)
    if init_layers is not None:
        recipe["model"]["init_layers"] = init_layers
    recipe.setdefault("train", {})
    data = recipe.setdefault("data", {})
    data["mixture"] = _mixture(data.get("mixture", {}), order)
    return carried, recipe


def load_curriculum(path: str | Path) -> Curriculum:
    """Read a curriculum; every stage's recipe validated, its paths resolved like a recipe's."""
    data, path = read_toml(path)
    try:
        expanded = expand(data)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    stages = []
    for i, (name, note, recipe) in enumerate(expanded, 1):
        try:
            resolved = Recipe.from_dict(recipe, base_dir=path.parent)
        except ValueError as err:
            raise ValueError(f"{path}: stage {i} ({name}): {err}") from None
        stages.append(Stage(i, name, note, resolved))
    return Curriculum(path, data.get("name", "default"), stages)


def is_curriculum(path: str | Path) -> bool:
    """Whether a TOML file is a curriculum (it has [[stages]]) rather than one recipe."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return False  # the recipe loader reports what is wrong with it
    return "stages" in data


# -- running ---------------------------------------------------------------------------------


def model_complete(folder: str | Path) -> bool:
    """A model folder as `save_model` finishes it: model.safetensors and a config.json of
    format mmntp-model (written last, atomically, so its presence means the weights are in)."""
    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(config, dict)
        and config.get("format") == "mmntp-model"
        and (folder / "model.safetensors").is_file()
    )


def _mtime(folder: Path) -> float:
    return (folder / "config.json").stat().st_mtime


def stage_finished(curriculum: Curriculum, stage: Stage) -> bool:
    """Its model is complete and, past stage 1, not older than the previous stage's."""
    if not model_complete(stage.model_dir):
        return False
    if stage.index == 1:
        return True
    before = curriculum.stages[stage.index - 2].model_dir
    return model_complete(before) and _mtime(stage.model_dir) >= _mtime(before)


def first_unfinished(curriculum: Curriculum) -> Stage | None:
    return next((s for s in curriculum.stages if not stage_finished(curriculum, s)), None)


def _check_inputs(curriculum: Curriculum, stage: Stage, resume: str | None) -> None:
    """The previous stage's model exists, and `resume="auto"` would not continue a run that
    started from an older version of it."""
    if stage.index == 1:
        return
    before = curriculum.stages[stage.index - 2]
    if not model_complete(before.model_dir):
        raise ValueError(
            f"stage {stage.name!r} starts from the model of stage {before.name!r}, "
            f"{before.model_dir}, which is not finished: train that stage first"
        )
    newest = latest_checkpoint(stage.recipe.out_dir) if resume == "auto" else None
    if newest is not None and (newest / TRAINER).stat().st_mtime < _mtime(before.model_dir):
        raise ValueError(
            f"stage {stage.name!r}: {newest} predates {before.model_dir} (stage "
            f"{before.name!r} was trained again since): move {stage.recipe.out_dir} away"
        )


TrainFn = Callable[[Recipe, Any], Any]


def _default_train(recipe: Recipe, resume: Any) -> Any:
    from mmntp.train.data import build_data, export_model
    from mmntp.train.trainer import train

    return train(recipe, build_data, resume=resume, export_fn=export_model)


def run_curriculum(
    curriculum: Curriculum,
    *,
    stage: str | None = None,
    resume: str | None = "auto",
    max_steps: int | None = None,
    train_fn: TrainFn = _default_train,
    log: Callable[[str], None] | None = None,
) -> list[tuple[Stage, Any]]:
    """Train from the first unfinished stage to the last (or the one named `stage`).

    `resume`: "auto" continues each stage from its newest checkpoint, None starts each
    fresh; a checkpoint folder only with `stage`. `max_steps` overrides every stage's.
    Returns (stage, what `train_fn` returned) for each stage trained.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    total = len(curriculum.stages)
    if stage is not None:
        todo = [curriculum.stage(stage)]
    else:
        if resume not in ("auto", None):
            raise ValueError("resume from a checkpoint folder needs --stage (which stage's)")
        first = first_unfinished(curriculum)
        done = curriculum.stages[: first.index - 1] if first else curriculum.stages
        for s in done:
            log(f"stage {s.index}/{total} {s.name}: finished ({s.model_dir}), skipped")
        todo = curriculum.stages[first.index - 1 :] if first else []
        if not todo:
            log(f"{curriculum.path}: all {total} stages finished")
    results = []
    for s in todo:
        _check_inputs(curriculum, s, resume)
        recipe = copy.deepcopy(s.recipe)
        if max_steps is not None:
            recipe.optim.max_steps = max_steps
        log(f"stage {s.index}/{total} {s.name}: {s.note} -> {s.model_dir}")
        results.append((s, train_fn(recipe, resume)))
    return results


# -- the card's stage list ---------------------------------------------------------------------


def _root(path: Path) -> Path:
    """The project folder the card's commands run from: the nearest one with pyproject.toml."""
    return next((p for p in path.parents if (p / "pyproject.toml").is_file()), path.parent)


def render_stages(curriculum: Curriculum) -> str:
    """The card's generated region: the commands and one row per stage (name, note, model)."""
    root = _root(curriculum.path)

    def shown(path: Path | str) -> str:
        return Path(os.path.relpath(Path(path), root)).as_posix()

    cmd = f"mmntp train {shown(curriculum.path)}"
    lines = [
        CARD_BEGIN,
        f"<!-- generated from {curriculum.path.name}'s notes by `{cmd} --write-card` -->",
        "",
        "```bash",
        f"{cmd}                 # every stage from the first unfinished one on",
        f"{cmd} --stage NAME    # one stage",
        "```",
        "",
        "| # | stage | what it does | model |",
        "|---|---|---|---|",
    ]
    for s in curriculum.stages:
        lines.append(f"| {s.index} | `{s.name}` | {s.note} | `{shown(s.model_dir)}` |")
    lines.append(CARD_END)
    return "\n".join(lines)


def card_with_stages(card: str, curriculum: Curriculum) -> str:
    """`card` with its stages region replaced by `render_stages`."""
    start, end = card.find(CARD_BEGIN), card.find(CARD_END)
    if start < 0 or end < start:
        raise ValueError(f"the card has no {CARD_BEGIN} ... {CARD_END} region")
    return card[:start] + render_stages(curriculum) + card[end + len(CARD_END) :]


def card_path(curriculum: Curriculum) -> Path:
    return curriculum.path.parent / "CARD.md"


def write_card(curriculum: Curriculum) -> bool:
    """Regenerate the stage list in CARD.md beside the curriculum; True if it changed."""
    path = card_path(curriculum)
    old = path.read_text()
    new = card_with_stages(old, curriculum)
    if new != old:
        path.write_text(new)
    return new != old


def train_command(args: Any) -> int:
    """`mmntp train CURRICULUM [--stage NAME] [--write-card]`: the CLI handler passes its
    parsed arguments (recipe, stage, write_card, resume, max_steps, out_dir, export)."""
    if not is_curriculum(args.recipe):
        raise ValueError(f"--stage and --write-card need a curriculum ([[stages]]): {args.recipe}")
    for flag, value in (("--out-dir", args.out_dir), ("--export", args.export)):
        if value is not None:
            raise ValueError(f"{flag} applies to one recipe; a curriculum derives each stage's")
    curriculum = load_curriculum(args.recipe)
    if args.write_card:
        changed = write_card(curriculum)
        print(f"{card_path(curriculum)}: {'written' if changed else 'up to date'}", file=sys.stderr)
        return 0
    resume = None if args.resume == "none" else args.resume
    results = run_curriculum(curriculum, stage=args.stage, resume=resume, max_steps=args.max_steps)
    for stage, result in results:
        print(f"stage {stage.name}: trained to step {result.step}", file=sys.stderr)
    return 0
