"""RefSegRS / RISBench layout: phrases, tolerant extensions, categories, errors, dataset items."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from wrel.data.dataset import RefSegDataset, load_samples
from wrel.data.refsegrs import category_of, load_refsegrs_samples


def _make(root, lines: dict[str, list[str]], ext: str = ".tif", mask_ext: str = ".tif") -> None:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for split, rows in lines.items():
        (root / f"output_phrase_{split}.txt").write_text("\n".join(rows) + "\n\n")
        for row in rows:
            index = row.split()[0]
            pixels = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "images" / f"{index}{ext}")
            mask = np.zeros((24, 24), np.uint8)
            mask[4:12, 6:18] = 255
            Image.fromarray(mask).save(root / "masks" / f"{index}{mask_ext}")


def test_reads_phrases_and_masks(tmp_path):
    _make(tmp_path, {"train": ["3 the white car on the left", "7 low vegetation near road"],
                     "test": ["12 road"]})  # fmt: skip
    train = load_refsegrs_samples(tmp_path, "train")
    assert [s.sample_id for s in train] == [3, 7]
    assert train[0].text == "the white car on the left" and train[0].category == "car"
    assert train[1].category == "low vegetation" and train[0].quality == "accurate"
    assert train[0].read_mask().sum() == 96
    via_loader = load_samples(tmp_path, "test")
    assert via_loader[0].category == "road" and via_loader[0].split == "test"
    item = RefSegDataset(train, image_size=(12, 16))[0]
    assert item["image"].shape == (3, 12, 16) and item["mask"].shape == (12, 16)
    assert item["mask"].max() == 1


def test_weak_ratio_on_refsegrs(tmp_path):
    rows = [f"{i} the car number {i}" for i in range(8)]
    _make(tmp_path, {"train": rows})
    samples = load_samples(tmp_path, "train", accurate_ratio=0.5, seed=0)
    weak = [s for s in samples if s.is_weak]
    assert len(weak) == 4 and all(s.text == "car" for s in weak)
    assert all("number" not in repr(s) for s in weak)


def test_tolerant_extensions(tmp_path):
    _make(tmp_path, {"val": ["1 a ship in the harbor"]}, ext=".png", mask_ext=".jpg")
    (sample,) = load_refsegrs_samples(tmp_path, "val")
    assert sample.image_path.suffix == ".png" and sample.category == "ship"


def test_errors(tmp_path):
    _make(tmp_path, {"train": ["1 a car", "2 a bus"]})
    with pytest.raises(ValueError, match=r"unknown split 'val'.*\['train'\]"):
        load_refsegrs_samples(tmp_path, "val")
    (tmp_path / "masks" / "2.tif").unlink()
    with pytest.raises(FileNotFoundError, match="no mask"):
        load_refsegrs_samples(tmp_path, "train")
    (tmp_path / "output_phrase_train.txt").write_text("1 a car\n1 another car\n")
    with pytest.raises(ValueError, match="duplicate image index '1'"):
        load_refsegrs_samples(tmp_path, "train")
    (tmp_path / "output_phrase_train.txt").write_text("1\n")
    with pytest.raises(ValueError, match=r"output_phrase_train.txt:1"):
        load_refsegrs_samples(tmp_path, "train")


def test_empty_mask_file_is_reported(tmp_path):
    _make(tmp_path, {"train": ["5 a tree"]})
    Image.fromarray(np.zeros((24, 24), np.uint8)).save(tmp_path / "masks" / "5.tif")
    dataset = RefSegDataset(load_refsegrs_samples(tmp_path, "train"), image_size=(8, 8))
    with pytest.raises(ValueError, match="empty mask"):
        dataset[0]


def test_category_heuristic():
    assert category_of("the red boat in the harbor") == "boat"  # head noun wins
    assert category_of("vehicles in the parking lot") == "vehicle"
    assert category_of("") == "object"
