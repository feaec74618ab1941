from __future__ import annotations

import copy

import pytest
import torch
from tiny_model import make_batch

from wrel.methods.bank import BankConfig
from wrel.methods.base import (
    BankInitConfig,
    JointConfig,
    NonFiniteLossError,
    StageContext,
    SupervisedConfig,
)
from wrel.methods.lrb import BankInitStage, JointStage
from wrel.methods.supervised import SupervisedStage


def _ctx(model, **kw) -> StageContext:
    return StageContext(
        model=model,
        device=torch.device("cpu"),
        iters_per_epoch=4,
        weak_ids=[11, 13, 20],
        bank_cfg=BankConfig(num_prompts=3),
        **kw,
    )


def _changed(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


def test_supervised_step_trains_and_state_roundtrips(tiny_model) -> None:
    stage = SupervisedStage(SupervisedConfig(), _ctx(tiny_model))
    before = copy.deepcopy(tiny_model.state_dict())
    logs = stage.training_step(make_batch(), 0.0)
    assert logs["loss"] > 0 and logs["lr"] > 0
    assert _changed(before, tiny_model.state_dict())
    state = stage.state_dict()
    fresh = SupervisedStage(SupervisedConfig(), _ctx(copy.deepcopy(tiny_model)))
    fresh.load_state_dict(state)
    assert fresh.scheduler.last_epoch == 1
    assert fresh.optimizer.state_dict()["state"].keys() == state["optimizer"]["state"].keys()


def test_bank_init_trains_only_bank(tiny_model) -> None:
    stage = BankInitStage(BankInitConfig(samples="weak"), _ctx(tiny_model))
    model_before = copy.deepcopy(tiny_model.state_dict())
    rows_before = stage.bank.rows.clone()
    logs = stage.training_step(make_batch(weak=[False, True, False, True]), 0.0)
    assert logs["bank_loss"] > 0
    for key, value in tiny_model.state_dict().items():
        assert torch.equal(value, model_before[key]), key  # frozen, BN stats included
    assert not torch.equal(
        stage.bank.rows[:2], rows_before[:2]
    )  # ids 11 and 13 (rows 0, 1) were in the batch
    assert torch.equal(stage.bank.rows[2], rows_before[2])  # id 20 not in the batch
    assert stage.handover().bank is stage.bank


def test_joint_step_updates_student_teacher_and_bank(tiny_model) -> None:
    ctx = _ctx(tiny_model)
    stage = JointStage(JointConfig(), ctx)
    teacher_before = copy.deepcopy(stage.teacher.module.state_dict())
    assert all(torch.equal(v, tiny_model.state_dict()[k]) for k, v in teacher_before.items())
    rows_before = stage.bank.rows.clone()
    logs = stage.training_step(make_batch(weak=[False, True, False, True]), 0.0)
    assert {"bank_loss", "seg_loss", "loss", "lr", "ema_momentum"} <= logs.keys()
    assert logs["ema_momentum"] == pytest.approx(0.95)
    assert _changed(teacher_before, stage.teacher.module.state_dict())
    assert not torch.equal(stage.bank.rows[:2], rows_before[:2])  # ids 11 and 13
    assert torch.equal(stage.bank.rows[2], rows_before[2])
    assert not stage.teacher.module.training
    state = stage.state_dict()
    assert {"model", "teacher", "bank", "optimizer", "scheduler"} <= state.keys()


def test_joint_with_consistency_and_update_every(tiny_model) -> None:
    cfg = JointConfig(consistency_weight=0.5, bank_update_every=2, bank_steps=2)
    stage = JointStage(cfg, _ctx(tiny_model))
    logs = stage.training_step(make_batch(weak=[False, True, False, True]), 0.25)  # iteration 1
    assert "bank_loss" not in logs
    logs = stage.training_step(make_batch(weak=[False, True, False, True]), 0.5)  # iteration 2
    assert "bank_loss" in logs and stage.bank.steps.max().item() == 2


def test_non_finite_loss_raises_before_step(tiny_model) -> None:
    stage = SupervisedStage(SupervisedConfig(), _ctx(tiny_model))
    with torch.no_grad():
        tiny_model.decoder.weight.fill_(float("nan"))
    before = copy.deepcopy(tiny_model.state_dict())
    with pytest.raises(NonFiniteLossError, match="non-finite"):
        stage.training_step(make_batch(), 0.0)
    assert stage.optimizer.state_dict()["state"] == {}
    assert torch.equal(tiny_model.fusion.weight, before["fusion.weight"])


@pytest.mark.parametrize(
    "bad", [{"bank_steps": -1}, {"bank_update_every": 0}, {"ema_time_scale": 0.0}]
)
def test_joint_rejects_bad_knobs_before_training(tiny_model, bad: dict) -> None:
    with pytest.raises(ValueError, match="joint stage"):
        JointStage(JointConfig(**bad), _ctx(tiny_model))


@pytest.mark.parametrize("scope", ["segmenter+text", "segmenter"])
def test_joint_student_from_pretrained_weights_keeps_the_teacher(tiny_model, scope) -> None:
    initial = copy.deepcopy(tiny_model.state_dict())  # "as built": before any stage
    with torch.no_grad():  # the teacher warm-up moved every weight
        for p in tiny_model.parameters():
            p.add_(0.5)
    warmed = copy.deepcopy(tiny_model.state_dict())
    cfg = JointConfig(ema_scope=scope, student_init="pretrained")
    stage = JointStage(cfg, _ctx(tiny_model, initial_state=initial))
    teacher = stage.teacher.module.state_dict()
    for key, value in tiny_model.state_dict().items():
        assert torch.equal(teacher[key], warmed[key]), key  # the teacher is the warmed model
        # the student restarts from the initial weights, except the text encoder it shares
        # with the teacher under the released scope
        shared = scope == "segmenter" and key.startswith("text_encoder.")
        assert torch.equal(value, warmed[key] if shared else initial[key]), key
    with pytest.raises(ValueError, match="initial weights"):
        JointStage(cfg, _ctx(copy.deepcopy(tiny_model)))
    with pytest.raises(ValueError, match="student_init"):
        JointStage(JointConfig(student_init="teacher"), _ctx(tiny_model))  # type: ignore[arg-type]


def test_supervised_stage_hands_over_its_best_val_model(tiny_model, caplog) -> None:
    cfg = SupervisedConfig(handover="best")
    stage = SupervisedStage(cfg, _ctx(tiny_model))
    stage.training_step(make_batch(), 0.0)
    stage.observe_val(40.0, {"stage": "t", "epoch": 0, "step": 1})
    first = copy.deepcopy(tiny_model.state_dict())
    stage.training_step(make_batch(), 0.5)
    stage.observe_val(40.0, {"stage": "t", "epoch": 0, "step": 2})  # a tie: the later point
    tied = copy.deepcopy(tiny_model.state_dict())
    assert _changed(first, tied)
    stage.training_step(make_batch(), 1.0)
    stage.observe_val(39.0, {"stage": "t", "epoch": 1, "step": 3})  # worse: not kept
    last = copy.deepcopy(tiny_model.state_dict())
    assert _changed(tied, last)

    # the resume state carries the best copy; a stage restored from it hands the same over
    state = stage.state_dict()
    assert state["best"]["value"] == 40.0 and state["best"]["where"]["step"] == 2
    fresh = SupervisedStage(cfg, _ctx(copy.deepcopy(tiny_model)))
    fresh.load_state_dict(state)
    for handed in (stage.handover().model, fresh.handover().model):
        got = handed.state_dict()
        for key, value in tied.items():
            assert torch.equal(got[key], value), key
    assert stage.handover_info() == {
        "handover": "best",
        "val": 40.0,
        "best_stage": "t",
        "best_epoch": 0,
        "best_step": 2,
    }
    # a stage that hands over its last model refuses a resume state holding a best copy
    with pytest.raises(ValueError, match="handover=best"):
        SupervisedStage(SupervisedConfig(), _ctx(copy.deepcopy(tiny_model))).load_state_dict(state)


def test_supervised_stage_hands_over_last_without_val_or_by_default(tiny_model, caplog) -> None:
    plain = SupervisedStage(SupervisedConfig(), _ctx(tiny_model))
    plain.training_step(make_batch(), 0.0)
    plain.observe_val(50.0, {"step": 1})  # ignored: handover="last"
    assert plain.best is None and "best" not in plain.state_dict()
    last = copy.deepcopy(tiny_model.state_dict())
    assert plain.handover().model is tiny_model and plain.handover_info() is None

    blind = SupervisedStage(SupervisedConfig(handover="best"), _ctx(tiny_model))
    with caplog.at_level("WARNING"):
        handed = blind.handover().model
    assert "no val score" in caplog.text
    assert blind.handover_info() == {"handover": "last", "reason": "no val score"}
    for key, value in last.items():
        assert torch.equal(handed.state_dict()[key], value), key
