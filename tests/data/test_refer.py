"""Refer layout: restricted unpickler, read/write round trip, mask decoding, quality marking."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
from refer_testdata import CATEGORIES, make_refer, rle_of

from wrel.data.images import decode_segmentation, read_rgb, segmentation_area
from wrel.data.refer import REFS_FILE, is_weak_ref, load_refs, read_refer, restricted_loads


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_restricted_unpickler_refuses_code(tmp_path):
    path = tmp_path / REFS_FILE
    path.write_bytes(pickle.dumps([{"ref_id": 1, "x": _Evil()}]))
    with pytest.raises(ValueError, match="not a plain-data pickle"):
        load_refs(path)
    assert not (tmp_path / "PWNED").exists() and not os.path.exists("PWNED")


@pytest.mark.parametrize("obj", [{1, 2}, b"bytes", (1, 2), complex(1, 2)])
def test_restricted_unpickler_refuses_other_types(obj):
    with pytest.raises(ValueError, match="<test>"):
        restricted_loads(pickle.dumps([obj]), "<test>")


def test_restricted_unpickler_plain_and_corrupt(tmp_path):
    data = [{"a": [1, 2.5, "x", None, True]}]
    assert restricted_loads(pickle.dumps(data, protocol=2)) == data
    with pytest.raises(ValueError, match="not a plain-data pickle"):
        restricted_loads(pickle.dumps(data)[:-5], "cut.p")
    with pytest.raises(FileNotFoundError, match="missing.p"):
        load_refs(tmp_path / "missing.p")


def test_write_read_roundtrip(tmp_path):
    data = make_refer(tmp_path)
    back = read_refer(tmp_path, "tiny")
    assert back.refs == data.refs
    assert back.images == data.images
    assert back.category_names == CATEGORIES
    instances = json.loads((tmp_path / "tiny" / "instances.json").read_text())
    assert all("categories_id" in a for a in instances["annotations"])
    assert all(r.quality == "accurate" for r in back.refs)


def test_category_id_key_and_multiple_sentences(tmp_path):
    make_refer(tmp_path)
    path = tmp_path / "tiny" / "instances.json"
    instances = json.loads(path.read_text())
    for ann in instances["annotations"]:
        ann["category_id"] = ann.pop("categories_id")
    path.write_text(json.dumps(instances))
    refs = load_refs(tmp_path / "tiny" / REFS_FILE)
    refs[0]["sentences"].append({"raw": "second one", "tokens": ["second", "one"], "sent_id": 7})
    (tmp_path / "tiny" / REFS_FILE).write_bytes(pickle.dumps(refs))
    back = read_refer(tmp_path, "tiny")
    assert [s.raw for s in back.refs[0].sentences][1] == "second one"
    assert {a.category_id for a in back.annotations.values()} == set(CATEGORIES)


def test_duplicate_ref_ids(tmp_path):
    make_refer(tmp_path)
    refs = load_refs(tmp_path / "tiny" / REFS_FILE)
    refs[1]["ref_id"] = refs[0]["ref_id"]
    (tmp_path / "tiny" / REFS_FILE).write_bytes(pickle.dumps(refs))
    with pytest.raises(ValueError, match="duplicate ref_id"):
        read_refer(tmp_path, "tiny")


def test_polygon_and_rle_decode_agree():
    box = np.zeros((20, 24), np.uint8)
    box[4:10, 5:15] = 1
    from_rle = decode_segmentation(rle_of(box), 20, 24)
    from_poly = decode_segmentation([[5, 4, 15, 4, 15, 10, 5, 10], [0, 0, 1, 0]], 20, 24)
    assert from_rle.shape == (20, 24) and from_rle.dtype == np.uint8
    np.testing.assert_array_equal(from_rle, box)
    assert abs(int(from_poly.sum()) - int(box.sum())) <= 16  # rasterised edges
    uncompressed = {"size": [20, 24], "counts": [0, 480]}
    assert decode_segmentation(uncompressed, 20, 24).sum() == 480  # runs start with background
    assert segmentation_area(rle_of(box), 20, 24) == 60


def test_weak_marking():
    ref = {"category_id": 1, "sentences": [{"raw": "vehicle", "sent": "the car on the left"}]}
    assert is_weak_ref(ref) and is_weak_ref(ref, "Vehicle")
    assert not is_weak_ref(ref, "ship")
    same = {"sentences": [{"raw": "vehicle", "sent": "vehicle"}]}
    assert not is_weak_ref(same, "vehicle")
    assert not is_weak_ref({"sentences": [{"raw": "the car"}]})


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "LA", "CMYK"])
def test_read_rgb_converts_modes(tmp_path, mode):
    from PIL import Image

    if mode == "I;16":
        img = Image.fromarray(np.full((8, 10), 65535, np.uint16))
        path = tmp_path / "img.png"
    else:
        img = Image.new(mode, (10, 8))
        path = tmp_path / ("img.tif" if mode == "CMYK" else "img.png")
    img.save(path)
    rgb = read_rgb(path)
    assert rgb.shape == (8, 10, 3) and rgb.dtype == np.uint8
    if mode == "I;16":
        assert rgb.max() == 255


def test_read_rgb_truncated_and_garbage(tmp_path):
    from PIL import Image

    path = tmp_path / "cut.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ValueError, match="cut.jpg"):
        read_rgb(path)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="junk.png"):
        read_rgb(junk)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_rgb(tmp_path / "nope.png")
