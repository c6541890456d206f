"""Hostile model and tokenizer folders: each ends in one `ModelLoadError` line naming the
file and the field, before anything big is allocated; paths never lead out of the folder,
and the refusal reads the same whether the outside path exists or not."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from mmntp.cli import main
from mmntp.model.checkpoint import (
    MissingFileError,
    ModelLoadError,
    load_model,
    relative_paths,
    save_model,
)
from mmntp.model.config import preset
from mmntp.model.transformer import Transformer
from mmntp.model.vocab import VocabLayout
from mmntp.tokenizers import ByteTokenizer, load_tokenizer

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = ROOT / "services" / "default" / "model"


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory) -> Path:
    """A small valid model folder with one text card."""
    vocab = VocabLayout.build(text_size=256, codebooks={}, pad_to=64)
    torch.manual_seed(0)
    model = Transformer(preset("test", vocab.size, n_layers=1))
    path = tmp_path_factory.mktemp("good") / "model"
    save_model(path, model, vocab, {"text": ByteTokenizer()})
    return path


@pytest.fixture
def folder(good_folder, tmp_path) -> Path:
    path = tmp_path / "model"
    shutil.copytree(good_folder, path)
    return path


def edit_config(path: Path, change: Callable[[dict], None]) -> None:
    config = json.loads((path / "config.json").read_text())
    change(config)
    (path / "config.json").write_text(json.dumps(config))


def outside_card(tmp_path: Path) -> Path:
    """A valid card folder that is not inside the model folder (so only the path is wrong)."""
    card = tmp_path / "elsewhere" / "text"
    ByteTokenizer().save(card)
    return card


def set_model(field: str, value) -> Callable[[Path, Path], None]:
    return lambda path, _tmp: edit_config(path, lambda c: c["model"].__setitem__(field, value))


def truncate(path: Path, _tmp: Path) -> None:
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def grow_vocab(path: Path, _tmp: Path) -> None:
    def change(c):  # consistent with itself, not with the weights
        c["model"]["vocab_size"] += 64
        c["vocab"]["size"] += 64

    edit_config(path, change)


# (name, make it hostile, file the error names, field it names, words in the message)
CASES = [
    (
        "traversal card path",
        lambda p, t: (
            outside_card(t),
            edit_config(p, lambda c: c["tokenizers"].__setitem__("text", "../elsewhere/text")),
        ),
        "config.json",
        "tokenizers.text",
        "outside the folder",
    ),
    (
        "absolute card path",
        lambda p, t: edit_config(
            p, lambda c: c["tokenizers"].__setitem__("text", str(outside_card(t)))
        ),
        "config.json",
        "tokenizers.text",
        "outside the folder",
    ),
    ("huge dim", set_model("dim", 1_000_000), "config.json", "model.dim", "must lie in"),
    ("huge n_layers", set_model("n_layers", 10_000), "config.json", "model.n_layers", "must lie"),
    ("huge vocab", set_model("vocab_size", 10**9), "config.json", "model.vocab_size", "must lie"),
    ("float dim", set_model("dim", 1e6), "config.json", "model.dim", "must be an integer"),
    (
        "huge but in range: refused by the weights header, not by allocating",
        lambda p, t: edit_config(
            p,
            lambda c: c["model"].update(
                dim=8192, n_layers=1024, n_heads=64, n_kv_heads=64, head_dim=None, ffn_dim=None
            ),
        ),
        "model.safetensors",
        "tok_embeddings.weight",
        "the config implies",
    ),
    (
        "list config",
        lambda p, t: (p / "config.json").write_text("[1, 2, 3]"),
        "config.json",
        "",
        "must hold a JSON object, got a list",
    ),
    (
        "model section a list",
        lambda p, t: edit_config(p, lambda c: c.__setitem__("model", [])),
        "config.json",
        "model",
        "must be a JSON object",
    ),
    ("string rope_theta", set_model("rope_theta", "1e4"), "config.json", "model.rope_theta", ""),
    (
        "nan rope_theta",
        set_model("rope_theta", float("nan")),
        "config.json",
        "model.rope_theta",
        "",
    ),
    ("bool as int", set_model("n_heads", True), "config.json", "model.n_heads", "integer"),
    (
        "vocab mismatch with the weights",
        grow_vocab,
        "config.json",
        "model.vocab_size",
        "has 320 rows",
    ),
    (
        "vocab.size vs model.vocab_size",
        lambda p, t: edit_config(p, lambda c: c["vocab"].__setitem__("size", 384)),
        "config.json",
        "vocab.size",
        "!= model.vocab_size",
    ),
    (
        "vocab range of the wrong type",
        lambda p, t: edit_config(p, lambda c: c["vocab"]["ranges"][0].__setitem__("size", "256")),
        "config.json",
        "vocab.ranges[0].size",
        "integer",
    ),
    (
        "missing model field",
        lambda p, t: edit_config(p, lambda c: c["model"].pop("vocab_size")),
        "config.json",
        "model.vocab_size",
        "is missing",
    ),
    (
        "missing vocab section",
        lambda p, t: edit_config(p, lambda c: c.pop("vocab")),
        "config.json",
        "vocab",
        "is missing",
    ),
    ("truncated safetensors", truncate, "model.safetensors", "", "truncated"),
    (
        "empty safetensors",
        lambda p, t: (p / "model.safetensors").write_bytes(b""),
        "model.safetensors",
        "",
        "truncated",
    ),
    (
        "missing weights file",
        lambda p, t: (p / "model.safetensors").unlink(),
        "model.safetensors",
        "",
        "missing",
    ),
    (
        "wrong format tag",
        lambda p, t: edit_config(p, lambda c: c.__setitem__("format", "pytorch")),
        "config.json",
        "format",
        "not an mmntp model config",
    ),
    (
        "newer format version",
        lambda p, t: edit_config(p, lambda c: c.__setitem__("format_version", 99)),
        "config.json",
        "format_version",
        "newer",
    ),
    (
        "non-UTF-8 JSON",
        lambda p, t: (p / "config.json").write_bytes(b'{"format": "\xff\xfe"}'),
        "config.json",
        "",
        "not UTF-8",
    ),
    (
        "not JSON",
        lambda p, t: (p / "config.json").write_text('{"format": '),
        "config.json",
        "",
        "not valid JSON",
    ),
    (
        "deeply nested JSON",
        lambda p, t: (p / "config.json").write_text("[" * 100_000),
        "config.json",
        "",
        "not valid JSON",
    ),
    (
        "card config non-UTF-8",
        lambda p, t: (p / "tokenizers" / "text" / "config.json").write_bytes(b"\xff{}"),
        "tokenizers/text/config.json",
        "",
        "not UTF-8",
    ),
    (
        "truncated card tensors",
        lambda p, t: (p / "tokenizers" / "text" / "tokenizer.safetensors").write_bytes(b"\x10"),
        "tokenizers/text/tokenizer.safetensors",
        "",
        "truncated",
    ),
    (
        "card file symlinked out of the folder",
        lambda p, t: (
            (p / "tokenizers" / "text" / "config.json").unlink(),
            (p / "tokenizers" / "text" / "config.json").symlink_to(outside_card(t) / "config.json"),
        ),
        "tokenizers/text/config.json",
        "",
        "outside the folder",
    ),
    (
        "unknown head type",
        lambda p, t: edit_config(p, lambda c: c.__setitem__("heads", {"x": {"type": "nope"}})),
        "config.json",
        "heads",
        "type must be one of",
    ),
]


@pytest.mark.parametrize(
    ("make", "file", "field", "words"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_a_hostile_folder_fails_with_one_clear_line(folder, tmp_path, make, file, field, words):
    make(folder, tmp_path)
    with pytest.raises(ModelLoadError) as info:
        load_model(folder)
    err = info.value
    assert Path(err.path).as_posix().endswith(file), err
    assert err.field == field, err
    assert words in err.problem, err
    line = str(err)
    assert "\n" not in line and line.startswith(err.path) and len(line) < 500


def test_a_missing_file_is_also_a_file_not_found_error(folder):
    (folder / "model.safetensors").unlink()
    with pytest.raises(MissingFileError) as info:
        load_model(folder)
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(FileNotFoundError):
        load_model(folder.parent / "nowhere")


@pytest.mark.parametrize("target", ["/etc", "/no/such/folder/anywhere"])
def test_an_outside_card_path_is_refused_alike_whether_it_exists_or_not(folder, target):
    edit_config(folder, lambda c: c["tokenizers"].__setitem__("text", target))
    with pytest.raises(ModelLoadError) as info:
        load_model(folder)
    assert str(info.value) == (
        f"{folder / 'config.json'}: tokenizers.text: {target!r} points outside the folder; refused"
    )


def hf_card(directory: Path, tokenizer_file: str) -> Path:
    directory.mkdir(parents=True)
    config = {"type": "text_hf", "modality": "text", "kind": "discrete"}
    (directory / "config.json").write_text(json.dumps({**config, "tokenizer_file": tokenizer_file}))
    from safetensors.torch import save_file

    save_file({}, str(directory / "tokenizer.safetensors"))
    return directory


@pytest.mark.parametrize("name", ["/etc/passwd", "/no/such/passwd", "../../../../etc/passwd"])
def test_a_text_card_naming_a_file_outside_it_is_refused(tmp_path, name):
    card = hf_card(tmp_path / "card", name)
    with pytest.raises(ModelLoadError) as info:
        load_tokenizer(card)
    err = info.value
    assert err.field == "tokenizer_file" and err.path == str(card / "config.json")
    # The same words for a file that exists and one that does not: nothing leaks.
    assert err.problem == f"{name!r} points outside the folder; refused"


def test_a_model_whose_text_card_names_etc_passwd_fails_at_load(folder):
    shutil.rmtree(folder / "tokenizers" / "text")
    hf_card(folder / "tokenizers" / "text", "/etc/passwd")
    with pytest.raises(ModelLoadError, match="tokenizer_file: '/etc/passwd' points outside"):
        load_model(folder)


def test_a_configured_tokenizers_root_may_hold_the_cards(folder, tmp_path, monkeypatch):
    card = outside_card(tmp_path)
    edit_config(folder, lambda c: c["tokenizers"].__setitem__("text", str(card)))
    with pytest.raises(ModelLoadError, match="outside the folder"):
        load_model(folder)
    bundle = load_model(folder, tokenizers_root=card.parent)
    assert bundle.tokenizers["text"].decode(torch.tensor([104, 105])) == "hi"
    monkeypatch.setenv("MMNTP_TOKENIZERS_ROOT", str(card.parent))
    assert "text" in load_model(folder).tokenizers


def test_the_bundled_default_model_still_loads():
    bundle = load_model(DEFAULT_MODEL)
    assert set(bundle.tokenizers) == {"audio", "image", "image_latent", "text", "timeseries"}
    assert bundle.model.config.vocab_size == bundle.vocab.size == 6464
    assert bundle.tokenizers["text"].decode(torch.tensor([104, 105])) == "hi"


def test_inspect_prints_one_line_and_exits_1(folder, capsys):
    set_model("rope_theta", "fast")(folder, folder)
    assert main(["inspect", str(folder)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("mmntp inspect: error: ") and "model.rope_theta" in err


def test_inspect_reads_the_model_a_service_json_names(tmp_path, folder, capsys):
    """service.json is the operator's file: it may name a model folder elsewhere; that
    folder is then loaded as untrusted, and a bad reference is one line."""
    service = tmp_path / "service"
    service.mkdir()
    (service / "service.json").write_text(json.dumps({"model": str(folder)}))
    assert main(["inspect", str(service)]) == 0
    (service / "service.json").write_text(json.dumps({"model": str(tmp_path / "missing")}))
    assert main(["inspect", str(service)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "missing" in err


ABSOLUTE = re.compile(r'"(/(work|root|tmp|home|Users)/[^"]*)"')


def test_shipped_configs_carry_no_build_machine_paths():
    files = [*ROOT.glob("services/*/model/**/*.json"), *ROOT.glob("tokenizers/*/*.json")]
    files += [*ROOT.glob("services/*/*.json")]
    assert files
    found = {str(f.relative_to(ROOT)): ABSOLUTE.findall(f.read_text()) for f in files}
    assert {f: paths for f, paths in found.items() if paths} == {}


def test_save_model_records_paths_relative_to_the_folder(good_folder, tmp_path):
    bundle = load_model(good_folder)
    out = tmp_path / "runs" / "x" / "model"
    meta = {
        "recipe": {"out_dir": str(tmp_path / "runs" / "x"), "export": str(out)},
        "cards": [str(tmp_path / "tokenizers" / "t"), "relative/stays"],
        "note": "no path here",
    }
    save_model(out, bundle.model, bundle.vocab, dict(bundle.tokenizers), meta)
    saved = json.loads((out / "config.json").read_text())["meta"]
    assert saved == {
        "recipe": {"out_dir": "..", "export": "."},
        "cards": ["../../../tokenizers/t", "relative/stays"],
        "note": "no path here",
    }
    assert str(tmp_path) not in (out / "config.json").read_text()
    assert relative_paths(meta, out) == saved


def test_a_card_config_with_huge_sizes_is_refused_before_building(tmp_path):
    """The card's config against its tensors header, on the meta device: a codebook of
    10^9 rows (4 GB at code_dim 1) ends in one line naming the tensor."""
    card = tmp_path / "image"
    shutil.copytree(DEFAULT_MODEL / "tokenizers" / "image", card)
    config = json.loads((card / "config.json").read_text())
    (card / "config.json").write_text(json.dumps({**config, "codebook_size": 10**9}))
    with pytest.raises(ModelLoadError) as info:
        load_tokenizer(card)
    err = info.value
    assert err.path == str(card / "tokenizer.safetensors") and err.field == "quantizer.embedding"
    assert "but the config implies [1000000000, 8]" in err.problem


@pytest.mark.parametrize(
    ("patch", "field", "words"),
    [
        ({"codebook_size": 1 << 20}, "codebook", "but the config implies [1048576, 64]"),
        ({"codebook_size": 10**9}, "codebook_size", "must lie in [2, 1048576], got 1000000000"),
        ({"width": 1 << 14}, "decoder.inp.conv.weight", "but the config implies [16384, 64, 3]"),
        ({"fir_length": 10**9}, "fir_length", "must lie in [1, 65536], got 1000000000"),
        ({"hop": "80"}, "hop", "must be an integer, got a string '80'"),
        ({"dilations": [1, 2, 0]}, "dilations[2]", "must lie in [1, 4096], got 0"),
    ],
)
def test_the_audio_cochlear_card_is_size_checked_before_building(tmp_path, patch, field, words):
    """The cochlear card too (its front end used to need real tensors, so it skipped the
    meta-device check): sizes its tensors imply are compared with the header, and those
    no tensor bounds (the filter bank's fir_length) are range-checked, naming the key."""
    card = tmp_path / "audio"
    shutil.copytree(DEFAULT_MODEL / "tokenizers" / "audio", card)
    config = json.loads((card / "config.json").read_text())
    assert config["type"] == "audio_cochlear"
    (card / "config.json").write_text(json.dumps({**config, **patch}))
    with pytest.raises(ModelLoadError) as info:
        load_tokenizer(card)
    err = info.value
    assert (err.field, err.problem.startswith(("shape", "must"))) == (field, True)
    assert words in err.problem and "\n" not in str(err)
    where = "tokenizer.safetensors" if "implies" in words else "config.json"
    assert err.path == str(card / where)


def test_a_service_json_names_its_model_through_one_check(tmp_path):
    """Pipeline.from_pretrained and `mmntp inspect` read service.json through one function:
    a model path that is not a string is one clear line."""
    from mmntp.generation import Pipeline
    from mmntp.model.checkpoint import service_model

    service = tmp_path / "svc"
    service.mkdir()
    (service / "service.json").write_text('{"model": 42}')
    with pytest.raises(ModelLoadError, match="must be a folder path") as err:
        Pipeline.from_pretrained(service)
    assert err.value.field == "model"
    (service / "service.json").write_text('["model"]')
    with pytest.raises(ModelLoadError, match="JSON object"):
        service_model(service)
