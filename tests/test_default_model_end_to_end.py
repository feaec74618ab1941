"""The default model (EfficientNet-Lite0 + MiniLM, real weights) end to end on the benchmark:
train a few steps, export, reload strictly, `wrel predict` a benchmark image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


@pytest.mark.slow  # ~20 s: the real EfficientNet-Lite0 + MiniLM trains, exports and predicts
def test_default_model_trains_exports_reloads_and_predicts(
    tmp_path: Path, tiny_bench: Path
) -> None:
    from wrel.cli import main
    from wrel.engine.checkpoint import load_model
    from wrel.engine.experiment import build_experiment
    from wrel.engine.trainer import train
    from wrel.models import ModelConfig, build_model

    cfg = build_experiment(
        "naive",
        assignments=[
            f"data.root={tiny_bench}",
            f"train.output_dir={tmp_path / 'runs'}",
            "data.image_size=32",
            "train.batch_size=8",
            "train.progress=false",
            "train.device=cpu",
        ],
    )
    cfg.stages[0].epochs = 1
    assert cfg.model.backbone.name == "efficientnet_lite0" and cfg.model.backbone.pretrained
    assert cfg.model.text.name == "minilm" and cfg.model.text.pretrained
    result = train(cfg)
    steps = [
        json.loads(x)["step"]
        for x in (Path(result["run_dir"]) / "metrics.jsonl").read_text().splitlines()
        if json.loads(x)["event"] == "train"
    ]
    assert steps and max(steps) >= 2

    best = Path(result["run_dir"]) / "checkpoints" / "best"
    model, metadata = load_model(best)
    assert metadata["image_size"] == [32, 32] and metadata["method"] == "naive"
    # Training moved the weights away from the pretrained initialisation, and the reload is exact.
    torch.manual_seed(0)
    fresh = build_model(ModelConfig())
    moved = [
        k
        for k, v in fresh.state_dict().items()
        if v.is_floating_point() and not torch.equal(v, model.state_dict()[k])
    ]
    assert moved, "training changed no weight"

    image = next((tiny_bench / "images" / "synthetic" / "JPEGImages").iterdir())
    out, overlay = tmp_path / "mask.png", tmp_path / "overlay.png"
    rc = main(
        [
            "predict",
            str(best),
            str(image),
            "the vehicle on the left",
            "--out",
            str(out),
            "--overlay",
            str(overlay),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    mask = np.asarray(Image.open(out))
    assert mask.shape[:2] == Image.open(image).size[::-1]
    assert set(np.unique(mask).tolist()) <= {0, 1, 255}
    assert Image.open(overlay).size == Image.open(image).size
