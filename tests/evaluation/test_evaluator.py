"""Evaluator accumulation, merge, per-sample records and distributed gathering."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from wrel.evaluation import EvalProtocol, Evaluator


def _random_batch(seed: int, batch: int = 6, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pred = torch.rand(batch, size, size, generator=g) > 0.6
    gt = torch.rand(batch, size, size, generator=g) > 0.6
    gt[0] = False
    pred[0] = False  # one empty-vs-empty sample
    return pred, gt


CATS = ["car", "ship", "car", "tank", "ship", "car"]


def test_accumulation_equals_one_big_update() -> None:
    pred, gt = _random_batch(0)
    whole = Evaluator()
    whole.update(pred, gt, CATS, sample_ids=range(6))
    parts = Evaluator()
    for lo, hi in ((0, 1), (1, 4), (4, 6)):
        parts.update(pred[lo:hi], gt[lo:hi], CATS[lo:hi], sample_ids=list(range(lo, hi)))
    assert parts.compute() == whole.compute()
    assert parts.per_sample() == whole.per_sample()
    assert len(parts) == 6


def test_compute_hand_computed_and_empty_protocols() -> None:
    pred = torch.zeros(2, 4, 4, dtype=torch.bool)
    gt = torch.zeros(2, 4, 4, dtype=torch.bool)
    pred[0, 0, :2] = True
    gt[0, 0, :4] = True  # I=2, U=4; sample 1 empty-vs-empty
    for empty, expected_miou in ((0.0, 25.0), (1.0, 75.0)):
        ev = Evaluator(EvalProtocol(empty_score=empty))
        ev.update(pred, gt, ["a", "b"], sample_ids=[10, 11])
        out = ev.compute()
        assert out["oIoU"] == pytest.approx(50.0)
        assert out["mIoU"] == pytest.approx(expected_miou)
        assert out["Prec@0.5"] == pytest.approx(50.0 + 50.0 * empty)
        assert out["per_category"]["b"]["mIoU"] == pytest.approx(100.0 * empty)
        assert out["protocol"]["empty_score"] == empty
    assert ev.per_sample() == [(10, "a", 2, 4), (11, "b", 0, 0)]


def test_string_protocol_logits_and_resizing() -> None:
    ev = Evaluator("input")
    logits = torch.zeros(1, 2, 4, 4)
    logits[0, 1, :2] = 1.0  # top half foreground
    gt = torch.zeros(1, 8, 8, dtype=torch.bool)
    gt[0, :4] = True  # top half at 2x size
    ev.update(logits, gt)
    out = ev.compute()
    assert out["mIoU"] == pytest.approx(100.0) and out["per_category"] == {}
    assert ev.per_sample() == [(None, None, 8, 8)]
    ev_orig = Evaluator("original")
    ev_orig.update(logits, gt)
    assert ev_orig.per_sample() == [(None, None, 32, 32)]


def test_numpy_and_tensor_ids_inputs() -> None:
    pred, gt = _random_batch(2, batch=3)
    ev, ref = Evaluator(), Evaluator()
    ev.update(pred.numpy(), gt.numpy().astype("int64"), sample_ids=torch.tensor([4, 5, 6]))
    ref.update(pred, gt, sample_ids=[4, 5, 6])
    assert ev.per_sample() == ref.per_sample()
    assert [r[0] for r in ev.per_sample()] == [4, 5, 6]


def test_reset_merge_and_errors() -> None:
    pred, gt = _random_batch(1)
    a, b, whole = Evaluator(), Evaluator(), Evaluator()
    a.update(pred[:3], gt[:3], CATS[:3])
    b.update(pred[3:], gt[3:], CATS[3:])
    whole.update(pred, gt, CATS)
    assert a.merge(b).compute() == whole.compute()
    with pytest.raises(ValueError, match="different protocols"):
        a.merge(Evaluator("original"))
    with pytest.raises(ValueError, match="categories"):
        a.update(pred, gt, ["x"])
    with pytest.raises(ValueError, match="non-negative"):
        a.update(pred[:1], gt[:1], sample_ids=[-3])
    a.reset()
    assert len(a) == 0 and a.compute()["num_samples"] == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, queue: mp.Queue) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        pred, gt = _random_batch(0)
        lo, hi = (0, 2) if rank == 0 else (2, 6)  # unequal shards
        ev = Evaluator()
        ev.update(pred[lo:hi], gt[lo:hi], CATS[lo:hi], sample_ids=list(range(lo, hi)))
        queue.put((rank, ev.compute(), ev.per_sample(gather=True), ev.compute(gather=False)))
    finally:
        dist.destroy_process_group()


def test_distributed_gather_matches_single_process() -> None:
    pred, gt = _random_batch(0)
    single = Evaluator()
    single.update(pred, gt, CATS, sample_ids=range(6))
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, queue)) for r in (0, 1)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    for rank, global_metrics, records, local in results:
        assert global_metrics == single.compute(), rank
        assert records == single.per_sample()
        assert local["num_samples"] == (2 if rank == 0 else 4)
