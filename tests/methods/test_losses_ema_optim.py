from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from wrel.methods.ema import EmaTeacher, ema_momentum
from wrel.methods.losses import (
    confidence_threshold,
    consistency_loss,
    dice_loss,
    per_sample_seg_loss,
    seg_loss,
)
from wrel.methods.optim import OptimConfig, build_optimizer, param_groups, poly_factor


def test_seg_loss_hand_example() -> None:
    # One sample, two pixels: fg pixel with logits (0, 0) and bg pixel with logits (0, 0).
    logits = torch.zeros(1, 2, 1, 2)
    mask = torch.tensor([[[1, 0]]])
    # CE of every pixel is log 2; the weighted mean of equal values is log 2.
    # Dice: prob fg = 0.5 on both pixels: 1 - (2*0.5 + 1) / (1 + 1 + 1) = 1/3.
    expected = 0.9 * math.log(2) + 0.1 * (1 / 3)
    assert per_sample_seg_loss(logits, mask).item() == pytest.approx(expected, rel=1e-6)


def test_weighted_ce_uses_class_weights() -> None:
    # Pixel 0 (fg) has CE a, pixel 1 (bg) has CE b: weighted mean = (1.1 a + 0.9 b) / 2.
    logits = torch.tensor([[[[0.0, 2.0]], [[1.0, 0.0]]]])  # (1, 2, 1, 2)
    mask = torch.tensor([[[1, 0]]])
    ce = torch.nn.functional.cross_entropy(logits, mask, reduction="none").flatten()
    weighted = (1.1 * ce[0] + 0.9 * ce[1]) / 2.0
    expected = 0.9 * weighted + 0.1 * dice_loss(logits, mask)[0]
    assert seg_loss(logits, mask).item() == pytest.approx(expected.item(), rel=1e-6)


def test_loss_is_mean_of_shards() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 2, 5, 5, generator=g)
    mask = (torch.rand(4, 5, 5, generator=g) > 0.5).long()
    halves = (seg_loss(logits[:2], mask[:2]) + seg_loss(logits[2:], mask[2:])) / 2
    assert torch.allclose(seg_loss(logits, mask), halves)


def test_perfect_prediction_has_small_loss_and_size_mismatch_errors() -> None:
    mask = torch.tensor([[[1, 0], [0, 1]]])
    logits = torch.stack([(1 - mask) * 20.0, mask * 20.0], dim=1).float()
    assert seg_loss(logits, mask).item() < 1e-3
    with pytest.raises(ValueError, match="differ in size"):
        seg_loss(torch.zeros(1, 2, 3, 3), mask)


def test_consistency_loss_zero_for_identical_sharp_and_threshold_ramp() -> None:
    logits = torch.tensor([[[[10.0]], [[-10.0]]]])
    assert consistency_loss(logits, logits).item() < 1e-6
    assert confidence_threshold(0.0) == pytest.approx(0.6)
    assert confidence_threshold(2.5) == pytest.approx(0.7)
    assert confidence_threshold(10.0) == pytest.approx(0.8)


@pytest.mark.parametrize(
    ("progress", "expected"),
    [(0.0, 0.95), (0.5, 0.97), (1.0, 0.99), (2.0, 0.9945), (3.0, 0.9995), (10.0, 0.9995)],
)
def test_ema_momentum_schedule(progress: float, expected: float) -> None:
    assert ema_momentum(progress) == pytest.approx(expected, abs=1e-12)


def test_ema_updates_params_and_batchnorm_buffers() -> None:
    student = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    teacher = EmaTeacher(student)
    assert not teacher.module.training
    assert all(not p.requires_grad for p in teacher.parameters())
    student.train()
    student(torch.randn(4, 1, 3, 3) * 5 + 3)  # moves BN running stats
    with torch.no_grad():
        student[0].weight.add_(1.0)
    t_mean = teacher.module[1].running_mean.clone()
    t_w = teacher.module[0].weight.clone()
    teacher.update(student, 0.9)
    bn_t, bn_s = teacher.module[1], student[1]
    assert torch.allclose(bn_t.running_mean, 0.9 * t_mean + 0.1 * bn_s.running_mean)
    assert torch.allclose(teacher.module[0].weight, 0.9 * t_w + 0.1 * student[0].weight)
    assert bn_t.num_batches_tracked.item() == bn_s.num_batches_tracked.item() == 1
    teacher.train()
    assert not teacher.module.training


def test_param_groups_no_decay_and_lrs(tiny_model: nn.Module) -> None:
    cfg = OptimConfig(lr_backbone=1.0, lr_text=2.0, lr_head=3.0, weight_decay=0.5)
    groups = {g["name"]: g for g in param_groups(tiny_model, cfg)}
    assert groups["backbone"]["lr"] == 1.0 and groups["backbone"]["weight_decay"] == 0.5
    assert groups["backbone/no_decay"]["weight_decay"] == 0.0  # conv bias + BN
    assert groups["text"]["lr"] == 2.0 and groups["head"]["lr"] == 3.0
    n_params = sum(len(g["params"]) for g in groups.values())
    assert n_params == len(list(tiny_model.parameters()))
    for p in tiny_model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        build_optimizer(tiny_model, cfg)


def test_poly_factor() -> None:
    assert poly_factor(0, 10) == 1.0
    assert poly_factor(5, 10) == pytest.approx(0.5**0.9)
    assert poly_factor(10, 10) == 0.0


def test_ema_time_scale_shortens_the_horizon() -> None:
    for progress in (0.0, 0.5, 2.0, 7.0):
        assert ema_momentum(progress, 10.0) == pytest.approx(ema_momentum(progress) ** 10)
    # 0.9995 averages over ~2000 iterations; at time scale 10 over ~200
    assert 1 / (1 - ema_momentum(5.0, 10.0)) == pytest.approx(200, rel=0.01)
    with pytest.raises(ValueError, match="time_scale"):
        ema_momentum(1.0, 0.0)
