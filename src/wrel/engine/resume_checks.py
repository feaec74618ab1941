"""Checks of a resume checkpoint's loop position against the run's config and records.

The manifest of a resume checkpoint (:mod:`wrel.engine.state`) proves that its files are the
ones that were written, not that its loop position is one the trainer could have written: a
``state.json`` edited and re-checksummed to ``stage_index = 99`` or ``epoch = 10**9`` would
otherwise skip every remaining step and export an untrained model as a finished run.
:func:`check_loop_state` refuses such a state, naming the checkpoint and the field.

The rules (``E`` = epochs of the stage ``stage_index`` in the run's config):

- ``stage_index``, ``epoch``, ``iteration``, ``global_step``: ints (not bools), >= 0;
  ``stage_index`` names a stage of the config; ``epoch <= E``; ``iteration == 0`` when
  ``epoch == E``; ``global_step`` at least the steps the position implies (one per
  iteration and at least one per finished epoch);
- ``best_value``: ``None`` or a finite number;
- an epoch-end position (``iteration == 0``, ``epoch >= 1``) has the epoch's last ``train``
  record in ``metrics.jsonl`` (the trainer logs it before saving): same stage, epoch and step;
- once the stage's data is built, :func:`check_iteration` checks ``iteration`` against the
  iterations per epoch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wrel.core.bounded import loads_json
from wrel.engine.checkpoint import CheckpointError

__all__ = ["check_iteration", "check_loop_state"]

_COUNTERS = ("stage_index", "epoch", "iteration", "global_step")


def _fail(source: Path, problem: str) -> CheckpointError:
    return CheckpointError(
        f"{source}: the resume state's loop position is impossible for this run ({problem}); "
        "it was edited or belongs to another run. Resume from another checkpoint or start a "
        "new --name"
    )


def check_loop_state(
    loop: dict[str, Any],
    source: Path,
    stages: Sequence[tuple[str, int]],
    records: Path | None = None,
) -> None:
    """Refuse a loop position the trainer of this run could not have saved.

    Args:
        loop: the ``loop`` mapping of a resume state (``LoopState`` fields).
        source: the checkpoint folder, for messages.
        stages: ``(logged name, epochs)`` of every stage of the run's config, in order.
        records: the run's ``metrics.jsonl``; skipped when ``None`` or absent.

    Raises:
        CheckpointError: a field of the wrong type or out of range, or no matching record.
    """
    for key in _COUNTERS:
        value = loop.get(key)
        if type(value) is not int or value < 0:
            raise _fail(source, f"loop.{key} = {value!r} is not an int >= 0")
    best = loop.get("best_value")
    if best is not None and (type(best) not in (int, float) or not math.isfinite(best)):
        raise _fail(source, f"loop.best_value = {best!r} is not a finite number or null")
    elapsed = loop.get("elapsed_s")  # absent or null in states saved before it was recorded
    if elapsed is not None and (
        type(elapsed) not in (int, float) or not math.isfinite(elapsed) or elapsed < 0
    ):
        raise _fail(source, f"loop.elapsed_s = {elapsed!r} is not a number >= 0 or null")
    index, epoch, iteration, step = (loop[k] for k in _COUNTERS)
    if index >= len(stages):
        raise _fail(source, f"loop.stage_index = {index}, but the run has {len(stages)} stage(s)")
    name, epochs = stages[index]
    if epoch > epochs or (epoch == epochs and iteration):
        raise _fail(
            source, f"stage {name!r} has {epochs} epoch(s), the state is at epoch {epoch} "
            f"iteration {iteration}"
        )  # fmt: skip
    least = sum(e for _, e in stages[:index]) + epoch + iteration
    if step < least:
        raise _fail(source, f"loop.global_step = {step} is below the {least} steps it implies")
    epoch_end = iteration == 0 and epoch >= 1
    if epoch_end and records is not None and records.is_file():  # noqa: SIM102
        if not _has_epoch_record(records, name, epoch - 1, step):
            raise _fail(
                source,
                f"{records} has no train record of stage {name!r}, epoch {epoch - 1}, step "
                f"{step}, which the trainer logs before saving that position",
            )


def _has_epoch_record(records: Path, name: str, epoch: int, step: int) -> bool:
    with records.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if f'"step": {step}' not in line:
                continue  # cheap filter; the record is parsed only when it may match
            try:
                record = loads_json(line, str(records))
            except ValueError:  # a line cut short by a kill, or nested too deeply
                continue
            if (
                isinstance(record, dict)
                and record.get("event") == "train"
                and record.get("stage") == name
                and record.get("epoch") == epoch
                and record.get("step") == step
            ):
                return True
    return False


def check_iteration(loop: dict[str, Any], source: Path, iters_per_epoch: int) -> None:
    """Refuse a mid-epoch position past the end of the epoch of the stage's data.

    Raises:
        CheckpointError: ``iteration >= iters_per_epoch``.
    """
    if loop["iteration"] >= iters_per_epoch:
        raise _fail(
            source,
            f"loop.iteration = {loop['iteration']}, but an epoch of this stage has "
            f"{iters_per_epoch} iteration(s)",
        )
