"""rmsin behind the RefSegModel interface: build, forward, released checkpoints, training."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from wrel.models import ModelConfig, build_model
from wrel.models.rmsin.config import RmsinConfig
from wrel.models.rmsin.decoder import rotation_matrices
from wrel.models.rmsin.model import RmsinModel, load_released_checkpoint, load_released_model
from wrel.models.rmsin.swin import shifted_window_mask

TINY_RMSIN_SETS = [
    "model.arch=rmsin",
    "model.rmsin.embed_dim=8",
    "model.rmsin.depths=[1,1,2,1]",
    "model.rmsin.num_heads=[1,1,2,2]",
    "model.rmsin.window_size=4",
]


def tiny_rmsin(size: int = 64) -> RmsinModel:
    cfg = ModelConfig.tiny()
    cfg.arch, cfg.rmsin, cfg.input_size = "rmsin", RmsinConfig.tiny(), size
    model = build_model(cfg)
    assert isinstance(model, RmsinModel)
    return model


@pytest.fixture(scope="module")
def model() -> RmsinModel:
    torch.manual_seed(0)
    return tiny_rmsin().eval()


def test_forward_contract_matches_refseg(model: RmsinModel) -> None:
    ids, mask = model.tokenize(["the red car", "a large building on the left side"])
    images = torch.randn(2, 3, 64, 64)
    out = model(images, input_ids=ids, attention_mask=mask)
    assert out.logits.shape == (2, 2, 64, 64)  # 2 classes, channel 1 = referred object
    assert [f.shape[1:] for f in out.features] == [(8, 16, 16), (16, 8, 8), (32, 4, 4), (64, 2, 2)]
    words = model.encode_text(ids, mask)
    again = model(images, attention_mask=mask, words=words)
    torch.testing.assert_close(again.logits, out.logits)
    embeds = model(images, attention_mask=mask, inputs_embeds=model.embed_tokens(ids))
    torch.testing.assert_close(embeds.logits, out.logits)


def test_padding_words_do_not_change_the_output(model: RmsinModel) -> None:
    ids, mask = model.tokenize(["the red car"])
    images = torch.randn(1, 3, 64, 64)
    words = model.encode_text(ids, mask)
    noisy = words.clone()
    noisy[mask == 0] = 100.0  # padded slots are masked out of every pixel-word attention
    a = model(images, attention_mask=mask, words=words).logits
    b = model(images, attention_mask=mask, words=noisy).logits
    torch.testing.assert_close(a, b)


def test_wrong_input_size_and_arch_are_clear_errors(model: RmsinModel) -> None:
    ids, mask = model.tokenize(["a car"])
    with pytest.raises(ValueError, match="built for 64 x 64"):
        model(torch.randn(1, 3, 96, 96), input_ids=ids, attention_mask=mask)
    cfg = ModelConfig.tiny()
    cfg.arch = "lavt"
    with pytest.raises(ValueError, match="model.arch"):
        build_model(cfg)


def test_rotation_matrices_are_identity_at_zero_and_mix_taps() -> None:
    thetas = torch.tensor([0.0, 0.3, -0.3, 0.69])
    mats = rotation_matrices(thetas)
    torch.testing.assert_close(mats[0], torch.eye(9))
    torch.testing.assert_close(mats.sum(-1), torch.ones(4, 9))  # bilinear weights sum to 1
    assert torch.equal(mats[:, 4], torch.eye(9)[4].expand(4, 9))  # the centre tap stays


def test_shifted_window_mask_matches_timm_where_the_map_divides() -> None:
    from timm.models.swin_transformer import SwinTransformerBlock

    block = SwinTransformerBlock(16, (24, 24), num_heads=1, window_size=12, shift_size=6)
    ours = shifted_window_mask(24, 24, 12, 6)
    assert torch.equal(ours, block.attn_mask)


def _released_state(model: RmsinModel) -> dict[str, torch.Tensor]:
    """A segmenter state in the released layout (derived buffers included), random values."""
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith(("backbone.", "classifier.")):
            state[key] = torch.randn_like(value) if value.is_floating_point() else value.clone()
    for name, buf in model.named_buffers():
        if name.endswith(".attn.relative_position_index"):
            state[name] = buf.clone()
    return state


def test_released_checkpoint_loads_strictly(tmp_path: Path) -> None:
    source = tiny_rmsin()
    segmenter = _released_state(source)
    bert = {
        f"module.{k}": torch.randn_like(v) for k, v in source.text_encoder.bert.state_dict().items()
    }
    path = tmp_path / "model_best_oIoU.pth"
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([param], lr=3e-5)
    param.grad = torch.ones(2)
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda x: (1 - x / 100) ** 0.9)
    released = {  # what the released training scripts save
        "student_model": segmenter,
        "bert_model": bert,
        "optimizer": optimizer.state_dict(),
        "epoch": 3,
        "args": argparse.Namespace(model="lavt", swin_type="base", lr=3e-5, window12=True),
        "lr_scheduler": scheduler.state_dict(),
    }
    torch.save(released, path)
    target = tiny_rmsin()
    load_released_checkpoint(target, path)
    own = target.state_dict()
    for key, value in segmenter.items():
        if not key.endswith("relative_position_index"):
            assert torch.equal(own[key], value), key
    for key, value in bert.items():
        assert torch.equal(
            target.text_encoder.bert.state_dict()[key.removeprefix("module.")], value
        )

    broken = dict(segmenter)
    dropped = next(k for k in broken if k.endswith("fusion.f_key.0.weight") or "fc_theta" in k)
    broken.pop(dropped)
    broken["backbone.extra.weight"] = torch.zeros(1)
    torch.save({"model": broken}, path)
    with pytest.raises(ValueError, match="fc_theta") as err:
        load_released_checkpoint(target, path)
    assert "backbone.extra.weight" in str(err.value)
    index_key = next(k for k in segmenter if k.endswith("relative_position_index"))
    torch.save({"model": {**segmenter, index_key: segmenter[index_key] + 1}}, path)
    with pytest.raises(ValueError, match="relative positions"):
        load_released_checkpoint(target, path)
    torch.save({"optimizer": {}}, path)
    with pytest.raises(ValueError, match="no segmenter"):
        load_released_checkpoint(target, path)


def test_load_released_model_builds_from_a_text_folder(tmp_path: Path) -> None:
    source = tiny_rmsin()
    folder = tmp_path / "bert"
    source.text_encoder.save(folder)  # tokenizer + config.json, as a local HF folder
    bert = source.text_encoder.bert.state_dict()
    path = tmp_path / "rmsin.pth"
    torch.save({"model": _released_state(source), "bert_model": bert}, path)
    model = load_released_model(path, folder, input_size=64, sizes=RmsinConfig.tiny())
    assert not model.training
    for key, value in bert.items():
        assert torch.equal(model.text_encoder.bert.state_dict()[key], value)


@pytest.mark.parametrize("method", ["naive", pytest.param("lrb", marks=pytest.mark.slow)])
def test_train_step_through_the_trainer(tmp_path: Path, tiny_bench: Path, method: str) -> None:
    from wrel.engine.experiment import build_experiment
    from wrel.engine.trainer import train

    sets = [
        f"train.output_dir={tmp_path / 'runs'}",
        "train.batch_size=4",
        "train.eval_batch_size=4",
        "train.progress=false",
        "data.image_size=64",  # the last stage must keep more than one pixel
        f"data.root={tiny_bench}",
        "model.backbone.pretrained=false",
        "model.text.name=tiny",
        "model.text.pretrained=false",
        *TINY_RMSIN_SETS,
    ]
    cfg = build_experiment(method, assignments=sets)
    for stage in cfg.stages:
        stage.epochs = 1
    result = train(cfg)
    assert 0.0 <= result["test"]["mIoU"] <= 100.0
    assert (Path(result["run_dir"]) / "checkpoints" / "best").is_dir()


def test_wrel_eval_of_a_released_file_needs_the_text_folder(tmp_path: Path, capsys) -> None:
    from wrel.cli import main

    path = tmp_path / "model_best_oIoU.pth"
    torch.save({"model": {}}, path)
    assert main(["eval", str(path), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "--text-path" in err


def test_gpu_check_script_runs_on_cpu_in_tiny_mode(benchmark_script) -> None:
    check = benchmark_script("rmsin_check")
    assert check.main(["--tiny", "--device", "cpu", "--parts", "fwdbwd"]) == 0


@pytest.mark.slow
def test_gpu_check_script_trains_on_cpu_in_tiny_mode(benchmark_script, tmp_path: Path) -> None:
    check = benchmark_script("rmsin_check")
    out = tmp_path / "report.json"
    check.main(["--tiny", "--device", "cpu", "--output", str(out)])
    report = json.loads(out.read_text())
    assert report["train"]["steps"] == 20 and len(report["train"]["losses"]) == 20


@pytest.mark.slow
def test_full_depth_forward_backward_at_480() -> None:
    """The paper's build (131,145,515 parameters), random weights, batch 1 at 480 px."""
    from wrel.models.rmsin.decoder import RmsinDecoder
    from wrel.models.rmsin.network import MultimodalSwin, RmsinSegmenter

    torch.manual_seed(0)
    # no stochastic depth: with batch 1 a dropped block would leave its weights without grads
    model = RmsinSegmenter(MultimodalSwin(RmsinConfig(), 768, 480, 0.0), RmsinDecoder(128))
    assert sum(p.numel() for p in model.parameters()) == 131_145_515
    words, word_mask = torch.randn(1, 768, 20), torch.ones(1, 20, 1)
    logits = model.train()(torch.randn(1, 3, 480, 480), words, word_mask)
    assert logits.shape == (1, 2, 480, 480) and torch.isfinite(logits).all()
    logits.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("layout", ["microsoft", "timm"])
def test_swin_weights_load_in_both_layouts(tmp_path: Path, layout: str) -> None:
    from safetensors.torch import save_file

    from wrel.models.rmsin.released import load_swin_weights

    source = tiny_rmsin().backbone
    swin = {
        k: torch.randn_like(v) if v.is_floating_point() else v
        for k, v in source.state_dict().items()
        if k.startswith("patch_embed.") or ".blocks." in k or ".downsample." in k
    }
    if layout == "timm":  # merging at the start of the next stage, head named head.fc
        moved = {}
        for key, value in swin.items():
            parts = key.split(".")
            if parts[2] == "downsample":
                parts[1] = str(int(parts[1]) + 1)
            moved[".".join(parts)] = value
        swin = {**moved, "head.fc.weight": torch.zeros(3, 64), "norm.weight": torch.ones(64)}
        path = tmp_path / "swin.safetensors"
        save_file(swin, str(path))
    else:
        swin = {
            **swin,
            "head.weight": torch.zeros(3, 64),
            "layers.1.blocks.0.attn_mask": torch.zeros(1),
        }
        path = tmp_path / "swin.pth"
        torch.save({"model": swin}, path)
    target = tiny_rmsin().backbone
    before = target.cim.down_channel.weight.clone()
    load_swin_weights(target, path)
    state = target.state_dict()
    merged = "layers.1.downsample.reduction.weight" if layout == "timm" else None
    for key in source.state_dict():
        if key.startswith("patch_embed.") or ".blocks." in key:
            assert torch.equal(state[key], swin[key]), key
    down = state["layers.0.downsample.reduction.weight"]
    assert torch.equal(down, swin[merged or "layers.0.downsample.reduction.weight"])
    assert torch.equal(target.cim.down_channel.weight, before)  # the rest stays as built
    if layout == "microsoft":
        torch.save({"model": {k: v for k, v in swin.items() if "blocks.0.mlp" not in k}}, path)
        with pytest.raises(ValueError, match="mlp"):
            load_swin_weights(target, path)


def test_rmsin_export_round_trips(tmp_path: Path) -> None:
    from wrel.engine.checkpoint import load_model, save_model

    model = tiny_rmsin().eval()
    save_model(tmp_path / "export", model, {"image_size": [64, 64]})
    loaded, _ = load_model(tmp_path / "export")
    assert isinstance(loaded, RmsinModel) and loaded.config.rmsin == model.config.rmsin
    ids, mask = model.tokenize(["the red car"])
    images = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(
        loaded(images, input_ids=ids, attention_mask=mask).logits,
        model(images, input_ids=ids, attention_mask=mask).logits,
    )


def test_channels_last_applies_to_the_convolutions() -> None:
    moved = tiny_rmsin().to(memory_format=torch.channels_last)
    conv = moved.classifier.conv1_4.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert moved.classifier.conv2_4.weight.dim() == 5  # the ARC kernels stay as they are


def test_every_trainable_parameter_gets_a_gradient() -> None:
    """So DistributedDataParallel runs without find_unused_parameters (see network.py)."""
    model = tiny_rmsin().train()
    for module in model.modules():
        if hasattr(module, "drop_prob"):
            module.drop_prob = 0.0  # stochastic depth would drop whole blocks at random
    ids, mask = model.tokenize(["the red car", "the grey roof"])
    model(torch.randn(2, 3, 64, 64), input_ids=ids, attention_mask=mask).logits.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing


@pytest.mark.parametrize(("side", "same"), [(24, True), (30, True), (15, False)])
def test_swin_block_matches_timm_except_at_15(side: int, same: bool) -> None:
    """Why the block is written here: timm rolls before padding, the released Swin pads first.
    At 480 px that only matters for stage 3 (15 px padded to 24); at 30 px (padded to 36) the
    padding equals the shift and both place every token in the same window group."""
    from timm.models.swin_transformer import SwinTransformerBlock

    from wrel.models.rmsin.swin import SwinBlock

    torch.manual_seed(0)
    ours = SwinBlock(16, 2, window=12, shift=6, mlp_ratio=4.0, drop_path=0.0).eval()
    theirs = SwinTransformerBlock(16, (side, side), num_heads=2, window_size=12, shift_size=6)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(1, side, side, 16)
    padded = -(-side // 12) * 12
    with torch.no_grad():
        a = ours(x, shifted_window_mask(padded, padded, 12, 6))
        b = theirs.eval()(x)
    assert torch.allclose(a, b, atol=1e-5) == same
