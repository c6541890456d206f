"""`mmntp train-tokenizer`, `tokenize` and `detokenize`: tokenizer cards and their codes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mmntp.cli.options import add_torch_threads


def add_tokenizer_parsers(sub) -> None:
    tt = sub.add_parser(
        "train-tokenizer", help="train an image or audio tokenizer from a TOML recipe"
    )
    tt.add_argument("recipe")
    tt.add_argument("--max-steps", type=int, help="override optim.max_steps")
    tt.add_argument("--out-dir", help="write the card folder here (default: the recipe's)")
    tt.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_torch_threads(tt)
    tt.set_defaults(func=cmd_train_tokenizer)

    tok = sub.add_parser("tokenize", help="turn a file into codes with a tokenizer card")
    tok.add_argument("tokenizer", help="tokenizer card folder")
    tok.add_argument("input", help="image (PNG/JPEG), audio (WAV/FLAC), text (.txt) or series")
    tok.add_argument("-o", "--output", required=True, help="CODES.npy (state: CODES.json)")
    add_torch_threads(tok)
    tok.set_defaults(func=cmd_tokenize)

    det = sub.add_parser("detokenize", help="turn codes back into a file with a tokenizer card")
    det.add_argument("tokenizer", help="tokenizer card folder")
    det.add_argument("codes", help="CODES.npy written by tokenize (CODES.json beside it)")
    det.add_argument("-o", "--output", required=True, help="image (PNG), WAV, .txt or series CSV")
    add_torch_threads(det)
    det.set_defaults(func=cmd_detokenize)


def cmd_train_tokenizer(args) -> int:
    import tomllib

    if args.max_steps is not None and args.max_steps < 1:
        raise ValueError(f"--max-steps must be >= 1, got {args.max_steps}")
    try:
        kind = tomllib.loads(Path(args.recipe).read_text()).get("kind")
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{args.recipe} is not valid TOML: {err}") from None
    progress = not args.no_progress
    if kind == "codec":
        from mmntp.train.audio_codec import train_codec

        _, result = train_codec(args.recipe, args.out_dir, args.max_steps, progress)
    elif kind == "cochlear":
        from mmntp.train.cochlear import train_cochlear

        _, result = train_cochlear(args.recipe, args.out_dir, args.max_steps, progress)
    else:  # the image kinds ("vq", "kl"); the recipe loader names a bad kind
        from mmntp.train.image_tokenizer import load_image_recipe, train_image_tokenizer

        recipe = load_image_recipe(args.recipe)
        if args.max_steps is not None:
            recipe.optim.max_steps = args.max_steps
            recipe.optim.warmup_steps = min(recipe.optim.warmup_steps, args.max_steps)
        _, result = train_image_tokenizer(recipe, out_dir=args.out_dir, progress=progress)
    print(f"trained {result.steps} steps in {result.wall_s:.0f} s", file=sys.stderr)
    return 0


def cmd_tokenize(args) -> int:
    import numpy as np

    from mmntp.tokenizers import load_tokenizer

    output = _npy_path(args.output)
    tok = load_tokenizer(args.tokenizer)
    signal, extra = _read_signal(tok.modality, Path(args.input))
    encoded = tok.encode(signal)
    codes = encoded.codes.detach().cpu().numpy()
    meta = {"tokenizer": tok.type_name, "modality": tok.modality, "state": encoded.state}
    meta.update(extra)
    sidecar = output.with_suffix(".json")
    output.parent.mkdir(parents=True, exist_ok=True)
    sidecar.write_text(json.dumps(meta, indent=2) + "\n")
    np.save(output, codes, allow_pickle=False)
    print(f"wrote {output} {codes.dtype} {list(codes.shape)} and {sidecar}", file=sys.stderr)
    return 0


def cmd_detokenize(args) -> int:
    import numpy as np
    import torch

    from mmntp.tokenizers import load_tokenizer

    codes_path = _npy_path(args.codes)
    tok = load_tokenizer(args.tokenizer)
    sidecar = codes_path.with_suffix(".json")
    meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    if meta.get("tokenizer", tok.type_name) != tok.type_name:
        raise ValueError(f"{codes_path} was made by {meta['tokenizer']!r}, not {tok.type_name!r}")
    codes = torch.from_numpy(np.load(codes_path, allow_pickle=False))
    signal = tok.decode(codes, meta.get("state") or None)
    _write_signal(tok.modality, signal, Path(args.output), meta)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _npy_path(path: str) -> Path:
    if not path.endswith(".npy"):
        raise ValueError(f"codes file must end in .npy, got {path!r}")
    return Path(path)


def _read_signal(modality: str, path: Path) -> tuple[object, dict]:
    """A file -> (what the tokenizer's encode takes, extra sidecar fields)."""
    if not path.is_file():
        raise FileNotFoundError(f"input {str(path)!r} does not exist")
    if modality == "image":
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                return image.convert("RGB"), {}
        except UnidentifiedImageError as err:
            raise ValueError(f"{path} is not an image PIL can read") from err
    if modality == "text":
        return path.read_text(encoding="utf-8"), {}
    if modality == "timeseries":
        from mmntp.api.series_io import read_series

        values, timestamps = read_series(path)
        return values, ({"timestamps": timestamps} if timestamps else {})
    if modality == "audio":
        from mmntp.data.audio import read_wav

        return read_wav(path, field=str(path)), {}
    raise ValueError(f"tokenize does not read {modality!r} files yet")


def _write_signal(modality: str, signal, path: Path, meta: dict) -> None:
    """Writes a decoded signal: image -> PNG (or the suffix's format), text, series CSV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if modality == "image":
        from PIL import Image

        pixels = (signal.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()  # (H, W, 3)
        Image.fromarray(pixels).save(path)
    elif modality == "text":
        path.write_text(signal, encoding="utf-8")
    elif modality == "timeseries":
        values = [f"{float(v):.9g}" for v in signal.tolist()]  # NaN -> "nan", read as missing
        stamps = meta.get("timestamps")
        if stamps and len(stamps) == len(values):
            rows = ["timestamp,value", *(f"{t},{v}" for t, v in zip(stamps, values))]
        else:
            rows = ["value", *values]
        path.write_text("\n".join(rows) + "\n")
    elif modality == "audio":
        from mmntp.data.audio import SAMPLE_RATE, wav_bytes

        samples = signal.detach().cpu().numpy() if hasattr(signal, "detach") else signal
        path.write_bytes(wav_bytes(samples, SAMPLE_RATE))
    else:
        raise ValueError(f"detokenize does not write {modality!r} files yet")
