"""The default model loads the packaged ImageNet / MiniLM weights exactly, offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from wrel.models import BackboneConfig, ModelConfig, TextEncoderConfig, build_model
from wrel.models.backbone import build_timm_backbone
from wrel.models.text_encoder import minilm_folder
from wrel.models.weights import efficientnet_lite0_weights_path, load_by_order


def test_efficientnet_lite0_weights_equal_the_package_file() -> None:
    reference = torch.load(efficientnet_lite0_weights_path(), weights_only=True)
    backbone = build_timm_backbone(BackboneConfig(name="efficientnet_lite0", pretrained=True))
    loaded = backbone.state_dict()
    # the stages hold everything up to the last block; head tensors (conv_head, bn2, _fc) drop
    kept = [v for k, v in reference.items() if not k.startswith(("_conv_head", "_bn1", "_fc"))]
    assert len(kept) == len(loaded)
    for ref, (name, value) in zip(kept, loaded.items(), strict=True):
        assert torch.equal(ref.to(value.dtype), value), name


def test_load_by_order_rejects_a_wrong_file() -> None:
    import timm

    model = timm.create_model("efficientnet_lite0", pretrained=False)
    reference = torch.load(efficientnet_lite0_weights_path(), weights_only=True)
    short = dict(list(reference.items())[:-1])
    with pytest.raises(ValueError, match="holds 295 tensors"):
        load_by_order(model, short, "short.pth")
    swapped = dict(reference)
    swapped["_conv_stem.weight"] = torch.zeros(8, 3, 3, 3)
    with pytest.raises(ValueError, match="_conv_stem.weight"):
        load_by_order(model, swapped, "swapped.pth")


def test_minilm_weights_equal_the_package_file() -> None:
    cfg = ModelConfig(backbone=BackboneConfig(name="tiny", pretrained=False))
    model = build_model(cfg)
    reference = load_file(str(minilm_folder() / "model.safetensors"))
    ours = model.text_encoder.bert.state_dict()
    compared = 0
    for name, value in ours.items():
        matches = [k for k in reference if k.endswith(name)]
        if matches:
            assert torch.equal(reference[matches[0]], value), name
            compared += 1
    assert compared == len(ours) and model.text_dim == 384


def test_local_backbone_checkpoint_strict(tmp_path: Path) -> None:
    import timm

    source = timm.create_model("efficientnet_lite0", pretrained=False)
    path = tmp_path / "lite0.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    cfg = BackboneConfig(name="efficientnet_lite0", pretrained=False, checkpoint_path=str(path))
    backbone = build_timm_backbone(cfg)
    torch.testing.assert_close(
        backbone.stages[0].conv_stem.weight, source.state_dict()["conv_stem.weight"]
    )
    broken = {k: v for k, v in source.state_dict().items() if not k.startswith("bn1")}
    save_file({k: v.contiguous() for k, v in broken.items()}, str(path))
    with pytest.raises(ValueError, match="missing"):
        build_timm_backbone(cfg)
    with pytest.raises(FileNotFoundError, match="checkpoint_path"):
        build_timm_backbone(BackboneConfig(checkpoint_path=str(tmp_path / "none.pt")))


def test_default_text_config_matches_the_reference_setup() -> None:
    cfg = TextEncoderConfig()
    assert cfg.max_length == 20 and cfg.name == "minilm"
