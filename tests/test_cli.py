"""The `mmntp` command line, in-process (fast) and once through the installed script."""

import csv
import json
import shutil
import subprocess

import numpy as np
import pytest

from mmntp import __version__
from mmntp.cli import main


def _write_csv(path, rows, header=None):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        if header:
            w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture
def series_csv(tmp_path):
    t = np.arange(60)
    values = 20 + 5 * np.sin(2 * np.pi * t / 12)
    return _write_csv(
        tmp_path / "s.csv",
        [[f"2020-{i:03d}", v] for i, v in enumerate(values)],
        header=["timestamp", "value"],
    )


def test_version_via_console_script():
    exe = shutil.which("mmntp")
    assert exe, "the mmntp console script is not installed"
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"mmntp {__version__}"


def test_inspect(tiny_model_dir, capsys):
    assert main(["inspect", str(tiny_model_dir)]) == 0
    out = capsys.readouterr().out
    assert "parameters" in out and "timeseries  codebook 0" in out
    assert main(["inspect", str(tiny_model_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] > 0 and info["heads"] == ["token"]
    assert info["vocab"]["size"] == info["model"]["vocab_size"]


def test_generate_prompt_ids_json(tiny_model_dir, capsys):
    args = [
        "generate",
        "--model",
        str(tiny_model_dir),
        "--prompt-ids",
        "5,17,42",
        "--max-tokens",
        "5",
        "--temperature",
        "0",
        "--logprobs",
        "--json",
    ]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["token_ids"]) == 5 and len(result["logprobs"]) == 5
    assert all(lp <= 0 for lp in result["logprobs"])


def test_generate_forecast_csv(tiny_model_dir, series_csv, tmp_path):
    out = tmp_path / "fc.csv"
    args = [
        "generate",
        "--model",
        str(tiny_model_dir),
        "--modality",
        "timeseries",
        "--context",
        str(series_csv),
        "--horizon",
        "7",
        "--num-samples",
        "10",
        "--seed",
        "0",
        "-o",
        str(out),
    ]
    assert main(args) == 0
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["median"] + [f"q0.{i}" for i in range(1, 10)]
    assert len(rows) == 8
    for row in rows[1:]:
        qs = [float(x) for x in row[1:]]
        assert qs == sorted(qs)
    # same seed, same forecast
    again = tmp_path / "fc2.csv"
    assert main(args[:-1] + [str(again)]) == 0
    assert again.read_text() == out.read_text()


def test_generate_text_streams(tiny_model_dir, capsys):
    assert (
        main(
            [
                "generate",
                "--model",
                str(tiny_model_dir),
                "--prompt",
                "Hi",
                "--max-tokens",
                "8",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.endswith("\n")


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([["1"], ["2"], ["abc"]], "'abc' is not a number"),
        ([], "empty"),
        ([["1"], ["inf"]], "infinite"),
        ([["NA"], [""], ["nan"]], "missing"),
        ([[str(i)] for i in range(3)], "at least 8 are needed"),
    ],
)
def test_generate_forecast_bad_input(tiny_model_dir, tmp_path, capsys, rows, message):
    path = _write_csv(tmp_path / "bad.csv", rows)
    code = main(
        ["generate", "--model", str(tiny_model_dir), "--context", str(path), "--horizon", "3"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in err


def test_generate_errors(tiny_model_dir, capsys):
    assert main(["generate", "--model", str(tiny_model_dir), "--prompt-ids", "1,x"]) == 2
    assert "comma-separated integers" in capsys.readouterr().err
    assert main(["generate", "--model", str(tiny_model_dir / "nope"), "--prompt", "a"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_train_export_and_resume(tmp_path, capsys):
    """`mmntp train` on the real data mixture, exported folder loads; resume continues."""
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        'seed = 1\nout_dir = "run"\n[model]\npreset = "test"\n'
        "[data]\nseq_len = 64\nbatch_size = 2\n"
        '[[data.mixture]]\nsource = "timeseries"\nmax_length = 48\nmax_horizon = 8\n'
        '[[data.mixture]]\nsource = "text"\nweight = 0.5\n'
        "[optim]\nwarmup_steps = 1\nmax_steps = 2\n"
        '[train]\ncheckpoint_every = 1\nlog_every = 1\nexport = "model"\n'
    )
    assert main(["train", str(recipe)]) == 0
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2]
    assert main(["inspect", str(tmp_path / "model"), "--json"]) == 0
    capsys.readouterr()
    assert main(["train", str(recipe), "--max-steps", "3"]) == 0  # resumes from step 2
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3]
    from mmntp.generation import Pipeline, TimeSeriesOutput, TimeSeriesPart

    pipe = Pipeline.from_pretrained(tmp_path / "model")
    assert pipe.limits.timeseries_max_horizon == 8
    out = pipe(TimeSeriesPart(np.arange(30.0)), TimeSeriesOutput(horizon=8, num_samples=3))
    assert out.forecast.samples.shape == (3, 8)
