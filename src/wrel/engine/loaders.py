"""Data loading for the trainer: split samples, per-stage sample views and seeded loaders."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from wrel.core.distributed import DistInfo, ResumableSampler
from wrel.data.dataset import RefSegDataset, collate_samples, load_samples
from wrel.data.transforms import cutout_subset
from wrel.engine.experiment import DataConfig, ExperimentConfig
from wrel.methods.base import StageConfig

__all__ = ["StageData", "load_split_samples", "stage_data", "eval_loader"]


def load_split_samples(cfg: DataConfig) -> dict[str, list[Any]]:
    """Train (with the configured weak split), val and test samples (always accurate)."""

    out = {
        "train": load_samples(
            cfg.root,
            cfg.train_split,
            name=cfg.name,
            accurate_ratio=cfg.accurate_ratio,
            seed=cfg.split_seed,
            split_file=cfg.split_file,
            allow_outside_root=cfg.allow_outside_root,
        ),
    }
    for key, split in (("val", cfg.val_split), ("test", cfg.test_split)):
        out[key] = (
            load_samples(cfg.root, split, name=cfg.name, allow_outside_root=cfg.allow_outside_root)
            if split
            else []
        )
    if not out["train"]:
        raise ValueError(f"no {cfg.train_split!r} samples under {cfg.root}; check data.root")
    return out


def _view(samples: list[Any], which: str) -> list[Any]:
    if which == "all":
        return list(samples)
    return [s for s in samples if s.quality == which]


@dataclass
class StageData:
    """The samples of one stage and how to iterate them on this rank."""

    dataset: Any
    per_rank_batch: int
    iters_per_epoch: int
    drop_last: bool
    make_loader: Callable[[int, int], DataLoader]

    def loader(self, epoch: int, skip_batches: int = 0) -> DataLoader:
        """This rank's loader for ``epoch``, starting after ``skip_batches`` batches."""
        return self.make_loader(epoch, skip_batches)


def stage_data(
    cfg: ExperimentConfig, stage_cfg: StageConfig, train_samples: list[Any], dist: DistInfo
) -> StageData:
    """Sample view of ``stage_cfg`` with a distributed, per-epoch shuffled, resumable sampler."""

    samples = _view(train_samples, stage_cfg.samples)
    if not samples:
        raise ValueError(
            f"stage {stage_cfg.name or stage_cfg.kind!r} trains on {stage_cfg.samples!r} samples but the train "
            f"split has none (data.accurate_ratio={cfg.data.accurate_ratio}); change the ratio "
            "or the stage's samples"
        )
    size = cfg.data.image_size
    # a retrieve stage scores every sample once, as it is: no cut-out, no dropped last batch
    scoring = stage_cfg.kind == "retrieve"
    d = cfg.data
    cut = not scoring and (d.cutout_stages is None or stage_cfg.kind in d.cutout_stages)
    # the released cut-out's refs: drawn once per run from all train refs (the same in every
    # stage and on resume), so a stage's share of them is cutout_prob in expectation
    ids = [s.sample_id for s in train_samples]
    subset = cutout_subset(ids, d.cutout_prob, cfg.train.seed) if cut else frozenset()
    dataset = RefSegDataset(
        samples,
        image_size=(size, size),
        seed=cfg.train.seed,
        cutout_prob=d.cutout_prob if cut else 0.0,
        cutout_scale=d.cutout_scale,
        scaling=d.image_scaling,
        cutout=d.cutout,
        cutout_ids=subset if d.cutout == "squares" else frozenset(),
        cutout_count=d.cutout_count,
        cutout_side=d.cutout_side,
    )
    per_rank = cfg.train.batch_size // dist.world_size
    per_rank_samples = math.ceil(len(samples) / dist.world_size)
    drop_last = cfg.train.drop_last and per_rank_samples >= per_rank and not scoring
    iters_per_epoch = (
        per_rank_samples // per_rank if drop_last else math.ceil(per_rank_samples / per_rank)
    )
    # A shortened epoch (epoch_fraction < 1) takes the first batches of the epoch's shuffle:
    # every batch full, the epoch's step count what schedules and resume checks see.
    limit = None
    if stage_cfg.epoch_fraction < 1:
        iters_per_epoch = max(1, round(iters_per_epoch * stage_cfg.epoch_fraction))
        limit = iters_per_epoch * per_rank

    def make_loader(epoch: int, skip_batches: int) -> DataLoader:
        sampler = ResumableSampler(
            dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=cfg.train.seed
        )
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)  # per-epoch cut-outs (workers copy the dataset after this)
        sampler.skip = skip_batches * per_rank
        sampler.limit = limit
        # An explicit generator keeps worker seeds (and the global RNG) independent of
        # when the iterator is created, which resume relies on.
        gen = torch.Generator().manual_seed(cfg.train.seed * 100_003 + epoch)
        return DataLoader(
            dataset,
            batch_size=per_rank,
            sampler=sampler,
            num_workers=cfg.data.num_workers,
            collate_fn=collate_samples,
            drop_last=drop_last,
            generator=gen,
            pin_memory=torch.cuda.is_available(),
        )

    return StageData(dataset, per_rank, max(iters_per_epoch, 1), drop_last, make_loader)


def eval_loader(cfg: ExperimentConfig, samples: list[Any]) -> DataLoader:
    """Deterministic, unshuffled loader over ``samples`` (every rank sees all of them)."""

    size = cfg.data.image_size
    return DataLoader(
        RefSegDataset(samples, image_size=(size, size), scaling=cfg.data.image_scaling),
        batch_size=cfg.train.eval_batch_size,
        shuffle=False,
        num_workers=cfg.data.num_workers,
        collate_fn=collate_samples,
        generator=torch.Generator().manual_seed(0),
    )
