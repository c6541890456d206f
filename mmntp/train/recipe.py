"""Training recipes: one TOML file parsed into validated dataclasses.

Every section is a dataclass checked in `__post_init__`; an error names the field and
the value it got (`optim.lr must be > 0, got -1`), and unknown keys are rejected so a
typo never silently falls back to a default. `Recipe.to_dict()` is the form saved into
checkpoints and model folders; `Recipe.from_dict` reads it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from mmntp.model.config import PRESETS, ModelConfig, preset
from mmntp.train.toml_fields import number, read_toml, reject_unknown, string, table

AUTOCAST_MODES = ("auto", "off", "bf16")


def _section(cls: type, prefix: str, value: Any) -> Any:
    values = table(prefix.rstrip("."), value)
    reject_unknown(prefix, values, {f.name for f in fields(cls)})
    return cls(**values)


@dataclass
class ModelSection:
    """A size preset plus ModelConfig overrides; vocab_size comes from the data side."""

    preset: str = "default-tiny"
    overrides: dict[str, Any] = field(default_factory=dict)
    # A model folder to start from (a fresh run only): weights of the same shape are copied,
    # and embedding / head rows by vocabulary entry, so a model learns a new modality
    # without forgetting the old ones. Relative paths resolve against the recipe's folder.
    init_from: str = ""
    # Grow deeper from init_from: entry i is the source block block i starts from; a block
    # named twice starts as an identity copy (mmntp.train.init). Empty: the same blocks.
    init_layers: list[int] = field(default_factory=list)
    # Multi-token frame heads by modality: {"audio": {"hidden": 256, "depth": 2,
    # "group": frames' tokens per forward (default: the tokenizer's codebooks), "weight": 1}}.
    frame_heads: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Continuous (next-X) heads by name: {"flow": {"type": "flow", "modality": "image",
    # "hidden": 256, "depth": 3, "weight": 1, ...FlowHeadConfig / DiffusionHeadConfig
    # fields}}; the vector width is the model's continuous_inputs[modality].
    continuous_heads: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.init_from, str):
            raise ValueError(f"model.init_from must be a folder path, got {self.init_from!r}")
        self._check_init_layers()
        table("model.frame_heads", self.frame_heads)
        for modality, head in self.frame_heads.items():
            where = f"model.frame_heads.{modality}."
            reject_unknown(where, table(where[:-1], head), {"hidden", "depth", "group", "weight"})
            for key in ("hidden", "depth", "group"):
                if key in head:
                    number(where + key, head[key], integer=True, ge=1)
            if "weight" in head:
                number(where + "weight", head["weight"], ge=0)
        widths = self.overrides.get("continuous_inputs", {})
        for name, head in table("model.continuous_heads", self.continuous_heads).items():
            where = f"model.continuous_heads.{name}"
            table(where, head)
            if head.get("type") not in ("flow", "diffusion"):
                raise ValueError(
                    f"{where}.type must be flow or diffusion, got {head.get('type')!r}"
                )
            if head.get("modality") not in widths:
                raise ValueError(
                    f"{where}.modality must name one of model.continuous_inputs "
                    f"{sorted(widths)}, got {head.get('modality')!r}"
                )
        if not isinstance(self.preset, str) or self.preset not in PRESETS:
            raise ValueError(f"model.preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        if "vocab_size" in self.overrides:
            raise ValueError("model.vocab_size is set by the vocabulary; remove it from the recipe")
        known = {f.name for f in fields(ModelConfig)} - {"vocab_size"}
        reject_unknown("model.", self.overrides, known | {"preset"})
        try:
            preset(self.preset, 1, **self.overrides)  # the config checks shapes and values
        except (TypeError, ValueError) as err:
            raise ValueError(f"model: {err}") from None

    def _check_init_layers(self) -> None:
        layers = self.init_layers
        if not layers:
            return
        if not isinstance(layers, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in layers
        ):
            raise ValueError(f"model.init_layers must be a list of block indices, got {layers!r}")
        if not self.init_from:
            raise ValueError("model.init_layers needs model.init_from (the blocks to start from)")
        depth = self.overrides.get("n_layers", PRESETS.get(self.preset, {}).get("n_layers"))
        if depth is not None and len(layers) != depth:
            raise ValueError(
                f"model.init_layers names {len(layers)} blocks but the model has {depth}"
            )

    @classmethod
    def from_table(cls, value: Any) -> ModelSection:
        rest = dict(table("model", value))
        preset_name = rest.pop("preset", cls.preset)
        return cls(
            preset=preset_name,
            init_from=rest.pop("init_from", ""),
            init_layers=rest.pop("init_layers", []),
            frame_heads=rest.pop("frame_heads", {}),
            continuous_heads=rest.pop("continuous_heads", {}),
            overrides=rest,
        )

    def to_dict(self) -> dict[str, Any]:
        init = {"init_from": self.init_from} if self.init_from else {}
        if self.init_layers:
            init["init_layers"] = self.init_layers
        heads = {"frame_heads": self.frame_heads} if self.frame_heads else {}
        if self.continuous_heads:
            heads["continuous_heads"] = self.continuous_heads
        return {"preset": self.preset, **init, **heads, **self.overrides}


@dataclass
class DataSection:
    """Sequence shape and the mixture; mixture entries pass through to `build_data` as dicts."""

    seq_len: int = 512
    batch_size: int = 16  # per rank (and per micro-batch when accumulating)
    mixture: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.seq_len = number("data.seq_len", self.seq_len, integer=True, gt=0)
        self.batch_size = number("data.batch_size", self.batch_size, integer=True, gt=0)
        if not isinstance(self.mixture, list):
            raise ValueError(f"data.mixture must be an array of tables, got {self.mixture!r}")
        entries = []
        for i, entry in enumerate(self.mixture):
            entry = dict(table(f"data.mixture[{i}]", entry))
            string(f"data.mixture[{i}].source", entry.get("source"), empty=False)
            if "weight" in entry:
                entry["weight"] = number(f"data.mixture[{i}].weight", entry["weight"], gt=0)
            entries.append(entry)
        self.mixture = entries


@dataclass
class OptimSection:
    """AdamW with linear warm-up then cosine decay to lr * min_lr_ratio."""

    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1  # not applied to norms, biases and embeddings
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    warmup_steps: int = 100
    max_steps: int = 2000
    grad_clip: float = 1.0  # 0 = no clipping (the grad norm is still recorded)
    grad_accum: int = 1

    def __post_init__(self) -> None:
        self.lr = number("optim.lr", self.lr, gt=0)
        self.min_lr_ratio = number("optim.min_lr_ratio", self.min_lr_ratio, ge=0, le=1)
        self.weight_decay = number("optim.weight_decay", self.weight_decay, ge=0)
        if not isinstance(self.betas, (list, tuple)) or len(self.betas) != 2:
            raise ValueError(f"optim.betas must be two numbers, got {self.betas!r}")
        self.betas = tuple(
            number(f"optim.betas[{i}]", b, ge=0, lt=1) for i, b in enumerate(self.betas)
        )
        self.eps = number("optim.eps", self.eps, gt=0)
        self.max_steps = number("optim.max_steps", self.max_steps, integer=True, gt=0)
        self.warmup_steps = number(
            "optim.warmup_steps", self.warmup_steps, integer=True, ge=0, le=self.max_steps
        )
        self.grad_clip = number("optim.grad_clip", self.grad_clip, ge=0)
        self.grad_accum = number("optim.grad_accum", self.grad_accum, integer=True, ge=1)


@dataclass
class TrainSection:
    """Checkpointing, logging and execution settings."""

    checkpoint_every: int = 500  # 0 = only at the end
    keep_checkpoints: int = 2
    log_every: int = 10
    # "auto" = bf16 on CUDA and on CPUs with native bf16 (AVX512-BF16 / AMX), else off
    autocast: str = "auto"  # or "off" / "bf16"
    export: str = ""  # final model folder written by the caller's export hook
    threads: int = 0  # 0 = leave torch's default
    # torch.compile the trunk, token head and token cross-entropy (losses.py): ~1.6x a
    # step on the default-tiny trunk on CPU, after a compile of ~20 s at the first step.
    compile: bool = False
    # Parameter-name prefixes that train (e.g. ["heads.flow", "heads.diffusion"]); the rest
    # stay as loaded and get no gradient, which also skips the trunk's backward. [] = all.
    trainable: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.compile, bool):
            raise ValueError(f"train.compile must be true or false, got {self.compile!r}")
        if not isinstance(self.trainable, list) or not all(
            isinstance(p, str) and p for p in self.trainable
        ):
            raise ValueError(
                f"train.trainable must be a list of parameter-name prefixes, got {self.trainable!r}"
            )
        self.checkpoint_every = number(
            "train.checkpoint_every", self.checkpoint_every, integer=True, ge=0
        )
        self.keep_checkpoints = number(
            "train.keep_checkpoints", self.keep_checkpoints, integer=True, ge=1
        )
        self.log_every = number("train.log_every", self.log_every, integer=True, ge=1)
        if self.autocast not in AUTOCAST_MODES:
            raise ValueError(
                f"train.autocast must be one of {AUTOCAST_MODES}, got {self.autocast!r}"
            )
        self.export = string("train.export", self.export)
        self.threads = number("train.threads", self.threads, integer=True, ge=0)


@dataclass
class Recipe:
    """A whole training run: model, data, optimiser and trainer settings."""

    name: str = "default"
    seed: int = 0
    out_dir: str = "runs/default"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)

    def __post_init__(self) -> None:
        self.name = string("name", self.name, empty=False)
        self.seed = number("seed", self.seed, integer=True, ge=0)
        self.out_dir = string("out_dir", self.out_dir, empty=False)
        for name, cls in (
            ("model", ModelSection),
            ("data", DataSection),
            ("optim", OptimSection),
            ("train", TrainSection),
        ):
            if not isinstance(getattr(self, name), cls):
                raise ValueError(
                    f"{name} must be of type {cls.__name__}, got {getattr(self, name)!r}"
                )

    @classmethod
    def from_dict(cls, data: dict[str, Any], base_dir: str | Path | None = None) -> Recipe:
        """Build from the TOML tables; relative out_dir/export resolve against `base_dir`."""
        data = table("recipe", data)
        sections = {"model", "data", "optim", "train"}
        reject_unknown("", data, {"name", "seed", "out_dir"} | sections)
        top = {k: v for k, v in data.items() if k not in sections}
        recipe = cls(
            **top,
            model=ModelSection.from_table(data.get("model", {})),
            data=_section(DataSection, "data.", data.get("data", {})),
            optim=_section(OptimSection, "optim.", data.get("optim", {})),
            train=_section(TrainSection, "train.", data.get("train", {})),
        )
        if base_dir is not None:
            base = Path(base_dir)
            recipe.out_dir = str((base / recipe.out_dir).resolve())
            if recipe.train.export:
                recipe.train.export = str((base / recipe.train.export).resolve())
            if recipe.model.init_from:
                recipe.model.init_from = str((base / recipe.model.init_from).resolve())
            for entry in recipe.data.mixture:  # tokenizer cards named by mixture entries
                if isinstance(entry.get("card"), str) and entry["card"]:
                    entry["card"] = str((base / entry["card"]).resolve())
        return recipe

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/TOML-able form (the shape of the recipe file)."""
        optim = {f.name: getattr(self.optim, f.name) for f in fields(OptimSection)}
        optim["betas"] = list(self.optim.betas)
        return {
            "name": self.name,
            "seed": self.seed,
            "out_dir": self.out_dir,
            "model": self.model.to_dict(),
            "data": {
                "seq_len": self.data.seq_len,
                "batch_size": self.data.batch_size,
                "mixture": [dict(e) for e in self.data.mixture],
            },
            "optim": optim,
            "train": {f.name: getattr(self.train, f.name) for f in fields(TrainSection)},
        }


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a TOML recipe; relative paths in it resolve against its folder."""
    data, path = read_toml(path)
    return Recipe.from_dict(data, base_dir=path.parent)
