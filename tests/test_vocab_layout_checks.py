"""VocabLayout's checks, each at its boundary and naming its field: what mutation testing
(mutmut over model/vocab.py, docs/benchmarks.md) found untested - from_dict's refusals of
an untrusted layout, the constructor's range and special checks, build's padding and
names, has_modality, tensor codes at the range's end, and the mask's device."""

import pytest
import torch

from mmntp.model.vocab import IdRange, VocabLayout


def _good():
    return {
        "size": 8,
        "specials": {"<pad>": 0, "<eos>": 7},
        "ranges": [{"modality": "text", "codebook": 0, "start": 1, "size": 6}],
    }


def _with(**changes):
    data = _good()
    data.update(changes)
    return data


def _range(**changes):
    return _with(ranges=[{**_good()["ranges"][0], **changes}])


REFUSED = [
    ([], "", "must be a JSON object"),
    ({"specials": {}, "ranges": []}, "size", "is missing"),
    ({"size": 8, "ranges": []}, "specials", "is missing"),
    ({"size": 8, "specials": {}}, "ranges", "is missing"),
    (_with(size=0), "size", "must lie in [1, "),
    (_with(size="8"), "size", "must be an integer"),
    (_with(specials=[["<pad>", 0]]), "specials", "must be an object of name -> id"),
    (_with(specials={"<eos>": 8}), "specials.<eos>", "must lie in [0, 7], got 8"),
    (_with(specials={"<eos>": -1}), "specials.<eos>", "must lie in [0, 7]"),
    (_with(ranges={"text": 0}), "ranges", "must be a list"),
    (
        _with(ranges=[["modality", "codebook", "start", "size"]]),
        "ranges[0]",
        "must be an object of modality, codebook, start, size",
    ),
    (_range(extra=1), "ranges[0]", "must be an object of modality, codebook, start, size"),
    (_range(modality=3), "ranges[0].modality", "must be a string"),
    (_range(codebook=-1), "ranges[0].codebook", "must lie in [0, "),
    (_range(start=8), "ranges[0].start", "must lie in [0, 7], got 8"),
    (_range(size=0), "ranges[0].size", "must lie in [1, 8], got 0"),
    (_range(size=9), "ranges[0].size", "must lie in [1, 8], got 9"),
    (_range(start=3, size=6), "ranges", "does not fit in a vocabulary of 8"),
    (
        _with(
            ranges=[
                {"modality": "text", "codebook": 0, "start": 1, "size": 3},
                {"modality": "image", "codebook": 0, "start": 3, "size": 2},
            ]
        ),
        "ranges",
        "codebook ranges overlap",
    ),
]


@pytest.mark.parametrize(
    ("data", "field", "problem"), REFUSED, ids=[r[1] + ":" + r[2] for r in REFUSED]
)
def test_from_dict_refuses_naming_the_field(data, field, problem):
    with pytest.raises(ValueError) as err:  # a FieldError
        VocabLayout.from_dict(data)
    assert err.value.field == field
    # the problem as written; "does not fit" follows the range it names
    if problem.startswith("does not fit"):
        assert problem in err.value.problem
    else:
        assert err.value.problem.startswith(problem)


def test_from_dict_accepts_every_boundary_value():
    v = VocabLayout.from_dict(_good())  # the special at size - 1, the range ending at size - 1
    assert v.to_local(7) == ("special", -1, 7) and v.to_local(6) == ("text", 0, 5)
    v = VocabLayout.from_dict(_range(start=0, size=8) | {"specials": {}})  # exact fit from 0
    assert v.range("text") == IdRange("text", 0, 0, 8)
    v = VocabLayout.from_dict({"size": 1, "specials": {"<pad>": 0}, "ranges": []})
    assert v.size == 1
    v = VocabLayout.from_dict(_range(start=7, size=1) | {"specials": {}})
    assert v.to_local(7) == ("text", 0, 0)
    assert VocabLayout.from_dict(v.to_dict()) == v


def test_constructor_checks_ranges_and_specials():
    with pytest.raises(ValueError, match=r"^duplicate range for text codebook 0$"):
        VocabLayout({}, [IdRange("text", 0, 0, 2), IdRange("text", 0, 4, 2)], 8)
    for bad in (IdRange("text", 0, 0, 0), IdRange("text", 0, -1, 1), IdRange("text", 0, 4, 5)):
        with pytest.raises(ValueError, match="does not fit in a vocabulary of 8"):
            VocabLayout({}, [bad], 8)
    assert VocabLayout({}, [IdRange("text", 0, 3, 5)], 8).range("text").stop == 8  # exact fit
    with pytest.raises(ValueError, match=r"^codebook ranges overlap$"):
        VocabLayout({}, [IdRange("text", 0, 0, 4), IdRange("image", 0, 3, 2)], 8)
    with pytest.raises(ValueError, match=r"^special token <eos> id 8 outside vocabulary of 8$"):
        VocabLayout({"<eos>": 8}, [], 8)
    assert VocabLayout({"<eos>": 7}, [], 8).special("<eos>") == 7


def test_build_names_and_pads_exactly():
    v = VocabLayout.build(text_size=10, modalities=(), tasks=())
    assert v.specials == {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3}
    n = len(VocabLayout.build(text_size=1).specials)
    assert VocabLayout.build(text_size=64 - n).size == 64  # already a multiple: no padding
    assert VocabLayout.build(text_size=65 - n).size == 128
    assert VocabLayout.build(text_size=63 - n).size == 64
    assert VocabLayout.build(text_size=10, pad_to=1).size == n + 10


def test_has_modality_looks_at_codebook_zero():
    v = VocabLayout.build(text_size=16, codebooks={"audio": [8, 8]})
    assert v.has_modality("text") and v.has_modality("audio")
    assert not v.has_modality("image")
    only_second = VocabLayout({}, [IdRange("audio", 1, 0, 4)], 8)
    assert not only_second.has_modality("audio")


def test_tensor_codes_refused_at_the_range_end():
    v = VocabLayout.build(text_size=16, codebooks={"audio": [8]})
    start = v.range("audio").start
    assert torch.equal(
        v.to_global("audio", 0, torch.tensor([0, 7])), torch.tensor([start, start + 7])
    )
    with pytest.raises(ValueError, match=r"audio codes must lie in \[0, 8\)"):
        v.to_global("audio", 0, torch.tensor([0, 8]))
    with pytest.raises(ValueError, match=r"audio code 8 outside \[0, 8\)"):
        v.to_global("audio", 0, 8)


def test_allowed_mask_is_made_on_the_given_device():
    v = VocabLayout.build(text_size=16)
    assert v.allowed_mask(device="meta").device.type == "meta"
    assert v.allowed_mask(spans=[(2, 4)], ids=[0]).nonzero().flatten().tolist() == [0, 2, 3]
