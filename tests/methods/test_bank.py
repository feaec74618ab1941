from __future__ import annotations

import pytest
import torch

from wrel.methods.bank import BankConfig, ReferenceBank, fill_prompts


def test_fill_prompts_positions() -> None:
    embeds = torch.zeros(3, 6, 2)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0]])
    prompts = torch.arange(3 * 4 * 2, dtype=torch.float32).reshape(3, 4, 2) + 1
    is_weak = torch.tensor([True, True, False])
    out, new_mask = fill_prompts(embeds, mask, prompts, is_weak)
    # Row 0: L=3 -> slots 3, 4, 5 hold prompts 0, 1, 2.
    assert torch.equal(out[0, 3:], prompts[0, :3])
    assert torch.equal(out[0, :3], embeds[0, :3])
    # Row 1: L=2 -> slots 2..5 hold prompts 0..3 (all P=4).
    assert torch.equal(out[1, 2:], prompts[1, :4])
    # Accurate row unchanged.
    assert torch.equal(out[2], embeds[2]) and torch.equal(new_mask[2], mask[2])
    assert new_mask[:2].eq(1).all()


def test_fill_prompts_fewer_prompts_than_slots() -> None:
    embeds = torch.zeros(1, 6, 1)
    mask = torch.tensor([[1, 1, 0, 0, 0, 0]])
    out, new_mask = fill_prompts(embeds, mask, torch.ones(1, 2, 1), torch.tensor([True]))
    assert new_mask.tolist() == [[1, 1, 1, 1, 0, 0]]
    assert out[0, :, 0].tolist() == [0, 0, 1, 1, 0, 0]


def test_bank_init_and_lookup() -> None:
    bank = ReferenceBank([30, 10, 20], dim=4, cfg=BankConfig(num_prompts=3, seed=1))
    assert bank.rows.shape == (3, 3, 4)
    assert bank.ids.tolist() == [10, 20, 30]
    assert 0.005 < bank.rows.std().item() < 0.05
    again = ReferenceBank([10, 20, 30], dim=4, cfg=BankConfig(num_prompts=3, seed=1))
    assert torch.equal(bank.rows, again.rows)
    rows = bank.row_index(torch.tensor([20, 99, 30]), torch.tensor([True, False, True]))
    assert rows.tolist() == [1, -1, 2]
    with pytest.raises(ValueError, match="no row for weak sample"):
        bank.row_index(torch.tensor([99]), torch.tensor([True]))
    with pytest.raises(ValueError, match="unique"):
        ReferenceBank([1, 1], dim=2, cfg=BankConfig())


def test_sparse_adamw_leaves_untouched_rows_bitwise() -> None:
    bank = ReferenceBank(list(range(8)), dim=4, cfg=BankConfig(num_prompts=2))
    before = bank.rows.clone()
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        rows = torch.tensor([1, 3, 3])  # duplicate row 3: gradients summed
        bank.apply_gradients(rows, torch.randn(3, 2, 4, generator=g), 3, lr=0.1, weight_decay=0.5)
    untouched = torch.tensor([0, 2, 4, 5, 6, 7])
    assert torch.equal(bank.rows[untouched], before[untouched])
    assert torch.equal(bank.exp_avg[untouched], torch.zeros_like(bank.exp_avg[untouched]))
    assert bank.steps.tolist() == [0, 50, 0, 50, 0, 0, 0, 0]
    assert not torch.equal(bank.rows[1], before[1])


def test_sparse_adamw_matches_torch_adamw_on_touched_row() -> None:
    cfg = BankConfig(num_prompts=2)
    bank = ReferenceBank([5, 6], dim=3, cfg=cfg)
    param = torch.nn.Parameter(bank.rows[0].clone())
    opt = torch.optim.AdamW([param], lr=0.01, weight_decay=0.1, eps=cfg.eps)
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        grad = torch.randn(2, 3, generator=g)
        # Two samples of the same row whose summed gradient is 2*grad, averaged over 2 samples.
        bank.apply_gradients(
            torch.tensor([0, 0]), torch.stack([grad, grad]), 2, lr=0.01, weight_decay=0.1
        )
        param.grad = grad.clone()
        opt.step()
    assert torch.allclose(bank.rows[0], param.detach(), atol=1e-6)


def test_bank_save_load_roundtrip(tmp_path) -> None:
    bank = ReferenceBank([7, 3, 5], dim=4, cfg=BankConfig(num_prompts=2))
    bank.apply_gradients(torch.tensor([1]), torch.ones(1, 2, 4), 1, lr=0.1, weight_decay=0.0)
    bank.save(tmp_path / "bank.safetensors")
    loaded = ReferenceBank.load(tmp_path / "bank.safetensors")
    for key, value in bank.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    other = ReferenceBank([1, 2, 3], dim=4, cfg=BankConfig(num_prompts=2))
    with pytest.raises(ValueError, match="other sample ids"):
        other.load_state_dict(bank.state_dict())
    with pytest.raises(FileNotFoundError):
        ReferenceBank.load(tmp_path / "missing.safetensors")


def test_bank_fill_uses_rows_of_ids() -> None:
    bank = ReferenceBank([11, 13], dim=2, cfg=BankConfig(num_prompts=2))
    embeds = torch.zeros(2, 4, 2)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])
    out, _ = bank.fill(embeds, mask, torch.tensor([13, 12]), torch.tensor([True, False]))
    assert torch.equal(out[0, 2:], bank.rows[1])
    assert torch.equal(out[1], embeds[1])
