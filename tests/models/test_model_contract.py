"""Contract suite run over every registered backbone and text encoder (tiny, random weights)."""

from __future__ import annotations

import copy

import pytest
import torch

from wrel.models import (
    BACKBONES,
    TEXT_ENCODERS,
    BackboneConfig,
    DecoderConfig,
    FusionConfig,
    ModelConfig,
    TextEncoderConfig,
    build_model,
)

TINY_BACKBONE = BackboneConfig(name="tiny", pretrained=False)
TINY_TEXT = TextEncoderConfig(name="tiny", pretrained=False)
SWIN_KWARGS = {
    "img_size": 64,
    "window_size": 2,
    "embed_dim": 16,
    "depths": (1, 1, 1, 1),
    "num_heads": (1, 1, 1, 1),
    "strict_img_size": False,
}

CASES = {
    "tiny": ModelConfig.tiny(),
    "efficientnet_lite0": ModelConfig(
        backbone=BackboneConfig(name="efficientnet_lite0", pretrained=False),
        text=TINY_TEXT,
        decoder=DecoderConfig(dim=16),
    ),
    "timm-swin": ModelConfig(
        backbone=BackboneConfig(
            name="swin_tiny_patch4_window7_224", pretrained=False, timm_kwargs=SWIN_KWARGS
        ),
        text=TINY_TEXT,
        fusion=FusionConfig(num_heads=2),
        decoder=DecoderConfig(dim=16),
    ),
    "minilm": ModelConfig(
        backbone=TINY_BACKBONE,
        text=TextEncoderConfig(name="minilm", pretrained=False),
        decoder=DecoderConfig(dim=16),
    ),
    "local": ModelConfig(  # text.path is set to a tiny saved folder by the fixture
        backbone=TINY_BACKBONE,
        text=TextEncoderConfig(name="local", pretrained=False),
        fusion=FusionConfig(num_heads=4),
        decoder=DecoderConfig(dim=16),
    ),
}
TEXTS = ["the small white vehicle on the left", "plane"]


def test_every_registered_name_is_covered() -> None:
    covered_backbones = {cfg.backbone.name for cfg in CASES.values()}
    covered_text = {cfg.text.name for cfg in CASES.values()}
    assert set(BACKBONES) <= covered_backbones
    assert set(TEXT_ENCODERS) <= covered_text


@pytest.fixture(scope="module")
def local_folder(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Hugging Face folder (tokenizer + config, no weights) of a tiny BERT."""
    folder = tmp_path_factory.mktemp("hf") / "tiny-bert"
    build_model(ModelConfig.tiny()).text_encoder.save(folder)
    return str(folder)


@pytest.fixture(scope="module", params=sorted(CASES))
def model(request: pytest.FixtureRequest, local_folder: str) -> torch.nn.Module:
    cfg = copy.deepcopy(CASES[request.param])
    if cfg.text.name == "local":
        cfg.text.path = local_folder
    torch.manual_seed(0)
    return build_model(cfg)


def _batch(model: torch.nn.Module, size: tuple[int, int] = (37, 50)):
    g = torch.Generator().manual_seed(1)
    images = torch.randn(len(TEXTS), 3, *size, generator=g)
    ids, mask = model.tokenize(TEXTS)
    return images, ids, mask


def test_output_shape_any_size_no_nan(model) -> None:
    model.eval()
    for size in [(37, 50), (64, 64), (33, 96)]:
        images, ids, mask = _batch(model, size)
        with torch.no_grad():
            logits = model(images, ids, mask).logits
        assert logits.shape == (2, 2, *size)
        assert torch.isfinite(logits).all()


def test_gradients_reach_every_trainable_parameter(model) -> None:
    model.train()
    model.zero_grad()
    images, ids, mask = _batch(model, (64, 64))
    weights = torch.randn(2, 2, 64, 64, generator=torch.Generator().manual_seed(2))
    (model(images, ids, mask).logits * weights).sum().backward()
    missing = [
        name
        for name, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())
    ]
    nonzero = [n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum()]
    assert not missing
    assert len(nonzero) > 0.9 * sum(p.requires_grad for p in model.parameters())
    model.zero_grad()


def test_eval_output_independent_of_batch_composition(model) -> None:
    model.eval()
    images, ids, mask = _batch(model)
    with torch.no_grad():
        both = model(images, ids, mask).logits
        alone = torch.cat(
            [model(images[i : i + 1], ids[i : i + 1], mask[i : i + 1]).logits for i in range(2)]
        )
    torch.testing.assert_close(both, alone, atol=1e-4, rtol=1e-4)


def test_text_padding_is_ignored(model) -> None:
    model.eval()
    images, ids, mask = _batch(model)
    changed = torch.where(mask.bool(), ids, torch.randint_like(ids, 1000, 2000))
    embeds = model.embed_tokens(ids)
    noisy = torch.where(mask.bool()[..., None], embeds, torch.randn_like(embeds))
    with torch.no_grad():
        ref = model(images, ids, mask).logits
        torch.testing.assert_close(model(images, changed, mask).logits, ref, atol=1e-5, rtol=1e-5)
        via_embeds = model(images, attention_mask=mask, inputs_embeds=noisy).logits
    torch.testing.assert_close(via_embeds, ref, atol=1e-5, rtol=1e-5)
    assert not (changed == ids).all()


def test_prefixes_and_text_dim(model) -> None:
    prefixes = {name.split(".")[0] for name, _ in model.named_parameters()}
    assert prefixes == {"backbone", "text_encoder", "fusion", "decoder"}
    ids, _ = model.tokenize(TEXTS)
    assert model.embed_tokens(ids).shape == (2, model.max_length, model.text_dim)


def test_channels_last_matches(model) -> None:
    model.eval()
    images, ids, mask = _batch(model, (64, 64))
    with torch.no_grad():
        ref = model(images, ids, mask).logits
        cl = model.to(memory_format=torch.channels_last)
        out = cl(images.contiguous(memory_format=torch.channels_last), ids, mask).logits
    model.to(memory_format=torch.contiguous_format)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
