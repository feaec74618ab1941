"""Weights from outside wrel into the rmsin model, strictly: the released segmenter layout, the
authors' RMSIN / LRB-WREL checkpoints (segmenter + BERT) and Swin-B ImageNet weights.

Key map, released segmenter -> this model: **every released name is kept**, except
``backbone.layers.{i}.blocks.{j}.attn.relative_position_index`` (int64, one per Swin block),
which this model derives from the window size instead of storing (timm's window attention
holds it as a non-persistent buffer); a released file's copy must equal the derived one. Any
other missing, unexpected or mis-shaped key is an error that names it. Checkpoints wrapped by
DistributedDataParallel (keys starting ``module.``) are unwrapped first.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor, nn

from wrel.models.weights import read_state_dict

__all__ = [
    "DERIVED_KEY_SUFFIX",
    "released_key_map",
    "load_released_segmenter",
    "read_released_checkpoint",
    "load_released_bert",
    "load_swin_weights",
]

#: Released keys that this model derives instead of storing (see the module docstring).
DERIVED_KEY_SUFFIX = ".attn.relative_position_index"
#: Size bound of an authors' checkpoint file (segmenter + BERT + optimizer states: ~3 GiB).
MAX_CHECKPOINT_BYTES = 16 * 2**30
#: Top-level modules of the segmenter in a released state dict.
SEGMENTER_PREFIXES = ("backbone.", "classifier.")
#: Keys a checkpoint may hold that the segmenter / BERT ignores by construction.
_BERT_IGNORED = ("pooler.", "embeddings.position_ids", "embeddings.token_type_ids")


def released_key_map(key: str) -> str | None:
    """Released segmenter key -> this model's key; None for a derived buffer."""
    return None if key.endswith(DERIVED_KEY_SUFFIX) else key


def _unwrap(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k.removeprefix("module."): v for k, v in state.items()}


def _problems(source: str, missing: Iterable[str], unexpected: Iterable[str], shapes: list) -> None:
    missing, unexpected = sorted(missing), sorted(unexpected)
    if missing or unexpected or shapes:
        raise ValueError(
            f"{source} does not match the rmsin model: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, wrong shapes {shapes[:5]} (up to 5 each; "
            f"{len(missing)}/{len(unexpected)}/{len(shapes)} in all); check model.rmsin sizes "
            "(depths 2-2-18-2, embed 128 for the paper) and data.image_size (480)"
        )


def _check_derived(model: nn.Module, key: str, value: Tensor, source: str) -> None:
    try:
        own = model.get_buffer(key)
    except AttributeError:
        raise ValueError(f"{source}: unexpected key {key} (no such Swin block here)") from None
    if own.shape != value.shape or not torch.equal(own.cpu(), value.to(own.dtype).cpu()):
        raise ValueError(f"{source}: {key} differs from the window's relative positions")


def load_released_segmenter(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Load a released segmenter state dict (``backbone.*`` + ``classifier.*``) into ``model``
    (an :class:`~wrel.models.rmsin.network.RmsinSegmenter` or the full rmsin model) strictly.

    Raises:
        ValueError: a missing, unexpected or mis-shaped key (named), or a derived buffer that
            differs from this model's.
    """
    own = {k: v for k, v in model.state_dict().items() if k.startswith(SEGMENTER_PREFIXES)}
    mapped: dict[str, Tensor] = {}
    for key, value in _unwrap(state).items():
        local = released_key_map(key)
        if local is None:
            _check_derived(model, key, value, source)
        else:
            mapped[local] = value
    shapes = [
        (k, tuple(mapped[k].shape), tuple(own[k].shape))
        for k in own.keys() & mapped.keys()
        if mapped[k].shape != own[k].shape
    ]
    _problems(source, own.keys() - mapped.keys(), mapped.keys() - own.keys(), shapes)
    with torch.no_grad():
        for key, value in mapped.items():
            own[key].copy_(value.to(own[key].dtype))


def read_released_checkpoint(
    path: str | Path, key: str | None = None
) -> tuple[dict[str, Tensor], dict[str, Tensor] | None]:
    """``(segmenter state, BERT state or None)`` of an authors' checkpoint file.

    The file is read with ``torch.load(weights_only=True)``, allowing ``argparse.Namespace``
    (the scripts' ``args`` entry) and nothing else beyond tensors and plain data. The segmenter is ``key`` when given,
    else ``model`` (RMSIN, LRB-WREL stage 1) or ``student_model`` (LRB-WREL stages 2-3); the
    text encoder is ``bert_model`` (absent from teacher-only files).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"released checkpoint {path} does not exist; give the .pth file")
    if path.stat().st_size > MAX_CHECKPOINT_BYTES:
        raise ValueError(
            f"{path} is {path.stat().st_size / 2**30:.1f} GiB, more than an RMSIN / LRB-WREL "
            f"checkpoint (at most {MAX_CHECKPOINT_BYTES // 2**30} GiB with optimizer states); "
            "is it the right file?"
        )
    try:
        # the released scripts save their argparse namespace beside the weights ('args'): the
        # one class allowed besides tensors and plain containers
        with torch.serialization.safe_globals([argparse.Namespace]):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle / zip errors of many kinds
        raise ValueError(
            f"{path} is not a torch checkpoint readable with weights_only=True: {err}"
        ) from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a {type(data).__name__}, not a checkpoint dict")
    names = [key] if key else ["model", "student_model"]
    found = [n for n in names if isinstance(data.get(n), dict)]
    if not found:
        raise ValueError(
            f"{path} has no segmenter under {names} (keys: {sorted(map(str, data))[:8]}); "
            "it is not an RMSIN / LRB-WREL checkpoint"
        )
    bert = data.get("bert_model")
    return dict(data[found[0]]), (dict(bert) if isinstance(bert, dict) else None)


def load_released_bert(bert: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Load the authors' ``bert_model`` state into a Hugging Face ``BertModel`` strictly (the
    pooler, which the released code removes, and position-id buffers are ignored)."""
    own = bert.state_dict()
    mapped = {k: v for k, v in _unwrap(state).items() if not k.startswith(_BERT_IGNORED)}
    own_keys = {k for k in own if not k.startswith(_BERT_IGNORED)}
    shapes = [(k, tuple(mapped[k].shape), tuple(own[k].shape))
              for k in own_keys & mapped.keys() if mapped[k].shape != own[k].shape]  # fmt: skip
    missing, unexpected = own_keys - mapped.keys(), mapped.keys() - own_keys
    if missing or unexpected or shapes:
        raise ValueError(
            f"{source}: bert_model does not match the text encoder of model.text.path: missing "
            f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}, wrong shapes "
            f"{shapes[:5]}; point model.text.path at bert-base-uncased"
        )
    bert.load_state_dict(mapped, strict=False)  # only the ignored keys may be absent


_DOWNSAMPLE = re.compile(r"^layers\.(\d+)\.downsample\.")


def _swin_to_released(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Swin classification weights (Microsoft's or timm's layout) -> released backbone keys."""
    state = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in tensors.items()}
    timm_layout = "layers.3.downsample.reduction.weight" in state or "head.fc.weight" in state
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith(("head.", "norm.")) or key.endswith(".attn_mask"):
            continue  # classifier head, final norm, fixed-size shift masks: not used here
        match = _DOWNSAMPLE.match(key)
        if timm_layout and match:  # timm merges at the start of stage i, released at the end of i-1
            key = f"layers.{int(match.group(1)) - 1}.downsample." + key[match.end() :]
        out[key] = value
    return out


def load_swin_weights(backbone: nn.Module, path: str | Path) -> None:
    """ImageNet Swin weights (``swin_base_patch4_window12_384``, Microsoft's ``.pth`` with a
    ``model`` entry or timm's safetensors) into the Swin part of the multimodal tower; the
    fusion, gates, IIM, norms and CIM stay as initialised (as released).

    Raises:
        ValueError: a Swin key of the tower missing from the file, a key the tower lacks, or a
            shape mismatch (a different Swin size or window).
    """
    source = str(path)
    state = _swin_to_released(read_state_dict(Path(path)))
    own = {
        k: v
        for k, v in backbone.state_dict().items()
        if k.startswith("patch_embed.") or ".blocks." in k or ".downsample." in k
    }
    for key in [k for k in state if k.endswith(DERIVED_KEY_SUFFIX)]:
        _check_derived(backbone, key, state.pop(key), source)
    shapes = [(k, tuple(state[k].shape), tuple(own[k].shape))
              for k in own.keys() & state.keys() if state[k].shape != own[k].shape]  # fmt: skip
    if own.keys() - state.keys() or state.keys() - own.keys() or shapes:
        raise ValueError(
            f"{source} is not Swin weights for this tower: missing "
            f"{sorted(own.keys() - state.keys())[:5]}, unexpected "
            f"{sorted(state.keys() - own.keys())[:5]}, wrong shapes {shapes[:5]}; give "
            "swin_base_patch4_window12_384 (22k) weights, or match model.rmsin to the file"
        )
    with torch.no_grad():
        for key, value in state.items():
            own[key].copy_(value.to(own[key].dtype))
