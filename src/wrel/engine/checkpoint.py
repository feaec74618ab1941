"""Safe, strict, atomic checkpoints: safetensors weights + JSON config, never pickle.

An exported model folder holds::

    model.safetensors     every parameter and buffer of the RefSegModel
    config.json           {"format_version", "model": ModelConfig, "metadata": {...},
                           "files": {relative path: {"sha256", "bytes"}},
                           "config_sha256": SHA-256 of the rest of this document}
    text_encoder/         tokenizer + Hugging Face config (the folder is self-contained)
    MODEL_CARD.md         a human-readable summary generated from config.json (not in "files")

Weights only: no optimizer, bank, EMA teacher or loop state (those live in the trainer's
resume checkpoints, :mod:`wrel.engine.state`). :func:`update_model_metadata` adds metadata to
an exported folder (the trainer adds the test metrics) and regenerates the card; it rewrites
only ``config.json`` and ``MODEL_CARD.md``, so the recorded SHA-256s stay valid.

:func:`load_model` checks, before building anything, that ``config.json`` matches its own
``config_sha256`` (so the metadata, like the weights, is covered by a checksum), that its
preprocessing metadata is valid (``image_size`` ints within
:data:`~wrel.data.preprocessing.MAX_INPUT_SIDE`, ``image_mean`` / ``image_std`` finite, std
> 0), that every file listed in ``files`` has
its recorded SHA-256 and that the tensor shapes in the safetensors header are the shapes the
config implies (the config's model is built on the ``meta`` device, which allocates nothing);
it then rebuilds the model from ``config.json`` without pretrained files (the backbone package
and the text model folder are not needed), refuses non-finite weights, and loads strictly.

Write failures (a full or read-only disk) raise :class:`CheckpointWriteError` naming the
folder; the temporary files are removed and the previous checkpoint is left as it was. A
damaged file raises :class:`CheckpointError` (a ``ValueError``) naming it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from wrel.core.bounded import load_json
from wrel.core.config_io import from_dict, to_dict
from wrel.core.errors import os_error_in
from wrel.core.outfiles import fsync_file
from wrel.core.paths import require_folder
from wrel.data.image_reading import ImageScaling
from wrel.data.preprocessing import DEFAULT_IMAGE_SIZE, MAX_INPUT_SIDE, Preprocessing
from wrel.models import ModelConfig, build_model

if TYPE_CHECKING:
    from wrel.models import RefSegModel

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "CheckpointWriteError",
    "sha256_file",
    "write_errors",
    "remove_stale_temps",
    "checkpoint_temps",
    "writer_alive",
    "atomic_write_text",
    "save_tensors",
    "load_tensors",
    "save_model",
    "load_model",
    "update_model_metadata",
    "model_card",
    "software_versions",
    "config_seal",
    "SEAL_KEY",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "MODEL_CARD.md"
TEXT_DIR = "text_encoder"
#: ``config.json`` key holding the SHA-256 of the rest of the document (model, metadata and
#: the ``files`` manifest), so the metadata is covered like the weights.
SEAL_KEY = "config_sha256"
_HASH_CHUNK = 1 << 20


class CheckpointError(ValueError):
    """A checkpoint file is missing a part, truncated, corrupt or inconsistent (names the file)."""


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed (full or read-only disk, ...); the previous one is intact.

    ``errno`` is the underlying error number; ``str()`` names the folder and the error text.
    """

    exit_code = 1  # wrel.cli: a runtime fault, not a bad argument

    def __init__(self, target: Path, err: OSError) -> None:
        reason = err.strerror or str(err) or type(err).__name__
        if err.errno is not None and not err.strerror:
            reason = f"{reason} ({errno.errorcode.get(err.errno, err.errno)})"
        super().__init__(err.errno, reason)
        self.target = Path(target)
        self.original = err
        if err.errno in (errno.ENOTDIR, errno.EEXIST):  # a file where a folder must be
            self.exit_code = 2  # bad input: the output folder given
            self.message = (
                f"cannot write checkpoint {self.target}: a part of that path is a file, not a "
                f"folder ({reason}); give a folder (train.output_dir / --output-dir)"
            )
            return
        self.message = (
            f"cannot write checkpoint {self.target}: {reason}; the previous checkpoint (if "
            "any) was left intact. Free disk space or make the folder writable, then retry (a "
            "training run continues with --resume)"
        )

    def __str__(self) -> str:
        return self.message


@contextlib.contextmanager
def write_errors(target: str | Path) -> Iterator[None]:
    """Turn an ``OSError`` raised while writing ``target`` into :class:`CheckpointWriteError`."""
    try:
        yield
    except CheckpointWriteError as err:  # from a nested writer: name the outer target
        if err.target == Path(target):
            raise
        raise CheckpointWriteError(Path(target), err.original) from err.original
    except OSError as err:
        raise CheckpointWriteError(Path(target), err) from err
    except Exception as err:  # a library's own type, e.g. safetensors' on a full disk
        os_error = os_error_in(err)
        if os_error is None:
            raise
        raise CheckpointWriteError(Path(target), os_error) from err


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_record(path: Path) -> dict[str, Any]:
    """``{"sha256", "bytes"}`` of one file, as stored in checkpoint manifests."""
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def config_seal(document: dict[str, Any]) -> str:
    """SHA-256 of a checkpoint ``config.json`` document without its :data:`SEAL_KEY` (canonical
    JSON: sorted keys, no spaces), so any edit of the model, metadata or manifest shows."""
    body = {k: v for k, v in document.items() if k != SEAL_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _check_seal(data: dict[str, Any], path: Path) -> None:
    """Refuse a ``config.json`` edited after export (exports without a seal get a warning)."""
    recorded = data.get(SEAL_KEY)
    if recorded is None:
        if "files" in data:
            logger.warning(
                "%s carries no %s (written by an older wrel): its metadata is validated but "
                "not checksummed",
                path,
                SEAL_KEY,
            )
        return
    if recorded != config_seal(data):
        raise CheckpointError(
            f"{path} was edited after export: its {SEAL_KEY} does not match its content "
            "(model, metadata or file manifest); restore the model folder from its source or "
            "re-export it"
        )


def _check_metadata(data: dict[str, Any], path: Path) -> None:
    """Validate the preprocessing metadata and input size before anything is allocated."""
    meta = data.get("metadata", {})
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: 'metadata' must be a mapping, got {type(meta).__name__}")
    try:
        Preprocessing.from_metadata(meta)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: {err}") from err
    size = data["model"].get("input_size")
    if size is not None and (type(size) is not int or not 1 <= size <= MAX_INPUT_SIDE):
        raise CheckpointError(
            f"{path}: model.input_size = {size!r} must be null or an int in [1, {MAX_INPUT_SIDE}]"
        )


def verify_files(root: Path, files: Any, manifest: Path) -> None:
    """Check each ``{relative path: {"sha256", "bytes"}}`` entry of ``manifest`` under ``root``.

    Raises:
        CheckpointError: A malformed entry, a missing file, or a size / SHA-256 mismatch.
    """
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, dict) and isinstance(v.get("sha256"), str)
        for k, v in files.items()
    ):
        raise CheckpointError(f"{manifest}: malformed 'files' manifest (corrupt?)")
    for rel, record in files.items():
        path = root / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise CheckpointError(f"{manifest}: file entry {rel!r} leaves the checkpoint folder")
        if not path.is_file():
            raise CheckpointError(
                f"{path} is missing (listed in {manifest}); the checkpoint is incomplete"
            )
        size = path.stat().st_size
        if isinstance(record.get("bytes"), int) and size != record["bytes"]:
            raise CheckpointError(
                f"{path} has {size} bytes but {manifest} records {record['bytes']} "
                "(truncated or replaced?)"
            )
        digest = sha256_file(path)
        if digest != record["sha256"]:
            raise CheckpointError(
                f"{path} is corrupt: its SHA-256 {digest[:16]}... differs from the "
                f"{record['sha256'][:16]}... recorded in {manifest}"
            )


def writer_alive(pid: int) -> bool:
    """Whether the writer ``pid`` of a temporary may still run on this host.

    This process counts as not running: call it only while this process writes nothing there.
    """
    if pid == os.getpid():
        return False  # callers clean before this process writes anything
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but owned by another user (or cannot tell): keep its files
    return True


_TEMP_NAME = re.compile(r"^\..+\.(?:tmp|old)-(\d+)(?:-.*)?$")


def checkpoint_temps(folder: str | Path) -> list[tuple[Path, int]]:
    """``(path, writer pid)`` of the temporaries in ``folder`` (``.<name>.tmp-<pid>[-...]`` or
    ``.<name>.old-<pid>``, as every writer of this module names them)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for entry in sorted(folder.iterdir()):
        match = _TEMP_NAME.match(entry.name)
        if match is not None:
            found.append((entry, int(match.group(1))))
    return found


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Remove the temporaries of checkpoint writers that no longer run; return their paths.

    An entry of :func:`checkpoint_temps` whose process is gone, or is this process (call this
    only while this process writes nothing there), is removed; those of live processes are kept.
    """
    removed: list[Path] = []
    for entry, pid in checkpoint_temps(folder):
        if writer_alive(pid):
            continue
        with write_errors(entry):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        removed.append(entry)
        logger.warning("removed %s, left behind by an interrupted checkpoint write", entry)
    return removed


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    with write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.tmp-{os.getpid()}-", suffix=".tmp"
        )
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return path


def save_tensors(
    path: str | Path, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None
) -> Path:
    """Write ``tensors`` as safetensors atomically (temporary file, then rename).

    Tensors are copied to CPU and made contiguous; shared storage is allowed.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if metadata is not None and not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise ValueError("safetensors metadata must map str to str; json.dumps other values")
    cpu = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
    with write_errors(path):
        fd, tmp = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.tmp-{os.getpid()}-", suffix=".tmp"
        )
        os.close(fd)
        try:
            save_file(cpu, tmp, metadata=metadata)
            fsync_file(Path(tmp))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return path


def load_tensors(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Read a safetensors file; a missing, truncated or corrupt file raises a clear error."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return load_file(str(path), device=str(device))
    except Exception as err:  # safetensors raises SafetensorError / OSError / ValueError
        raise CheckpointError(
            f"{path} is not a valid safetensors file (truncated or corrupt?): {err}"
        ) from err


def read_header_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from a safetensors header, without reading any tensor data."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}  # noqa: SIM118
    except Exception as err:  # SafetensorError and friends
        raise CheckpointError(
            f"{path} is not a valid safetensors file (truncated or corrupt?): {err}"
        ) from err


def first_non_finite(tensors: dict[str, Tensor]) -> str | None:
    """Name of the first floating-point tensor holding a NaN or an infinity, else None."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def software_versions() -> dict[str, str]:
    """Versions of the software that produced a checkpoint."""
    import importlib.metadata as md

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for package in ("wrel", "timm", "transformers", "safetensors"):
        try:
            out[package] = md.version(package)
        except md.PackageNotFoundError:
            out[package] = "not installed"
    return out


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _scalar_metrics(metrics: Any) -> dict[str, Any]:
    """The numeric entries of a metrics dict (per-category tables and lists left out)."""
    if not isinstance(metrics, dict):
        return {}
    return {
        k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }


def _data_lines(dataset: Any) -> list[str]:
    if not isinstance(dataset, dict):
        return [f"- Data set: {dataset}"]
    name = dataset.get("name") or "not recorded"
    root = f" (root `{dataset['root']}`)" if dataset.get("root") else ""
    lines = [f"- Data set: `{name}`{root}."]
    split_file = dataset.get("split_file")
    source = dataset.get("ratio_source")
    if split_file:
        lines.append(f"- Split: the weak split of the split file `{split_file}`.")
    elif source == "files" or (source is None and dataset.get("accurate_ratio") is None):
        lines.append("- Split: the annotation files' own accurate / weak marks.")
    else:
        seed = dataset.get("split_seed")
        seeded = f", split seed {seed}" if seed is not None else ""
        lines.append(
            f"- Split: accurate ratio {dataset.get('accurate_ratio')} of the train expressions "
            f"(`data.accurate_ratio`{seeded}); the other train samples see their class name."
        )
    if dataset.get("num_train") is not None:
        share = dataset.get("train_accurate_ratio")
        lines.append(
            f"- Train samples: {dataset['num_train']} ({dataset.get('num_accurate')} accurate, "
            f"{dataset.get('num_weak')} weak; accurate share {share})."
        )
    return lines


def _preprocessing_lines(metadata: dict[str, Any]) -> list[str]:
    size = metadata.get("image_size")
    if isinstance(size, list | tuple) and len(size) == 2:
        shown = f"{size[0]} x {size[1]} pixels"
    else:
        shown = (
            f"not recorded (the predictor uses {DEFAULT_IMAGE_SIZE} x {DEFAULT_IMAGE_SIZE})"
            if size is None
            else f"{size} px"
        )
    lines = [f"- Input size: {shown}; images are resized to it by stretching."]
    spec = metadata.get("image_scaling")
    if spec is None:
        lines.append(
            "- Image scaling: not recorded (older wrel): 8-bit images as they are, other data "
            "stretched per band between the 2nd and 98th percentiles."
        )
    else:
        try:
            described = ImageScaling.from_dict(spec).describe()
        except ValueError:
            described = json.dumps(spec)
        lines.append(
            f"- Image scaling (`image_scaling`): {described}; `wrel predict`, `wrel serve` and "
            "`wrel eval` apply it."
        )
    if "image_mean" in metadata or "image_std" in metadata:
        lines.append(
            f"- Normalisation: mean {metadata.get('image_mean')}, std {metadata.get('image_std')}."
        )
    else:
        lines.append("- Normalisation: ImageNet mean and std.")
    return lines


def _metric_lines(metadata: dict[str, Any]) -> list[str]:
    protocol = metadata.get("protocol", "unspecified protocol")
    columns = {
        name: _scalar_metrics(metadata.get(name))
        for name in ("val", "test", "metrics")
        if _scalar_metrics(metadata.get(name))
    }
    lines = ["", f"## Metrics (protocol `{protocol}`)", ""]
    if "stage" in metadata or "val" in metadata:
        select = ((metadata.get("experiment") or {}).get("train") or {}).get("select_metric")
        if metadata.get("val"):
            lines.append(
                f"Checkpoint chosen on val {f'`{select}` ' if select else ''}at stage "
                f"`{metadata.get('stage')}`, epoch {metadata.get('epoch')}, step "
                f"{metadata.get('step')}."
            )
        else:
            lines.append("Not scored on val (no val split or no evaluation): the final student.")
        if "test" not in columns:
            lines.append("Test metrics: not recorded.")
        lines.append("")
    if not columns:
        return lines + ["No metrics recorded."]
    names = list(dict.fromkeys(k for values in columns.values() for k in values))
    lines += [
        "| metric | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for name in names:
        cells = [_number(values[name]) if name in values else "" for values in columns.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def model_card(config: dict[str, Any], metadata: dict[str, Any]) -> str:
    """``MODEL_CARD.md`` of a model folder from its ``config.json`` parts (model config and
    metadata): architecture, method, data set and split, preprocessing, val / test metrics."""
    count = metadata.get("num_parameters")
    params = f"; {count / 1e6:.2f} M parameters" if isinstance(count, int) else ""
    backbone = (config.get("backbone") or {}).get("name")
    text = config.get("text") or {}
    lines = [
        "# wrel referring segmentation model",
        "",
        f"- Backbone: `{backbone}`; text encoder: `{text.get('name')}` "
        f"(max {text.get('max_length')} tokens){params}.",
    ]
    if "method" in metadata:
        lines.append(f"- Method: `{metadata['method']}`.")
    lines += [
        "- Input: an image and a referring expression; output: 2-class logits (channel 1 = "
        "the referred object) at the input resolution.",
        "- Files: `model.safetensors` holds the weights only (no optimizer, bank or teacher "
        "state); `config.json` holds the facts of this card and the SHA-256 of the weights "
        "and text encoder files.",
    ]
    if "dataset" in metadata:
        lines += ["", "## Data", "", *_data_lines(metadata["dataset"])]
    lines += ["", "## Preprocessing", "", *_preprocessing_lines(metadata)]
    lines += _metric_lines(metadata)
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from wrel.inference import Predictor",
        "predictor = Predictor.from_checkpoint('<this folder>')",
        "mask = predictor.predict('scene.tif', 'the white ship at the top left')",
        "```",
        "",
        "Software: " + ", ".join(f"{k} {v}" for k, v in metadata.get("software", {}).items()) + ".",
    ]
    return "\n".join(lines) + "\n"


def update_model_metadata(directory: str | Path, updates: dict[str, Any]) -> dict[str, Any]:
    """Merge ``updates`` into the metadata of the model folder ``directory``; rewrite its card.

    ``config.json`` then ``MODEL_CARD.md`` are each replaced atomically (temporary file, fsync,
    rename). The weights and text encoder files are not touched, so the SHA-256 records in
    ``config.json`` stay valid (the card is not among them). Returns the new metadata.

    Raises:
        FileNotFoundError / CheckpointError: not a model folder written by :func:`save_model`.
        ValueError: ``updates`` is not JSON-serialisable.
        CheckpointWriteError: the disk is full or read-only; the previous files are intact.
    """
    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    data = _read_config(config_path)
    _check_seal(data, config_path)  # never re-seal an edited config
    meta = {**(data.get("metadata") or {}), **updates}
    data["metadata"] = meta
    try:
        if SEAL_KEY in data:
            data[SEAL_KEY] = config_seal(data)
        text = json.dumps(data, indent=2)
    except TypeError as err:
        raise ValueError(f"metadata must be JSON-serialisable: {err}") from err
    with write_errors(directory):
        atomic_write_text(config_path, text)
        atomic_write_text(directory / CARD_FILE, model_card(data["model"], meta))
    return meta


def save_model(directory: str | Path, model: RefSegModel, metadata: dict[str, Any]) -> Path:
    """Export ``model`` (a RefSegModel built by ``build_model``) into ``directory``, atomically.

    Only the weights are saved (every parameter and buffer; no optimizer or training state).
    ``metadata`` should name the data set, method, metrics (``val`` / ``test`` or ``metrics``)
    and the protocol they were measured with, and the preprocessing (``image_size``,
    ``image_scaling``); the parameter count and software versions are added. An existing ``directory`` is replaced only after the new
    folder is complete. ``config.json`` records the SHA-256 of every other file it needs.

    Raises:
        CheckpointWriteError: The disk is full or read-only; ``directory`` is left as it was.
    """

    config = getattr(model, "config", None)
    if config is None:
        raise ValueError("the model has no .config; build it with wrel.models.build_model")
    directory = Path(directory)
    num_parameters = sum(p.numel() for p in model.parameters())
    meta = {**metadata, "num_parameters": num_parameters, "software": software_versions()}
    model_cfg = to_dict(config)
    document = {"format_version": FORMAT_VERSION, "model": model_cfg, "metadata": meta}
    try:
        json.dumps(document)
    except TypeError as err:
        raise ValueError(f"metadata must be JSON-serialisable: {err}") from err
    with write_errors(directory):
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(
            tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.tmp-{os.getpid()}-")
        )
        try:
            save_tensors(tmp / WEIGHTS_FILE, dict(model.state_dict()), {"format": "pt"})
            model.text_encoder.save(tmp / TEXT_DIR)
            atomic_write_text(tmp / CARD_FILE, model_card(model_cfg, meta))
            files = sorted(
                p.relative_to(tmp).as_posix()
                for p in tmp.rglob("*")
                if p.is_file() and p.name != CARD_FILE
            )
            document["files"] = {rel: file_record(tmp / rel) for rel in files}
            document[SEAL_KEY] = config_seal(document)
            atomic_write_text(tmp / CONFIG_FILE, json.dumps(document, indent=2))
            _replace_dir(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    logger.info("saved model to %s", directory)
    return directory


def _replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``; an existing ``target`` is kept aside until the swap is done."""
    if not target.exists():
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; a model folder is written by wrel.engine.checkpoint.save_model"
        )
    try:
        data = load_json(path, "checkpoint config")
    except ValueError as err:
        raise CheckpointError(str(err)) from err
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise CheckpointError(f"{path} lacks the 'model' section of a wrel checkpoint config")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format_version {version!r} is not supported "
            f"(this wrel reads {FORMAT_VERSION})"
        )
    return data


def _build_from_config(cfg: Any, config_path: Path, *, meta: bool) -> RefSegModel:
    """``build_model(cfg)``; on the meta device (no memory) when ``meta``; errors name the file."""

    try:
        if meta:
            with torch.device("meta"):
                return build_model(cfg)
        return build_model(cfg)
    except (ValueError, TypeError, RuntimeError) as err:
        raise CheckpointError(f"{config_path}: cannot build the model it describes: {err}") from err


def _shape_problems(
    expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]]
) -> str | None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    if not (missing or unexpected or wrong):
        return None
    return (
        f"missing keys {missing[:10]}, unexpected keys {unexpected[:10]}, wrong shapes "
        f"{[(k, found[k], expected[k]) for k in wrong[:10]]} as (name, file, config) "
        f"(up to 10 each; {len(missing)}/{len(unexpected)}/{len(wrong)} in all)"
    )


def load_model(
    directory: str | Path, device: str | torch.device = "cpu"
) -> tuple[RefSegModel, dict[str, Any]]:
    """Rebuild and strictly load a model saved by :func:`save_model`.

    Order: ``config.json``; the text encoder folder; the SHA-256 of every file it lists; the
    safetensors header against the shapes of the config's model built on the ``meta`` device
    (nothing is allocated for a config that does not match its weights); then the real build,
    the weights (refused when any is NaN/inf) and a strict ``load_state_dict``.

    Returns:
        ``(model, metadata)``; the model is in eval mode on ``device``.

    Raises:
        FileNotFoundError: Missing folder, config or text encoder folder.
        NotADirectoryError: ``directory`` is a file.
        CheckpointError: (a ``ValueError``) corrupt files, a SHA-256 mismatch, weights that do
            not match the config exactly, or non-finite weights.
    """

    directory = require_folder(
        directory,
        "checkpoint folder",
        f"it holds {CONFIG_FILE} and the weights, as training writes them "
        "(runs/<name>/checkpoints/best) or save_model",
    )
    config_path = directory / CONFIG_FILE
    data = _read_config(config_path)
    _check_seal(data, config_path)
    _check_metadata(data, config_path)
    text_dir = directory / TEXT_DIR
    if not (text_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"{directory} lacks its text encoder folder {text_dir} (tokenizer + config.json, "
            "written by save_model); copy the whole model folder, not only its files"
        )
    if "files" in data:  # exports of older wrel versions carry no checksums
        verify_files(directory, data["files"], config_path)
    try:
        cfg = from_dict(ModelConfig, data["model"], where="model")
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{config_path}: {err}") from err
    cfg.backbone.pretrained, cfg.backbone.checkpoint_path = False, None
    cfg.text.pretrained, cfg.text.path = False, str(text_dir)
    weights_path = directory / WEIGHTS_FILE
    found = read_header_shapes(weights_path)
    skeleton = _build_from_config(cfg, config_path, meta=True)
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    del skeleton
    problems = _shape_problems(expected, found)
    if problems:
        raise CheckpointError(
            f"{weights_path} does not match {config_path} (refused before building the model): "
            f"{problems}"
        )
    tensors = load_tensors(weights_path)
    bad = first_non_finite(tensors)
    if bad is not None:
        raise CheckpointError(
            f"{weights_path}: tensor {bad!r} holds NaN or infinite values; this model cannot "
            "predict anything (a diverged run?). Use another checkpoint"
        )
    model = _build_from_config(cfg, config_path, meta=False)
    model.load_state_dict(tensors, strict=True)
    model.config = from_dict(ModelConfig, data["model"], where="model")  # checked above
    return model.to(device).eval(), dict(data.get("metadata", {}))
