"""Safe, strict, atomic checkpoints: safetensors weights + JSON config, never pickle.

An exported model folder holds::

    model.safetensors     every parameter and buffer of the RefSegModel
    config.json           {"format_version", "model": ModelConfig, "metadata": {...}}
    text_encoder/         tokenizer + Hugging Face config (the folder is self-contained)
    MODEL_CARD.md         a short human-readable summary

:func:`load_model` rebuilds the model from ``config.json`` without pretrained files (the
backbone package and the text model folder are not needed) and loads the weights strictly.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from wrel.models import RefSegModel

__all__ = [
    "FORMAT_VERSION",
    "atomic_write_text",
    "save_tensors",
    "load_tensors",
    "save_model",
    "load_model",
    "software_versions",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "MODEL_CARD.md"
TEXT_DIR = "text_encoder"


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(cpu, tmp, metadata=metadata)
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
        raise ValueError(
            f"{path} is not a valid safetensors file (truncated or corrupt?): {err}"
        ) from err


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


def _model_card(model: nn.Module, config: dict[str, Any], metadata: dict[str, Any]) -> str:
    total = sum(p.numel() for p in model.parameters())
    lines = [
        "# wrel referring segmentation model",
        "",
        f"- Backbone: `{config['backbone']['name']}`; text encoder: `{config['text']['name']}` "
        f"(max {config['text']['max_length']} tokens); {total / 1e6:.2f} M parameters.",
        "- Input: RGB image, ImageNet-normalised, any size; a referring expression.",
        "- Output: 2-class logits (channel 1 = referred object) at the input resolution.",
    ]
    for key in ("dataset", "method"):
        if key in metadata:
            lines.append(f"- {key.capitalize()}: {metadata[key]}")
    if metadata.get("metrics"):
        protocol = metadata.get("protocol", "unspecified protocol")
        lines += ["", f"## Metrics ({protocol})", "", "| metric | value |", "|---|---|"]
        for name, value in metadata["metrics"].items():
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            lines.append(f"| {name} | {shown} |")
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from wrel.engine.checkpoint import load_model",
        "model, metadata = load_model('<this folder>')",
        "```",
        "",
        "Software: " + ", ".join(f"{k} {v}" for k, v in metadata.get("software", {}).items()) + ".",
    ]
    return "\n".join(lines) + "\n"


def save_model(directory: str | Path, model: RefSegModel, metadata: dict[str, Any]) -> Path:
    """Export ``model`` (a RefSegModel built by ``build_model``) into ``directory``, atomically.

    ``metadata`` should name the data set, method, metrics and the protocol they were measured
    with; software versions are added. An existing ``directory`` is replaced only after the new
    folder is complete.
    """
    from wrel.config import to_dict

    config = getattr(model, "config", None)
    if config is None:
        raise ValueError("the model has no .config; build it with wrel.models.build_model")
    directory = Path(directory)
    meta = {**metadata, "software": software_versions()}
    model_cfg = to_dict(config)
    try:
        payload = json.dumps(
            {"format_version": FORMAT_VERSION, "model": model_cfg, "metadata": meta}, indent=2
        )
    except TypeError as err:
        raise ValueError(f"metadata must be JSON-serialisable: {err}") from err
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.tmp"))
    try:
        save_tensors(tmp / WEIGHTS_FILE, dict(model.state_dict()), {"format": "pt"})
        model.text_encoder.save(tmp / TEXT_DIR)
        atomic_write_text(tmp / CONFIG_FILE, payload)
        atomic_write_text(tmp / CARD_FILE, _model_card(model, model_cfg, meta))
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
    old = target.with_name(f".{target.name}.old.{os.getpid()}")
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
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data, dict) or "model" not in data:
        raise ValueError(f"{path} lacks the 'model' section of a wrel checkpoint config")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path}: checkpoint format_version {version!r} is not supported "
            f"(this wrel reads {FORMAT_VERSION})"
        )
    return data


def load_model(
    directory: str | Path, device: str | torch.device = "cpu"
) -> tuple[RefSegModel, dict[str, Any]]:
    """Rebuild and strictly load a model saved by :func:`save_model`.

    Returns:
        ``(model, metadata)``; the model is in eval mode on ``device``.

    Raises:
        FileNotFoundError: Missing folder or files.
        ValueError: Corrupt files, or weights that do not match the config exactly.
    """
    from wrel.config import from_dict
    from wrel.models import ModelConfig, build_model

    directory = Path(directory)
    data = _read_config(directory / CONFIG_FILE)
    cfg = from_dict(ModelConfig, data["model"], where="model")
    cfg.backbone.pretrained, cfg.backbone.checkpoint_path = False, None
    cfg.text.pretrained, cfg.text.path = False, str(directory / TEXT_DIR)
    model = build_model(cfg)
    weights_path = directory / WEIGHTS_FILE
    tensors = load_tensors(weights_path)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(
            f"{weights_path} does not match {directory / CONFIG_FILE}: "
            f"missing keys {missing[:10]}, unexpected keys {unexpected[:10]}, wrong shapes "
            f"{[(k, tuple(tensors[k].shape), tuple(expected[k].shape)) for k in wrong[:10]]} "
            f"(up to 10 each; {len(missing)}/{len(unexpected)}/{len(wrong)} in all)"
        )
    model.load_state_dict(tensors, strict=True)
    model.config = from_dict(ModelConfig, data["model"], where="model")
    return model.to(device).eval(), dict(data.get("metadata", {}))
