"""Shared benchmark helpers: timing, percentiles, result rows, machine info, output.

Benchmarks print figures and write them to a file; nothing here asserts a time.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

now = time.perf_counter  # the one clock every benchmark uses (monotonic, high resolution)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    start = now()
    result = fn()
    return now() - start, result


def median(samples: Iterable[float]) -> float:
    values = list(samples)
    return statistics.median(values) if values else math.nan


def percentile(samples: Iterable[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; nan for no samples."""
    values = sorted(samples)
    if not values:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q!r}")
    pos = q / 100 * (len(values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def progress(message: str) -> None:
    """One progress line on stderr (stdout stays machine-readable under --json)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@dataclass
class Row:
    """One scenario line: `ratio` > 1 means mmntp is better than the baseline."""

    scenario: str
    mmntp: float
    baseline: float
    unit: str
    higher_is_better: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        if self.higher_is_better:
            return _div(self.mmntp, self.baseline)
        return _div(self.baseline, self.mmntp)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "mmntp": round_figures(self.mmntp),
            "baseline": round_figures(self.baseline),
            "ratio": round_figures(self.ratio),
            "unit": self.unit,
            **{k: round_figures(v) for k, v in self.extra.items()},
        }


def _div(a: float, b: float) -> float:
    return a / b if b else math.nan


def round_figures(value: Any) -> Any:
    """4 significant digits for floats (JSON stays readable); nan/inf become null."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return float(f"{value:.4g}")
    if isinstance(value, dict):
        return {k: round_figures(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [round_figures(v) for v in value]
    return value


def machine_info() -> dict[str, Any]:
    """What the figures were measured on."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


def write_results(path: str | Path, rows: list[Row], meta: dict[str, Any]) -> Path:
    """Write {"machine": ..., "rows": [...], **meta} as JSON; creates parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine_info(), **meta, "rows": [r.to_dict() for r in rows]}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def report_rows(rows: list[Row], meta: dict[str, Any], out: str | Path, as_json: bool) -> Path:
    """Print the rows (one JSON object a line, or the table), write them with `meta` to
    `out` and say where: what every row-based bench ends with."""
    if as_json:
        for row in rows:
            print(json.dumps(row.to_dict()), flush=True)
    else:
        print(format_table(rows))
    path = write_results(out, rows, meta)
    progress(f"wrote {path}")
    return path


def format_table(rows: list[Row]) -> str:
    """A plain-text table: scenario, mmntp, baseline, ratio, unit."""
    header = ("scenario", "mmntp", "baseline", "ratio", "unit")
    lines = [header]
    for r in rows:
        lines.append((r.scenario, _fmt(r.mmntp), _fmt(r.baseline), _fmt(r.ratio) + "x", r.unit))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for i, line in enumerate(lines):
        out.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.4f}"
