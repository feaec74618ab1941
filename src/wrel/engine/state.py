"""Resume state: nested stage state + loop position + RNG, as safetensors + JSON, atomically.

A resume checkpoint is a folder with ``tensors.safetensors`` (every tensor of the nested
state, keyed by its path), ``state.json`` (the rest of the structure, with tensor
placeholders) and ``manifest.json`` (size and SHA-256 of both, written last). A save writes a
temporary sibling ``.last.tmp-<pid>/``, then rotates by renames: the current ``last/`` becomes
``last.prev/`` (the previous good checkpoint, kept) and the new folder becomes ``last/``. A
kill or a write error at any point leaves ``last/`` or ``last.prev/`` complete. With
``keep_previous=False`` (``train.keep_previous_checkpoint``) the same rotation runs and
``last.prev/`` is deleted once the new ``last/`` is in place: one checkpoint on disk between
saves (two during a save), and no fallback for a ``last/`` damaged later.

:func:`load_resume_state` verifies the manifest; a missing, truncated or corrupt ``last/``
falls back to ``last.prev/`` with a warning, and every error names the file. Folders without a
manifest (written by wrel before checksums) load with a warning. Nothing is unpickled.

A stage end kept for runs that share the first stages (``stage-<i>/``, :func:`keep_stage_end`)
leaves out what only that stage's own steps read (:func:`finished_stage_state`);
:func:`remove_training_state` drops ``last`` and its siblings once a run has finished.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from wrel.core.bounded import MAX_CONFIG_BYTES, load_json
from wrel.core.outfiles import fsync_file
from wrel.engine.checkpoint import (
    CheckpointError,
    file_record,
    verify_files,
    write_errors,
)

__all__ = [
    "flatten_state",
    "unflatten_state",
    "save_resume_state",
    "load_resume_state",
    "read_resume_state",
    "find_resume_dir",
    "STEP_STATE_KEYS",
    "TRAINING_STATE_DIRS",
    "finished_stage_state",
    "complete_stage_state",
    "keep_stage_end",
    "remove_training_state",
    "link_tree",
    "stage_checkpoint_dir",
    "resume_candidates",
    "capture_rng",
    "restore_rng",
]

log = logging.getLogger(__name__)

_TENSORS = "tensors.safetensors"
_JSON = "state.json"
_MANIFEST = "manifest.json"
_MANIFEST_FORMAT = 1
#: Largest ``state.json`` read (the skeleton: tensors live in the safetensors file).
MAX_STATE_BYTES = 4 * MAX_CONFIG_BYTES
# A state skeleton nests deeper than a config: every dict adds {"__dict__": [[k, v]]}.
_STATE_DEPTH = 256


def flatten_state(obj: Any, prefix: str = "s") -> tuple[dict[str, Tensor], Any]:
    """Split a nested structure into ``{path: tensor}`` and a JSON-able skeleton.

    Dicts become ``{"__dict__": [[key, value], ...]}`` so non-string keys (optimizer state is
    keyed by int) survive JSON; tuples become ``{"__tuple__": [...]}``.
    """
    tensors: dict[str, Tensor] = {}

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, Tensor):
            tensors[path] = value.detach().to("cpu", copy=True).contiguous()
            return {"__tensor__": path}
        if isinstance(value, dict):
            return {"__dict__": [[k, walk(v, f"{path}.{k}")] for k, v in value.items()]}
        if isinstance(value, tuple):
            return {"__tuple__": [walk(v, f"{path}.{i}") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(value)]
        if value is None or isinstance(value, bool | int | float | str):
            return value
        raise TypeError(f"cannot store {type(value).__name__} at {path} in a resume state")

    return tensors, walk(obj, prefix)


def unflatten_state(skeleton: Any, tensors: dict[str, Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__dict__" in skeleton:
            return {k: unflatten_state(v, tensors) for k, v in skeleton["__dict__"]}
        if "__tuple__" in skeleton:
            return tuple(unflatten_state(v, tensors) for v in skeleton["__tuple__"])
        raise ValueError(f"malformed resume state node {sorted(skeleton)}")
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    return skeleton


def save_resume_state(
    directory: str | Path,
    state: dict[str, Any],
    *,
    current_is_damaged: bool = False,
    keep_previous: bool = True,
) -> Path:
    """Atomically (re)write the resume checkpoint folder ``directory``; keep one previous one.

    ``current_is_damaged``: the existing ``directory`` failed its checks (the run resumed from
    ``.prev``): it is moved to ``<name>.damaged`` instead of becoming the new ``.prev``.
    ``keep_previous=False``: ``<name>.prev`` is removed once the new folder is in place, so
    only the newest checkpoint stays (no fallback if it is damaged later).

    Raises:
        CheckpointWriteError: A full or read-only disk; ``directory`` and its ``.prev`` are left
            as they were and the temporary folder is removed.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    tensors, skeleton = flatten_state(state)
    with write_errors(directory):
        try:
            directory.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            save_file(tensors, str(tmp / _TENSORS))
            fsync_file(tmp / _TENSORS)
            _write_synced(tmp / _JSON, json.dumps(skeleton))
            manifest = {
                "format": _MANIFEST_FORMAT,
                "files": {name: file_record(tmp / name) for name in (_TENSORS, _JSON)},
            }
            _write_synced(tmp / _MANIFEST, json.dumps(manifest, indent=1))
            _fsync_dir(tmp)
            _rotate(tmp, directory, current_is_damaged, keep_previous)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already when the rotation finished
            raise
    return directory


def _rotate(
    new: Path, directory: Path, current_is_damaged: bool = False, keep_previous: bool = True
) -> None:
    """``directory`` -> ``directory.prev`` (if complete), then ``new`` -> ``directory``; without
    ``keep_previous`` the ``.prev`` folder is then dropped too.

    Every step is a rename; the folders being dropped are first renamed to
    ``.<name>.old-<pid>`` so that a kill never leaves a half-deleted checkpoint under a real name
    (:func:`wrel.engine.checkpoint.remove_stale_temps` clears them later). The new folder is in
    place before ``.prev`` is dropped, so a kill leaves ``directory`` or ``.prev`` complete.
    """
    prev = directory.with_name(f"{directory.name}.prev")
    trash: list[Path] = []
    if directory.exists():
        if current_is_damaged:
            damaged = directory.with_name(f"{directory.name}.damaged")
            if damaged.exists():
                trash.append(_move_aside(damaged))
            os.replace(directory, damaged)
            log.warning("moved the damaged checkpoint %s to %s", directory, damaged)
        elif _has_files(directory):
            if prev.exists():
                trash.append(_move_aside(prev))
            os.replace(directory, prev)
        else:  # an incomplete folder is never worth keeping as the fallback
            trash.append(_move_aside(directory))
    os.replace(new, directory)
    _fsync_dir(directory.parent)
    if not keep_previous and prev.exists():
        trash.append(_move_aside(prev))
        _fsync_dir(directory.parent)
    for path in trash:
        shutil.rmtree(path, ignore_errors=True)


def _move_aside(path: Path) -> Path:
    aside = path.with_name(f".{path.name}.old-{os.getpid()}")
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(path, aside)
    return aside


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def stage_checkpoint_dir(ckpt_dir: str | Path, stage_index: int) -> Path:
    """Where :func:`keep_stage_end` keeps the resume checkpoint of a stage's end."""
    return Path(ckpt_dir) / f"stage-{stage_index}"


#: Top-level keys of a stage's state that only its own training steps read (the network's
#: optimizer moments and learning-rate schedule): a finished stage's state leaves them out.
STEP_STATE_KEYS = ("optimizer", "scheduler")


def finished_stage_state(stage_state: dict[str, Any]) -> dict[str, Any]:
    """What the end of a finished stage must keep for the stages after it: its state without
    :data:`STEP_STATE_KEYS` (the next stage builds its own optimizer; the bank keeps its
    moments, which the joint stage continues)."""
    return {k: v for k, v in stage_state.items() if k not in STEP_STATE_KEYS}


def complete_stage_state(saved: dict[str, Any], fresh: dict[str, Any]) -> dict[str, Any]:
    """A finished stage's saved state (:func:`finished_stage_state`) with the keys it left out
    taken from ``fresh``, the state of the same stage just built (no step will use them)."""
    return {**{k: fresh[k] for k in STEP_STATE_KEYS if k in fresh and k not in saved}, **saved}


def keep_stage_end(ckpt_dir: str | Path, stage_index: int, state: dict[str, Any]) -> Path:
    """Write the resume state at the end of stage ``stage_index`` (``state["stage"]`` already
    trimmed by :func:`finished_stage_state`) as ``stage-<i>/``, for the runs that share this
    run's first stages (:mod:`wrel.engine.shared_prefix`); atomic, as every resume save."""
    target = stage_checkpoint_dir(ckpt_dir, stage_index)
    return save_resume_state(target, state, keep_previous=False)


#: Folders of ``checkpoints/`` that only resuming reads (``stage-<i>`` apart).
TRAINING_STATE_DIRS = ("last", "last.prev", "last.damaged")


def remove_training_state(ckpt_dir: str | Path, *, keep_stage_ends: bool = False) -> list[Path]:
    """Remove what only resuming reads from a finished run's ``checkpoints/``: ``last``,
    ``last.prev``, ``last.damaged`` and, unless ``keep_stage_ends``, the ``stage-<i>`` ends.

    Each folder is first renamed to a temporary (``.<name>.old-<pid>``), so a kill never
    leaves a half-deleted checkpoint under a real name. Returns the removed folders.
    """
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    names = [n for n in TRAINING_STATE_DIRS if (ckpt_dir / n).exists()]
    if not keep_stage_ends:
        names += sorted(
            p.name for p in ckpt_dir.glob("stage-*") if p.is_dir() and p.name[6:].isdigit()
        )
    removed = []
    for name in names:
        aside = _move_aside(ckpt_dir / name)
        removed.append(ckpt_dir / name)
        shutil.rmtree(aside, ignore_errors=True)
    if removed:
        _fsync_dir(ckpt_dir)
    return removed


def link_tree(source: str | Path, target: str | Path) -> None:
    """Copy the folder ``source`` to the new folder ``target`` by hard links where the file
    system allows (resume checkpoints are never rewritten in place: a save writes a new
    folder), by copies otherwise."""

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link_or_copy)


def _has_files(path: Path) -> bool:
    return (path / _JSON).is_file() and (path / _TENSORS).is_file()


def resume_candidates(directory: str | Path) -> list[Path]:
    """``[directory, directory.prev]``: the folders a resume may read, newest first."""
    directory = Path(directory)
    return [directory, directory.with_name(f"{directory.name}.prev")]


def find_resume_dir(directory: str | Path) -> Path | None:
    """The newest candidate holding the files of a checkpoint (not verified), else None."""
    for candidate in resume_candidates(directory):
        if _has_files(candidate):
            return candidate
    return None


def read_resume_state(directory: str | Path) -> tuple[dict[str, Any], Path]:
    """Read the newest usable resume checkpoint: ``directory``, else its ``.prev`` sibling.

    Returns:
        ``(state, folder it was read from)``; a fallback to ``.prev`` is logged as a warning.

    Raises:
        FileNotFoundError: Neither folder exists.
        CheckpointError: Every existing folder is incomplete or damaged (each one is named).
    """
    problems: list[str] = []
    for candidate in resume_candidates(directory):
        if not candidate.exists():
            continue
        try:
            state = _read_one(candidate)
        except CheckpointError as err:
            problems.append(str(err))
            log.warning("resume checkpoint unusable: %s", err)
            continue
        if problems:
            log.warning(
                "resuming from the previous checkpoint %s because the newer one is damaged",
                candidate,
            )
        return state, candidate
    if not problems:
        raise FileNotFoundError(
            f"no resume checkpoint in {directory}; start the run without --resume"
        )
    raise CheckpointError(
        f"no usable resume checkpoint in {Path(directory).parent}: "
        + "; ".join(problems)
        + f". Delete {Path(directory).parent} to restart the run from the beginning"
    )


def load_resume_state(directory: str | Path) -> dict[str, Any]:
    """Read a folder written by :func:`save_resume_state` (falls back to ``.prev``)."""
    return read_resume_state(directory)[0]


def _read_one(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    for name in (_JSON, _TENSORS):
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder / name} is missing (the checkpoint is incomplete)")
    manifest = folder / _MANIFEST
    if manifest.is_file():
        try:
            data = load_json(manifest, "resume manifest")
        except ValueError as err:
            raise CheckpointError(f"{err} (corrupt?)") from err
        files = data.get("files") if isinstance(data, dict) else None
        if not isinstance(files, dict) or set(files) != {_JSON, _TENSORS}:
            raise CheckpointError(f"{manifest} does not list {_JSON} and {_TENSORS} (corrupt?)")
        verify_files(folder, files, manifest)
    else:
        log.warning("%s has no %s (older wrel): its integrity is not checked", folder, _MANIFEST)
    try:
        tensors = load_file(str(folder / _TENSORS))
    except Exception as err:  # SafetensorError, OSError, ...
        raise CheckpointError(
            f"{folder / _TENSORS} is not a valid safetensors file (truncated or corrupt?): {err}"
        ) from err
    try:
        skeleton = load_json(
            folder / _JSON, "resume state", max_bytes=MAX_STATE_BYTES, max_depth=_STATE_DEPTH
        )
    except ValueError as err:
        raise CheckpointError(f"{err} (corrupt?)") from err
    try:
        state = unflatten_state(skeleton, tensors)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(
            f"{folder / _JSON} does not match {folder / _TENSORS} (corrupt?): {err!r}"
        ) from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{folder / _JSON} does not hold a resume state mapping")
    return state


def capture_rng() -> dict[str, Any]:
    """RNG states of torch (CPU and CUDA), numpy and ``random``."""
    np_state: Any = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": _to_lists(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"].to(torch.uint8))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in state["cuda"]])


def _to_lists(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_to_lists(v) for v in value]
    return value


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
