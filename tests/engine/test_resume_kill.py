"""SIGKILL a real `python -m wrel train` after its first checkpoint, resume, compare (slow)."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow


def _real_pieces() -> bool:
    import wrel.models

    return (
        hasattr(wrel.models, "build_model")
        and importlib.util.find_spec("wrel.data.synthetic") is not None
        and importlib.util.find_spec("wrel.engine.checkpoint") is not None
    )


def _cmd(tmp: Path, name: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "wrel",
        "train",
        "--method",
        "lrb",
        "--data",
        str(tmp / "data"),
        "--output-dir",
        str(tmp / "runs"),
        "--name",
        name,
        "--epochs",
        "2",
        "--batch-size",
        "2",
        "--set",
        "data.image_size=32",
        "--set",
        "train.checkpoint_every=1",
        "--set",
        "train.progress=false",
        "--set",
        "data.num_workers=0",
        *extra,
    ]


def test_sigkill_then_resume_matches(tmp_path: Path) -> None:
    if not _real_pieces():
        pytest.skip("wrel.models / wrel.data.synthetic / wrel.engine.checkpoint not built yet")
    from wrel.data.synthetic import SynthConfig, generate_benchmark

    from wrel.engine.state import load_resume_state

    generate_benchmark(tmp_path / "data", SynthConfig())
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    subprocess.run(_cmd(tmp_path, "ref"), check=True, env=env)
    proc = subprocess.Popen(_cmd(tmp_path, "kill"), env=env)
    last = tmp_path / "runs" / "kill" / "checkpoints" / "last" / "state.json"
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    subprocess.run(_cmd(tmp_path, "kill", "--resume"), check=True, env=env)
    ref = load_resume_state(tmp_path / "runs" / "ref" / "checkpoints" / "last")["stage"]
    res = load_resume_state(tmp_path / "runs" / "kill" / "checkpoints" / "last")["stage"]
    for part in ("model", "teacher", "bank"):
        for key, value in ref[part].items():
            assert torch.allclose(value.float(), res[part][key].float()), f"{part}.{key}"
    assert (tmp_path / "runs" / "ref" / "final_metrics.json").read_text().replace(
        "ref", "kill"
    ) == (tmp_path / "runs" / "kill" / "final_metrics.json").read_text()
