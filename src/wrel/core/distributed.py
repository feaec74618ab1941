"""torchrun / DistributedDataParallel helpers.

``torchrun --nproc_per_node=N -m wrel train ...`` sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``;
:func:`init_distributed` then joins the process group (nccl on CUDA, gloo on CPU). The
configured batch size is the *global* batch: each rank loads ``batch_size / world_size``
samples per step, and DDP averages gradients, so a step equals a single-process step on the
global batch. Only rank 0 writes files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler

__all__ = [
    "DistInfo",
    "init_distributed",
    "resolve_device",
    "check_device_name",
    "DEVICE_FORMS",
    "ddp_wrapper",
    "barrier",
    "shutdown",
    "ResumableSampler",
    "average_buffers",
]

log = logging.getLogger(__name__)


@dataclass
class DistInfo:
    """Rank layout of this process (``world_size == 1`` without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # True when init_distributed created the process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


#: What ``train.device`` / ``--device`` accept (for error messages).
DEVICE_FORMS = "auto, cpu, cuda, cuda:N (N = 0, 1, ...) or mps"


def check_device_name(name: str) -> str:
    """``name`` if it has a valid device form (availability is not checked), else ValueError."""
    import re

    if not isinstance(name, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", name.strip()):
        raise ValueError(f"invalid device {name!r}; valid forms: {DEVICE_FORMS}")
    return name.strip()


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` -> this rank's CUDA device when available, else CPU; otherwise ``name``.

    Raises:
        ValueError: ``name`` is not one of :data:`DEVICE_FORMS`, or names an unavailable CUDA.
    """
    name = check_device_name(name)
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} but MPS is not available; use cpu or auto")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device={name!r} but CUDA is not available; use cpu or auto")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    if device.type == "cuda" and device.index >= torch.cuda.device_count():
        raise ValueError(
            f"device {name!r} but this machine has {torch.cuda.device_count()} CUDA device(s) "
            f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})"
        )
    return device


def init_distributed(device: torch.device) -> DistInfo:
    """Join the torchrun process group if ``WORLD_SIZE > 1`` (or reuse an existing one)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(
            dist.get_rank(),
            dist.get_world_size(),
            int(os.environ.get("LOCAL_RANK", dist.get_rank())),
        )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    info = DistInfo(
        dist.get_rank(),
        dist.get_world_size(),
        int(os.environ.get("LOCAL_RANK", "0")),
        owns_group=True,
    )
    log.info("distributed: rank %d/%d on %s (%s)", info.rank, info.world_size, device, backend)
    return info


def ddp_wrapper(
    info: DistInfo, device: torch.device, find_unused_parameters: bool = False
) -> Callable[[nn.Module], nn.Module]:
    """A function wrapping a module in DDP (identity in a single process).

    On CUDA, BatchNorm layers become ``SyncBatchNorm`` (in place; same parameters and buffers,
    so checkpoints are unchanged): a step on N ranks then equals a step on the global batch.
    ``SyncBatchNorm`` does not run on CPU; there the stages call :func:`average_buffers` after
    each student step so that running statistics stay identical on every rank.

    ``find_unused_parameters`` is off: every trainable parameter of the built-in models takes
    part in each forward (backbones keep only their feature stages, the text encoder has no
    pooler; the joint stage's token embeddings, computed outside the DDP forward, still get
    their gradients in the same backward). A custom module with parameters that some forward
    skips needs ``train.find_unused_parameters=true`` (DDP then says so in its error).
    """
    if not info.enabled:
        return lambda module: module

    def wrap(module: nn.Module) -> nn.Module:
        ids = [device.index] if device.type == "cuda" else None
        if device.type == "cuda":  # replaces BatchNorm children in place (root is not a BN)
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        return nn.parallel.DistributedDataParallel(
            module, device_ids=ids, find_unused_parameters=find_unused_parameters
        )

    return wrap


def average_buffers(module: nn.Module) -> None:
    """Average the floating-point buffers (BatchNorm running statistics) over all ranks.

    One all-reduce of the flattened buffers; a no-op in a single process. Integer buffers
    (``num_batches_tracked``) advance identically on every rank and are left alone.
    """
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return
    buffers = [b for b in module.buffers() if b.is_floating_point()]
    if not buffers:
        return
    flat = torch.cat([b.detach().reshape(-1).float() for b in buffers])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for b in buffers:
        n = b.numel()
        b.copy_(flat[offset : offset + n].view_as(b))
        offset += n


def barrier(info: DistInfo) -> None:
    """Synchronise the ranks (no-op in a single process)."""
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    """Destroy the process group if this module created it."""
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (per-epoch shuffle seeded by ``seed + epoch``) that can stop an
    epoch after its first ``limit`` indices (a shortened epoch: a random subset, redrawn every
    epoch) and skip the first ``skip`` of them, to resume in the middle of it."""

    skip: int = 0
    limit: int | None = None  # this rank's indices per epoch; None: all of them

    def __iter__(self):  # type: ignore[no-untyped-def]
        indices = list(super().__iter__())[: self.limit]
        return iter(indices[self.skip :])

    def __len__(self) -> int:
        size = super().__len__()
        if self.limit is not None:
            size = min(size, self.limit)
        return max(0, size - self.skip)
