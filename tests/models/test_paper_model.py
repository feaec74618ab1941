"""The paper's model: Swin at the configured input size (any aspect ratio), drop path, the
paper YAML, and (slow) Swin-B + BERT-base at 480 px; plus the GPU timing script's CPU path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from wrel.engine.experiment import build_experiment
from wrel.models import BackboneConfig, DecoderConfig, ModelConfig, build_model
from wrel.models.backbone import timm_create_kwargs

REPO = Path(__file__).resolve().parents[2]
PAPER_YAML = REPO / "configs" / "paper_rrsisd.yaml"
# a small Swin-T (window 7): one block per stage, narrow; the builder logic is the same
SMALL_SWIN = {"embed_dim": 16, "depths": (1, 1, 2, 1), "num_heads": (1, 1, 1, 1)}


def _swin_model(input_size: int | None, **backbone) -> torch.nn.Module:
    cfg = ModelConfig.tiny()
    cfg.backbone = BackboneConfig(
        name="swin_tiny_patch4_window7_224", pretrained=False, timm_kwargs=SMALL_SWIN, **backbone
    )
    cfg.decoder = DecoderConfig(dim=16)
    cfg.input_size = input_size
    torch.manual_seed(0)
    return build_model(cfg)


def test_swin_is_built_for_the_input_size_and_runs_non_square() -> None:
    model = _swin_model(96, drop_path_rate=0.3)
    patch_embed = model.backbone.stages[0].patch_embed
    assert tuple(patch_embed.img_size) == (96, 96)
    ids, mask = model.tokenize(["the plane on the left", "car"])
    for height, width in ((96, 128), (96, 96), (100, 60)):
        out = model(torch.randn(2, 3, height, width), ids, mask)
        assert out.logits.shape == (2, 2, height, width)
        assert torch.isfinite(out.logits).all()
    rates = [m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"]
    assert max(rates) == pytest.approx(0.3)  # timm's linear rule: the last block gets 0.3


def test_swin_without_a_size_still_runs_other_sizes() -> None:
    model = _swin_model(None).eval()  # built for timm's 224, dynamic masks
    ids, mask = model.tokenize(["a ship"])
    assert model(torch.randn(1, 3, 96, 128), ids, mask).logits.shape == (1, 2, 96, 128)


def test_timm_kwargs_and_drop_path_rules() -> None:
    swin = BackboneConfig(name="swin_base_patch4_window12_384", drop_path_rate=0.3)
    assert timm_create_kwargs(swin, 480) == {
        "drop_path_rate": 0.3,
        "img_size": 480,
        "dynamic_img_size": True,
    }
    explicit = BackboneConfig(name="swin_base_patch4_window12_384", timm_kwargs={"img_size": 512})
    assert timm_create_kwargs(explicit, 480)["img_size"] == 512  # explicit kwargs win
    conv = BackboneConfig(name="efficientnet_lite0")
    assert timm_create_kwargs(conv, 480) == {}  # not a fixed-size model: nothing added
    with pytest.raises(ValueError, match="drop_path_rate"):
        timm_create_kwargs(BackboneConfig(name="convnext_tiny", drop_path_rate=1.5), None)
    with pytest.raises(ValueError, match="not both"):
        timm_create_kwargs(
            BackboneConfig(
                name="convnext_tiny", drop_path_rate=0.1, timm_kwargs={"drop_path_rate": 0.2}
            ),
            None,
        )
    tiny = ModelConfig.tiny()
    tiny.backbone.drop_path_rate = 0.2
    with pytest.raises(ValueError, match="stochastic depth"):
        build_model(tiny)


def test_model_input_size_follows_data_image_size() -> None:
    cfg = build_experiment("lrb", assignments=["data.image_size=96"])
    assert cfg.model.input_size == 96
    with pytest.raises(ValueError, match="set data.image_size only"):
        build_experiment("lrb", assignments=["data.image_size=96", "model.input_size=64"])


def _paper_sets(tmp_path: Path) -> list[str]:
    return [
        f"data.root={tmp_path / 'rrsisd'}",
        f"model.backbone.checkpoint_path={tmp_path / 'swin.safetensors'}",
        f"model.text.path={tmp_path / 'bert-base-uncased'}",
    ]


def test_paper_yaml_names_the_paper_model(tmp_path: Path) -> None:
    cfg = build_experiment("lrb-paper", yaml_files=[PAPER_YAML], assignments=_paper_sets(tmp_path))
    backbone, text = cfg.model.backbone, cfg.model.text
    assert backbone.name == "swin_base_patch4_window12_384" and backbone.drop_path_rate == 0.3
    assert backbone.checkpoint_path == str(tmp_path / "swin.safetensors")
    assert (text.name, text.max_length, text.trainable_layers) == ("local", 20, list(range(10)))
    assert text.path == str(tmp_path / "bert-base-uncased")
    assert cfg.data.image_size == cfg.model.input_size == 480
    assert cfg.data.root == str(tmp_path / "rrsisd") and cfg.train.batch_size == 8
    assert cfg.stages[2].ema_scope == "segmenter"  # the preset's stages are kept


def test_paper_yaml_placeholders_are_exactly_the_paths(tmp_path: Path) -> None:
    data = yaml.safe_load(PAPER_YAML.read_text())
    placeholders = sorted(
        f"{section}.{key}" if not isinstance(value, dict) else f"{section}.{key}.{sub}"
        for section, block in data.items()
        for key, value in block.items()
        for sub, leaf in (value.items() if isinstance(value, dict) else [(None, value)])
        if isinstance(leaf, str) and leaf.startswith("SET_ME")
    )
    assert placeholders == ["data.root", "model.backbone.checkpoint_path", "model.text.path"]
    with pytest.raises(ValueError, match="placeholders") as err:
        build_experiment("lrb-paper", yaml_files=[PAPER_YAML])
    for key in placeholders:
        assert f"--set {key}=" in str(err.value)


def test_paper_iteration_dry_run_on_cpu(tmp_path: Path, benchmark_script) -> None:
    out = tmp_path / "paper_iteration.json"
    assert (
        benchmark_script("paper_iteration").main(
            ["--dry-run", "--steps", "1", "--warmup", "0", "--output", str(out)]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert report["dry_run"] and report["device"] == "cpu"
    assert report["ema_scope"] == "segmenter" and report["seconds_per_iteration_median"] > 0
    assert {"bank_loss", "seg_loss"} <= report["last_losses"].keys()


@pytest.mark.slow
def test_paper_model_forward_backward_at_480_on_cpu(tmp_path: Path, benchmark_script) -> None:
    """RMSIN's Swin-B (random init) + BERT-base (random, from a folder written here) at 480 px."""
    module = benchmark_script("paper_iteration")
    folder = module.write_random_bert_base(tmp_path / "bert-base")
    cfg = module.paper_experiment(folder)
    assert cfg.model.backbone.name == "swin_base_patch4_window12_384"
    torch.manual_seed(0)
    model = build_model(cfg.model)
    assert model.text_dim == 768 and len(model.text_encoder.bert.encoder.layer) == 12
    trainable = {
        i
        for i, block in enumerate(model.text_encoder.bert.encoder.layer)
        if all(p.requires_grad for p in block.parameters())
    }
    assert trainable == set(range(10))
    ids, mask = model.tokenize(["the large white storage tank on the right"])
    model.train()
    out = model(torch.randn(1, 3, 480, 480), ids, mask)
    assert out.logits.shape == (1, 2, 480, 480)
    out.logits.float().logsumexp(dim=1).mean().backward()
    assert cfg.model.arch == "rmsin"  # configs/paper_rrsisd.yaml builds the paper's network
    assert model.backbone.patch_embed.proj.weight.grad is not None
    assert all(p.grad is None for p in model.text_encoder.bert.encoder.layer[11].parameters())
