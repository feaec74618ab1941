"""SIGKILL a real `python -m wrel train` after its first checkpoint, resume, compare."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch


def _cmd(tmp: Path, data: Path, model_sets: list[str], name: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "wrel",
        "train",
        "--method",
        "lrb",
        "--data",
        str(data),
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
        "--keep-training-state",  # the final resume states are compared
        *[x for kv in model_sets for x in ("--set", kv)],
        *extra,
    ]


@pytest.mark.slow  # ~40 s under load: two training subprocesses and a kill
def test_sigkill_then_resume_matches(tmp_path: Path, tiny_bench: Path, tiny_model_sets) -> None:
    from wrel.engine.state import load_resume_state

    def cmd(name: str, *extra: str) -> list[str]:
        return _cmd(tmp_path, tiny_bench, tiny_model_sets, name, *extra)

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd("ref"), check=True, env=env)
    proc = subprocess.Popen(cmd("kill"), env=env)
    last = tmp_path / "runs" / "kill" / "checkpoints" / "last" / "state.json"
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_mid_run = proc.returncode == -signal.SIGKILL
    assert killed_mid_run, "the run ended before it could be killed"
    assert not (tmp_path / "runs" / "kill" / "final_metrics.json").exists()
    subprocess.run(cmd("kill", "--resume"), check=True, env=env)
    ref = load_resume_state(tmp_path / "runs" / "ref" / "checkpoints" / "last")["stage"]
    res = load_resume_state(tmp_path / "runs" / "kill" / "checkpoints" / "last")["stage"]
    for part in ("model", "teacher", "bank"):
        for key, value in ref[part].items():
            assert torch.equal(value, res[part][key]), f"{part}.{key}"
    ref_metrics = json.loads(
        (tmp_path / "runs" / "ref" / "final_metrics.json").read_text().replace("ref", "kill")
    )
    kill_metrics = json.loads((tmp_path / "runs" / "kill" / "final_metrics.json").read_text())
    # the wall time differs between two runs; the killed one still counts both processes
    ref_s, kill_s = ref_metrics.pop("wall_time_s"), kill_metrics.pop("wall_time_s")
    assert isinstance(ref_s, float) and isinstance(kill_s, float) and kill_s > 0 and ref_s > 0
    assert ref_metrics == kill_metrics
