"""Training-state checkpoints: a loadable model folder plus optimiser and trainer state.

`out_dir/checkpoints/step_0000500/` holds
  model/                  a model folder (`mmntp.model.checkpoint.save_model`), so any
                          checkpoint loads with `load_model` like a released model
  optimizer.safetensors   the AdamW state flattened to `state.{param_index}.{key}`
  trainer.json            step, counters, param groups, scheduler position, RNG states
                          and the recipe

A checkpoint is written into a hidden `.tmp-*` folder and renamed into place, so a crash
mid-write never leaves a half checkpoint that `latest_checkpoint` would pick. Nothing
is pickled: tensors go through safetensors, everything else is JSON.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mmntp.model.checkpoint import load_model, save_model
from mmntp.model.vocab import VocabLayout

FORMAT = "mmntp-train-state"
FORMAT_VERSION = 1
MODEL = "model"
OPTIMIZER = "optimizer.safetensors"
TRAINER = "trainer.json"
_NAME = re.compile(r"^step_(\d{7,})$")
_SCRATCH = (".tmp-", ".old-")


@dataclass
class TrainerState:
    """Counters the trainer carries across a resume (weights and moments live apart)."""

    step: int = 0  # optimiser steps completed
    tokens: int = 0  # input tokens seen, all ranks together
    elapsed_s: float = 0.0  # training wall time over all runs so far
    lr: float = 0.0  # learning rate of the last step (the schedule is a function of step)
    world_size: int = 1
    recipe: dict[str, Any] = field(default_factory=dict)


def checkpoints_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def checkpoint_name(step: int) -> str:
    return f"step_{step:07d}"


def list_checkpoints(out_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run as (step, path), oldest first."""
    root = checkpoints_dir(out_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _NAME.match(path.name)
        if match and (path / TRAINER).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1][1] if found else None


def resolve_resume(resume: str | Path | None, out_dir: str | Path) -> Path | None:
    """None -> fresh start; "auto" -> newest checkpoint in out_dir (or fresh); else that one."""
    if resume is None:
        return None
    if resume == "auto":
        return latest_checkpoint(out_dir)
    path = Path(resume)
    if not (path / TRAINER).is_file():
        raise FileNotFoundError(f"resume: {path} is not a training checkpoint (no {TRAINER})")
    return path


# -- saving -----------------------------------------------------------------------------


def save_checkpoint(
    out_dir: str | Path,
    model: nn.Module,
    vocab: VocabLayout,
    tokenizers: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    state: TrainerState,
    keep: int,
) -> Path:
    """Write `checkpoints/step_XXXXXXX/` atomically, then keep only the newest `keep`."""
    root = checkpoints_dir(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    _sweep_scratch(root)
    name = checkpoint_name(state.step)
    final, tmp = root / name, root / f".tmp-{name}-{os.getpid()}"
    save_model(
        tmp / MODEL, model, vocab, tokenizers, meta={"recipe": state.recipe, "step": state.step}
    )
    tensors, groups = _flatten_optimizer(optimizer)
    save_file(tensors, str(tmp / OPTIMIZER), metadata={"format": FORMAT})
    info = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "step": state.step,
        "tokens": state.tokens,
        "elapsed_s": state.elapsed_s,
        "world_size": state.world_size,
        "scheduler": {"kind": "warmup_cosine", "step": state.step, "last_lr": state.lr},
        "param_groups": groups,
        "param_names": _param_names(model, optimizer),
        "rng": _rng_state(),
        "recipe": state.recipe,
    }
    # One top-level key a line keeps it readable despite the long RNG lists.
    text = "{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in info.items())
    (tmp / TRAINER).write_text(text + "\n}\n")  # written last: marks the folder complete
    if final.exists():  # re-saving a step (e.g. after a rewind): swap, then drop the old one
        old = root / f".old-{name}-{os.getpid()}"
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old)
    else:
        os.rename(tmp, final)
    prune_checkpoints(out_dir, keep)
    return final


def prune_checkpoints(out_dir: str | Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` checkpoints; returns the deleted paths."""
    stale = [path for _, path in list_checkpoints(out_dir)[:-keep]]
    for path in stale:
        shutil.rmtree(path)
    return stale


def _sweep_scratch(root: Path) -> None:
    # Leftovers of a crash mid-save; only rank 0 of one run ever writes here.
    for path in root.iterdir():
        if path.name.startswith(_SCRATCH):
            shutil.rmtree(path, ignore_errors=True)


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    sd = optimizer.state_dict()
    tensors = {}
    for index, slots in sd["state"].items():
        for key, value in slots.items():
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"optimizer state {index}.{key} is not a tensor: {value!r}")
            tensors[f"state.{index}.{key}"] = value.detach().contiguous().cpu()
    groups = [
        {k: list(v) if isinstance(v, tuple) else v for k, v in g.items()}
        for g in sd["param_groups"]
    ]
    return tensors, groups


def _param_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    names = {id(p): name for name, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def _rng_state() -> dict[str, Any]:
    version, keys, gauss = random.getstate()
    kind, np_keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(keys), gauss],
        "numpy": [kind, np_keys.tolist(), pos, has_gauss, cached],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


# -- loading ----------------------------------------------------------------------------


def read_trainer_info(path: str | Path) -> dict[str, Any]:
    """trainer.json of a checkpoint folder, format-checked."""
    file = Path(path) / TRAINER
    if not file.is_file():
        raise FileNotFoundError(f"{path} is not a training checkpoint (no {TRAINER})")
    info = json.loads(file.read_text())
    if info.get("format") != FORMAT:
        raise ValueError(f"{file}: not an mmntp training state (format={info.get('format')!r})")
    if info.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{file}: format_version {info['format_version']} is newer than this mmntp"
        )
    return info


def load_checkpoint(
    path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer
) -> TrainerState:
    """Restore weights, optimiser state and RNG states in place; returns the counters."""
    path = Path(path)
    info = read_trainer_info(path)
    bundle = load_model(path / MODEL)
    theirs, ours = bundle.model.config.to_dict(), model.config.to_dict()
    if theirs != ours:
        diff = sorted(k for k in ours if theirs.get(k) != ours[k])
        raise ValueError(f"{path}: checkpoint model differs from the recipe's in {diff}")
    model.load_state_dict(bundle.model.state_dict())
    names = _param_names(model, optimizer)
    if info["param_names"] != names:
        raise ValueError(f"{path}: optimizer parameters do not match the model's")
    optimizer.load_state_dict(_unflatten_optimizer(load_file(str(path / OPTIMIZER)), info))
    _set_rng_state(info["rng"])
    return TrainerState(
        step=int(info["step"]),
        tokens=int(info["tokens"]),
        elapsed_s=float(info["elapsed_s"]),
        lr=float(info["scheduler"]["last_lr"]),
        world_size=int(info["world_size"]),
        recipe=info["recipe"],
    )


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> dict:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = tensor
    groups = [
        {
            k: v if k in ("params", "param_names") or not isinstance(v, list) else tuple(v)
            for k, v in g.items()
        }
        for g in info["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def _set_rng_state(state: dict[str, Any]) -> None:
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    kind, np_keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(np_keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if (
        "cuda" in state
        and torch.cuda.is_available()
        and len(state["cuda"]) == torch.cuda.device_count()
    ):
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])
