"""The batch core without a model: the input pre-pass, the request fields, the store and
the results file's repair through each crash window."""

import json

import pytest

from mmntp.api import FieldError, ImageOutput, TimeSeriesOutput
from mmntp.api.fields import request_from_fields
from mmntp.batch.lines import BatchRefused, check_lines, default_seed, parse_request
from mmntp.batch.responses import file_stem
from mmntp.batch.results import RESULTS_FILE, ResultsWriter, result_line
from mmntp.batch.store import BatchStore, Fingerprint


def _line(cid, **request):
    return json.dumps({"custom_id": cid, "request": request}) + "\n"


def test_prepass_refuses_bad_json_missing_and_duplicate_ids_naming_lines():
    good = _line("a", prompt="x")
    with pytest.raises(BatchRefused, match="line 2: not valid JSON"):
        check_lines([good, "{nope\n"])
    with pytest.raises(BatchRefused, match="line 3: custom_id is missing"):
        check_lines([good, "\n", json.dumps({"request": {}})])
    with pytest.raises(BatchRefused, match="line 2: custom_id must be a non-empty string"):
        check_lines([good, json.dumps({"custom_id": 7, "request": {}})])
    with pytest.raises(BatchRefused, match="line 3: custom_id 'a' duplicates line 1"):
        check_lines([good, _line("b"), good])
    check = check_lines([good, "\n", _line("b")])
    assert check.ids == {"a": 1, "b": 3} and len(check.sha256) == 64


def test_request_fields_map_to_api_objects_and_name_bad_fields():
    req = parse_request({"modality": "timeseries", "context": [1, 2, 3], "horizon": 4}, "id1")
    assert isinstance(req.output, TimeSeriesOutput) and req.output.horizon == 4
    assert req.sampling.seed == default_seed("id1") != default_seed("id2")
    img = request_from_fields(
        {"modality": "image", "prompt": "a red circle", "head": "flow", "guidance": 2, "steps": 5}
    )
    assert isinstance(img.output, ImageOutput) and img.output.head == "flow"
    assert (img.sampling.guidance_scale, img.sampling.num_steps) == (2, 5)
    for fields, field in [
        ({"prompt": "x", "colour": 1}, "colour"),
        ({"modality": "smell", "prompt": "x"}, "modality"),
        ({"modality": "text", "prompt": "x", "horizon": 3}, "horizon"),
        ({"modality": "timeseries", "context": [1.0]}, "horizon"),
        ({"modality": "image", "prompt": 3}, "prompt"),
        ({"modality": "image", "prompt": "x", "guidance": -1}, "guidance"),
        ({"prompt": "x", "temperature": "hot"}, "temperature"),
    ]:
        with pytest.raises(FieldError) as err:
            request_from_fields(fields)
        assert err.value.field == field
    with pytest.raises(FieldError, match="request must be a JSON object"):
        parse_request([1], "x")


def test_file_stems_are_safe_and_distinct():
    ids = ["a/b", "a%2Fb", "../x", ".hidden", "a b", "é", "x" * 200, "x" * 201]
    stems = [file_stem(i) for i in ids]
    assert len(set(stems)) == len(ids)
    assert all("/" not in s and not s.startswith(".") and len(s) <= 120 for s in stems)


def _store(tmp_path, ids=("a", "b", "c")):
    fp = Fingerprint("in.jsonl", "0" * 64)
    return BatchStore.open(tmp_path, fp, {cid: i + 1 for i, cid in enumerate(ids)})


def test_store_refuses_another_input_and_records_first_result_once(tmp_path):
    store = _store(tmp_path)
    store.record("a", True, result_line("a", {"text": "1"}))
    store.record("a", False, result_line("a", error={"code": "X", "message": "y"}))
    assert store.state("a") == "done" and store.counts().pending == 2
    store.close()
    with pytest.raises(BatchRefused, match="another input"):
        BatchStore.open(tmp_path, Fingerprint("other.jsonl", "1" * 64), {"a": 1})
    again = BatchStore.open(tmp_path, Fingerprint("moved.jsonl", "0" * 64), {"a": 1})
    assert again.finished_ids() == {"a"} and again.counts().total == 3


def _lines(tmp_path):
    return (tmp_path / RESULTS_FILE).read_text().splitlines()


def test_repair_drops_torn_unmarked_and_repeated_lines_then_rewrites_them(tmp_path):
    store = _store(tmp_path)
    writer = ResultsWriter(store)
    for cid in "abc":
        store.record(cid, True, result_line(cid, {"text": cid}))
    writer.flush()
    assert store.counts().complete
    path = tmp_path / RESULTS_FILE
    good = path.read_text()
    # A repeated line, a line whose mark was lost and a torn tail.
    path.write_text(good + good.splitlines()[0] + "\n" + '{"custom_id": "c", "st')
    store.unmark_written(["b"])
    repair = writer.repair()
    assert repair.dropped == 3 and repair.kept == 2
    assert [json.loads(x)["custom_id"] for x in _lines(tmp_path)] == ["a", "c"]
    assert writer.flush() == 1
    assert sorted(json.loads(x)["custom_id"] for x in _lines(tmp_path)) == ["a", "b", "c"]
    # A marked line the file lost is written again.
    path.write_text(good.splitlines()[0] + "\n")
    assert writer.repair().rewritten == 2 and writer.flush() == 2
    assert sorted(json.loads(x)["custom_id"] for x in _lines(tmp_path)) == ["a", "b", "c"]


def test_response_collector_writes_media_under_files_and_names_it(tmp_path):
    import numpy as np

    from mmntp.api import Final, ImageChunk, TextChunk
    from mmntp.batch.responses import ResponseCollector

    final = Final("length", 3, 4, 0.0, 0.0, 0.0)
    text = ResponseCollector("text")
    for chunk in (TextChunk("ab"), TextChunk("c"), final):
        text.add(chunk)
    assert text.response(tmp_path, "t") == {
        "text": "abc",
        "finish_reason": "length",
        "usage": {"prompt_tokens": 3, "output_tokens": 4},
    }
    pixels = np.zeros((4, 4, 3), dtype=np.uint8)
    image = ResponseCollector("image")
    image.add(ImageChunk.from_pixels(pixels, 2, 4, False))
    image.add(ImageChunk.from_pixels(pixels + 9, 4, 4, True))
    body = image.response(tmp_path, "a/b")
    assert body["file"] == "files/a%2Fb.png"
    assert (tmp_path / body["file"]).read_bytes() == ImageChunk.from_pixels(
        pixels + 9, 4, 4, True
    ).png
