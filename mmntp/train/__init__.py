"""Model training: TOML recipes, the trainer loop and training-state checkpoints."""

from mmntp.train.recipe import (
    DataSection,
    ModelSection,
    OptimSection,
    Recipe,
    TrainSection,
    load_recipe,
)
from mmntp.train.state import (
    TrainerState,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from mmntp.train.trainer import TrainResult, build_optimizer, lr_at, param_groups, train

__all__ = [
    "DataSection",
    "ModelSection",
    "OptimSection",
    "Recipe",
    "TrainResult",
    "TrainSection",
    "TrainerState",
    "build_optimizer",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_recipe",
    "lr_at",
    "param_groups",
    "save_checkpoint",
    "train",
]
