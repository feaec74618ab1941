"""Samples, weak texts that never leak, input checks, RefSegDataset items and collate."""

from __future__ import annotations

import dataclasses
import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from refer_testdata import CATEGORIES, make_refer

from wrel.data.dataset import RefSegDataset, collate_samples, load_samples
from wrel.data.refer import REFS_FILE, load_refs
from wrel.data.splits import build_weak_split, weak_ids_of, write_split


@pytest.fixture
def tiny(tmp_path):
    data = make_refer(tmp_path, num_images=12)
    return tmp_path, data


def _fields_text(sample) -> str:
    return repr(dataclasses.astuple(sample))


def test_load_samples_fields(tiny):
    root, data = tiny
    train = load_samples(root, "train")
    assert len(train) == sum(r.split == "train" for r in data.refs)
    first = train[0]
    assert first.sample_id == 100 and first.split == "train" and first.quality == "accurate"
    assert first.text == "the vehicle on the left" and first.category == "vehicle"
    assert first.image_path.is_file()
    assert first.read_mask().sum() == 80
    assert {s.split for s in load_samples(root, "val")} == {"val"}


def test_accurate_ratio_weak_texts_do_not_leak(tiny):
    root, data = tiny
    originals = {r.ref_id: r.sentences[0].raw for r in data.refs}
    train = load_samples(root, "train", accurate_ratio=0.5, seed=3)
    weak = [s for s in train if s.quality == "weak"]
    assert len(weak) == len(train) // 2
    category_of = {r.ref_id: CATEGORIES[r.category_id] for r in data.refs}
    for s in weak:
        assert s.text == s.category == category_of[s.sample_id]
        assert originals[s.sample_id] not in _fields_text(s)
    again = load_samples(root, "train", accurate_ratio=0.5, seed=3)
    assert [s.quality for s in again] == [s.quality for s in train]
    assert all(s.quality == "accurate" for s in load_samples(root, "val", accurate_ratio=0.0))


def test_split_file_import_never_reads_sent(tiny, tmp_path):
    root, _ = tiny
    refs = load_refs(root / "tiny" / REFS_FILE)
    for ref in refs:  # make every expression unique and recognisable
        ref["sentences"][0]["raw"] = ref["sentences"][0]["sent"] = f"secret {ref['ref_id']} text"
    built = build_weak_split(refs, CATEGORIES, accurate_ratio=0.25, seed=0)
    path = write_split(built, tmp_path / "split.p")
    samples = load_samples(root, "train", split_file=path)
    weak = [s for s in samples if s.is_weak]
    assert weak and {s.sample_id for s in weak} == weak_ids_of(built, CATEGORIES)
    for s in weak:
        assert s.text == s.category and "secret" not in _fields_text(s)
    with pytest.raises(ValueError, match="either split_file"):
        load_samples(root, "train", split_file=path, accurate_ratio=0.1)
    with pytest.raises(ValueError, match="already holds a weak split"):
        (root / "tiny" / REFS_FILE).write_bytes(path.read_bytes())
        load_samples(root, "train", accurate_ratio=0.1)


def test_name_detection_and_unknown_split(tiny):
    root, _ = tiny
    with pytest.raises(ValueError, match=r"unknown split 'tarin'.*\['test', 'train', 'val'\]"):
        load_samples(root, "tarin")
    make_refer(root, num_images=2, name="other")
    with pytest.raises(ValueError, match="pass name="):
        load_samples(root, "train")
    assert len(load_samples(root, "train", name="other")) == 2
    with pytest.raises(FileNotFoundError, match="no_such"):
        load_samples(root / "no_such", "train")


def _edit_instances(root, edit):
    path = root / "tiny" / "instances.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_bad_input_errors(tiny):
    root, _ = tiny
    (root / "images" / "tiny" / "JPEGImages" / "001.png").unlink()
    with pytest.raises(FileNotFoundError, match="001.png"):
        load_samples(root, "train")
    assert len(load_samples(root, "train", check_files=False)) > 0
    _edit_instances(root, lambda d: d["images"].pop(1))
    with pytest.raises(ValueError, match="ref 101 points at image 1"):
        load_samples(root, "train", check_files=False)
    _edit_instances(root, lambda d: d["annotations"].pop(0))
    with pytest.raises(ValueError, match="annotation 0"):
        load_samples(root, "train", check_files=False)


def test_empty_mask_and_duplicates(tiny):
    root, _ = tiny

    def empty(d):
        d["annotations"][0]["segmentation"] = []

    _edit_instances(root, empty)
    with pytest.raises(ValueError, match="ref 100.*empty mask"):
        load_samples(root, "train")
    refs = load_refs(root / "tiny" / REFS_FILE)
    refs[2]["ref_id"] = refs[1]["ref_id"]
    (root / "tiny" / REFS_FILE).write_bytes(pickle.dumps(refs))
    with pytest.raises(ValueError, match="duplicate ref_id 101"):
        load_samples(root, "train")


def test_dataset_items_any_size(tiny):
    root, _ = tiny
    samples = load_samples(root, "train")
    item = RefSegDataset(samples, image_size=(24, 40))[0]
    assert item["image"].shape == (3, 24, 40) and item["image"].dtype == torch.float32
    assert item["mask"].shape == (24, 40) and item["mask"].dtype == torch.int64
    assert set(item["mask"].unique().tolist()) == {0, 1}
    assert item["image"].min() >= -2.2 and item["image"].max() <= 2.7  # ImageNet-normalised
    same = RefSegDataset(samples, image_size=(32, 32))[0]
    assert same["mask"].sum() == 80  # no resize: exact
    assert item["sample_id"] == 100 and item["quality"] == "accurate"
    with pytest.raises(ValueError, match="image_size"):
        RefSegDataset(samples, image_size=(0, 4))


def test_hflip_swaps_left_right(tiny):
    root, _ = tiny
    samples = load_samples(root, "train")[:1]
    plain = RefSegDataset(samples, image_size=(32, 32))[0]
    flipped = RefSegDataset(samples, image_size=(32, 32), hflip_prob=1.0)[0]
    assert plain["text"] == "the vehicle on the left"
    assert flipped["text"] == "the vehicle on the right"
    assert torch.equal(flipped["mask"], plain["mask"].flip(-1))
    assert torch.allclose(flipped["image"], plain["image"].flip(-1))


def test_collate(tiny):
    root, _ = tiny
    samples = load_samples(root, "train", accurate_ratio=0.5, seed=0)
    ds = RefSegDataset(samples, image_size=(16, 16))
    batch = collate_samples([ds[i] for i in range(4)])
    assert batch["image"].shape == (4, 3, 16, 16) and batch["mask"].shape == (4, 16, 16)
    assert batch["sample_id"].dtype == torch.int64 and batch["is_weak"].dtype == torch.bool
    assert batch["is_weak"].tolist() == [q == "weak" for q in batch["quality"]]
    assert len(batch["text"]) == len(batch["category"]) == 4


def test_image_modes_and_truncation_in_dataset(tiny):
    root, _ = tiny
    folder = root / "images" / "tiny" / "JPEGImages"
    Image.fromarray(np.full((32, 32), 4000, np.uint16)).save(folder / "000.png")  # 16-bit
    Image.new("LA", (32, 32)).save(folder / "002.png")
    ds = RefSegDataset(load_samples(root, "train"), image_size=(16, 16))
    assert ds[0]["image"].shape == (3, 16, 16) and ds[1]["image"].shape == (3, 16, 16)
    data = (folder / "003.png").read_bytes()
    (folder / "003.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="003.png"):
        ds[3]
