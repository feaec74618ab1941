"""Two CPU ranks with gloo: banks and student weights stay identical and match one process."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "methods"))
from standin_model import install_standins  # noqa: E402


def _cfg(out: Path, name: str):
    from wrel.experiment import build_experiment

    sets = [
        f"train.output_dir={out}",
        f"name={name}",
        "train.batch_size=4",
        "train.eval_batch_size=4",
        "train.progress=false",
        "data.image_size=16",
        "data.accurate_ratio=0.5",
        f"data.root={out}",
        "train.device=cpu",
    ]
    if not os.environ.get("WREL_REAL_MODEL"):
        sets.append("model.bn=false")  # per-rank BatchNorm statistics would differ by design
    cfg = build_experiment("lrb", assignments=sets)
    for stage in cfg.stages:
        stage.epochs = 1
    return cfg


def _run_and_dump(out: Path, name: str, dump: Path) -> None:
    from safetensors.torch import save_file

    from wrel.engine.trainer import Trainer

    class Probe(Trainer):
        def _finish(self, handover):  # type: ignore[no-untyped-def]
            tensors = {
                f"model.{k}": v.detach().clone() for k, v in handover.model.state_dict().items()
            }
            tensors.update({f"bank.{k}": v.clone() for k, v in handover.bank.state_dict().items()})
            save_file(tensors, str(dump))
            return super()._finish(handover)

    Probe(_cfg(out, name)).run()


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    install_standins()
    _run_and_dump(Path(out), "ddp", Path(out) / f"rank{rank}.safetensors")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_rank_gloo_matches_single_process(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    install_standins()
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    for key in r0:
        assert torch.equal(r0[key], r1[key]), f"{key} differs across ranks"
    assert (tmp_path / "ddp" / "final_metrics.json").is_file()

    torch.set_num_threads(1)
    _run_and_dump(tmp_path, "single", tmp_path / "single.safetensors")
    single = load_file(str(tmp_path / "single.safetensors"))
    assert not torch.equal(single["bank.rows"], single["bank.rows"] * 0)
    assert torch.equal(single["bank.steps"], r0["bank.steps"])
    for key in single:
        if single[key].is_floating_point():
            assert torch.allclose(single[key], r0[key], atol=1e-5, rtol=1e-4), key
