"""A tiny stand-in RefSegModel (the real forward signature) and a batch maker for method tests."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class _Out:
    logits: Tensor


class TinyRefSeg(nn.Module):
    """Conv + BatchNorm image branch gated by mean-pooled word embeddings."""

    def __init__(self, dim: int = 8, max_length: int = 8, vocab: int = 64, bn: bool = True) -> None:
        super().__init__()
        self.max_length = max_length
        self.vocab = vocab
        self.text_encoder = nn.Embedding(vocab, dim)
        self.backbone = nn.Sequential(
            nn.Conv2d(3, dim, 3, padding=1), nn.BatchNorm2d(dim) if bn else nn.Identity()
        )
        self.fusion = nn.Linear(dim, dim)
        self.decoder = nn.Conv2d(dim, 2, 1)

    def tokenize(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        ids = torch.zeros(len(texts), self.max_length, dtype=torch.int64)
        for i, text in enumerate(texts):  # test helper only
            words = [3 + sum(map(ord, w)) % (self.vocab - 3) for w in text.split()]
            toks = [1, *words[: self.max_length - 2], 2]
            ids[i, : len(toks)] = torch.tensor(toks)
        return ids, (ids != 0).long()

    def embed_tokens(self, input_ids: Tensor) -> Tensor:
        return self.text_encoder(input_ids)

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.embed_tokens(input_ids)

    def forward(self, images, input_ids=None, attention_mask=None, inputs_embeds=None, words=None):
        if words is not None:  # as RefSegModel: features from encode_text, no text branch
            inputs_embeds = words
        elif inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        m = attention_mask.unsqueeze(-1).to(inputs_embeds.dtype)
        text = (inputs_embeds * m).sum(1) / m.sum(1).clamp_min(1)  # (B, D)
        feats = torch.relu(self.backbone(images))  # (B, D, H, W)
        gate = torch.tanh(self.fusion(text))[:, :, None, None]
        return _Out(self.decoder(feats * (1 + gate)))


def make_batch(n: int = 4, size: int = 16, weak: list[bool] | None = None, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    weak = weak if weak is not None else [i % 2 == 1 for i in range(n)]
    return {
        "image": torch.randn(n, 3, size, size, generator=g),
        "mask": (torch.rand(n, size, size, generator=g) > 0.7).long(),
        "text": ["vehicle" if w else "the small white vehicle left" for w in weak],
        "sample_id": torch.arange(10, 10 + n),
        "is_weak": torch.tensor(weak),
        "quality": ["weak" if w else "accurate" for w in weak],
        "category": ["vehicle"] * n,
    }
