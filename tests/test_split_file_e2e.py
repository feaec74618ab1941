"""`--split-file` end to end: `wrel data split` -> `wrel train --split-file`, the RRSIS-D
published split files (subset with images made up here), bench / bound wiring, and errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent / "data"))
from refer_testdata import make_refer  # noqa: E402

from wrel.cli import main  # noqa: E402
from wrel.data.refer import dump_refs, load_refs  # noqa: E402
from wrel.data.splits import category_names_from_weak_refs, split_file_info  # noqa: E402


def _train_args(data: Path, runs: Path, model_sets: list[str], *extra: str) -> list[str]:
    sets = [
        "data.image_size=16",
        "train.batch_size=2",
        "train.eval_batch_size=2",
        "train.progress=false",
        *model_sets,
    ]
    return [
        "train",
        "--data",
        str(data),
        "--output-dir",
        str(runs),
        "--epochs",
        "1",
        *[x for s in sets for x in ("--set", s)],
        *extra,
    ]


def _check_run(run: Path, split_file: Path) -> dict:
    info = split_file_info(split_file)
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["split_file"] == str(split_file)
    assert config["data"]["accurate_ratio"] is None  # the file decides
    meta = json.loads((run / "checkpoints" / "best" / "config.json").read_text())["metadata"]
    dataset = meta["dataset"]
    assert dataset["ratio_source"] == "split_file"
    assert (dataset["num_accurate"], dataset["num_weak"]) == (info.num_accurate, info.num_weak)
    assert dataset["train_accurate_ratio"] == pytest.approx(info.accurate_ratio)
    final = json.loads((run / "final_metrics.json").read_text())
    assert final["data"]["train_accurate_ratio"] == pytest.approx(info.accurate_ratio)
    return final


@pytest.mark.slow
def test_data_split_then_train_with_split_file(
    tmp_path: Path, tiny_model_sets: list[str], capsys, caplog
) -> None:
    data = tmp_path / "data"
    make_refer(data, num_images=12)
    split = tmp_path / "split-50.p"
    assert main(["data", "split", "--data", str(data), "--accurate-ratio", "0.5",
                 "--out", str(split)]) == 0  # fmt: skip
    info = split_file_info(split)
    assert (info.num_refs, info.num_accurate, info.num_weak) == (8, 4, 4)
    for method in ("naive", "lrb"):
        args = _train_args(data, tmp_path / "runs", tiny_model_sets, "--method", method,
                           "--split-file", str(split), "--name", method)  # fmt: skip
        with caplog.at_level("INFO"):
            assert main(args) == 0, capsys.readouterr().err
        _check_run(tmp_path / "runs" / method, split)
    assert "accurate ratio 0.5000 (from the file)" in caplog.text


def test_split_file_errors(tmp_path: Path, tiny_model_sets: list[str], capsys) -> None:
    data = tmp_path / "data"
    make_refer(data, num_images=12)
    split = tmp_path / "split.p"
    assert main(["data", "split", "--data", str(data), "--accurate-ratio", "0.5",
                 "--out", str(split)]) == 0  # fmt: skip
    runs = tmp_path / "runs"
    full = _train_args(data, runs, tiny_model_sets, "--method", "full", "--split-file", str(split))
    assert main(full) == 2
    assert "--method full trains with every train expression accurate" in capsys.readouterr().err
    both = _train_args(data, runs, tiny_model_sets, "--method", "naive", "--split-file",
                       str(split), "--accurate-ratio", "0.3")  # fmt: skip
    assert main(both) == 2
    assert "not both" in capsys.readouterr().err
    missing = _train_args(data, runs, tiny_model_sets, "--split-file", str(tmp_path / "no.p"))
    assert main(missing) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not runs.exists()  # nothing trained


def test_bench_and_bound_take_the_ratio_from_the_file(tmp_path: Path, capsys) -> None:
    from wrel.studies.bound import _rho, _train_split
    from wrel.studies.profiles import get_profile
    from wrel.studies.runner import RunSpec, build_run_config

    data = tmp_path / "data"
    make_refer(data, num_images=12)
    split = tmp_path / "split.p"
    assert main(["data", "split", "--data", str(data), "--accurate-ratio", "0.5",
                 "--out", str(split)]) == 0  # fmt: skip
    profile = get_profile("quick")
    for method in ("only-accurate", "naive", "lrb", "full"):
        spec = RunSpec(method, 0.5 if method != "full" else 1.0, 0)
        cfg = build_run_config(profile, spec, data, tmp_path / "runs", (), str(split))
        if method == "full":  # the all-accurate reference reads the data set's own refs
            assert cfg.data.split_file is None and cfg.data.accurate_ratio == 1.0
            continue
        assert cfg.data.split_file == str(split) and cfg.data.accurate_ratio is None
        record = {"accurate_ratio": 0.1, "config": {"data": {"split_file": str(split)}}}
        assert _rho(record) == pytest.approx(0.5)
        train = _train_split(data, {"accurate_ratio": 0.1, "split_seed": 0,
                                    "split_file": str(split)})  # fmt: skip
        assert sum(s.is_weak for s in train) == 4
    # wrel bench names the runs after the file's ratio; --ratios with --split-file is an error
    argv = ["bench", "--data", str(data), "--split-file", str(split), "--dry-run"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "accurate ratio 0.5000 (from the file)" in out and "naive-r50-s0" in out
    assert main([*argv, "--ratios", "0.1"]) == 2
    assert "not both" in capsys.readouterr().err


def _rrsisd_subset(shared: Path, root: Path) -> Path:
    """A refer-layout folder for a subset of the published 90 % split (images made up here).

    Returns the subset split file; ``root/rrsisd/refs(unc).p`` holds the same refs with their
    original expressions, as the full data set's refs file does.
    """
    published = load_refs(shared / "refs(unc)-90-all.p")
    weak = [r for r in published if r["split"] == "train" and r["sentences"][0]["raw"] !=
            r["sentences"][0].get("sent", r["sentences"][0]["raw"])][:6]  # fmt: skip
    accurate = [r for r in published if r["split"] == "train" and r not in weak][:3]
    accurate = [r for r in accurate if r["ref_id"] not in {w["ref_id"] for w in weak}]
    val = [r for r in published if r["split"] == "val"][:2]
    test = [r for r in published if r["split"] == "test"][:2]
    subset = weak + accurate + val + test
    folder = root / "images" / "rrsisd" / "JPEGImages"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images, anns = {}, []
    for ref in subset:
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
            folder / ref["file_name"]
        )
        images[ref["image_id"]] = {"id": ref["image_id"], "file_name": ref["file_name"],
                                   "width": 32, "height": 32}  # fmt: skip
        anns.append({"id": ref["ann_id"], "image_id": ref["image_id"],
                     "categories_id": ref["category_id"], "iscrowd": 0,
                     "segmentation": [[4, 4, 20, 4, 20, 18, 4, 18]]})  # fmt: skip
    names = category_names_from_weak_refs(published)  # the RRSIS-D class names
    categories = [{"id": c, "name": names[c]} for c in sorted({r["category_id"] for r in subset})]
    ann_dir = root / "rrsisd"
    ann_dir.mkdir()
    (ann_dir / "instances.json").write_text(json.dumps(
        {"images": list(images.values()), "annotations": anns, "categories": categories}
    ))  # fmt: skip
    original = []
    for ref in subset:
        copy = json.loads(json.dumps(ref))
        first = copy["sentences"][0]
        first["raw"] = first.get("sent", first["raw"])
        first["tokens"] = first["raw"].split()
        original.append(copy)
    dump_refs(original, ann_dir / "refs(unc).p")
    return dump_refs(subset, root / "refs(unc)-90-subset.p")


def test_published_rrsisd_split_files_give_their_ratios(shared_rrsisd: Path) -> None:
    for name, (accurate, weak) in {
        "refs(unc)-90-all.p": (1227, 10954),
        "refs(unc)-70-all.p": (3663, 8518),
        "refs(unc)-50-all.p": (6096, 6085),
    }.items():
        info = split_file_info(shared_rrsisd / name)
        assert (info.num_accurate, info.num_weak) == (accurate, weak)
        assert info.accurate_ratio == pytest.approx(accurate / 12181)


@pytest.mark.slow
def test_train_and_stats_on_an_rrsisd_subset(
    shared_rrsisd: Path, tmp_path: Path, tiny_model_sets: list[str], capsys
) -> None:
    data = tmp_path / "rrsisd_root"
    split = _rrsisd_subset(shared_rrsisd, data)
    info = split_file_info(split)
    assert (info.num_accurate, info.num_weak) == (3, 6)
    assert main(["data", "stats", "--data", str(data), "--split-file", str(split)]) == 0
    out = capsys.readouterr().out
    assert "9 train refs, 3 accurate, 6 weak" in out and "synth" not in out
    args = _train_args(data, tmp_path / "runs", tiny_model_sets, "--method", "naive",
                       "--split-file", str(split), "--name", "rrsisd")  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    _check_run(tmp_path / "runs" / "rrsisd", split)
