"""The `lrb-paper` recipe: preset values, dense/sparse bank AdamW, cut-out, Dice variants, EMA
scope and the bank-init train mode."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_model import make_batch

from wrel.data.dataset import RefSegDataset, load_samples
from wrel.data.transforms import apply_cutout, random_cutout_box
from wrel.engine.experiment import (
    PAPER_BANK_LR,
    PAPER_LOSS,
    PAPER_TEACHER_EPOCHS,
    build_experiment,
)
from wrel.methods.bank import BankConfig, ReferenceBank
from wrel.methods.base import BankInitConfig, JointConfig, StageContext
from wrel.methods.ema import EmaTeacher
from wrel.methods.losses import both_classes_dice_loss, dice_loss, per_sample_seg_loss, seg_loss
from wrel.methods.lrb import BankInitStage, JointStage

# -- the preset -----------------------------------------------------------------------------


def test_paper_preset_values() -> None:
    cfg = build_experiment("lrb-paper")
    teacher, bank_init, joint = cfg.stages
    assert [s.name for s in cfg.stages] == ["teacher-warmup", "bank-init", "joint"]
    assert [(s.kind, s.samples) for s in cfg.stages] == [
        ("supervised", "accurate"),
        ("bank_init", "weak"),
        ("joint", "all"),
    ]
    assert (teacher.epochs, bank_init.epochs, joint.epochs) == (PAPER_TEACHER_EPOCHS, 40, 40)
    # the teacher is 4 % of the joint stage's iterations at rho = 0.1 (README's epoch index 15)
    share = teacher.epochs * cfg.data.accurate_ratio / joint.epochs
    assert 0.03 <= share <= 0.05
    for stage, lr in ((teacher, 3e-5), (joint, 2e-5)):
        assert (stage.optim.lr_backbone, stage.optim.lr_text, stage.optim.lr_head) == (lr,) * 3
        assert stage.optim.weight_decay == 0.01 and stage.optim.poly_power == 0.9
    assert teacher.epochs == 16
    for s in cfg.stages:
        assert (s.dice, s.loss_reduction) == ("per-class-sum-smooth1e-6", "batch-sum")
    assert bank_init.frozen_mode == "train" and not bank_init.evaluate
    assert joint.ema_scope == "segmenter" and joint.bank_steps == 1
    assert joint.consistency_weight == 0 and joint.ema_time_scale == 1.0
    assert cfg.bank.optimizer == "sparse"
    assert (bank_init.bank_lr, joint.bank_lr) == (
        PAPER_BANK_LR["bank-init"],
        PAPER_BANK_LR["joint"],
    )
    # released ratio of the two bank rates (1e-5 : 1e-6) kept
    assert bank_init.bank_lr / joint.bank_lr == pytest.approx(10.0)
    assert cfg.data.cutout_prob == 0.2 and cfg.train.batch_size == 8
    assert cfg.data.cutout == "squares" and cfg.data.cutout_stages is None


def test_paper_bank_lrs_match_the_released_per_visit_movement(research_script) -> None:
    """Our sparse rates are the released dense ones times the dense/sparse per-visit movement
    at RRSIS-D's visit period (12,181 samples / batch 8)."""
    movement = research_script("bank_movement")
    factor = movement.dense_over_sparse(12181 / 8)
    assert 25 < factor < 31
    for name, released in (("bank-init", 1e-5), ("joint", 1e-6)):
        assert PAPER_BANK_LR[name] == pytest.approx(released * factor, rel=0.15)


def test_default_lrb_keeps_current_behaviour() -> None:
    cfg = build_experiment("lrb")
    assert all(s.dice == "foreground-mean-smooth1" for s in cfg.stages)
    assert cfg.stages[1].frozen_mode == "eval" and cfg.stages[2].ema_scope == "segmenter+text"
    assert cfg.bank.optimizer == "sparse" and cfg.data.cutout_prob == 0.0
    assert cfg.model.backbone.drop_path_rate is None


def test_naive_paper_preset() -> None:
    cfg = build_experiment("naive-paper")
    (stage,) = cfg.stages
    assert (stage.samples, stage.epochs, stage.optim.lr_backbone) == ("all", 40, 3e-5)
    assert (stage.dice, stage.loss_reduction) == (PAPER_LOSS["dice"], "batch-sum")
    assert cfg.data.cutout == "squares" and not cfg.model.text.train_embeddings


def test_bad_paper_options_are_named() -> None:
    with pytest.raises(ValueError, match="dice"):
        build_experiment("lrb", assignments=["stages.joint.dice=both"])
    with pytest.raises(ValueError, match="ema_scope"):
        build_experiment("lrb", assignments=["stages.joint.ema_scope=text"])
    with pytest.raises(ValueError, match="optimizer"):
        build_experiment("lrb", assignments=["bank.optimizer=adam"])
    with pytest.raises(ValueError, match="cutout_prob"):
        build_experiment("lrb", assignments=["data.cutout_prob=1.5"])
    with pytest.raises(ValueError, match="cutout_scale"):
        build_experiment("lrb", assignments=["data.cutout_scale=[0.5, 0.2]"])


# -- dense and sparse bank AdamW ------------------------------------------------------------


def _bank(optimizer: str, rows: int = 6, dim: int = 4) -> ReferenceBank:
    return ReferenceBank(list(range(rows)), dim, BankConfig(num_prompts=2, optimizer=optimizer))


def test_dense_bank_equals_torch_adamw_on_the_whole_bank() -> None:
    bank = _bank("dense")
    param = torch.nn.Parameter(bank.rows.clone())
    opt = torch.optim.AdamW([param], lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    gen = torch.Generator().manual_seed(0)
    for rows in ([0, 2], [2, 2, 5], [1], [4, 0]):  # duplicates sum, like the sparse path
        index = torch.tensor(rows)
        grads = torch.randn(len(rows), 2, 4, generator=gen)  # per-sample gradient sums
        bank.apply_gradients(index, grads, len(rows), lr=1e-2, weight_decay=0.01)
        dense = torch.zeros_like(param).index_add_(0, index, grads) / len(rows)
        param.grad = dense
        opt.step()
        torch.testing.assert_close(bank.rows, param.detach(), rtol=1e-5, atol=1e-7)
    assert bank.steps.tolist() == [4] * 6  # every row is updated at every step


def test_rows_outside_the_batch_move_under_dense_not_under_sparse() -> None:
    moved = {}
    for optimizer in ("dense", "sparse"):
        bank = _bank(optimizer)
        bank.apply_gradients(torch.tensor([0]), torch.ones(1, 2, 4), 1, lr=1e-2, weight_decay=0.0)
        before = bank.rows.clone()
        bank.apply_gradients(torch.tensor([1]), torch.ones(1, 2, 4), 1, lr=1e-2, weight_decay=0.0)
        moved[optimizer] = (bank.rows[0] - before[0]).norm().item()
        assert torch.equal(bank.rows[3], before[3])  # never visited: no moment, no decay
    assert moved["sparse"] == 0.0
    assert moved["dense"] > 0.0  # momentum of row 0's visit keeps moving it


def test_documented_per_visit_movement_on_a_toy(
    request: pytest.FixtureRequest, research_script
) -> None:
    """Sparse AdamW moves a row by lr per coordinate per visit (a constant gradient); dense
    AdamW by the closed-form factor of docs/paper-recipe.md in steady state (beta2 = 0.99 here so
    that the bias corrections reach 1 within a few hundred steps)."""
    movement = research_script("bank_movement")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # hundreds of tiny steps: threads only add overhead
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    lr, dim, period = 1e-3, 16, 10
    kwargs = dict(rows=10, batch=1, dim=dim, prompts=1, noise=0.0, scale=1e-2, shuffle=False)
    sparse = movement.simulate("sparse", lr, epochs=3, **kwargs)
    assert sparse["per_visit"] == pytest.approx(lr * math.sqrt(dim), rel=1e-3)
    assert sparse["between_visits"] == 0.0
    dense = movement.simulate(
        "dense", lr, epochs=60, skip_epochs=52, weight_decay=0.0, beta2=0.99, **kwargs
    )
    expected = movement.dense_over_sparse(period, beta2=0.99) * lr * math.sqrt(dim)
    assert dense["per_visit"] == pytest.approx(expected, rel=0.01)
    assert dense["between_visits"] > 0.5 * dense["per_visit"]  # most of it after the visit


# -- cut-out --------------------------------------------------------------------------------


def test_cutout_box_blanks_only_the_box() -> None:
    rng = np.random.default_rng(0)
    image = torch.randn(3, 40, 60) + 5.0  # no zeros anywhere
    top, left, h, w = random_cutout_box(rng, (40, 60), (0.1, 0.3))
    assert 4 <= h <= 12 and 6 <= w <= 18 and top + h <= 40 and left + w <= 60
    out = apply_cutout(image.clone(), (top, left, h, w))
    zero = (out == 0).all(dim=0)
    assert zero.sum() == h * w and zero[top : top + h, left : left + w].all()


def test_cutout_hits_its_share_and_leaves_masks_untouched(tiny_bench: Path) -> None:
    samples = load_samples(tiny_bench, "train", accurate_ratio=0.5, seed=0)
    plain = RefSegDataset(samples, image_size=(32, 32))
    cut = RefSegDataset(samples, image_size=(32, 32), cutout_prob=0.2, seed=3)
    hits = draws = 0
    for epoch in range(12):
        cut.set_epoch(epoch)
        for index in range(len(samples)):
            a, b = plain[index], cut[index]
            assert torch.equal(a["mask"], b["mask"])  # the label keeps the whole object
            changed = a["image"] != b["image"]  # (3, H, W)
            if changed.any():
                hits += 1
                assert (b["image"][changed] == 0).all()  # only blanked pixels differ
            draws += 1
    assert draws >= 150
    assert abs(hits / draws - 0.2) < 0.08
    cut.set_epoch(3)
    assert torch.equal(cut[0]["image"], cut[0]["image"])  # deterministic per (seed, epoch, index)


# -- Dice variants --------------------------------------------------------------------------


def _logits(p1: list[float]) -> torch.Tensor:
    p = torch.tensor(p1).view(1, 2, 2)
    return torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))], dim=1)  # (1, 2, 2, 2)


def test_dice_variants_on_a_hand_computed_example() -> None:
    logits = _logits([0.8, 0.6, 0.2, 0.1])  # foreground probabilities
    mask = torch.tensor([[1, 1], [0, 0]]).view(1, 2, 2)
    # foreground, smooth 1: inter 1.4, sum p 1.7, sum t 2 -> 1 - 3.8 / 4.7
    assert dice_loss(logits, mask).item() == pytest.approx(1 - 3.8 / 4.7, abs=1e-6)
    # both classes summed: true-class probabilities 0.8, 0.6, 0.8, 0.9 -> 1 - 6.2 / 8
    both = both_classes_dice_loss(logits, mask).item()
    assert both == pytest.approx(1 - (6.2 + 1e-6) / (8 + 1e-6), abs=1e-6)
    fg = per_sample_seg_loss(logits, mask, "foreground-mean-smooth1")
    bc = per_sample_seg_loss(logits, mask, "both-classes-sum-smooth1e-6")
    assert (bc - fg).item() == pytest.approx(0.1 * (0.225 - (1 - 3.8 / 4.7)), abs=1e-6)
    assert seg_loss(logits, mask, "both-classes-sum-smooth1e-6").item() == pytest.approx(bc.item())
    with pytest.raises(ValueError, match="unknown Dice variant"):
        seg_loss(logits, mask, "dice")


# -- EMA scope and bank-init mode -----------------------------------------------------------


def _ctx(model) -> StageContext:
    return StageContext(
        model=model,
        device=torch.device("cpu"),
        iters_per_epoch=4,
        weak_ids=[11, 13, 20],
        bank_cfg=BankConfig(num_prompts=3),
    )


def test_ema_scope_segmenter_ties_the_text_encoder(tiny_model) -> None:
    stage = JointStage(JointConfig(ema_scope="segmenter"), _ctx(tiny_model))
    teacher = stage.teacher.module
    assert teacher.text_encoder is tiny_model.text_encoder  # the live text encoder
    assert teacher.backbone is not tiny_model.backbone
    assert all(p.requires_grad for p in tiny_model.text_encoder.parameters())
    assert not any(p.requires_grad for p in teacher.backbone.parameters())
    backbone_before = copy.deepcopy(teacher.backbone.state_dict())
    stage.training_step(make_batch(weak=[False, True, False, True]), 0.0)
    assert teacher.text_encoder is tiny_model.text_encoder
    assert any(
        not torch.equal(v, teacher.backbone.state_dict()[k]) for k, v in backbone_before.items()
    )  # averaged
    student = tiny_model.backbone.state_dict()
    assert any(not torch.equal(v, student[k]) for k, v in teacher.backbone.state_dict().items())
    state = stage.state_dict()
    assert not any(k.startswith("text_encoder.") for k in state["teacher"])
    fresh = JointStage(JointConfig(ema_scope="segmenter"), _ctx(copy.deepcopy(tiny_model)))
    fresh.load_state_dict(state)
    for key, value in fresh.teacher.averaged_state_dict().items():
        assert torch.equal(value, state["teacher"][key])
    with pytest.raises(ValueError, match="missing"):
        fresh.teacher.load_averaged_state_dict({})


def test_default_ema_scope_copies_the_text_encoder(tiny_model) -> None:
    stage = JointStage(JointConfig(), _ctx(tiny_model))
    assert stage.teacher.module.text_encoder is not tiny_model.text_encoder
    assert any(k.startswith("text_encoder.") for k in stage.state_dict()["teacher"])
    with pytest.raises(ValueError, match="unknown EMA scope"):
        EmaTeacher(tiny_model, "text")


def test_bank_step_leaves_no_grad_on_the_live_text_encoder(tiny_model) -> None:
    stage = JointStage(JointConfig(ema_scope="segmenter"), _ctx(tiny_model))
    b = stage.prepare(make_batch(weak=[False, True, False, True]))
    stage.bank_step(stage.teacher.module, b, 1e-2, 0.0)
    assert all(p.grad is None for p in tiny_model.parameters())


def test_bank_init_train_mode_runs_the_frozen_copy_in_train_mode(tiny_model) -> None:
    seen = []
    for mode in ("eval", "train"):
        stage = BankInitStage(BankInitConfig(samples="weak", frozen_mode=mode), _ctx(tiny_model))
        bn = stage.frozen.module.backbone[1]  # the stand-in's BatchNorm
        stats = bn.running_mean.clone()
        student = copy.deepcopy(tiny_model.state_dict())
        hook = bn.register_forward_hook(lambda m, *_, mode=mode: seen.append((mode, m.training)))
        stage.training_step(make_batch(weak=[False, True, False, True]), 0.0)
        hook.remove()
        assert torch.equal(bn.running_mean, stats) == (mode == "eval")
        for key, value in tiny_model.state_dict().items():
            assert torch.equal(value, student[key]), key  # the student is never touched
    assert seen == [("eval", False), ("train", True)]


# -- end to end -----------------------------------------------------------------------------


@pytest.mark.slow
def test_paper_recipe_trains_end_to_end(
    tmp_path: Path, tiny_bench: Path, tiny_model_sets: list[str]
) -> None:
    """The lrb-paper preset through the trainer (tiny model, 16 px, one epoch per stage)."""
    from wrel.engine.trainer import train

    sets = [
        f"train.output_dir={tmp_path / 'runs'}",
        "train.batch_size=4",
        "train.eval_batch_size=4",
        "train.progress=false",
        "data.image_size=16",
        "data.cutout_prob=0.5",
        f"data.root={tiny_bench}",
        *tiny_model_sets,
    ]
    cfg = build_experiment("lrb-paper", assignments=sets)
    for stage in cfg.stages:
        stage.epochs = 1
    result = train(cfg)
    run = Path(result["run_dir"])
    saved = json.loads((run / "config.json").read_text())
    assert saved["stages"][2]["ema_scope"] == "segmenter"
    assert saved["stages"][1]["frozen_mode"] == "train" and saved["model"]["input_size"] == 16
    assert 0.0 <= result["test"]["mIoU"] <= 100.0
    assert (run / "bank.safetensors").is_file()
