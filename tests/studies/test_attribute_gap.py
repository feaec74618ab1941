"""research/attribute_gap.py: val IoU per kind of attribute, from the bench's val traces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def _write_run(root: Path, name: str, method: str, ratio: float, seed: int, traces: list) -> None:
    (root / "runs").mkdir(parents=True, exist_ok=True)
    (root / "traces").mkdir(parents=True, exist_ok=True)
    record = {"method": method, "accurate_ratio": ratio, "seed": seed}
    (root / "runs" / f"{name}.json").write_text(json.dumps(record))
    lines = []
    for risk, loss, loss_cn in traces:
        entry = {"risk": risk, "sample_ids": [0, 1, 2], "loss": loss, "loss_class_name": loss_cn}
        lines.append(json.dumps(entry))
    (root / "traces" / f"{name}.jsonl").write_text("\n".join(lines) + "\n")


def test_groups_shares_and_the_val_choice_among_traced_checkpoints(
    tmp_path: Path, research_script
) -> None:
    gap = research_script("attribute_gap")
    attributes = {
        "0": {"attributes": {"colour": "red"}, "num_same_class": 2},
        "1": {"attributes": {"extreme": "leftmost", "next_to": "ship"}, "num_same_class": 3},
        "2": {"attributes": {"position": "upper left"}, "num_same_class": 1},
    }
    groups = gap.sample_groups(attributes)
    assert groups[0] == {"all", "ambiguous", "colour"}
    assert groups[1] == {"all", "ambiguous", "position", "relation"}
    assert groups[2] == {"all", "unique", "position"}
    # a superlative and the rrsisd regime's descriptive size word both name a size
    more = gap.sample_groups(
        {"3": {"attributes": {"scale": "huge"}}, "4": {"attributes": {"size": "largest"}}}
    )
    assert more[3] == more[4] == {"all", "unique", "size"}

    # Only-Accurate IoU 0.2 everywhere, Full 1.0; the method 0.6 on its better traced point
    _write_run(tmp_path, "oa", "only-accurate", 0.1, 0, [(0.8, [0.8] * 3, [0.9] * 3)])
    _write_run(tmp_path, "full", "full", 1.0, 0, [(0.0, [0.0] * 3, [0.5] * 3)])
    _write_run(
        tmp_path,
        "m",
        "retrieve",
        0.1,
        0,
        [
            (0.6, [0.4, 0.4, 1.0], [1.0] * 3),
            (0.5, [0.4, 0.4, 0.7], [0.9, 0.9, 0.9]),
            (0.9, [1] * 3, [1] * 3),
        ],
    )
    _write_run(tmp_path, "other-ratio", "retrieve", 0.3, 0, [(0.0, [0.0] * 3, [0.0] * 3)])
    _write_run(tmp_path, "other-seed", "retrieve", 0.1, 1, [(0.0, [0.0] * 3, [0.0] * 3)])
    means = gap.summary(gap.collect(tmp_path, groups, 0.1, seeds={0}))
    assert set(means) == {"only-accurate", "full", "retrieve"}
    colour = means["retrieve"]["colour"]  # sample 0 only: IoU 0.6 at the risk-0.5 checkpoint
    assert colour["samples"] == 1 and colour["mIoU"] == pytest.approx(60.0)
    assert colour["reading_gain"] == pytest.approx(60.0 - 10.0)
    assert colour["gap_share"] == pytest.approx((60 - 20) / (100 - 20))
    position = means["retrieve"]["position"]  # samples 1 and 2: (0.6 + 0.3) / 2
    assert position["samples"] == 2 and position["mIoU"] == pytest.approx(45.0)
    assert means["only-accurate"]["all"]["gap_share"] == pytest.approx(0.0)
    table = gap.markdown(means, 0.1)
    assert "| retrieve (0) |" in table and "colour (1)" in table
    # without a seed filter the seed-1 run counts too
    assert gap.summary(gap.collect(tmp_path, groups, 0.1))["retrieve"]["all"]["seeds"] == [0, 1]
