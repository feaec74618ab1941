"""Checkpoints: strict, atomic, self-contained, no pickle; corrupt files fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from wrel.engine.checkpoint import (
    atomic_write_text,
    config_seal,
    file_record,
    load_model,
    load_tensors,
    save_model,
    save_tensors,
)
from wrel.models import ModelConfig, build_model

METADATA = {
    "dataset": "synthetic",
    "method": "lrb",
    "metrics": {"mIoU": 0.5, "oIoU": 0.25},
    "protocol": "input resolution, val split",
}


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig.tiny()).eval()


@pytest.fixture()
def saved(tmp_path: Path, tiny_model) -> Path:
    return save_model(tmp_path / "model", tiny_model, METADATA)


def test_roundtrip_is_exact_and_self_contained(saved: Path, tiny_model) -> None:
    assert {p.name for p in saved.iterdir()} == {
        "model.safetensors",
        "config.json",
        "text_encoder",
        "MODEL_CARD.md",
    }
    data = json.loads((saved / "config.json").read_text())
    assert data["format_version"] == 1 and data["model"]["backbone"]["name"] == "tiny"
    assert set(data["files"]) >= {"model.safetensors", "text_encoder/config.json"}
    assert all(len(r["sha256"]) == 64 for r in data["files"].values())
    model, metadata = load_model(saved)
    assert metadata["metrics"] == METADATA["metrics"] and "torch" in metadata["software"]
    assert not model.training
    images = torch.randn(2, 3, 40, 48)
    ids, mask = model.tokenize(["the left car", "roof"])
    assert torch.equal(ids, tiny_model.tokenize(["the left car", "roof"])[0])
    with torch.no_grad():
        assert torch.equal(model(images, ids, mask).logits, tiny_model(images, ids, mask).logits)
    card = (saved / "MODEL_CARD.md").read_text()
    assert "mIoU" in card and "input resolution, val split" in card


def test_replacing_an_existing_folder_leaves_no_temporaries(saved: Path, tiny_model) -> None:
    (saved / "stale.txt").write_text("old")
    save_model(saved, tiny_model, {"method": "naive"})
    assert not (saved / "stale.txt").exists()
    assert load_model(saved)[1]["method"] == "naive"
    assert [p.name for p in saved.parent.iterdir()] == ["model"]


def test_another_models_config_fails_listing_keys(saved: Path) -> None:
    data = json.loads((saved / "config.json").read_text())
    data["model"]["decoder"]["dim"] = 8
    data["model"]["fusion"]["num_heads"] = 2
    data["config_sha256"] = config_seal(data)  # a deliberate edit, re-sealed
    (saved / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="wrong shapes.*decoder"):
        load_model(saved)


def _rehash(folder: Path) -> None:
    """Record the current weights' checksum, as a deliberate (not accidental) edit would."""
    data = json.loads((folder / "config.json").read_text())
    data["files"]["model.safetensors"] = file_record(folder / "model.safetensors")
    data["config_sha256"] = config_seal(data)
    (folder / "config.json").write_text(json.dumps(data))


def test_missing_and_unexpected_keys_are_listed(saved: Path) -> None:
    tensors = load_tensors(saved / "model.safetensors")
    tensors.pop("decoder.classifier.bias")
    tensors["extra.weight"] = torch.zeros(1)
    save_tensors(saved / "model.safetensors", tensors)
    with pytest.raises(ValueError, match="model.safetensors has .* bytes but .*config.json"):
        load_model(saved)  # the manifest catches the swap first
    _rehash(saved)
    with pytest.raises(ValueError, match=r"missing keys \['decoder.classifier.bias'\]") as err:
        load_model(saved)
    assert "extra.weight" in str(err.value)


def test_truncated_weights_fail_naming_the_file(saved: Path) -> None:
    path = saved / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="model.safetensors"):
        load_model(saved)


def test_bit_flipped_header_fails(saved: Path) -> None:
    path = saved / "model.safetensors"
    raw = bytearray(path.read_bytes())
    raw[12] ^= 0xFF  # inside the JSON header
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="model.safetensors is corrupt: its SHA-256"):
        load_model(saved)
    _rehash(saved)  # without the checksum, the header parser still refuses it
    with pytest.raises(ValueError, match="not a valid safetensors"):
        load_model(saved)


def test_bad_config_files(saved: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(tmp_path / "nowhere")
    (saved / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_model(saved)
    (saved / "config.json").write_text(json.dumps({"format_version": 99, "model": {}}))
    with pytest.raises(ValueError, match="format_version"):
        load_model(saved)
    (saved / "config.json").write_text(
        json.dumps({"format_version": 1, "model": {"backbone": {"layers": 3}}})
    )
    with pytest.raises(ValueError, match="unknown config key"):
        load_model(saved)


def test_tensor_helpers_are_atomic_and_strict(tmp_path: Path) -> None:
    path = tmp_path / "state" / "bank.safetensors"
    tensors = {"bank": torch.randn(3, 4), "step": torch.tensor(7)}
    save_tensors(path, tensors, {"epoch": "2"})
    loaded = load_tensors(path)
    assert torch.equal(loaded["bank"], tensors["bank"]) and int(loaded["step"]) == 7
    assert sorted(p.name for p in path.parent.iterdir()) == ["bank.safetensors"]
    with pytest.raises(ValueError, match="str to str"):
        save_tensors(path, tensors, {"epoch": 2})  # type: ignore[dict-item]
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_tensors(tmp_path / "missing.safetensors")
    text = atomic_write_text(tmp_path / "a" / "note.json", '{"ok": true}')
    assert json.loads(text.read_text()) == {"ok": True}


def test_save_rejects_models_without_config(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="build_model"):
        save_model(tmp_path / "m", torch.nn.Linear(2, 2), {})
