"""`wrel bound` from records alone, `predict` and `check`, on tiny synthetic records.

The records lie exactly on the learning curve ``R(m) = 0.1 + 10 / sqrt(m)`` (n = 10000), so
``a = 10``, ``eps_m = 5 / sqrt(m)``, ``eps_n = 0.05``; every number below is computed by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from wrel.cli import main
from wrel.studies.bound_check import check_prediction
from wrel.studies.bound_predict import predict_cells
from wrel.studies.bound_records import bound_from_records, estimate_n_train

N = 10000


def _rec(name: str, method: str, rho: float, miou: float, best_step: int) -> dict:
    return {
        "name": name, "method": method, "accurate_ratio": rho, "seed": 0,
        "test": {"mIoU": miou, "num_samples": 400}, "val": {"mIoU": miou},
        "best": {"stage": method, "step": best_step},
        "curve": [{"step": 7, "epoch": 0, "stage": method, "loss": 1.0}],
        "config": {"train": {"batch_size": 4}},
    }  # fmt: skip


def _line(stage: str, step: int, loss: list[float], loss_cn: list[float]) -> dict:
    return {"stage": stage, "epoch": 0, "step": step, "sample_ids": [0, 1], "loss": loss,
            "loss_class_name": loss_cn}  # fmt: skip


RECORDS = [
    _rec("full-s0", "full", 1.0, 80.0, 20),  # R = 0.2 = 0.1 + 10/100
    _rec("only-accurate-r4-s0", "only-accurate", 0.04, 40.0, 5),  # m = 400: R = 0.6
    _rec("only-accurate-r16-s0", "only-accurate", 0.16, 65.0, 5),  # m = 1600: R = 0.35
    _rec("only-accurate-r25-s0", "only-accurate", 0.25, 70.0, 5),  # m = 2500: R = 0.3
    _rec("naive-r4-s0", "naive", 0.04, 50.0, 30),  # R = 0.5: gap 0.3
]
TRACES = {
    # Gamma = R - R_w: -0.2 at step 10, -0.3 at step 20 (Full's chosen checkpoint)
    "full-s0": [
        _line("full", 10, [0.2, 0.4], [0.5, 0.5]),
        _line("full", 20, [0.1, 0.3], [0.6, 0.4]),
    ],
    "naive-r4-s0": [_line("naive", 30, [0.5, 0.5], [0.6, 0.6])],  # Gamma = -0.1
}


def _write(folder: Path, records: list[dict], traces: dict) -> Path:
    (folder / "runs").mkdir(parents=True)
    (folder / "traces").mkdir()
    for rec in records:
        (folder / "runs" / f"{rec['name']}.json").write_text(json.dumps(rec))
    for name, lines in traces.items():
        (folder / "traces" / f"{name}.jsonl").write_text("\n".join(map(json.dumps, lines)))
    return folder


def test_bound_from_records_by_hand() -> None:
    res = bound_from_records(RECORDS, TRACES, n_train=N)
    assert res["eps"]["a"] == pytest.approx(10.0) and res["eps"]["eps_n"] == pytest.approx(0.05)
    assert res["delta"]["estimate"] == pytest.approx(0.3)  # Full at step 20
    assert res["reference"]["gamma"] == pytest.approx(-0.3) and res["reference"]["exact"]
    (row,) = res["rows"]
    assert row["measured_gap"] == pytest.approx(0.3)
    b = row["bounds"]
    assert b["max_checkpoints"]["bound"] == pytest.approx(2 * 0.96 * 0.3 + 0.1)
    assert b["two_hypotheses"]["bound"] == pytest.approx(2 * 0.96 * 0.3 + 0.1)
    signed = b["signed"]  # (1 - rho)(Gamma_mix - Gamma_ref) + 2 eps_n = 0.96 * 0.2 + 0.1
    assert signed["bound"] == pytest.approx(0.292) and not signed["holds"]
    assert signed["delta_share"] == pytest.approx(0.192 / 0.292)
    assert signed["slack"] == pytest.approx(-0.008)
    assert signed["slack_from_delta"] == pytest.approx(0.0)
    assert signed["slack_from_eps"] == pytest.approx(0.1 - (0.3 - 0.192))
    loose = b["max_checkpoints"]  # 0.376 = (0.576 - 0.192) + (0.1 - 0.108)
    assert loose["slack_from_delta"] == pytest.approx(0.576 - 0.192)
    assert loose["slack_from_delta"] + loose["slack_from_eps"] == pytest.approx(loose["slack"])
    # per-sample Gamma differences [0.4, 0.0]: bootstrap means lie in {0, 0.2, 0.4}
    assert row["gamma_difference_ci"] == pytest.approx([0.0, 0.4])
    assert row["covered_by_theorem"]
    oa = {r["rho"]: r for r in res["only_accurate"]}
    assert oa[0.04]["bound"] == pytest.approx(2 * 5 / 20) and oa[0.04]["measured_gap"] == 0.4
    assert estimate_n_train(RECORDS) == 28  # 7 steps in epoch 0 x batch 4


def test_predict_then_check_by_hand(tmp_path: Path) -> None:
    folder = _write(tmp_path / "bench", RECORDS, TRACES)
    pred = predict_cells(RECORDS, TRACES, records_dir=folder, ratios=[0.25], seeds=[0],
                         n_train=N, hold_out=[0.25])  # fmt: skip
    assert pred["retrospective"] and pred["held_out"] == ["only-accurate-r25-s0"]
    assert pred["eps_fits"]["0.25"]["sizes"] == [400.0, 1600.0, 10000.0]
    cells = {c["method"]: c for c in pred["cells"]}
    t_oa = 1.96 * 0.2 / 20  # no traced Only-Accurate: sqrt(2) sd(Full losses) = 0.2
    assert cells["only-accurate"]["point"] == pytest.approx(0.1)  # 10/50 - 10/100
    assert cells["only-accurate"]["interval"] == pytest.approx([-0.1 - t_oa, 0.2 + t_oa])
    gamma_mix = -0.1 + (0.21 / 0.96) * (-0.2)  # linear between (4 %, -0.1) and (100 %, -0.3)
    t_nv = 1.96 * 0.02**0.5 / 20  # sd of the paired differences [0.4, 0.2]
    signed = 0.75 * (gamma_mix + 0.3)
    assert cells["naive"]["point"] == pytest.approx(signed)
    assert cells["naive"]["interval"] == pytest.approx([-0.1 - t_nv, signed + 0.1 + t_nv])
    (call,) = pred["calls"]
    assert not call["mixing_preferred"]  # 0.217 >= 0.2: discard
    later = [*RECORDS, _rec("naive-r25-s0", "naive", 0.25, 72.0, 5)]  # naive beats OA (70)
    res = check_prediction(pred, later)
    cells = {c["method"]: c for c in res["cells"]}
    assert cells["naive"]["measured"] == pytest.approx(0.08) and cells["naive"]["inside"]
    assert cells["naive"]["error"] == pytest.approx(0.08 - signed)
    assert cells["only-accurate"]["error"] == pytest.approx(0.0)
    assert res["calls"][0]["right"] is False  # the miss is reported as a miss
    assert res["summary"]["scored_records_that_were_inputs"] == 0


def test_cli_records_predict_check(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = _write(tmp_path / "bench", RECORDS, TRACES)
    out = tmp_path / "out"
    assert main(["bound", "--records", str(folder), "--n-train", str(N), "--out", str(out)]) == 0
    assert json.loads((out / "bound.json").read_text())["eps"]["a"] == pytest.approx(10.0)
    assert main(["bound", "--records", str(folder), "--out", str(out)]) == 2  # exists
    pred = tmp_path / "pred.json"
    argv = ["bound", "predict", "--records", str(folder), "--out", str(pred), "--ratios",
            "0.25", "--seeds", "0", "--n-train", str(N), "--hold-out", "0.25"]  # fmt: skip
    assert main(argv) == 0
    assert json.loads(pred.read_text())["records"][0]["file"] == "runs/full-s0.json"
    (folder / "runs" / "naive-r25-s0.json").write_text(
        json.dumps(_rec("naive-r25-s0", "naive", 0.25, 72.0, 5))
    )
    report = tmp_path / "check.md"
    argv = ["bound", "check", "--prediction", str(pred), "--records", str(folder), "--out",
            str(report)]  # fmt: skip
    assert main(argv) == 0
    assert "WRONG" in report.read_text() and "inside" in report.read_text()
    assert "changed since" not in report.read_text()
    # an input record edited after the prediction is named in the report
    (folder / "runs" / "full-s0.json").write_text(json.dumps(RECORDS[0]) + " ")
    assert main([*argv, "--overwrite"]) == 0
    assert "runs/full-s0.json" in report.read_text().split("changed since")[1]
    # records of another data version (regime) are refused
    other = [{**r, "data": {"settings_hash": h}} for r, h in zip(RECORDS, "aabbb", strict=True)]
    with pytest.raises(ValueError, match="2 data versions"):
        bound_from_records(other, TRACES, n_train=N)
    # too few sizes once the predicted ratio is left out: a one-line error
    argv = ["bound", "predict", "--records", str(folder), "--out", str(tmp_path / "p2.json"),
            "--ratios", "0.16", "--seeds", "0", "--n-train", str(N), "--hold-out", "0.16",
            "--hold-out", "0.25"]  # fmt: skip
    assert main(argv) == 2
    assert "--min-sizes" in capsys.readouterr().err
    # one size left (only Full) even with --min-sizes 2: the error says how to go on
    argv = ["bound", "predict", "--records", str(folder), "--out", str(tmp_path / "p3.json"),
            "--ratios", "0.16", "--seeds", "0", "--n-train", str(N), "--min-sizes", "2",
            "--hold-out", "0.16", "--hold-out", "0.25", "--hold-out", "0.04"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "cannot be fitted with 16% left out" in err and "out of --ratios" in err
    assert "np.float64" not in err


def test_subsample_eps_tracks_the_sampling_deviation() -> None:
    from wrel.theory import subsample_eps

    losses = np.tile([0.0, 1.0], 500)[None, :]  # one hypothesis, sd 0.5
    fit = subsample_eps(losses, [100, 400], num_draws=2000, rng=0)
    # the 95 % quantile of |mean of m draws - 0.5| is about 1.96 * 0.5 / sqrt(m)
    for m, gap in zip(fit.sample_sizes, fit.gaps, strict=True):
        assert gap == pytest.approx(1.96 * 0.5 / m**0.5, rel=0.15)
    assert fit.c == pytest.approx(0.98, rel=0.15)
    assert subsample_eps(np.full((3, 50), 0.3), [10, 20]).c == pytest.approx(0.0)
    with pytest.raises(ValueError, match="positive sizes"):
        subsample_eps(losses, [])


def test_predict_eps_sources_are_checked(tmp_path: Path) -> None:
    folder = _write(tmp_path / "bench", RECORDS, TRACES)
    kw: dict[str, Any] = {
        "records_dir": folder,
        "ratios": [0.25],
        "seeds": [0],
        "n_train": N,
        "hold_out": [0.25],
    }
    with pytest.raises(ValueError, match="too few sub-sample sizes"):  # 2 val samples
        predict_cells(RECORDS, TRACES, eps_source="subsample", **kw)
    with pytest.raises(ValueError, match="not one of"):
        predict_cells(RECORDS, TRACES, eps_source="vc", **kw)
    pred = predict_cells(RECORDS, TRACES, eps_source="subsample", min_sizes=1, **kw)
    assert pred["eps_source"] == "subsample" and pred["eps_fits"]["0.25"]["sizes"] == [1.0]


def test_seed_without_full_uses_the_mean_and_is_not_scored(tmp_path: Path) -> None:
    folder = _write(tmp_path / "bench", RECORDS, TRACES)
    pred = predict_cells(RECORDS, TRACES, records_dir=folder, ratios=[0.04], seeds=[0, 1],
                         n_train=N, min_sizes=2)  # fmt: skip
    # seed 0 has both cells at 4 %; seed 1 has none and no Full: Full's mean Gamma stands in
    assert {(c["method"], c["seed"]) for c in pred["cells"]} == {("naive", 1), ("only-accurate", 1)}
    naive = next(c for c in pred["cells"] if c["method"] == "naive")
    assert naive["terms"]["gamma_ref_source"].startswith("mean of the Full runs")
    assert naive["point"] == pytest.approx(0.96 * (-0.1 + 0.3))  # Gamma_mix from seed 0
    later = [*RECORDS, {**_rec("naive-r4-s1", "naive", 0.04, 50.0, 5), "seed": 1}]
    res = check_prediction(pred, later)
    assert [c["status"] for c in res["cells"]] == ["no Full", "pending"]
    assert res["summary"]["cells_scored"] == 0
