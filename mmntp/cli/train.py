"""`mmntp train`: a model from a TOML recipe, or every unfinished stage of a curriculum."""

from __future__ import annotations

import sys
from pathlib import Path

from mmntp.cli.options import add_torch_threads


def add_train_parser(sub) -> None:
    tr = sub.add_parser("train", help="train a model from a TOML recipe or curriculum")
    tr.add_argument("recipe", help="a recipe, or a curriculum ([[stages]]: all unfinished ones)")
    tr.add_argument("--stage", help="a curriculum's stage to train (alone)")
    tr.add_argument("--write-card", action="store_true", help="regenerate CARD.md's stage list")
    tr.add_argument(
        "--resume",
        default="auto",
        help="'auto' (newest checkpoint), 'none', or a checkpoint folder",
    )
    tr.add_argument("--max-steps", type=int, help="override optim.max_steps")
    tr.add_argument("--out-dir", help="override out_dir")
    tr.add_argument("--export", help="override train.export (final model folder)")
    add_torch_threads(tr)
    tr.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from mmntp.train.curriculum import is_curriculum, train_command
    from mmntp.train.data import build_data, export_model
    from mmntp.train.recipe import load_recipe
    from mmntp.train.trainer import train

    if is_curriculum(args.recipe) or args.stage or args.write_card:
        return train_command(args)
    recipe = load_recipe(args.recipe)
    if args.max_steps is not None:
        recipe.optim.max_steps = args.max_steps
    if args.out_dir:
        recipe.out_dir = str(Path(args.out_dir).resolve())
    if args.export is not None:
        recipe.train.export = str(Path(args.export).resolve()) if args.export else ""
    resume = None if args.resume == "none" else args.resume
    result = train(recipe, build_data, resume=resume, export_fn=export_model)
    print(f"trained to step {result.step}; last checkpoint {result.checkpoint}", file=sys.stderr)
    return 0
