"""VocabLayout.to_local at every range boundary: [start, stop) is half-open on both sides."""

import pytest

from mmntp.model.vocab import IdRange, VocabLayout


def _layout():
    return VocabLayout.build(text_size=256, codebooks={"timeseries": [300], "audio": [64, 64]})


def test_each_range_boundary_maps_to_its_own_range():
    v = _layout()
    for r in v.ranges:
        assert v.to_local(r.start) == (r.modality, r.codebook, 0)
        assert v.to_local(r.stop - 1) == (r.modality, r.codebook, r.size - 1)
        if r.stop < v.ranges[-1].stop:  # the next id belongs to the next range, code 0
            nxt = next(o for o in v.ranges if o.start == r.stop)
            assert v.to_local(r.stop) == (nxt.modality, nxt.codebook, 0)


def test_every_id_round_trips():
    v = _layout()
    last = v.ranges[-1].stop
    for gid in range(last):
        modality, codebook, code = v.to_local(gid)
        if modality == "special":
            assert gid in v.specials.values() and codebook == -1 and code == gid
        else:
            r = v.range(modality, codebook)
            assert 0 <= code < r.size and v.to_global(modality, codebook, code) == gid
    for gid in range(last, v.size):  # padding past the last range
        with pytest.raises(ValueError, match="neither special nor in a codebook"):
            v.to_local(gid)


def test_ids_just_outside_a_range_are_refused():
    # specials 0..1, a gap (2), text [3, 6), a gap (6), image [7, 9), nothing at 9
    v = VocabLayout(
        {"<pad>": 0, "<eos>": 1},
        [IdRange("text", 0, 3, 3), IdRange("image", 0, 7, 2)],
        size=10,
    )
    assert v.to_local(1) == ("special", -1, 1)
    assert v.to_local(3) == ("text", 0, 0) and v.to_local(5) == ("text", 0, 2)
    assert v.to_local(7) == ("image", 0, 0) and v.to_local(8) == ("image", 0, 1)
    for gid in (2, 6, 9, 10, -1):
        with pytest.raises(ValueError, match=f"id {gid} is neither"):
            v.to_local(gid)
