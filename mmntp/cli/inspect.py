"""`mmntp inspect` (a model folder's config, size and vocabulary) and `mmntp import-hf`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mmntp.cli.options import add_torch_threads


def add_inspect_parsers(sub) -> None:
    ins = sub.add_parser("inspect", help="show a model folder's config, size and vocabulary")
    ins.add_argument("dir")
    ins.add_argument("--json", action="store_true")
    add_torch_threads(ins)
    ins.set_defaults(func=cmd_inspect)

    imp = sub.add_parser("import-hf", help="convert a Hugging Face Llama-family folder")
    imp.add_argument("src")
    imp.add_argument("dst")
    add_torch_threads(imp)
    imp.set_defaults(func=cmd_import_hf)


def cmd_inspect(args) -> int:
    from mmntp.model.checkpoint import ModelLoadError, load_model, service_model

    try:
        path, _ = service_model(Path(args.dir))
        bundle = load_model(path)
    except ModelLoadError as err:  # an unloadable folder: one line, no traceback
        print(f"mmntp inspect: error: {err}", file=sys.stderr)
        return 1
    info = {
        "path": str(path),
        "parameters": bundle.model.num_parameters(),
        "model": bundle.model.config.to_dict(),
        "vocab": bundle.vocab.to_dict(),
        "tokenizers": {k: type(t).__name__ for k, t in bundle.tokenizers.items()},
        "heads": list(bundle.model.heads),
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    cfg = bundle.model.config
    print(f"model folder  {path}")
    print(f"parameters    {info['parameters']:,}")
    print(
        f"trunk         dim {cfg.dim}, {cfg.n_layers} layers, {cfg.n_heads} heads "
        f"({cfg.n_kv_heads} kv), ffn {cfg.ffn_dim}, rope_theta {cfg.rope_theta:g}, "
        f"max_seq_len {cfg.max_seq_len}, tied {cfg.tie_embeddings}, qk_norm {cfg.qk_norm}"
    )
    print(f"heads         {', '.join(info['heads'])}")
    print(f"vocabulary    {bundle.vocab.size} ids, {len(bundle.vocab.specials)} specials")
    for r in bundle.vocab.ranges:
        print(f"  {r.modality:<11} codebook {r.codebook}  ids [{r.start}, {r.stop})  size {r.size}")
    for key, tok in bundle.tokenizers.items():
        print(f"tokenizer     {key}: {type(tok).__name__}")
    return 0


def cmd_import_hf(args) -> int:
    from mmntp.model.hf_import import import_hf

    dst = import_hf(args.src, args.dst)
    print(f"wrote mmntp model folder {dst}", file=sys.stderr)
    return 0
