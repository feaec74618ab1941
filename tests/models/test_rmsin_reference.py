"""rmsin against the reference of the released RMSIN network (tests/models/data/rmsin/README.md).

The reference holds the released state-dict layouts (2-2-18-2 and 2-2-2-2), and one forward of
the 2-2-2-2 build whose weights follow a closed-form rule keyed by the released names, with
BatchNorm statistics measured on the reference input by the released code.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from wrel.models.rmsin.config import RmsinConfig
from wrel.models.rmsin.decoder import RmsinDecoder
from wrel.models.rmsin.network import MultimodalSwin, RmsinSegmenter
from wrel.models.rmsin.released import DERIVED_KEY_SUFFIX, load_released_segmenter

DATA = Path(__file__).parent / "data" / "rmsin"
BN_TYPES = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)


def layout(depths: str) -> dict:
    return json.loads((DATA / f"layout_swinb_w12_d{depths}.json").read_text())


def segmenter(depths: tuple[int, int, int, int]) -> RmsinSegmenter:
    cfg = RmsinConfig(depths=depths)  # Swin-B dims, window 12, fusion heads 1-1-1-1
    return RmsinSegmenter(MultimodalSwin(cfg, 768, 480, 0.3), RmsinDecoder(cfg.embed_dim))


def rule_tensor(key: str, shape: list[int]) -> torch.Tensor:
    """The README's closed-form value of the released tensor ``key``."""
    n = int(np.prod(shape)) if shape else 1
    phase = (zlib.crc32(key.encode()) % 10007) / 10007 * 2 * math.pi
    base = math.sqrt(2) * np.sin(0.61803398875 * np.arange(n, dtype=np.float64) + phase)
    if len(shape) == 2:
        value = 0.02 * base
    elif len(shape) >= 3:
        fan_in = int(np.prod(shape[2:] if len(shape) == 5 else shape[1:]))
        value = base / math.sqrt(3 * fan_in)
    elif key.endswith("running_var"):
        value = 1 + 0.25 * (base / math.sqrt(2) + 1) / 2
    elif key.endswith("running_mean"):
        value = 0.1 * base
    elif key.endswith(".weight"):
        value = 1 + 0.1 * base
    else:
        value = 0.02 * base
    return torch.from_numpy(value.astype(np.float32).reshape(shape))


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    return load_file(str(DATA / "reference_io.safetensors"))


@pytest.fixture(scope="module")
def filled(reference: dict[str, torch.Tensor]) -> RmsinSegmenter:
    """The 2-2-2-2 build filled by the rule through the key map, reference BN stats, eval."""
    model = segmenter((2, 2, 2, 2))
    state = {}
    for key, (shape, dtype) in layout("2-2-2-2")["state_dict"].items():
        if dtype != "float32":
            state[key] = (
                model.state_dict()[key]
                if not key.endswith(DERIVED_KEY_SUFFIX)
                else (model.get_buffer(key))
            )
            continue
        state[key] = reference.get(f"bn.{key}", rule_tensor(key, shape))
    load_released_segmenter(model, state, "reference rule")
    return model.eval()


def _check_layout(model: torch.nn.Module, expected: dict) -> None:
    own = model.state_dict()
    derived = [k for k in expected["state_dict"] if k.endswith(DERIVED_KEY_SUFFIX)]
    kept = [k for k in expected["state_dict"] if not k.endswith(DERIVED_KEY_SUFFIX)]
    assert list(own) == kept  # released names, released order
    for key in kept:
        assert list(own[key].shape) == expected["state_dict"][key][0], key
        assert str(own[key].dtype).removeprefix("torch.") == expected["state_dict"][key][1], key
    for key in derived:  # not stored, but derived with the released shape
        assert list(model.get_buffer(key).shape) == expected["state_dict"][key][0]
    assert sum(p.numel() for p in model.parameters()) == expected["params"]
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith("backbone.layers.3.") for n in frozen)  # see network.py
    assert not any(".fusion." in n or ".blocks." in n for n in frozen)


def test_full_build_has_the_released_layout_and_parameter_count() -> None:
    expected = layout("2-2-18-2")
    assert len(expected["state_dict"]) == 910 and expected["params"] == 131_145_515
    with torch.device("meta"):
        model = segmenter((2, 2, 18, 2))
    _check_layout(model, expected)


def test_reduced_build_has_the_released_layout(filled: RmsinSegmenter) -> None:
    expected = layout("2-2-2-2")
    assert len(expected["state_dict"]) == 686 and expected["params"] == 80_571_947
    _check_layout(filled, expected)


def batch_statistics(
    model: RmsinSegmenter, reference: dict[str, torch.Tensor], prefix: str
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Input mean and unbiased variance of every BatchNorm under ``prefix`` in one forward of
    the reference input, with every BatchNorm normalising by its batch (as when the reference
    statistics were measured); the running buffers are left unchanged."""
    found: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def record(name: str):
        def hook(_module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], _out) -> None:
            x = inputs[0]
            dims = [0, *range(2, x.dim())]
            found[name] = (x.mean(dim=dims), x.var(dim=dims, unbiased=True))

        return hook

    norms = {n: m for n, m in model.named_modules() if isinstance(m, BN_TYPES)}
    handles = [m.register_forward_hook(record(n)) for n, m in norms.items() if n.startswith(prefix)]
    saved = {n: (m.momentum, m.training) for n, m in norms.items()}
    try:
        for module in norms.values():
            module.momentum, module.training = 0.0, True
        with torch.no_grad():
            model(reference["image"], reference["l_feats"], reference["l_mask"])
    finally:
        for handle in handles:
            handle.remove()
        for name, (momentum, training) in saved.items():
            norms[name].momentum, norms[name].training = momentum, training
    return found


def test_tower_reproduces_the_reference_batch_statistics(
    filled: RmsinSegmenter, reference: dict[str, torch.Tensor]
) -> None:
    """Every BatchNorm of the Swin tower sees the activations the released code saw.

    The reference's BatchNorm statistics are the released network's batch statistics of the
    reference input, so with BatchNorm in batch-statistics mode each layer's input mean and
    (unbiased) variance must equal them. This pins the Swin blocks (padding and shifted windows
    at 120, 60, 30 and 15 px), patch merging, PWAM + gates and IIM of all four stages.
    """
    found = batch_statistics(filled, reference, "backbone.layers.")
    assert len(found) == 32
    for name, (mean, var) in found.items():
        ref_mean = reference[f"bn.{name}.running_mean"]
        ref_var = reference[f"bn.{name}.running_var"]
        torch.testing.assert_close(var, ref_var, rtol=1e-3, atol=0.0, msg=name)
        assert (mean - ref_mean).abs().max() <= 1e-3 * ref_var.sqrt().max() + 1e-7, name


def test_decoder_sees_the_reference_activation_scale(
    filled: RmsinSegmenter, reference: dict[str, torch.Tensor]
) -> None:
    """A structural check of the cross-scale module and the decoder (not a number match).

    Under the reference's weight rule the stage outputs are constant over the image up to
    float32 rounding, so what reaches the decoder depends on rounding (docs/model.md); across
    thread counts and convolution backends its BatchNorm inputs still keep variances within
    0.79-1.53 of the reference's and means within 0.03 sigma. Skipping the cross-scale module
    moves them 18-90 times in variance and up to 24 sigma in mean.
    """
    found = batch_statistics(filled, reference, "classifier.")
    assert len(found) == 6
    for name, (mean, var) in found.items():
        ref_var = reference[f"bn.{name}.running_var"]
        ratio = var / ref_var
        assert ratio.min() >= 0.5 and ratio.max() <= 2.0, (name, ratio.min(), ratio.max())
        shift = (mean - reference[f"bn.{name}.running_mean"]).abs() / ref_var.sqrt()
        assert shift.max() <= 0.25, (name, shift.max())


@pytest.mark.slow
@pytest.mark.xfail(
    strict=False,
    reason=(
        "the reference forward is ill-conditioned under its weight rule: the released code "
        "itself gives logits 1.7 to 18 (max abs) apart on one CPU depending on float32 vs "
        "float64, thread count and conv backend; see docs/model.md"
    ),
)
def test_reference_logits(filled: RmsinSegmenter, reference: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        logits = filled(reference["image"], reference["l_feats"], reference["l_mask"])
    assert logits.shape == (1, 2, 480, 480)
    gap = (logits - reference["logits"]).abs().max().item()
    assert gap <= 1e-4, f"max abs logit difference {gap:.4g}"
