"""The leakage monitor and `wrel bank decode` on a tiny LRB-WREL run of a tiny benchmark."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from wrel.engine.leakage import leakage_subset
from wrel.studies.bank_decode import KINDS, chance_of_hit, score_recovery

NUM_PROMPTS = 4
LEAK_SAMPLES = 5


@pytest.fixture(scope="module")
def lrb_run(tmp_path_factory: pytest.TempPathFactory, tiny_bench: Path, tiny_model_sets) -> Path:
    from wrel.engine.experiment import build_experiment
    from wrel.engine.trainer import train

    out = tmp_path_factory.mktemp("lrb_runs")
    sets = [
        f"train.output_dir={out}",
        "train.batch_size=4",
        "train.eval_batch_size=4",
        "train.progress=false",
        "data.image_size=16",
        f"data.root={tiny_bench}",
        f"bank.num_prompts={NUM_PROMPTS}",
        f"bank.leakage_samples={LEAK_SAMPLES}",
        "name=tiny-lrb",
        *tiny_model_sets,
    ]
    cfg = build_experiment("lrb", assignments=sets)
    for stage in cfg.stages:
        stage.epochs = 1
    return Path(train(cfg)["run_dir"])


def _lines(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]


def test_leakage_monitor_logs_three_scores_at_each_bank_evaluation(lrb_run: Path) -> None:
    lines = _lines(lrb_run)
    leak = [x for x in lines if x["event"] == "leakage"]
    joint_vals = [x for x in lines if x["event"] == "val" and x["stage"] == "joint"]
    warmup_vals = [x for x in lines if x["event"] == "val" and x["stage"] == "teacher-warmup"]
    assert warmup_vals and joint_vals  # the warm-up has no bank: no leakage event there
    # bank initialisation is not evaluated on val, but its bank is scored once, at its end
    bank_init_end = max(
        x["step"] for x in lines if x["event"] == "train" and x["stage"] == "bank-init"
    )
    assert [(x["stage"], x["step"]) for x in leak] == [("bank-init", bank_init_end)] + [
        (x["stage"], x["step"]) for x in joint_vals
    ]
    for event in leak:
        assert event["num_samples"] == LEAK_SAMPLES == event["num_expression"]
        for key in ("mIoU_bank", "mIoU_class_name", "mIoU_expression"):
            assert 0.0 <= event[key] <= 100.0
        assert event["gap"] == pytest.approx(event["mIoU_bank"] - event["mIoU_expression"])


def test_leakage_subset_is_fixed_weak_and_paired() -> None:
    weak = [SimpleNamespace(sample_id=i, quality="weak") for i in (9, 3, 7, 1, 5, 11)]
    texts = {i: f"expression {i}" for i in (1, 3, 5, 7, 9)}  # 11 has no true expression
    first = leakage_subset(weak, texts, 3, seed=0)
    assert [s.sample_id for s in first] == [s.sample_id for s in leakage_subset(weak, texts, 3, 0)]
    assert len(first) == 3 and all(s.sample_id in texts for s in first)
    assert [s.sample_id for s in first] == sorted(s.sample_id for s in first)
    assert [s.sample_id for s in leakage_subset(weak, texts, 64, 0)] == [1, 3, 5, 7, 9]
    assert [s.sample_id for s in leakage_subset(weak, {}, 64, 0)] == [1, 3, 5, 7, 9, 11]
    assert leakage_subset(weak, texts, 0, 0) == []


def test_leakage_curve_reaches_the_run_record_and_the_plot(lrb_run: Path, tmp_path: Path) -> None:
    from wrel.studies.plots import plot_leakage
    from wrel.studies.report import leakage_curves
    from wrel.studies.runner import _curve

    record = {"name": "tiny-lrb", "method": "lrb", "accurate_ratio": 0.1, "seed": 0}
    record["curve"] = _curve(lrb_run)
    curves = leakage_curves(record)
    assert curves["bank"] and len(curves["bank"]) == len(curves["expression"])
    png = plot_leakage([record], tmp_path / "leakage.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no run record"):
        plot_leakage([{**record, "curve": []}], tmp_path / "none.png")


def test_decode_report_structure_and_chance_baseline(
    lrb_run: Path, tiny_bench: Path, tmp_path: Path, capsys
) -> None:
    from wrel.cli import main

    out, small = tmp_path / "decode.json", tmp_path / "sub" / "summary.json"
    args = ["bank", "decode", str(lrb_run), "--k", "3", "--data", str(tiny_bench)]
    assert main([*args, "--show", "1", "--out", str(out), "--summary", str(small)]) == 0
    printed = capsys.readouterr().out
    assert "slot  0:" in printed and "| attribute |" in printed
    report = json.loads(out.read_text())
    summary = json.loads(small.read_text())  # the report minus its per-sample entries
    assert "samples" not in summary and summary["samples_shown"] == report["samples"][:1]
    assert summary["scores"] == report["scores"] and summary["k"] == 3
    attributes = json.loads((tiny_bench / "synthetic" / "attributes.json").read_text())
    assert report["parametrization"] == "free" and report["vocabulary"] == "table"
    assert report["num_prompts"] == NUM_PROMPTS and report["k"] == 3
    assert report["num_rows"] == len(report["samples"]) > 0
    for entry in report["samples"]:
        assert len(entry["nearest"]) == NUM_PROMPTS
        assert all(len(words) == 3 and all(w.isalpha() or "-" in w or "'" in w for w in words)
                   for words in entry["nearest"])  # fmt: skip
        assert entry["expression"] == attributes[str(entry["sample_id"])]["expression"]
    scores = report["scores"]
    assert set(scores["kinds"]) == set(KINDS)
    assert scores["samples_with_attributes"] == report["num_rows"]
    assert scores["any"]["samples"] > 0
    for entry in [*scores["kinds"].values(), scores["any"]]:
        if entry["samples"]:
            assert 0.0 <= entry["recovered"] <= 1.0
            assert 0.0 < entry["chance"] < 1.0  # random words from the same vocabulary
    assert report["vocabulary_size"] > 1000  # the tokenizer's whole words, no [unused]/##


def test_decode_vocab_bank_lists_mixtures_within_its_vocabulary(
    lrb_run: Path, tiny_bench: Path, tmp_path: Path
) -> None:
    from wrel.engine.checkpoint import load_model
    from wrel.methods.bank import BankConfig, ReferenceBank
    from wrel.studies.bank_decode import decode_bank

    run = tmp_path / "run"
    shutil.copytree(lrb_run, run)
    saved = ReferenceBank.load(run / "bank.safetensors")
    model, _ = load_model(run / "checkpoints" / "best")
    cfg = BankConfig(num_prompts=2, parametrization="vocab", vocab_words=["left", "red", "top"])
    ReferenceBank.for_model(saved.ids, model, cfg).save(run / "bank.safetensors")
    report = decode_bank(run, k=2, data_root=tiny_bench)
    assert report["vocabulary"] == "bank" and report["vocabulary_size"] == 3
    entry = report["samples"][0]
    assert len(entry["mixture"]) == 2 and len(entry["mixture"][0]) == 2
    assert {w for slot in entry["nearest"] for w in slot} <= {"left", "red", "top"}
    with pytest.raises(ValueError, match="fewer than k"):
        decode_bank(run, k=4, data_root=tiny_bench)


def test_score_recovery_hits_and_exact_chance() -> None:
    vocab = ["left", "right", "red", "tank", "foo", "bar"]
    words = torch.tensor([[[0, 4]], [[5, 4]]])  # (N=2, P=1, k=2): "left foo", "bar foo"
    samples = [
        {"class_name": "vehicle", "attributes": {"position": "left"}},
        {"class_name": "vehicle", "attributes": {"colour": "red"}},
    ]
    scores = score_recovery(words, samples, vocab)
    position = scores["kinds"]["position"]
    assert position["samples"] == 1 and position["recovered"] == 1.0
    assert position["chance"] == pytest.approx(1 / 3)  # 1 - C(5, 2) / C(6, 2)
    assert scores["kinds"]["colour"]["recovered"] == 0.0
    assert scores["kinds"]["size"] == {"samples": 0, "recovered": None, "chance": None}
    assert scores["any"]["recovered"] == 0.5
    # the closed form equals enumeration: 2 distinct words of 6, 3 slots, 2 target words
    combos = list(itertools.combinations(range(6), 2))
    miss = sum(1 for c in combos if not {0, 1} & set(c)) / len(combos)
    expected = 1 - miss**3
    assert float(chance_of_hit(torch.tensor([2]), 6, 3, 2)[0]) == pytest.approx(expected)


def test_decode_refuses_a_run_without_bank(tmp_path: Path) -> None:
    from wrel.studies.bank_decode import decode_bank

    with pytest.raises(FileNotFoundError, match="bank.safetensors"):
        decode_bank(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        decode_bank(tmp_path / "nope")
