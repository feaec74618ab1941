"""Optional TensorBoard logging (``train.tensorboard`` / ``wrel train --tensorboard``).

The trainer hands every ``metrics.jsonl`` record to :meth:`TensorBoardLog.write`, which writes
its numbers as scalars under ``<run>/tensorboard`` with the record's global step as x: a train
line as ``train/<key>`` (losses, learning rates), a val evaluation as ``val/<metric>``
(``val/mIoU``, ``val/oIoU``, ``val/Prec@0.5``, ..., ``val/class_name/mIoU`` with class-name
traces), the leakage monitor (:mod:`wrel.engine.leakage`) as ``leakage/<key>``. Nested numbers
become ``/``-joined tags; strings, lists and the step itself are left out. A resumed run
purges the events after the step it resumes from, as the trainer truncates metrics.jsonl.

The ``tensorboard`` package is an optional extra (``pip install 'wrel[tensorboard]'``);
:func:`require_tensorboard` refuses the option in one line when it is missing.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

__all__ = ["TensorBoardLog", "require_tensorboard", "scalars_of"]

#: Record keys that are coordinates or labels, not curves.
_SKIPPED = frozenset({"event", "stage", "step", "time"})


def require_tensorboard() -> None:
    """Raise a one-line ``ValueError`` with the fix when the tensorboard package is missing."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ValueError(
            "train.tensorboard (--tensorboard) needs the tensorboard package, which is not "
            "installed: pip install 'wrel[tensorboard]' (or pip install tensorboard), or drop "
            "the option (metrics.jsonl holds the same numbers)"
        )


def scalars_of(record: dict[str, Any]) -> dict[str, float]:
    """``{tag: value}`` of a metrics.jsonl record (see the module docstring)."""
    event = str(record.get("event") or "log")
    out: dict[str, float] = {}

    def walk(value: Any, tag: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{tag}/{key}")
        elif (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(float(value))
        ):
            out[tag] = float(value)

    for key, value in record.items():
        if key not in _SKIPPED:
            walk(value, f"{event}/{key}")
    return out


class TensorBoardLog:
    """Scalars of metrics.jsonl records as TensorBoard event files in ``log_dir``.

    Args:
        log_dir: the event files' folder (``<run>/tensorboard``).
        purge_step: on resume, the step resumed from: events after it are dropped.
    """

    def __init__(self, log_dir: str | Path, purge_step: int | None = None) -> None:
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def write(self, record: dict[str, Any]) -> None:
        """Log the numbers of one record at its ``step`` (records without a step are skipped)."""
        step = record.get("step")
        if not isinstance(step, int) or isinstance(step, bool):
            return
        for tag, value in scalars_of(record).items():
            self.writer.add_scalar(tag, value, global_step=step)
        if record.get("event") in ("val", "leakage"):
            self.writer.flush()  # the curves a user follows appear without waiting

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()
