"""Builder, registries, tokenizer and layer freezing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from wrel.core.config_io import apply_overrides
from wrel.models import BackboneConfig, ModelConfig, TextEncoderConfig, build_model


def _best_time(fn, repeats: int = 3) -> float:
    """Fastest of ``repeats`` wall-clock runs (robust to a shared, busy CPU)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def test_tiny_builds_fast_and_forwards_in_milliseconds() -> None:
    build_model(ModelConfig.tiny())  # warm the imports
    assert _best_time(lambda: build_model(ModelConfig.tiny())) < 1.0
    model = build_model(ModelConfig.tiny()).eval()
    ids, mask = model.tokenize(["a", "b", "c"])
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        logits = model(images, ids, mask).logits
        assert _best_time(lambda: model(images, ids, mask), repeats=5) < 0.2
    assert logits.shape == (3, 2, 64, 64)


def test_tokenize_right_pads_to_max_length_and_keeps_sep() -> None:
    cfg = ModelConfig.tiny()
    cfg.text.max_length = 8
    model = build_model(cfg)
    long_text = "the small white vehicle parked on the left of the long grey road"
    ids, mask = model.tokenize(["car", long_text])
    assert ids.dtype == torch.int64 and mask.dtype == torch.int64
    assert ids.shape == mask.shape == (2, 8)
    sep = model.text_encoder.tokenizer.sep_token_id
    assert mask[0].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]  # [CLS] car [SEP] then free slots
    assert ids[0, 2] == sep and (ids[0, 3:] == model.text_encoder.tokenizer.pad_token_id).all()
    assert mask[1].all() and ids[1, -1] == sep
    with pytest.raises(ValueError, match="list of strings"):
        model.tokenize("car")  # type: ignore[arg-type]


def test_embed_tokens_is_the_word_embedding_and_feeds_inputs_embeds() -> None:
    model = build_model(ModelConfig.tiny()).eval()
    ids, mask = model.tokenize(["the red roof"])
    embeds = model.embed_tokens(ids)
    torch.testing.assert_close(embeds, model.text_encoder.word_embeddings.weight[ids])
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        a = model(images, ids, mask).logits
        b = model(images, attention_mask=mask, inputs_embeds=embeds).logits
    torch.testing.assert_close(a, b)


def test_encoded_words_reused_for_other_images_give_the_same_logits() -> None:
    """One text's word features, encoded once, serve any number of images (the retrieve
    stage's word table): the same logits as the forward that encodes the text itself."""
    torch.manual_seed(0)
    model = build_model(ModelConfig.tiny()).eval()
    ids, mask = model.tokenize(["the red roof", "a ship on the left"])
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        table = model.encode_text(ids, mask)  # (2, L, D)
        pick = torch.tensor([0, 1, 1, 0])  # each text meets two images
        a = model(images, ids[pick], mask[pick]).logits
        b = model(images, attention_mask=mask[pick], words=table[pick]).logits
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="not both"):
        model(images[:2], ids, mask, words=table)
    with pytest.raises(ValueError, match="must be"):
        model(images[:3], attention_mask=mask, words=table)


def test_trainable_layers_freeze_the_rest() -> None:
    cfg = ModelConfig.tiny()
    cfg.text.trainable_layers = [0]
    model = build_model(cfg)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith("text_encoder.bert.encoder.layer.1.") for n in frozen)
    cfg.text.trainable_layers = [5]
    with pytest.raises(ValueError, match="out of range"):
        build_model(cfg)


def test_bert_dropout_is_off() -> None:
    model = build_model(ModelConfig.tiny()).train()
    ids, mask = model.tokenize(["a plane"])
    a = model.text_encoder(mask, input_ids=ids)
    b = model.text_encoder(mask, input_ids=ids)
    torch.testing.assert_close(a, b)


def test_unknown_names_list_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        build_model(ModelConfig(backbone=BackboneConfig(name="no_such_net", pretrained=False)))
    cfg = ModelConfig.tiny()
    cfg.text = TextEncoderConfig(name="gpt", pretrained=False)
    with pytest.raises(ValueError, match="minilm"):
        build_model(cfg)
    cfg.text = TextEncoderConfig(name="local", path=str(tmp_path), pretrained=False)
    with pytest.raises(FileNotFoundError, match="config.json"):
        build_model(cfg)
    with pytest.raises(ValueError, match="unknown config key"):
        apply_overrides(ModelConfig, assignments=["backbone.depth=3"])


def test_overrides_resolve_nested_configs() -> None:
    cfg = apply_overrides(
        ModelConfig,
        ModelConfig.tiny(),
        assignments=["text.trainable_layers=[0, 1]", "fusion.num_heads=2", "decoder.dim=8"],
    )
    assert cfg.text.trainable_layers == [0, 1] and cfg.fusion.num_heads == 2
    assert build_model(cfg).decoder.classifier.in_channels == 8


def test_bad_heads_and_inputs_raise_value_errors() -> None:
    cfg = ModelConfig.tiny()
    cfg.fusion.num_heads = 3
    with pytest.raises(ValueError, match="num_heads"):
        build_model(cfg)
    model = build_model(ModelConfig.tiny())
    ids, mask = model.tokenize(["a"])
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.randn(1, 1, 32, 32), ids, mask)
    with pytest.raises(ValueError, match="exactly one"):
        model(torch.randn(1, 3, 32, 32), attention_mask=mask)
