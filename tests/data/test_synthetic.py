"""The synthetic benchmark: layout, determinism, verified expressions, ambiguity, validation.

These run on the ``ambiguous`` regime (most class names match several objects); the default
``rrsisd`` regime has its own checks in test_synthetic_rrsisd.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from wrel.core.config_io import from_dict
from wrel.data.refer import load_refs
from wrel.data.synth import RRSISD_CATEGORY_IDS, SynthConfig, generate_benchmark
from wrel.data.synth.geometry import Instance, singles_out
from wrel.data.synth.stats import benchmark_stats

# two refs per image and unscaled objects: the non-default knobs keep their coverage
TINY = {"image_size": 64, "num_train": 24, "num_val": 4, "num_test": 4, "seed": 7,
        "refs_per_image": 2, "object_scale": 1.0}  # fmt: skip
REF_KEYS = {
    "image_id",
    "split",
    "sentences",
    "file_name",
    "category_id",
    "ann_id",
    "sent_ids",
    "ref_id",
}


def _tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate_benchmark(root, SynthConfig.for_regime("ambiguous", **TINY), progress=False)
    return root


def _load(root: Path) -> tuple[list[dict], dict, dict]:
    refs = load_refs(root / "synthetic" / "refs(unc).p")
    instances = json.loads((root / "synthetic" / "instances.json").read_text())
    attributes = json.loads((root / "synthetic" / "attributes.json").read_text())
    return refs, instances, attributes


def test_refer_layout(bench: Path) -> None:
    raw = (bench / "synthetic" / "refs(unc).p").read_bytes()
    assert raw[:2] == b"\x80\x04"  # pickle protocol 4
    refs, instances, attributes = _load(bench)
    assert refs and {r["split"] for r in refs} == {"train", "val", "test"}
    for ref in refs:
        assert set(ref) == REF_KEYS
        sent = ref["sentences"][0]
        assert sent["raw"] == sent["sent"] and sent["tokens"] == sent["raw"].split()
        assert ref["sent_ids"] == [sent["sent_id"]]
        assert set(attributes[str(ref["ref_id"])]) == {
            "class_name",
            "expression",
            "attributes",
            "num_same_class",
        }
        assert (
            RRSISD_CATEGORY_IDS[attributes[str(ref["ref_id"])]["class_name"]] == ref["category_id"]
        )
    assert len({r["ref_id"] for r in refs}) == len(refs)
    names = {c["name"] for c in instances["categories"]}
    assert len(names) >= 10 and names <= set(RRSISD_CATEGORY_IDS)
    image = instances["images"][0]
    png = Image.open(bench / "images" / "synthetic" / "JPEGImages" / image["file_name"])
    assert png.format == "PNG" and png.size == (64, 64) == (image["width"], image["height"])


def test_masks_exact_and_disjoint(bench: Path) -> None:
    _, instances, _ = _load(bench)
    per_image: dict[int, list[np.ndarray]] = {}
    for ann in instances["annotations"]:
        assert isinstance(ann["segmentation"]["counts"], str) and ann["iscrowd"] == 0
        mask = mask_utils.decode(ann["segmentation"]).astype(bool)
        assert mask.sum() == ann["area"] >= 4
        ys, xs = np.nonzero(mask)
        assert ann["bbox"] == [xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1]
        per_image.setdefault(ann["image_id"], []).append(mask)
    for masks in per_image.values():
        assert np.stack(masks).sum(axis=0).max() == 1  # instances never overlap


def test_expressions_single_out_target(bench: Path) -> None:
    """Re-check every expression against geometry measured from the written masks."""
    refs, instances, attributes = _load(bench)
    names = {c["id"]: c["name"] for c in instances["categories"]}
    by_image: dict[int, list[dict]] = {}
    for ann in instances["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    for ref in refs:
        anns = by_image[ref["image_id"]]
        geometry = [
            Instance.from_mask(
                names[a["categories_id"]], a["colour"], mask_utils.decode(a["segmentation"])
            )
            for a in anns
        ]
        target = [a["id"] for a in anns].index(ref["ann_id"])
        info = attributes[str(ref["ref_id"])]
        assert info["num_same_class"] == sum(g.category == info["class_name"] for g in geometry)
        assert singles_out(info["attributes"], target, geometry, 64), info
        if info["num_same_class"] >= 2:
            assert info["attributes"], "an ambiguous class needs attributes"


def test_ambiguity_and_single_instances(bench: Path) -> None:
    stats = benchmark_stats(bench)
    assert stats["ambiguous_share"] >= 0.6
    assert stats["single_instance_share"] > 0
    assert stats["num_refs"] == sum(s["refs"] for s in stats["splits"].values())
    assert stats["instances_per_image"]["max"] > stats["instances_per_image"]["min"]
    assert {"position", "extreme", "colour", "combination"} <= set(stats["expression_kinds"])


def test_byte_identical_for_a_seed(bench: Path, tmp_path: Path) -> None:
    generate_benchmark(
        tmp_path / "again",
        SynthConfig.for_regime("ambiguous", **TINY),
        num_workers=2,
        progress=False,
    )
    assert _tree_hash(tmp_path / "again") == _tree_hash(bench)
    generate_benchmark(
        tmp_path / "other",
        SynthConfig.for_regime("ambiguous", **{**TINY, "seed": 8}),
        progress=False,
    )
    assert _tree_hash(tmp_path / "other") != _tree_hash(bench)


def test_small_objects_stay_visible(tmp_path: Path) -> None:
    """Vehicles are small yet at least about 4 x 4 px at the default size (at most 11 px at
    128 x 96/128 x object_scale 1.5 x scale_jitter 1.7 = 21 px long)."""
    cfg = SynthConfig(num_train=6, num_val=0, num_test=0, categories=["vehicle", "chimney"])
    generate_benchmark(tmp_path, cfg, progress=False)
    _, instances, _ = _load(tmp_path)
    boxes = np.array([a["bbox"] for a in instances["annotations"] if a["categories_id"] == 18])
    assert len(boxes) > 0 and boxes[:, 2:].min() >= 4 and boxes[:, 2:].max() <= 22


def test_existing_output_needs_overwrite(bench: Path) -> None:
    with pytest.raises(ValueError, match="overwrite"):
        generate_benchmark(bench, SynthConfig(**TINY), progress=False)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"categories": ["vehicle", "dragon"]}, "dragon"),
        ({"min_instances": 5, "max_instances": 2}, "min_instances"),
        ({"image_size": 8}, "image_size"),
        ({"colour": "red"}, "unknown config key"),
    ],
)
def test_config_errors(data: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        from_dict(SynthConfig, data)


def _inst(category: str, colour: str, cx: float, cy: float, side: float = 6.0) -> Instance:
    box = (cx - side / 2, cy - side / 2, side, side)
    return Instance(category, colour, cx, cy, side * side, box)


def test_verification_margins() -> None:
    """Hand-made scenes: only clear, unique combinations pass."""
    a, b = _inst("vehicle", "red", 10, 10), _inst("vehicle", "blue", 22, 12)
    tank = _inst("storagetank", "white", 10, 20, side=8)
    scene = [a, b, tank]
    assert singles_out({"colour": "red"}, 0, scene, 128)
    assert not singles_out({"position": "upper left"}, 0, scene, 128)  # both are upper left
    assert singles_out({"extreme": "leftmost"}, 0, scene, 128)  # leads by 12 px >= 0.08 * 128
    assert not singles_out(
        {"extreme": "leftmost"}, 0, [a, _inst("vehicle", "red", 15, 60), tank], 128
    )
    assert not singles_out({"size": "largest"}, 0, scene, 128)  # equal areas
    assert singles_out({"size": "largest"}, 0, [_inst("vehicle", "red", 10, 10, 9), b], 128)
    assert singles_out(
        {"next_to": "storagetank"}, 0, [a, _inst("vehicle", "red", 100, 100), tank], 128
    )
    assert not singles_out({"next_to": "storagetank"}, 0, scene, 128)  # b is near the tank too
    on_line = _inst("vehicle", "red", 128 / 3 + 1, 10)  # centroid on a 3x3 grid line: unclear
    assert not singles_out(
        {"position": "upper left"}, 0, [on_line, _inst("vehicle", "red", 100, 100)], 128
    )
    assert singles_out(
        {"position": "upper left", "colour": "red"},
        0,
        [a, b, _inst("vehicle", "red", 100, 100)],
        128,
    )
    assert singles_out({}, 2, scene, 128) and not singles_out({}, 0, scene, 128)


def test_loads_as_samples(bench: Path) -> None:
    """The refer-layout output is what the sample loader reads (weak text = class name)."""
    dataset = pytest.importorskip("wrel.data.dataset")
    samples = dataset.load_samples(bench, "train", accurate_ratio=0.5, seed=0)
    _, _, attributes = _load(bench)
    assert {s.quality for s in samples} == {"accurate", "weak"}
    for s in samples:
        info = attributes[str(s.sample_id)]
        assert s.category == info["class_name"]
        assert s.text == (info["expression"] if s.quality == "accurate" else info["class_name"])
    item = dataset.RefSegDataset(samples[:1], image_size=(64, 64))[0]
    assert item["mask"].shape == (64, 64) and int(item["mask"].sum()) > 0
