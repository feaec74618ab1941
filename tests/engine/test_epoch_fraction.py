"""Shortened epochs (``StageConfig.epoch_fraction``): a random subset of a stage's samples per
epoch, redrawn every epoch, with resume inside the shortened epoch."""

from __future__ import annotations

from pathlib import Path

import pytest

from wrel.core.distributed import DistInfo
from wrel.engine.experiment import build_experiment
from wrel.engine.loaders import load_split_samples, stage_data


def _cfg(tiny_bench: Path, tiny_model_sets: list[str], *sets: str):
    return build_experiment(
        "naive",
        assignments=[
            f"data.root={tiny_bench}",
            "data.accurate_ratio=0.5",
            "data.image_size=16",
            "train.batch_size=2",
            *tiny_model_sets,
            *sets,
        ],
    )


def _ids(loader) -> list[int]:
    return [int(sid) for batch in loader for sid in batch["sample_id"]]


def test_a_shortened_epoch_visits_a_fresh_subset_each_epoch(tiny_bench, tiny_model_sets) -> None:
    full_cfg = _cfg(tiny_bench, tiny_model_sets)
    half_cfg = _cfg(tiny_bench, tiny_model_sets, "stages.naive.epoch_fraction=0.5")
    train = load_split_samples(full_cfg.data)["train"]
    one = DistInfo()
    full = stage_data(full_cfg, full_cfg.stages[0], train, one)
    half = stage_data(half_cfg, half_cfg.stages[0], train, one)
    assert len(train) == 16 and full.iters_per_epoch == 8
    assert half.iters_per_epoch == 4

    subsets = []
    for epoch in range(4):
        ids = _ids(half.loader(epoch))
        # the first half of the full epoch's shuffle, every batch full, no sample twice
        assert ids == _ids(full.loader(epoch))[:8]
        assert len(set(ids)) == 8
        subsets.append(frozenset(ids))
    assert len(set(subsets)) > 1  # redrawn every epoch
    # resuming after 3 batches yields the rest of the same subset
    assert _ids(half.loader(2, skip_batches=3)) == _ids(half.loader(2))[6:]
    assert len(half.loader(2, skip_batches=3)) == 1


def test_a_fraction_keeps_at_least_one_step(tiny_bench, tiny_model_sets) -> None:
    cfg = _cfg(tiny_bench, tiny_model_sets, "stages.naive.epoch_fraction=0.01")
    train = load_split_samples(cfg.data)["train"]
    data = stage_data(cfg, cfg.stages[0], train, DistInfo())
    assert data.iters_per_epoch == 1 and len(_ids(data.loader(0))) == 2


@pytest.mark.parametrize("value", ["0", "-0.5", "1.5"])
def test_an_epoch_fraction_outside_0_1_is_refused(tiny_bench, tiny_model_sets, value) -> None:
    with pytest.raises(ValueError, match=r"stages\.naive\.epoch_fraction.*\(0, 1\]"):
        _cfg(tiny_bench, tiny_model_sets, f"stages.naive.epoch_fraction={value}")


def test_a_retrieve_stage_reads_every_weak_sample(tiny_bench, tiny_model_sets) -> None:
    with pytest.raises(ValueError, match=r"retrieve\.epoch_fraction"):
        build_experiment(
            "retrieve",
            assignments=[f"data.root={tiny_bench}", "stages.retrieve.epoch_fraction=0.5"],
        )
