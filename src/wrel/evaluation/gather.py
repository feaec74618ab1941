"""Pickle-free gathering of per-sample evaluation records across ``torch.distributed`` ranks.

Counts travel as int64 tensors and category names as UTF-8 bytes (NUL-separated), padded to the
largest rank's length, so nothing is unpickled. Works with the gloo (CPU) and nccl (CUDA) backends.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["all_gather_records", "is_distributed"]

_SEP = "\x00"


def is_distributed() -> bool:
    """True when a process group with more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _gather_padded(t: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
    """Gather a 1-D or 2-D ``(C, n)`` tensor whose last dim differs per rank; rank order."""
    n = torch.tensor([t.shape[-1]], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, n)
    lengths = [int(s.item()) for s in sizes]
    padded = torch.zeros((*t.shape[:-1], max(lengths)), dtype=t.dtype, device=device)
    padded[..., : t.shape[-1]] = t.to(device)
    parts = [torch.empty_like(padded) for _ in lengths]
    dist.all_gather(parts, padded)
    return [p[..., :length].cpu() for p, length in zip(parts, lengths, strict=True)]


def all_gather_records(
    inter: torch.Tensor, union: torch.Tensor, ids: torch.Tensor, categories: list[str]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """Concatenate every rank's ``(I (n,), U (n,), ids (n,), categories)`` in rank order.

    A collective: every rank must call it.
    """
    if any(_SEP in c for c in categories):
        raise ValueError("category names must not contain NUL characters")
    device = _device()
    counts = torch.stack([inter, union, ids]).to(torch.int64)  # (3, n)
    parts = _gather_padded(counts, device)  # per rank (3, n_r)
    gathered = torch.cat(parts, dim=1)  # (3, N)
    encoded = torch.tensor(list(_SEP.join(categories).encode()), dtype=torch.uint8)
    texts = [bytes(p.tolist()).decode() for p in _gather_padded(encoded, device)]
    sizes = [p.shape[-1] for p in parts]
    names: list[str] = []
    for text, size in zip(texts, sizes, strict=True):
        names.extend(text.split(_SEP) if size else [])
    return gathered[0], gathered[1], gathered[2], names
