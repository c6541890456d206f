"""The vocabulary layout: id map, masks, round trip as data."""

import pytest
import torch

from mmntp.model.vocab import IdRange, VocabLayout


def _layout():
    return VocabLayout.build(text_size=256, codebooks={"timeseries": [4096], "audio": [1024, 1024]})


def test_layout_is_contiguous_and_padded():
    v = _layout()
    text, ts = v.range("text"), v.range("timeseries")
    a0, a1 = v.range("audio", 0), v.range("audio", 1)
    assert text.start == len(v.specials)
    assert (ts.start, a0.start, a1.start) == (text.stop, ts.stop, a0.stop)
    assert v.size % 64 == 0 and v.size >= a1.stop
    assert len(set(v.specials.values())) == len(v.specials)
    assert max(v.specials.values()) < text.start
    for name in ("<pad>", "<bos>", "<eos>", "<begin_image>", "<end_audio>", "<task_forecast>"):
        assert v.has_special(name)


def test_global_local_round_trip():
    v = _layout()
    for modality, codebook, code in [("text", 0, 65), ("timeseries", 0, 4095), ("audio", 1, 7)]:
        gid = v.to_global(modality, codebook, code)
        assert v.to_local(gid) == (modality, codebook, code)
    codes = torch.tensor([0, 5, 1023])
    assert torch.equal(v.to_global("audio", 1, codes) - v.range("audio", 1).start, codes)
    assert v.to_local(v.special("<eos>")) == ("special", -1, v.special("<eos>"))


def test_errors_name_the_problem():
    v = _layout()
    with pytest.raises(ValueError, match=r"audio code 1024 outside \[0, 1024\)"):
        v.to_global("audio", 0, 1024)
    with pytest.raises(ValueError, match="codes must lie in"):
        v.to_global("timeseries", 0, torch.tensor([-1]))
    with pytest.raises(KeyError, match="no image codebook 0"):
        v.range("image")
    with pytest.raises(KeyError, match="no special token '<nope>'"):
        v.special("<nope>")
    with pytest.raises(ValueError, match="overlap"):
        VocabLayout({}, [IdRange("text", 0, 0, 10), IdRange("image", 0, 5, 10)], 20)
    with pytest.raises(ValueError, match="does not fit"):
        VocabLayout({}, [IdRange("text", 0, 0, 30)], 20)
    with pytest.raises(ValueError, match="neither special nor in a codebook"):
        v.to_local(v.size - 1)


def test_allowed_mask_and_serialisation():
    v = _layout()
    ts = v.range("timeseries")
    mask = v.allowed_mask(spans=[(ts.start + 3, ts.stop)], ids=[v.special("<eos>")])
    assert mask.shape == (v.size,) and mask.dtype == torch.bool
    assert int(mask.sum()) == 4093 + 1
    assert mask[v.special("<eos>")] and not mask[ts.start + 2]
    again = VocabLayout.from_dict(v.to_dict())
    assert again.to_dict() == v.to_dict()
    assert again.range("audio", 1) == v.range("audio", 1)
