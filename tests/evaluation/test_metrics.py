"""Metrics against hand-computed masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wrel.evaluation import (
    EvalProtocol,
    intersection_union,
    iou_per_sample,
    match_resolution,
    miou,
    oiou,
    precision_at,
    prediction_from_scores,
    summarize,
)


def _masks() -> tuple[torch.Tensor, torch.Tensor]:
    """Three 4x4 samples with known I/U: (2, 4), (0, 3), (0, 0)."""
    pred = torch.zeros(3, 4, 4, dtype=torch.bool)
    gt = torch.zeros(3, 4, 4, dtype=torch.bool)
    pred[0, 0, :3] = True  # 3 px
    gt[0, 0, 1:4] = True  # 3 px, overlap 2 -> I=2, U=4
    pred[1, 1, :2] = True  # 2 px
    gt[1, 3, 0] = True  # 1 px, disjoint -> I=0, U=3
    return pred, gt  # sample 2: both empty -> I=0, U=0


def test_intersection_union_hand_computed() -> None:
    pred, gt = _masks()
    i, u = intersection_union(pred, gt)
    assert i.dtype == torch.int64 and u.dtype == torch.int64
    assert i.tolist() == [2, 0, 0]
    assert u.tolist() == [4, 3, 0]


def test_intersection_union_accepts_numpy_and_2d() -> None:
    pred, gt = _masks()
    i, u = intersection_union(pred.numpy(), gt.numpy().astype(np.uint8))
    assert i.tolist() == [2, 0, 0] and u.tolist() == [4, 3, 0]
    i1, u1 = intersection_union(pred[0], gt[0])
    assert i1.tolist() == [2] and u1.tolist() == [4]


def test_shape_mismatch_names_fix() -> None:
    with pytest.raises(ValueError, match="match_resolution"):
        intersection_union(torch.zeros(1, 4, 4), torch.zeros(1, 5, 4))


def test_oiou_miou_both_empty_protocols() -> None:
    i, u = torch.tensor([2, 0, 0]), torch.tensor([4, 3, 0])
    assert oiou(i, u) == pytest.approx(2 / 7)
    assert miou(i, u) == pytest.approx((0.5 + 0 + 0) / 3)
    assert miou(i, u, empty_score=1.0) == pytest.approx((0.5 + 0 + 1) / 3)
    assert iou_per_sample(i, u, 1.0).tolist() == [0.5, 0.0, 1.0]
    assert oiou([0], [0]) == 0.0 and miou([], []) == 0.0


def test_precision_threshold_edge_counts_equal() -> None:
    # IoUs: 0.5 exactly, 0.6 exactly, 0.7, 0.9 exactly, 0.49
    i = torch.tensor([3, 3, 7, 9, 49])
    u = torch.tensor([6, 5, 10, 10, 100])
    prec = precision_at(i, u)
    assert prec == {
        0.5: pytest.approx(4 / 5),
        0.6: pytest.approx(3 / 5),
        0.7: pytest.approx(2 / 5),
        0.8: pytest.approx(1 / 5),
        0.9: pytest.approx(1 / 5),
    }
    assert precision_at([0], [0], thresholds=(0.5,), empty_score=1.0) == {0.5: 1.0}
    assert precision_at([0], [0], thresholds=(0.5,)) == {0.5: 0.0}


def test_summarize_percentages_and_per_category() -> None:
    i, u = torch.tensor([2, 0, 3]), torch.tensor([4, 3, 3])
    out = summarize(i, u, ["car", "ship", "car"])
    assert out["oIoU"] == pytest.approx(100 * 5 / 10)
    assert out["mIoU"] == pytest.approx(100 * 1.5 / 3)
    assert out["Prec@0.5"] == pytest.approx(100 * 2 / 3)
    assert out["Prec@0.9"] == pytest.approx(100 / 3)
    assert out["num_samples"] == 3
    car = out["per_category"]["car"]
    assert car["oIoU"] == pytest.approx(100 * 5 / 7) and car["num_samples"] == 2
    assert car["mIoU"] == pytest.approx(75.0)
    assert out["per_category"]["ship"]["mIoU"] == 0.0
    assert out["protocol"]["resolution"] == "input"
    assert all(0.0 <= out[k] <= 100.0 for k in ("oIoU", "mIoU", "Prec@0.7"))


def test_protocol_parse_describe_and_errors() -> None:
    p = EvalProtocol.parse("original,empty=1")
    assert p.resolution == "original" and p.empty_score == 1.0
    text = p.describe()
    assert "original" in text and ">=" in text and "\n" not in text
    with pytest.raises(ValueError, match="resolution"):
        EvalProtocol.parse("full")
    with pytest.raises(ValueError, match="empty=0"):
        EvalProtocol.parse("input,empty=2")
    with pytest.raises(ValueError, match="empty_score"):
        EvalProtocol(empty_score=0.5)


def test_prediction_rules_agree_on_softmax() -> None:
    logits = torch.randn(2, 2, 5, 5, generator=torch.Generator().manual_seed(0))
    by_argmax = prediction_from_scores(logits, "argmax")
    prob = logits.softmax(1)[:, 1:]  # (B, 1, H, W)
    assert torch.equal(by_argmax, prediction_from_scores(prob, "prob>0.5"))
    assert by_argmax.shape == (2, 5, 5) and by_argmax.dtype == torch.bool
    with pytest.raises(ValueError, match="logits"):
        prediction_from_scores(torch.zeros(2, 3, 4, 4))


def test_match_resolution_nearest() -> None:
    gt = torch.zeros(1, 8, 8, dtype=torch.bool)
    gt[0, :4, :4] = True
    pred = torch.zeros(1, 4, 4, dtype=torch.bool)
    p, g = match_resolution(pred, gt, "input")
    assert g.shape == (1, 4, 4) and int(g.sum()) == 4 and p is pred
    p, g = match_resolution(pred, gt, "original")
    assert p.shape == (1, 8, 8) and g is gt
