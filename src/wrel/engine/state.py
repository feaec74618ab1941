"""Resume state: nested stage state + loop position + RNG, as safetensors + JSON, atomically.

A resume checkpoint is a folder with ``tensors.safetensors`` (every tensor of the nested
state, keyed by its path) and ``state.json`` (the rest of the structure, with tensor
placeholders). It is written to a temporary sibling folder, then swapped in by renames, so a
kill during a write leaves the previous checkpoint readable: ``last/`` or, in the instant
between the two renames, ``last.prev/`` (which :func:`find_resume_dir` falls back to).
Nothing is unpickled when loading.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "flatten_state",
    "unflatten_state",
    "save_resume_state",
    "load_resume_state",
    "find_resume_dir",
    "capture_rng",
    "restore_rng",
]

_TENSORS = "tensors.safetensors"
_JSON = "state.json"


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


def save_resume_state(directory: str | Path, state: dict[str, Any]) -> Path:
    """Atomically (re)write the resume checkpoint folder ``directory``."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    prev = directory.with_name(f"{directory.name}.prev")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    tensors, skeleton = flatten_state(state)
    save_file(tensors, str(tmp / _TENSORS))
    (tmp / _JSON).write_text(json.dumps(skeleton))
    _fsync_dir(tmp)
    shutil.rmtree(prev, ignore_errors=True)
    if directory.exists():
        os.replace(directory, prev)
    os.replace(tmp, directory)
    _fsync_dir(directory.parent)
    shutil.rmtree(prev, ignore_errors=True)
    return directory


def find_resume_dir(directory: str | Path) -> Path | None:
    """``directory`` if complete, else its ``.prev`` sibling if complete, else None."""
    directory = Path(directory)
    for candidate in (directory, directory.with_name(f"{directory.name}.prev")):
        if (candidate / _JSON).is_file() and (candidate / _TENSORS).is_file():
            return candidate
    return None


def load_resume_state(directory: str | Path) -> dict[str, Any]:
    """Read a folder written by :func:`save_resume_state` (falls back to ``.prev``)."""
    from safetensors.torch import load_file

    found = find_resume_dir(directory)
    if found is None:
        raise FileNotFoundError(
            f"no resume checkpoint in {directory}; start the run without --resume"
        )
    tensors = load_file(str(found / _TENSORS))
    return unflatten_state(json.loads((found / _JSON).read_text()), tensors)


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
