"""`mmntp eval timeseries|image|audio`: a model on held-out data against baselines."""

from __future__ import annotations

import json
import sys

from mmntp.cli.options import add_torch_threads, write_json_report


def add_eval_parser(sub) -> None:
    ev = sub.add_parser("eval", help="evaluate a model on held-out data against baselines")
    kinds = ev.add_subparsers(dest="eval_command", required=True)
    ts = kinds.add_parser(
        "timeseries",
        help="MASE / WQL relative to seasonal naive on the bundled series' held-out windows",
    )
    ts.add_argument("--model", help="model or service folder (default: the bundled service)")
    ts.add_argument("--json", action="store_true", help="print one JSON object")
    ts.add_argument("--num-samples", type=int, default=20, help="mmntp sample paths per window")
    ts.add_argument("--seed", type=int, default=0, help="seed the per-window seeds derive from")
    ts.add_argument("--out", help="also write the JSON report (settings, machine, date) here")
    ts.add_argument(
        "--datasets", help="comma-separated datasets or series (default: all), e.g. nile,macrodata"
    )
    ts.add_argument(
        "--tables",
        default="in_domain,zero_shot",
        help="comma-separated tables: in_domain (held-out ends of training series), zero_shot "
        "(series no training reads; needs the data extra); default both",
    )
    ts.add_argument("--plot", help="draw the zero-shot forecasts with their 80%% bands (PNG)")
    ts.add_argument(
        "--head",
        choices=("tokens", "patch"),
        help="forecast head: binned tokens, or the next-patch head where the model has one "
        "(default: the model's own)",
    )
    ts.add_argument(
        "--latency-runs",
        type=int,
        default=5,
        help="timed 24-step, 20-path forecasts after the tables (default 5; 0: none)",
    )
    add_torch_threads(ts)
    ts.set_defaults(func=cmd_eval)
    im = kinds.add_parser(
        "image", help="text-to-image prompt adherence (colour, shape) and speed, per head"
    )
    im.add_argument("--model", help="model or service folder (default: the bundled service)")
    im.add_argument(
        "--num-prompts", type=int, default=1000, help="procedural captions (default 1000)"
    )
    im.add_argument("--heads", default="vq", help="comma-separated heads (default vq)")
    im.add_argument("--guidance", default="1,3", help="comma-separated guidance scales")
    im.add_argument("--seed", type=int, default=0)
    im.add_argument("--batch", type=int, default=16, help="images/s at this batch (default 16)")
    im.add_argument("--json", action="store_true", help="print one JSON object")
    im.add_argument("--out", help="also write the JSON report here")
    add_torch_threads(im)
    im.set_defaults(func=cmd_eval_image)
    au = kinds.add_parser(
        "audio", help="tone-prompt pitch adherence and streaming speed (local and over gRPC)"
    )
    au.add_argument("--model", help="model or service folder (default: the bundled service)")
    au.add_argument("--num-prompts", type=int, default=48, help="tone captions (default 48)")
    au.add_argument("--seconds", type=float, default=1.0, help="clip length (default 1)")
    au.add_argument(
        "--guidance", default="1,2,3", help="comma-separated guidance scales (default 1,2,3)"
    )
    au.add_argument("--seed", type=int, default=0)
    au.add_argument("--no-grpc", action="store_true", help="skip the over-gRPC figures")
    au.add_argument("--json", action="store_true", help="print one JSON object")
    au.add_argument("--out", help="also write the JSON report here")
    add_torch_threads(au)
    au.set_defaults(func=cmd_eval_audio)


def cmd_eval(args) -> int:
    from mmntp.eval.timeseries import (
        EvalSettings,
        check_dataset_names,
        evaluate,
        format_table,
        plot_zero_shot,
        stderr_progress,
        to_json,
    )
    from mmntp.generation import Pipeline, default_service_dir

    names = None
    if args.datasets is not None:
        names = tuple(n.strip() for n in args.datasets.split(",") if n.strip())
        if not names:
            raise ValueError(f"--datasets names no dataset: {args.datasets!r}")
    tables = tuple(t.strip().replace("-", "_") for t in args.tables.split(",") if t.strip())
    settings = EvalSettings(
        num_samples=args.num_samples,
        seed=args.seed,
        datasets=names,
        tables=tables,
        head=args.head,
        latency_runs=args.latency_runs,
    )
    if names:
        check_dataset_names(names, tables)  # an unknown name fails before the model loads
    if args.plot and "zero_shot" not in tables:
        raise ValueError("--plot draws the zero-shot forecasts: --tables must include zero_shot")
    pipe = Pipeline.from_pretrained(args.model)
    report = evaluate(pipe, settings, stderr_progress)
    report["model_path"] = str(args.model or default_service_dir())
    if args.plot:
        plot_zero_shot(args.plot, report)
        print(f"wrote {args.plot}", file=sys.stderr)
    printable = to_json(report)
    write_json_report(args.out, printable)
    if args.out:
        print(f"wrote {args.out}", file=sys.stderr)
    print(json.dumps(printable) if args.json else format_table(report))
    return 0


def _guidance_scales(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(g) for g in text.split(",") if g.strip())
    except ValueError:
        raise ValueError(f"--guidance must be comma-separated numbers, got {text!r}") from None


def _report(args, report: dict, table: str) -> int:
    """Print an eval report (table, or JSON with --json) and write it to --out."""
    write_json_report(args.out, report)
    print(json.dumps(report) if args.json else table)
    return 0


def _eval_progress(message: str) -> None:
    print(f"[eval] {message}", file=sys.stderr)


def cmd_eval_image(args) -> int:
    from mmntp.eval.text_to_image import ImageEvalSettings, evaluate, format_table
    from mmntp.generation import Pipeline

    guidance = _guidance_scales(args.guidance)
    heads = tuple(h.strip() for h in args.heads.split(",") if h.strip())
    settings = ImageEvalSettings(args.num_prompts, heads, guidance, args.seed, args.batch)
    report = evaluate(Pipeline.from_pretrained(args.model), settings, _eval_progress)
    return _report(args, report, format_table(report))


def cmd_eval_audio(args) -> int:
    from mmntp.eval.text_to_audio import AudioEvalSettings, evaluate, format_table
    from mmntp.generation import Pipeline

    guidance = _guidance_scales(args.guidance)
    settings = AudioEvalSettings(
        args.num_prompts, args.seconds, guidance, args.seed, grpc=not args.no_grpc
    )
    report = evaluate(Pipeline.from_pretrained(args.model), settings, _eval_progress)
    return _report(args, report, format_table(report))
