"""The typed config of the RMSIN network (the segmenter of the LRB-WREL paper)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RmsinConfig", "RELEASED_INPUT_SIZE", "RELEASED_DROP_PATH"]

#: The input side the released network was trained and evaluated at (px).
RELEASED_INPUT_SIZE = 480
#: The released stochastic depth of the Swin blocks (``model.backbone.drop_path_rate`` unset).
RELEASED_DROP_PATH = 0.3


@dataclass
class RmsinConfig:
    """Sizes of the RMSIN network; the defaults are the paper's build (Swin-B, window 12).

    The Swin tower is built from these values (not from ``model.backbone.name``); the backbone
    config only supplies the Swin weights file (``checkpoint_path``), ``pretrained`` and
    ``drop_path_rate``.
    """

    embed_dim: int = 128  # stage widths are embed_dim * (1, 2, 4, 8)
    depths: tuple[int, int, int, int] = (2, 2, 18, 2)  # Swin blocks per stage
    num_heads: tuple[int, int, int, int] = (4, 8, 16, 32)  # window-attention heads per stage
    window_size: int = 12
    mlp_ratio: float = 4.0
    fusion_heads: tuple[int, int, int, int] = (1, 1, 1, 1)  # pixel-word attention heads
    fusion_drop: float = 0.0  # dropout inside the pixel-word attention module

    @classmethod
    def tiny(cls) -> RmsinConfig:
        """A few-thousand-weight build for fast tests (use with a 64-px input)."""
        return cls(
            embed_dim=8,
            depths=(1, 1, 2, 1),
            num_heads=(1, 1, 2, 2),
            window_size=4,
            fusion_heads=(1, 1, 1, 1),
        )

    def validate(self) -> None:
        """Raise ``ValueError`` naming the key on an impossible size."""
        for key in ("depths", "num_heads", "fusion_heads"):
            values = tuple(getattr(self, key))
            if len(values) != 4 or any(int(v) < 1 for v in values):
                raise ValueError(f"model.rmsin.{key} must be 4 positive ints, got {values}")
        if self.embed_dim < 4 or self.embed_dim % 4:
            raise ValueError(f"model.rmsin.embed_dim must be a multiple of 4, got {self.embed_dim}")
        for index, heads in enumerate(self.num_heads):
            if (self.embed_dim << index) % heads or (self.embed_dim << index) % self.fusion_heads[
                index
            ]:
                raise ValueError(
                    f"model.rmsin stage {index}: width {self.embed_dim << index} is not divisible "
                    f"by num_heads {heads} / fusion_heads {self.fusion_heads[index]}"
                )
        if self.window_size < 2:
            raise ValueError(f"model.rmsin.window_size must be at least 2, got {self.window_size}")
        if not 0.0 <= self.fusion_drop < 1.0:
            raise ValueError(f"model.rmsin.fusion_drop must be in [0, 1), got {self.fusion_drop}")
