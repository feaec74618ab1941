"""A tiny stand-in RefSegModel with the documented forward signature (docs/architecture.md)."""

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

    def forward(self, images, input_ids=None, attention_mask=None, inputs_embeds=None):
        if inputs_embeds is None:
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


# --- stand-ins for layers built in parallel (used only while the real ones are missing) -------


@dataclass
class StandinModelConfig:
    dim: int = 8
    max_length: int = 8
    bn: bool = True


def standin_build_model(cfg: StandinModelConfig) -> TinyRefSeg:
    return TinyRefSeg(dim=cfg.dim, max_length=cfg.max_length, bn=cfg.bn)


@dataclass
class StandinSample:
    sample_id: int
    split: str
    category: str
    text: str
    quality: str


def standin_load_samples(root, split, *, name=None, accurate_ratio=None, seed=0, split_file=None):
    n = {"train": 12, "val": 4, "test": 4}[split]
    base = {"train": 0, "val": 100, "test": 200}[split]
    g = torch.Generator().manual_seed(seed)
    ratio = 1.0 if accurate_ratio is None or split != "train" else accurate_ratio
    accurate = torch.randperm(n, generator=g)[: max(1, int(round(ratio * n)))].tolist()
    return [
        StandinSample(
            base + i,
            split,
            "vehicle",
            "the left white vehicle" if i in accurate else "vehicle",
            "accurate" if i in accurate else "weak",
        )
        for i in range(n)
    ]


class StandinDataset(torch.utils.data.Dataset):
    def __init__(self, samples, image_size=(16, 16)) -> None:
        self.samples, self.size = samples, image_size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        s = self.samples[i]
        g = torch.Generator().manual_seed(s.sample_id)
        image = torch.randn(3, *self.size, generator=g)
        mask = (image[0] > 0.3).long()
        return {
            "image": image,
            "mask": mask,
            "text": s.text,
            "sample_id": s.sample_id,
            "quality": s.quality,
            "category": s.category,
        }


def standin_collate(items: list[dict]) -> dict:
    return {
        "image": torch.stack([it["image"] for it in items]),
        "mask": torch.stack([it["mask"] for it in items]),
        "text": [it["text"] for it in items],
        "sample_id": torch.tensor([it["sample_id"] for it in items]),
        "is_weak": torch.tensor([it["quality"] == "weak" for it in items]),
        "quality": [it["quality"] for it in items],
        "category": [it["category"] for it in items],
    }


class StandinEvaluator:
    def __init__(self, protocol: str = "input") -> None:
        self.protocol = protocol
        self.reset()

    def reset(self) -> None:
        self.inter, self.union = [], []

    def update(self, pred, gt, categories) -> None:
        self.inter.append((pred & gt).flatten(1).sum(1))
        self.union.append((pred | gt).flatten(1).sum(1))

    def compute(self) -> dict:
        i, u = torch.cat(self.inter).double(), torch.cat(self.union).double()
        iou = torch.where(u > 0, i / u.clamp_min(1), torch.zeros_like(u))
        return {
            "oIoU": float(i.sum() / u.sum().clamp_min(1)),
            "mIoU": float(iou.mean()),
            "Prec@0.5": float((iou >= 0.5).double().mean()),
        }


def standin_save_model(directory, model, metadata):
    import json
    from pathlib import Path

    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(directory / "model.safetensors"),
    )
    cfg = {
        "dim": model.text_encoder.embedding_dim,
        "max_length": model.max_length,
        "bn": not isinstance(model.backbone[1], nn.Identity),
    }
    (directory / "config.json").write_text(json.dumps({"model": cfg, "metadata": metadata}))
    return directory


def standin_load_model(directory, device="cpu"):
    import json
    from pathlib import Path

    from safetensors.torch import load_file

    directory = Path(directory)
    data = json.loads((directory / "config.json").read_text())
    model = standin_build_model(StandinModelConfig(**data["model"]))
    model.load_state_dict(load_file(str(directory / "model.safetensors")), strict=True)
    return model.to(device), data["metadata"]


def install_standins() -> list[str]:
    """Put the stand-ins into wrel.* where the real pieces have not landed; returns their names."""
    import importlib
    import sys
    import types

    import wrel.models

    installed = []
    if not hasattr(wrel.models, "build_model"):
        wrel.models.ModelConfig = StandinModelConfig
        wrel.models.build_model = standin_build_model
        installed.append("models")
    try:
        importlib.import_module("wrel.data.dataset")
    except ModuleNotFoundError:
        mod = types.ModuleType("wrel.data.dataset")
        mod.load_samples, mod.RefSegDataset = standin_load_samples, StandinDataset
        mod.collate_samples = standin_collate
        sys.modules["wrel.data.dataset"] = mod
        installed.append("data")
    import wrel.evaluation

    if not hasattr(wrel.evaluation, "Evaluator"):
        wrel.evaluation.Evaluator = StandinEvaluator
        installed.append("evaluation")
    try:
        importlib.import_module("wrel.engine.checkpoint")
    except ModuleNotFoundError:
        mod = types.ModuleType("wrel.engine.checkpoint")
        mod.save_model, mod.load_model = standin_save_model, standin_load_model
        sys.modules["wrel.engine.checkpoint"] = mod
        installed.append("checkpoint")
    return installed
