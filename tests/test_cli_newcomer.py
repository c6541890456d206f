"""What a newcomer hit on the way in (issue 23): each fix, through `mmntp.cli.main`."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from mmntp.cli import build_parser, main
from mmntp.cli.inputs import future_timestamps, warn_if_unknown_prompt
from mmntp.cli.options import default_torch_threads
from mmntp.cli.writers import infer_modality

ROOT = Path(__file__).resolve().parents[1]
SERIES = str(ROOT / "examples" / "elec_equip.csv")


# -- threads ---------------------------------------------------------------------------


def test_default_threads_avoid_the_shared_two_core_collapse():
    assert default_torch_threads(1) == 1 and default_torch_threads(2) == 1
    assert default_torch_threads(4) == 2 and default_torch_threads(64) == 4


def test_every_command_takes_torch_threads():
    commands = [
        ["generate"], ["serve"], ["health", "--server", "h:1"], ["bench", "engine"],
        ["bench", "serve", "--server", "h:1"], ["eval", "timeseries"], ["eval", "image"],
        ["eval", "audio"], ["inspect", "d"], ["train", "r"], ["import-hf", "a", "b"],
        ["train-tokenizer", "r"], ["tokenize", "t", "i", "-o", "x.npy"],
        ["detokenize", "t", "c.npy", "-o", "x.png"],
    ]  # fmt: skip
    for argv in commands:
        assert build_parser().parse_args([*argv, "--torch-threads", "3"]).torch_threads == 3


def test_torch_threads_is_applied(monkeypatch):
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    monkeypatch.setattr("mmntp.cli.inspect.cmd_inspect", lambda args: 0)
    try:
        assert main(["inspect", "x", "--torch-threads", "2"]) == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# -- output format follows the extension, or is refused ---------------------------------


def test_modality_from_the_extension():
    assert infer_modality("x.png", False, False) == "image"
    assert infer_modality("x.JPG", False, False) == "image"
    assert infer_modality("x.wav", False, False) == "audio"
    assert infer_modality("x.csv", True, False) == "timeseries"
    assert infer_modality(None, False, False) == "text"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--modality", "text", "--prompt", "hi", "-o", "x.png"], "text output is written as"),
        (["--modality", "audio", "--prompt", "hi", "-o", "x.mp3"], "audio output is written"),
        (["--context", SERIES, "-o", "x.png"], "timeseries output is written as .csv, .json"),
        (["--modality", "image", "--prompt", "a", "-o", "x.gif"], "image output is written"),
    ],
)
def test_wrong_extension_is_refused(tmp_path, capsys, argv, message):
    argv = [str(tmp_path / a) if a.startswith("x.") else a for a in argv]
    assert main(["generate", *argv]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_binary_to_a_terminal_is_refused(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    assert main(["generate", "--modality", "image", "--prompt", "a red circle", "-o", "-"]) == 2
    assert "terminal" in capsys.readouterr().err


def test_jpeg_keeps_the_aspect_and_json_summarises(tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "c.jpg"
    argv = ["generate", "--prompt", "a red circle", "--width", "64", "--seed", "0", "--json"]
    assert main([*argv, "-o", str(out)]) == 0  # image inferred from .jpg
    assert out.read_bytes()[:2] == b"\xff\xd8"  # a real JPEG, not PNG bytes
    with Image.open(out) as image:
        assert image.format == "JPEG" and image.size == (64, 64)  # height followed width
    summary = json.loads(capsys.readouterr().out)
    assert summary["output"] == str(out) and summary["bytes"] == out.stat().st_size
    assert summary["width"] == 64 and summary["height"] == 64 and summary["finish_reason"]
    assert "wall_seconds" in summary["timings"]


def test_forecast_json_and_stdout(tmp_path, capsys):
    common = ["generate", "--context", SERIES, "--horizon", "3", "--seed", "0"]
    out = tmp_path / "f.json"
    assert main([*common, "-o", str(out)]) == 0
    data = json.loads(out.read_text())
    assert len(data["median"]) == 3 and set(data["quantiles"]) >= {"0.1", "0.9"}
    assert data["timestamps"] == ["2016-06", "2016-07", "2016-08"]
    capsys.readouterr()
    assert main([*common, "-o", "-"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("timestamp,median,q0.1") and lines[1].startswith("2016-06,")
    assert not Path("-").exists()


# -- forecast input ---------------------------------------------------------------------


def test_two_numeric_columns_are_refused_then_picked(tmp_path, capsys):
    path = tmp_path / "s.csv"
    path.write_text("sales,price\n" + "".join(f"{10 + i % 4},{2 + i % 3}\n" for i in range(40)))
    common = ["generate", "--context", str(path), "--horizon", "2", "--seed", "0"]
    assert main(common) == 2
    err = capsys.readouterr().err
    assert "'sales' and 'price' both hold numbers" in err and "--column" in err
    assert main([*common, "--column", "sales", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["median"]) == 2
    assert main([*common, "--column", "nope"]) == 2
    assert "'nope' is not a column ('sales', 'price')" in capsys.readouterr().err


def test_timestamp_column_and_future_timestamps(tmp_path, capsys):
    path = tmp_path / "s.csv"
    rows = "".join(f"{i},2024-01-{1 + i:02d},{5 + i % 3}\n" for i in range(20))
    path.write_text("id,day,y\n" + rows)
    argv = ["generate", "--context", str(path), "--horizon", "2", "--seed", "0"]
    argv += ["--column", "y", "--timestamp-column", "day", "-o", "-"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == ["2024-01-21", "2024-01-22"]
    assert future_timestamps(["1871", "1872"], 2) == ["1873", "1874"]
    assert future_timestamps(["a", "b"], 2) is None


# -- crashes and noise ------------------------------------------------------------------


def test_busy_metrics_port_is_one_line_and_exit_1(capfd):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = ["serve", "--port", "0", "--no-warmup", "--metrics-port", str(port)]
        assert main(argv) == 1
    err = capfd.readouterr().err
    assert f"mmntp serve: error: metrics port {port}" in err and "Traceback" not in err


def test_ctrl_c_exits_130_without_a_traceback(monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("mmntp.model.checkpoint.load_model", interrupted)
    assert main(["inspect", "somewhere"]) == 130
    assert capsys.readouterr().err.strip() == "mmntp inspect: interrupted"


def test_prompts_outside_the_bundled_model_warn(capsys):
    assert not warn_if_unknown_prompt("image", "a red circle on a blue background")
    assert not warn_if_unknown_prompt("image", "the digit 7")
    assert not warn_if_unknown_prompt("audio", "a sine tone at 440 Hz")
    assert not warn_if_unknown_prompt("text", "anything at all")
    assert warn_if_unknown_prompt("image", "a photo of a cat")
    assert "8 colours x 3 shapes" in capsys.readouterr().err
    assert warn_if_unknown_prompt("audio", "a violin concerto")
