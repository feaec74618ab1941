"""Start a run from another run's stage-end checkpoint when both share their first stages.

LRB-WREL variants of one seed (``lrb-paper``, ``lrb-words``, the ablations) begin with the same
teacher warm-up, and most with the same bank initialisation: the same config for those stages,
the same data, model and seed, so bitwise the same state at their end. A run trained with
``train.keep_stage_checkpoints`` keeps that state (``checkpoints/stage-<i>/``, the resume
checkpoint written at the end of stage ``i``). :func:`find_shared_prefix` finds, among the run
folders beside a new run, the one that kept the end of the longest prefix of stages the new run
shares with it (never the new run's last stage), and :func:`start_from_shared_prefix` lays the
new run's folder out as if it had been killed right after that stage: its own ``config.json``,
the kept checkpoint as ``checkpoints/last/`` (hard links), and the donor's ``metrics.jsonl`` and
``risk_trace.jsonl``, which the trainer's resume truncates to the checkpoint's step. Resuming is
exact (tests/engine/test_resume.py), so the run ends as it would have trained whole.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from wrel.core.bounded import load_json
from wrel.core.config_io import dumps, flatten, from_dict, to_dict
from wrel.engine.checkpoint import atomic_write_text
from wrel.engine.experiment import ExperimentConfig
from wrel.engine.state import find_resume_dir, link_tree, stage_checkpoint_dir
from wrel.methods.base import StageConfig

__all__ = ["STORAGE_KEYS", "find_shared_prefix", "start_from_shared_prefix"]

log = logging.getLogger(__name__)

#: Config keys (dotted) that do not change what a run computes: its name, where its files go,
#: display and storage. ``wrel bench``'s stale-record check ignores them too.
STORAGE_KEYS = frozenset(
    {
        "name",
        "train.output_dir",
        "train.progress",
        "train.log_every",
        "train.checkpoint_every",
        "train.keep_previous_checkpoint",
        "train.keep_stage_checkpoints",
        "train.keep_training_state",
        "train.tensorboard",
        "data.num_workers",
    }
)
#: Stage kinds that build or read the reference bank: a prefix with one must agree on ``bank``.
_BANK_KINDS = frozenset({"bank_init", "joint"})
_TRACE_FILES = ("metrics.jsonl", "risk_trace.jsonl")
#: The flattened defaults of every non-stage key (see :func:`_settings`).
_DEFAULT_SETTINGS = flatten(
    {
        k: v
        for k, v in json.loads(dumps(ExperimentConfig())).items()
        if k not in ("stages", "method")
    }
)


def _settings(config: dict[str, Any], *, with_bank: bool) -> dict[str, Any]:
    """Everything but the stages, the preset's name (the stages say what runs), storage keys
    and (unless ``with_bank``) the bank. A key added since the donor was trained reads as its
    default, which is what the donor ran (as for stages)."""
    flat = {
        **_DEFAULT_SETTINGS,
        **flatten({k: v for k, v in config.items() if k not in ("stages", "method")}),
    }
    return {
        k: v
        for k, v in flat.items()
        if k not in STORAGE_KEYS and (with_bank or not k.startswith("bank."))
    }


def _stage(value: Any) -> Any:
    """A saved stage config with this version's defaults filled in: a stage key added since the
    donor was trained reads as its default, which is what the donor ran (as is)."""
    if not isinstance(value, dict):
        return value
    try:
        return json.loads(json.dumps(to_dict(from_dict(StageConfig, value))))
    except (TypeError, ValueError):  # a key this version does not know: compared as saved
        return value


def _shared_stages(mine: dict[str, Any], other: dict[str, Any]) -> int:
    """How many first stages ``mine`` shares with ``other`` (at most all but ``mine``'s last)."""
    count = 0
    for a, b in zip(mine["stages"][:-1], other.get("stages") or [], strict=False):
        if _stage(a) != _stage(b):
            break
        count += 1
    while count:
        with_bank = any(s.get("kind") in _BANK_KINDS for s in mine["stages"][:count])
        if _settings(mine, with_bank=with_bank) == _settings(other, with_bank=with_bank):
            return count
        count -= 1
    return 0


def find_shared_prefix(cfg: Any, runs_dir: str | Path) -> tuple[Path, int] | None:
    """The run folder under ``runs_dir`` (other than ``cfg``'s) that kept the end of the
    longest first stages ``cfg`` shares with it, and how many stages; None when there is none.
    """

    mine = json.loads(dumps(cfg))
    best: tuple[Path, int] | None = None
    root = Path(runs_dir)
    if not root.is_dir():
        return None
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name != cfg.name):
        try:
            other = load_json(folder / "config.json", "run config")
        except (OSError, ValueError):
            continue
        count = _shared_stages(mine, other)
        while count:  # the longest shared prefix whose end this folder kept
            kept = stage_checkpoint_dir(folder / "checkpoints", count - 1)
            if find_resume_dir(kept) == kept:
                break
            count -= 1
        if count and (best is None or count > best[1]):
            best = (folder, count)
    return best


def start_from_shared_prefix(cfg: Any, runs_dir: str | Path) -> tuple[Path, int] | None:
    """Lay out ``cfg``'s new run folder to resume after the longest shared prefix of stages
    another run under ``runs_dir`` kept (see the module docstring). Returns ``(donor folder,
    number of stages taken)``, or None (nothing done) when no run shares a kept prefix or the
    run folder already exists."""

    run_dir = Path(runs_dir) / cfg.name
    if run_dir.exists():
        return None
    found = find_shared_prefix(cfg, runs_dir)
    if found is None:
        return None
    donor, count = found
    tmp = run_dir.with_name(f".{run_dir.name}.prefix-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "checkpoints").mkdir(parents=True)
    link_tree(stage_checkpoint_dir(donor / "checkpoints", count - 1), tmp / "checkpoints" / "last")
    for name in _TRACE_FILES:
        if (donor / name).is_file():
            shutil.copy2(donor / name, tmp / name)
    atomic_write_text(tmp / "config.json", dumps(cfg))
    tmp.rename(run_dir)
    log.info("%s starts after the first %d stage(s) of %s (shared prefix)", run_dir, count, donor)
    return donor, count
