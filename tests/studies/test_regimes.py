"""`wrel table`: the paper-layout table across bench folders, beside RRSIS-D's reported row."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from wrel.cli import main
from wrel.studies.regimes import (
    PAPER_LABEL,
    PAPER_RRSISD,
    regimes_table,
    shape_checks,
    shape_table,
)


def _rec(
    method: str, ratio: float, seed: int, miou: float, *, climbing: bool = False,
    commit: str = "c" * 40, data: str = "d1",
) -> dict[str, Any]:  # fmt: skip
    """A run record whose val curve is flat at its end (or still climbing)."""
    curve = [
        {"step": s, "stage": "main", "val_mIoU": (s / 10 if climbing else 50.0)}
        for s in range(10, 110, 10)
    ]
    name = f"{method}-s{seed}" if method == "full" else f"{method}-r{int(ratio * 100)}-s{seed}"
    return {
        "name": name, "method": method, "accurate_ratio": ratio, "seed": seed,
        "test": {"mIoU": miou, "oIoU": miou + 10}, "val": {"mIoU": miou}, "curve": curve,
        "code": {"commit": commit, "dirty": False}, "data": {"settings_hash": data},
    }  # fmt: skip


def _rows(table: str) -> dict[tuple[str, str], list[str]]:
    out = {}
    for line in table.splitlines():
        if line.startswith("| ") and not line.startswith("| accurate"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            out[(cells[0], cells[1])] = cells[2:]
    return out


def test_rows_per_ratio_paper_first_and_gap_shares_per_seed() -> None:
    regime = [
        _rec("only-accurate", 0.1, 0, 50.0), _rec("only-accurate", 0.1, 1, 40.0),
        _rec("naive", 0.1, 0, 60.0), _rec("naive", 0.1, 1, 55.0),
        _rec("full", 1.0, 0, 70.0), _rec("full", 1.0, 1, 60.0),
        _rec("retrieve", 0.1, 0, 65.0),
    ]  # fmt: skip
    other = [_rec("only-accurate", 0.3, 0, 30.0), _rec("full", 1.0, 0, 80.0)]
    table = regimes_table([("a", regime), ("b", other)])
    rows = _rows(table)
    # the paper's rows at every reported ratio, with its gap shares from its means
    assert rows[("10%", PAPER_LABEL)][:3] == ["41.15", "54.63; gap 58 %", "56.32; gap 66 %"]
    assert rows[("30%", PAPER_LABEL)][1] == "58.19; gap 41 %"
    assert rows[("100% (Full)", PAPER_LABEL)][0] == "64.20"
    # a folder's row only at the ratios it ran; per-seed shares: (60-50)/20 = 50 %, 15/20 = 75 %
    assert rows[("10%", "a")][0] == "45.00 ± 7.07 (n=2)"
    assert rows[("10%", "a")][1] == "57.50 ± 3.54 (n=2); gap 62 ± 18 %"
    assert rows[("10%", "a")][3] == "65.00 (n=1); gap 75 %"  # seed 0 alone: 15 / 20
    assert rows[("10%", "a")][2] == ""
    assert ("30%", "a") not in rows and ("10%", "b") not in rows and ("50%", "b") not in rows
    assert rows[("30%", "b")][0] == "30.00 (n=1)"
    assert rows[("100% (Full)", "a")][0] == "65.00 ± 7.07 (n=2)"
    order = [key for key in rows if key[0] == "10%"]
    assert order == [("10%", PAPER_LABEL), ("10%", "a")]
    assert "†" not in table
    assert PAPER_LABEL not in regimes_table([("a", regime)], paper=False)


def test_a_run_short_of_its_plateau_is_marked_and_named() -> None:
    records = [_rec("only-accurate", 0.1, 0, 50.0), _rec("naive", 0.1, 0, 60.0, climbing=True)]
    table = regimes_table([("a", records)], paper=False)
    assert _rows(table)[("10%", "a")][1].endswith("†")
    assert "a: Naive-WREL at 10%" in table.splitlines()[-1]


def test_oiou_uses_the_papers_oiou() -> None:
    table = regimes_table([("a", [_rec("naive", 0.1, 0, 60.0)])], metric="oIoU")
    assert _rows(table)[("10%", PAPER_LABEL)][0] == "63.03"
    assert _rows(table)[("10%", "a")][1] == "70.00 (n=1)"
    assert PAPER_RRSISD[1.0]["full"] == (77.79, 64.20)
    records = [_rec("only-accurate", 0.1, 0, 50.0), _rec("naive", 0.1, 0, 60.0),
               _rec("full", 1.0, 0, 70.0)]  # fmt: skip
    both = _rows(regimes_table([("a", records)], metric="both"))
    assert both[("10%", PAPER_LABEL)][1] == "71.48 / 54.63; gap 58 %"  # gap on mIoU
    assert both[("10%", "a")][1] == "70.00 / 60.00 (n=1); gap 50 %"
    assert both[("100% (Full)", PAPER_LABEL)][0] == "77.79 / 64.20"


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="metric"):
        regimes_table([("a", [_rec("naive", 0.1, 0, 60.0)])], metric="dice")
    with pytest.raises(ValueError, match="no run records"):
        regimes_table([("a", [])])
    with pytest.raises(ValueError, match="at least one"):
        regimes_table([])


def _folder(root: Path, records: list[dict[str, Any]]) -> Path:
    (root / "runs").mkdir(parents=True)
    for rec in records:
        (root / "runs" / f"{rec['name']}.json").write_text(json.dumps(rec))
    return root


def test_command_prints_writes_and_never_overwrites_unasked(tmp_path: Path, capsys) -> None:
    a = _folder(tmp_path / "cpu", [_rec("only-accurate", 0.1, 0, 50.0), _rec("full", 1.0, 0, 70.0)])
    out = tmp_path / "table.md"
    assert main(["table", str(a), "--labels", "rrsisd regime", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| 10% | rrsisd regime | 50.00 (n=1) |" in printed
    assert "- rrsisd regime: code cccccccccc / data d1 (2 runs)" in printed
    assert "| 10% | rrsisd regime | 50.00 (n=1) |" in out.read_text()
    assert main(["table", str(a), "--out", str(out)]) == 2  # exists: needs --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(["table", str(a), "--out", str(out), "--overwrite", "--no-paper"]) == 0
    assert PAPER_LABEL not in out.read_text() and "| 10% | cpu |" in out.read_text()


def test_command_refuses_bad_folders_labels_and_mixed_cells(tmp_path: Path, capsys) -> None:
    assert main(["table", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["table", str(tmp_path / "empty")]) == 2
    assert "no run records" in capsys.readouterr().err
    a = _folder(tmp_path / "a", [_rec("naive", 0.1, 0, 60.0)])
    assert main(["table", str(a), "--labels", "x", "y"]) == 2
    assert "2 labels for 1 folders" in capsys.readouterr().err
    mixed = _folder(
        tmp_path / "mixed",
        [_rec("naive", 0.1, 0, 60.0), _rec("naive", 0.1, 1, 61.0, data="d2")],
    )
    assert main(["table", str(mixed)]) == 2
    assert "mix code or data versions" in capsys.readouterr().err
    assert main(["table", str(mixed), "--allow-mixed-versions"]) == 0
    printed = capsys.readouterr().out
    assert "mixed, naive at 10%: code cccccccccc / data d1; code cccccccccc / data d2" in printed


def _shaped() -> list[dict[str, Any]]:
    """Three seeds at 10 % with RRSIS-D's shape, and one seed at 30 % where class names hurt."""
    return [
        _rec("only-accurate", 0.1, 0, 50.0), _rec("only-accurate", 0.1, 1, 48.0),
        _rec("only-accurate", 0.1, 2, 52.0),
        _rec("naive", 0.1, 0, 60.0), _rec("naive", 0.1, 1, 59.0), _rec("naive", 0.1, 2, 61.5),
        _rec("full", 1.0, 0, 70.0), _rec("full", 1.0, 1, 69.0), _rec("full", 1.0, 2, 72.0),
        _rec("only-accurate", 0.3, 0, 60.0), _rec("naive", 0.3, 0, 59.0),
        _rec("lrb-paper", 0.1, 0, 10.0),  # never checked: its difference is the finding
    ]  # fmt: skip


def test_shape_checks_pair_by_seed_and_hold_the_bands() -> None:
    checks = {c.name: c for c in shape_checks(_shaped())}
    assert list(checks) == [
        "10%: Naive-WREL above Only-Accurate", "30%: Naive-WREL above Only-Accurate",
        "10%: Full above Naive-WREL", "10%: Naive-WREL's share of the Only-Accurate -> Full gap",
        "10%: Only-Accurate / Full", "Full", "baseline runs at their plateau",
    ]  # fmt: skip
    # diffs 10, 11, 9.5: the paired t rule calls it from three seeds
    assert checks["10%: Naive-WREL above Only-Accurate"].results["test"] == (
        "+10.17 ± 0.76 (n=3): above", True)  # fmt: skip
    # one seed is checked by its sign, and says so
    assert checks["30%: Naive-WREL above Only-Accurate"].results["val"] == (
        "-1.00 (one seed: sign only)", False)  # fmt: skip
    assert checks["30%: Naive-WREL above Only-Accurate"].failed
    # shares per seed: 10/20, 11/21, 9.5/20 -> mean 49.96 %, std 2.44
    share = checks["10%: Naive-WREL's share of the Only-Accurate -> Full gap"]
    assert share.results["test"] == ("50.0 ± 2.4 % (n=3)", True)
    ratio = (50 / 70 + 48 / 69 + 52 / 72) / 3
    assert checks["10%: Only-Accurate / Full"].results["test"][0].startswith(f"{ratio:.3f} ± ")
    assert checks["Full"].results["val"] == ("70.33 ± 1.53 (n=3)", True)
    assert checks["baseline runs at their plateau"].results["test"] == ("11 of 11", True)
    failed = [c.name for c in checks.values() if c.failed]
    assert failed == ["30%: Naive-WREL above Only-Accurate"]


def test_shape_checks_fail_out_of_band_short_runs_and_say_not_run() -> None:
    records = [
        _rec("only-accurate", 0.1, 0, 50.0), _rec("naive", 0.1, 0, 69.0, climbing=True),
        _rec("full", 1.0, 0, 70.0),
    ]  # fmt: skip
    checks = {c.name: c for c in shape_checks(records, splits=("test",))}
    share = checks["10%: Naive-WREL's share of the Only-Accurate -> Full gap"]
    assert share.results == {"test": ("95.0 %", False)}  # 19 / 20: above the 75 % ceiling
    assert checks["10%: Only-Accurate / Full"].results["test"] == ("0.714", True)
    assert checks["baseline runs at their plateau"].results["test"] == (
        "2 of 3 (short: naive-r10-s0)", False)  # fmt: skip
    no_val = [{k: v for k, v in r.items() if k != "val"} for r in records]
    share = {c.name: c for c in shape_checks(no_val)}[
        "10%: Naive-WREL's share of the Only-Accurate -> Full gap"
    ]
    assert share.results == {"val": ("not run", None), "test": ("95.0 %", False)}
    lone = {c.name: c for c in shape_checks([_rec("naive", 0.1, 0, 60.0)])}
    assert lone["10%: Naive-WREL above Only-Accurate"].results["val"] == ("not run", None)
    assert lone["Full"].results["test"] == ("not run", None)
    assert not any(c.failed for c in lone.values())
    table = shape_table(shape_checks(records, splits=("test",)), splits=("test",))
    assert "| 10%: Naive-WREL's share of the Only-Accurate -> Full gap | 40-75 % (paper 58 %) | " \
        "95.0 %: **FAIL** |" in table  # fmt: skip
    assert "| Full | 60-78 (paper 64.20) | 70.00: pass |" in table


def test_command_check_prints_the_checks_and_exits_1_on_a_failure(tmp_path: Path, capsys) -> None:
    good = [r for r in _shaped() if r["accurate_ratio"] != 0.3]
    a = _folder(tmp_path / "good", good)
    assert main(["table", str(a), "--check", "--no-paper"]) == 0
    printed = capsys.readouterr().out
    assert "Baselines of good against RRSIS-D's shape:" in printed
    assert "| 10%: Full above Naive-WREL | above | " in printed and "FAIL" not in printed
    b = _folder(tmp_path / "bad", _shaped())
    assert main(["table", str(a), str(b), "--check"]) == 1
    printed = capsys.readouterr().out
    assert "1 check(s) failed: bad: 30%: Naive-WREL above Only-Accurate" in printed
    assert main(["table", str(b)]) == 0  # without --check the table alone, as before
    # the bands are on mIoU whatever the table shows (oIoU here is mIoU + 10: Full 80.33)
    assert main(["table", str(a), "--check", "--metric", "oIoU"]) == 0
    assert "| Full | 60-78 (paper 64.20) | 70.33 ± 1.53 (n=3): pass |" in capsys.readouterr().out
