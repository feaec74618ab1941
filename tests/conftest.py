"""Shared fixtures. Tests use tiny seeded data and tiny models; `../shared` is optional."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_rrsisd() -> Path:
    """The published RRSIS-D split files; skips cleanly where `../shared` is absent."""
    path = SHARED_DATA / "rrsisd"
    if not (path / "refs(unc)-90-all.p").is_file():
        pytest.skip("../shared/data/rrsisd is not available")
    return path


@pytest.fixture(autouse=True, scope="session")
def _torch_threads() -> None:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
