"""Fixtures of the method tests."""

from __future__ import annotations

import pytest
import torch
from tiny_model import TinyRefSeg


@pytest.fixture
def tiny_model() -> TinyRefSeg:
    torch.manual_seed(0)
    return TinyRefSeg()
