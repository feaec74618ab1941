"""Two CPU ranks with gloo: banks and student weights stay identical and match one process."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp


def _cfg(out: Path, name: str, data: Path, model_sets: list[str]):
    from wrel.engine.experiment import build_experiment

    sets = [
        f"train.output_dir={out}",
        f"name={name}",
        "train.batch_size=4",
        "train.eval_batch_size=4",
        "train.progress=false",
        "data.image_size=16",
        "data.accurate_ratio=0.5",
        f"data.root={data}",
        "train.device=cpu",
        *model_sets,
    ]
    cfg = build_experiment("lrb", assignments=sets)
    for stage in cfg.stages:
        stage.epochs = 1
    return cfg


def _run_and_dump(out: Path, name: str, dump: Path, data: Path, model_sets: list[str]) -> None:
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

    Probe(_cfg(out, name, data, model_sets)).run()


def _worker(rank: int, world: int, port: int, out: str, data: str, sets: list[str]) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    _run_and_dump(Path(out), "ddp", Path(out) / f"rank{rank}.safetensors", Path(data), sets)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # 15-40 s each: two gloo processes train side by side
@pytest.mark.parametrize("batch_norm", [False, True])
def test_two_rank_gloo_matches_single_process(
    tmp_path: Path, tiny_bench: Path, tiny_model_sets: list[str], batch_norm: bool
) -> None:
    """Ranks end identical: bank, student weights and BatchNorm statistics (averaged over ranks).

    Without BatchNorm a 2-rank step on the global batch equals a 1-process step, so the result
    must match a single-process run; with BatchNorm each rank normalises its own half batch (as
    plain DDP does on CPU, where SyncBatchNorm is unavailable), so only rank equality holds.
    """
    from safetensors.torch import load_file

    from wrel.data.refer import load_refs

    train_refs = sum(r["split"] == "train" for r in load_refs(tiny_bench / "synthetic/refs(unc).p"))
    # DistributedSampler pads an uneven split with repeats, which a single process never sees
    assert train_refs % 8 == 0, f"{train_refs} train refs: the comparison needs a multiple of 8"
    tiny_model_sets = [
        *tiny_model_sets,
        f"model.backbone.tiny_batch_norm={str(batch_norm).lower()}",
    ]
    args = (2, _free_port(), str(tmp_path), str(tiny_bench), tiny_model_sets)
    mp.spawn(_worker, args=args, nprocs=2, join=True)
    r0, r1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    for key in r0:
        assert torch.equal(r0[key], r1[key]), f"{key} differs across ranks"
    assert (tmp_path / "ddp" / "final_metrics.json").is_file()
    assert any("running_mean" in k for k in r0) == batch_norm
    if batch_norm:
        return

    torch.set_num_threads(1)
    _run_and_dump(tmp_path, "single", tmp_path / "single.safetensors", tiny_bench, tiny_model_sets)
    single = load_file(str(tmp_path / "single.safetensors"))
    assert not torch.equal(single["bank.rows"], single["bank.rows"] * 0)
    assert torch.equal(single["bank.steps"], r0["bank.steps"])
    for key in single:
        if single[key].is_floating_point():
            assert torch.allclose(single[key], r0[key], atol=1e-5, rtol=1e-4), key
