"""Run folders fit for real use: what each checkpoint holds, keep_previous_checkpoint, the
model card (data, split, method, metrics, preprocessing) and its update with test metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from wrel.engine.checkpoint import (
    CheckpointWriteError,
    load_model,
    save_model,
    update_model_metadata,
)
from wrel.engine.state import load_resume_state, read_resume_state, save_resume_state


def _state(step: int) -> dict:
    return {"loop": {"global_step": step}, "stage": {"w": torch.full((3,), float(step))}}


@pytest.mark.parametrize("keep", [True, False])
def test_keep_previous_checkpoint(tmp_path: Path, keep: bool) -> None:
    last = tmp_path / "checkpoints" / "last"
    for step in (1, 2, 3):
        save_resume_state(last, _state(step), keep_previous=keep)
    names = sorted(p.name for p in last.parent.iterdir())  # no temporaries either way
    assert names == (["last", "last.prev"] if keep else ["last"])
    assert load_resume_state(last)["loop"]["global_step"] == 3
    if keep:
        assert load_resume_state(last.parent / "last.prev")["loop"]["global_step"] == 2
    # the trade-off: without the previous checkpoint a damaged last has no fallback
    (last / "tensors.safetensors").write_bytes(b"damaged")
    if keep:
        state, source = read_resume_state(last)
        assert source.name == "last.prev" and state["loop"]["global_step"] == 2
    else:
        with pytest.raises(ValueError, match="last/tensors.safetensors"):
            read_resume_state(last)


def test_dropping_the_previous_checkpoint_happens_after_the_new_one_is_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wrel.engine.state as state_module

    last = tmp_path / "last"
    save_resume_state(last, _state(1))
    save_resume_state(last, _state(2))  # last (2) + last.prev (1), e.g. before the option
    real = state_module._move_aside
    calls: list[str] = []

    def killed(path: Path) -> Path:
        calls.append(path.name)
        if calls == ["last.prev", "last.prev"]:  # the old step 1, then the new fallback (2)
            raise KeyboardInterrupt  # a kill while the previous checkpoint is being dropped
        return real(path)

    monkeypatch.setattr(state_module, "_move_aside", killed)
    with pytest.raises(KeyboardInterrupt):
        save_resume_state(last, _state(3), keep_previous=False)
    monkeypatch.undo()
    assert read_resume_state(last)[0]["loop"]["global_step"] == 3  # the new one is complete
    save_resume_state(last, _state(4), keep_previous=False)  # the next save cleans up
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    from wrel.models import ModelConfig, build_model

    torch.manual_seed(0)
    return build_model(ModelConfig.tiny()).eval()


def test_exported_model_is_weights_only_and_metadata_updates_keep_checksums(
    tmp_path: Path, tiny_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors import safe_open

    metadata = {"method": "naive", "image_size": [16, 16], "val": {"mIoU": 40.0}}
    best = save_model(tmp_path / "best", tiny_model, metadata)
    files = sorted(p.relative_to(best).as_posix() for p in best.rglob("*") if p.is_file())
    assert [f for f in files if not f.startswith("text_encoder/")] == [
        "MODEL_CARD.md",
        "config.json",
        "model.safetensors",
    ]
    assert not any(f.endswith((".safetensors", ".bin", ".pt")) for f in files[3:])
    with safe_open(str(best / "model.safetensors"), framework="pt") as handle:
        assert set(handle.keys()) == set(tiny_model.state_dict())  # no optimizer/bank/teacher
    before = json.loads((best / "config.json").read_text())
    assert "Test metrics: not recorded" in (best / "MODEL_CARD.md").read_text()

    meta = update_model_metadata(best, {"test": {"mIoU": 38.5, "oIoU": 41.25}})
    after = json.loads((best / "config.json").read_text())
    assert after["files"] == before["files"] and after["model"] == before["model"]
    assert meta == after["metadata"] and meta["val"] == {"mIoU": 40.0}
    model, loaded = load_model(best)  # every SHA-256 still matches
    assert loaded["test"] == {"mIoU": 38.5, "oIoU": 41.25}
    card = (best / "MODEL_CARD.md").read_text()
    assert "| metric | val | test |" in card and "| mIoU | 40.0000 | 38.5000 |" in card
    assert "| oIoU |  | 41.2500 |" in card
    assert sorted(p.name for p in best.iterdir()) == sorted(
        ["MODEL_CARD.md", "config.json", "model.safetensors", "text_encoder"]
    )  # no temporaries left
    with pytest.raises(ValueError, match="JSON-serialisable"):
        update_model_metadata(best, {"test": object()})

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("wrel.engine.checkpoint.os.replace", full_disk)
    with pytest.raises(CheckpointWriteError, match="No space left"):
        update_model_metadata(best, {"test": {"mIoU": 1.0}})
    monkeypatch.undo()
    assert json.loads((best / "config.json").read_text()) == after  # untouched
    assert sorted(p.name for p in best.iterdir()) == sorted(
        ["MODEL_CARD.md", "config.json", "model.safetensors", "text_encoder"]
    )


@pytest.mark.slow
def test_run_folder_card_and_keep_previous_option(
    tmp_path: Path, tiny_bench: Path, tiny_model_sets: list[str]
) -> None:
    """Three tiny training runs: by default a finished run keeps checkpoints/best only; with
    train.keep_training_state it keeps last and last.prev, or only last with
    keep_previous_checkpoint=false; the model
    card of checkpoints/best names data set, split, counts, method, preprocessing and the val
    and test metrics, and its checksums stay valid after the test metrics are added."""
    from wrel.engine.experiment import build_experiment
    from wrel.engine.trainer import train

    def run(name: str, *extra: str) -> tuple[dict, Path]:
        cfg = build_experiment(
            "naive",
            assignments=[
                f"name={name}",
                f"train.output_dir={tmp_path / 'runs'}",
                f"data.root={tiny_bench}",
                "data.image_size=16",
                "train.batch_size=4",
                "train.eval_batch_size=4",
                "train.progress=false",
                "train.checkpoint_every=1",  # several resume saves in the one epoch
                *tiny_model_sets,
                *extra,
            ],
        )
        cfg.stages[0].epochs = 1
        result = train(cfg)
        return result, Path(result["run_dir"]) / "checkpoints"

    result, ckpt = run("default")  # a finished run keeps its best model only
    assert sorted(p.name for p in ckpt.iterdir()) == ["best"]
    _, kept = run("kept", "train.keep_training_state=true")
    assert sorted(p.name for p in kept.iterdir()) == ["best", "last", "last.prev"]
    _, lean = run("lean", "train.keep_training_state=true", "train.keep_previous_checkpoint=false")
    assert sorted(p.name for p in lean.iterdir()) == ["best", "last"]
    assert read_resume_state(lean / "last")[1].name == "last"

    _, metadata = load_model(ckpt / "best")  # the checksums are valid after the card update
    assert metadata["test"] == result["test"] and metadata["val"] == result["best"]["val"]
    card = (ckpt / "best" / "MODEL_CARD.md").read_text()
    data = result["data"]
    assert "name: None" not in card and "`None`" not in card
    assert "- Data set: `synthetic`" in card, card
    assert "- Split: accurate ratio 0.1 of the train expressions" in card
    assert (
        f"- Train samples: {data['num_train']} ({data['num_accurate']} accurate, "
        f"{data['num_weak']} weak; accurate share {data['train_accurate_ratio']})." in card
    )
    assert "- Method: `naive`." in card
    assert "- Input size: 16 x 16 pixels" in card
    assert "- Image scaling (`image_scaling`): auto (8-bit as is, else 2-98%)" in card
    assert "## Metrics (protocol `input`)" in card and "| metric | val | test |" in card
    assert f"| mIoU | {result['best']['val']['mIoU']:.4f} | {result['test']['mIoU']:.4f} |" in card
    assert "Checkpoint chosen on val `mIoU` at stage" in card
