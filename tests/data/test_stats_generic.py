"""`wrel data stats` on folders other than the synthetic benchmark (wrel.data.stats)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from refer_testdata import make_refer  # noqa: E402

from wrel.cli import main  # noqa: E402
from wrel.data.stats import dataset_stats  # noqa: E402


def _refsegrs(root: Path) -> None:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = {
        "train": ["1 the white car on the left", "2 a car", "3 the road near the building"],
        "test": ["9 the tall building"],
    }
    for split, lines in rows.items():
        (root / f"output_phrase_{split}.txt").write_text("\n".join(lines) + "\n")
        for k, line in enumerate(lines):
            index = line.split()[0]
            pixels = np.full((24, 24), 300 + 1000 * k, np.uint16)  # 16-bit single band
            Image.fromarray(pixels).save(root / "images" / f"{index}.png")
            mask = np.zeros((24, 24), np.uint8)
            mask[: 2 + 2 * k, :10] = 255  # 20, 40, 60 pixels
            Image.fromarray(mask).save(root / "masks" / f"{index}.png")


def test_refsegrs_stats(tmp_path: Path, capsys) -> None:
    _refsegrs(tmp_path)
    stats = dataset_stats(tmp_path, input_size=48)
    train = stats["splits"]["train"]
    assert stats["layout"] == "refsegrs" and list(stats["splits"]) == ["train", "test"]
    assert train["samples"] == 3 and train["per_category"] == {"car": 2, "road": 1}
    assert train["target_area_pixels"]["percentiles"]["p50"] == 40.0
    assert train["target_area_pixels"]["min"] == 20.0 and train["target_area_pixels"]["max"] == 60
    assert train["target_area_at_input"]["min"] == 80.0  # x (48 / 24)^2
    assert train["expression_words"]["max"] == 6.0
    assert train["ambiguous_class_name_share"] is None
    px = stats["pixels"]
    assert px["dtypes"] == {"uint16": 3} and px["min"] == [300.0] * 3 and px["max"] == [2300.0] * 3
    assert px["image_scaling_sets"][0] == "data.image_scaling.method=dataset_stats"
    assert main(["data", "stats", "--data", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "refsegrs data set" in out and "synth" not in out


def test_refer_stats_ambiguity_and_split_file(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    make_refer(data, num_images=12)  # two boxes per image, one referred: full annotation
    split = tmp_path / "split.p"
    assert main(["data", "split", "--data", str(data), "--accurate-ratio", "0.5",
                 "--out", str(split)]) == 0  # fmt: skip
    capsys.readouterr()
    stats = dataset_stats(data, name="tiny", split_file=str(split), pixel_images=0)
    train = stats["splits"]["train"]
    assert train["samples"] == 8 and train["target_area_pixels"]["percentiles"]["p50"] == 80.0
    # the two boxes of an image have categories 1 + (i + k) % 3: never the same class
    assert train["ambiguous_class_name_share"] == 0.0
    assert stats["split_file"]["accurate"] == 4 and stats["split_file"]["weak"] == 4
    assert stats["pixels"] == {}
    assert main(["data", "stats", "--data", str(data), "--name", "tiny", "--split-file",
                 str(split), "--json"]) == 0  # fmt: skip
    printed = json.loads(capsys.readouterr().out)
    assert printed["split_file"]["accurate_ratio"] == 0.5


def test_refer_stats_count_same_class_instances(tmp_path: Path) -> None:
    import pickle

    data = tmp_path / "data"
    make_refer(data, num_images=6)
    inst_path = data / "tiny" / "instances.json"
    inst = json.loads(inst_path.read_text())
    for ann in inst["annotations"]:
        ann["categories_id"] = 1  # both boxes of every image are vehicles
    inst_path.write_text(json.dumps(inst))
    refs_path = data / "tiny" / "refs(unc).p"
    refs = pickle.loads(refs_path.read_bytes())  # our own fixture
    for ref in refs:
        ref["category_id"] = 1
    refs_path.write_bytes(pickle.dumps(refs, protocol=4))
    stats = dataset_stats(data, pixel_images=0)
    assert stats["splits"]["train"]["ambiguous_class_name_share"] == 1.0


def test_stats_on_a_real_folder_never_suggests_synth(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["data", "stats", "--data", str(tmp_path / "empty")]) != 0
    err = capsys.readouterr().err
    assert f"synth --out {tmp_path / 'empty'}" not in err and "NEW_DIR" in err


def test_synthetic_folder_keeps_its_own_stats(tiny_bench: Path, capsys) -> None:
    assert main(["data", "stats", "--data", str(tiny_bench), "--json"]) == 0
    synth = json.loads(capsys.readouterr().out)
    from wrel.data.synth.stats import benchmark_stats

    assert synth == json.loads(json.dumps(benchmark_stats(tiny_bench)))


@pytest.mark.parametrize("bad", ["--input-size=0", "--pixel-images=-1", "--bands=x"])
def test_stats_bad_options(tmp_path: Path, bad: str, capsys) -> None:
    _refsegrs(tmp_path)
    assert main(["data", "stats", "--data", str(tmp_path), bad]) == 2
    assert bad.split("=")[0].lstrip("-").split("-")[0] in capsys.readouterr().err
