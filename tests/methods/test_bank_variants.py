"""Bank variants: vocabulary-anchored mixtures, straight-through projection, prompt dropout and
the norm bound (wrel.methods.bank, wrel.methods.lrb)."""

from __future__ import annotations

import pytest
import torch
from tiny_model import make_batch

from wrel.methods.bank import (
    DEFAULT_VOCAB_WORDS,
    BankConfig,
    ReferenceBank,
    vocab_token_ids,
    word_embedding_table,
)
from wrel.methods.base import BankInitConfig, JointConfig, StageContext
from wrel.methods.lrb import BankInitStage, JointStage

WEAK_IDS = [11, 13, 20]


def _ctx(model, cfg: BankConfig) -> StageContext:
    return StageContext(
        model=model,
        device=torch.device("cpu"),
        iters_per_epoch=4,
        weak_ids=WEAK_IDS,
        bank_cfg=cfg,
    )


def _train_bank(model, cfg: BankConfig, steps: int = 5, lr: float = 0.5) -> ReferenceBank:
    stage = BankInitStage(BankInitConfig(samples="weak", bank_lr=lr), _ctx(model, cfg))
    for i in range(steps):
        stage.training_step(make_batch(weak=[False, True, False, True], seed=i), 0.0)
    return stage.bank


def _assert_convex(bank: ReferenceBank) -> None:
    rows = torch.arange(bank.num_rows)
    weights = bank.mixture_weights(rows)  # (N, P, V)
    assert weights.shape == (bank.num_rows, bank.cfg.num_prompts, bank.vocab.shape[0])
    assert (weights >= 0).all()
    assert torch.allclose(weights.sum(-1), torch.ones(weights.shape[:2]), atol=1e-6)
    assert torch.allclose(bank.prompts(rows), weights @ bank.vocab, atol=1e-6)
    assert torch.allclose(bank.gather(rows), weights @ bank.vocab, atol=1e-6)


def test_vocab_bank_prompts_stay_convex_combinations_of_the_vocabulary(tiny_model) -> None:
    cfg = BankConfig(num_prompts=3, parametrization="vocab", init_std=1.0, temperature_steps=4)
    bank = ReferenceBank.for_model(WEAK_IDS, tiny_model, cfg)
    ids = vocab_token_ids(tiny_model, cfg)
    assert torch.equal(bank.vocab_ids, ids)
    # the vocabulary is a snapshot of the model's word embeddings of those tokens
    assert torch.equal(bank.vocab, tiny_model.embed_tokens(ids[None])[0].detach())
    assert bank.rows.shape == (3, 3, ids.numel())  # logits (N, P, V)
    _assert_convex(bank)
    logits_before = bank.rows.clone()
    trained = _train_bank(tiny_model, cfg, steps=5)
    assert not torch.equal(trained.rows[:2], logits_before[:2])  # rows 11, 13 learned
    assert torch.equal(trained.rows[2], logits_before[2])  # row 20 never in a batch
    _assert_convex(trained)
    # temperature anneals with each row's updates: fresh row T_start, trained rows T_end
    temps = trained.temperature(torch.arange(3))
    assert temps[2] == pytest.approx(cfg.temperature_start)
    assert temps[0] == pytest.approx(cfg.temperature_end) and temps[1] == temps[0]


def test_vocab_words_are_tokenised_without_special_tokens(tiny_model) -> None:
    cfg = BankConfig(parametrization="vocab", vocab_words=["left", "right", "left"])
    ids = vocab_token_ids(tiny_model, cfg)
    word_ids, mask = tiny_model.tokenize(["left", "right"])
    expected = word_ids[:, 1][mask[:, 1].bool()].unique()  # [CLS] word [SEP]: position 1
    assert torch.equal(ids, expected)
    default = vocab_token_ids(tiny_model, BankConfig(parametrization="vocab"))
    special = tiny_model.tokenize([""])[0][0, :2]
    assert not torch.isin(default, special).any()
    assert 0 < default.numel() <= len(DEFAULT_VOCAB_WORDS)
    full = BankConfig(parametrization="vocab", full_vocab=True)
    assert vocab_token_ids(tiny_model, full).numel() == word_embedding_table(tiny_model).shape[0]


def test_full_vocabulary_refused_over_the_memory_limit(tiny_model) -> None:
    cfg = BankConfig(num_prompts=20, parametrization="vocab", full_vocab=True, max_memory_gb=1e-6)
    with pytest.raises(ValueError, match=r"needs .* GB .*max_memory_gb"):
        ReferenceBank.for_model(list(range(100)), tiny_model, cfg)


def test_nearest_projection_is_exact_forward_and_straight_through_backward(tiny_model) -> None:
    rows = torch.arange(3)
    # free bank: the forward value is the closest vocabulary row; the gradient is the identity
    free = ReferenceBank.for_model(
        WEAK_IDS, tiny_model, BankConfig(num_prompts=4, projection="nearest", init_std=1.0)
    )
    leaf = free.rows[rows].clone().requires_grad_(True)
    out = free.prompts(rows, leaf)  # (3, 4, D)
    nearest = torch.cdist(leaf.detach().flatten(0, 1), free.vocab).argmin(-1)
    assert torch.equal(out.detach().flatten(0, 1), free.vocab[nearest])  # exact rows
    weight = torch.randn_like(out)
    (out * weight).sum().backward()
    assert torch.equal(leaf.grad, weight)
    # vocab bank: the forward value is the argmax token; gradients reach the logits
    cfg = BankConfig(num_prompts=4, parametrization="vocab", projection="nearest", init_std=1.0)
    mix = ReferenceBank.for_model(WEAK_IDS, tiny_model, cfg)
    logits = mix.rows[rows].clone().requires_grad_(True)
    out = mix.prompts(rows, logits)
    assert torch.equal(out.detach(), mix.vocab[logits.detach().argmax(-1)])
    (out * torch.randn_like(out)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    # and the projected bank still trains through a bank step
    before = mix.rows.clone()
    trained = _train_bank(tiny_model, cfg, steps=2)
    assert not torch.equal(trained.rows[:2], before[:2])


def test_norm_bound_holds_after_every_step(tiny_model) -> None:
    cfg = BankConfig(num_prompts=3, max_norm=0.5, init_std=5.0)
    bank = ReferenceBank.for_model(WEAK_IDS, tiny_model, cfg)
    mean_norm = word_embedding_table(tiny_model).detach().norm(dim=-1).mean()
    assert bank.embed_norm == pytest.approx(float(mean_norm), rel=1e-6)
    radius = 0.5 * bank.embed_norm
    assert (bank.rows.norm(dim=-1) <= radius * (1 + 1e-5)).all()  # projected at init too
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        grads = torch.randn(2, 3, bank.rows.shape[-1], generator=g) * 100
        bank.apply_gradients(torch.tensor([0, 1]), grads, 2, lr=10.0, weight_decay=0.0)
        assert (bank.rows.norm(dim=-1) <= radius * (1 + 1e-5)).all()
    assert (bank.rows[:2].norm(dim=-1) > 0.9 * radius).all()  # pushed out, then projected
    trained = _train_bank(tiny_model, cfg, steps=3, lr=5.0)
    assert (trained.rows.norm(dim=-1) <= radius * (1 + 1e-5)).all()


def test_prompt_dropout_rate_and_student_step(tiny_model, monkeypatch) -> None:
    cfg = BankConfig(num_prompts=3)
    stage = JointStage(JointConfig(prompt_dropout=0.3), _ctx(tiny_model, cfg))
    torch.manual_seed(0)
    weak = torch.arange(40_000) % 2 == 0
    kept = stage.prompt_dropout(weak)
    assert not kept[~weak].any()  # accurate samples never get prompts
    assert kept[weak].float().mean().item() == pytest.approx(0.7, abs=0.01)
    plain = JointStage(JointConfig(), _ctx(tiny_model, cfg))
    assert plain.prompt_dropout(weak) is weak  # default: no draw, every weak sample prompted
    # p = 1: the student step reads the bare class name for every weak sample
    always = JointStage(JointConfig(prompt_dropout=1.0), _ctx(tiny_model, cfg))
    seen = []
    fill = always.bank.fill
    monkeypatch.setattr(
        always.bank, "fill", lambda e, m, s, w: seen.append(w.clone()) or fill(e, m, s, w)
    )
    always.training_step(make_batch(weak=[False, True, False, True]), 0.0)
    assert len(seen) == 1 and not seen[0].any()
    with pytest.raises(ValueError, match="prompt_dropout"):
        JointStage(JointConfig(prompt_dropout=1.5), _ctx(tiny_model, cfg))


def test_variant_bank_save_load_roundtrip(tiny_model, tmp_path) -> None:
    cfg = BankConfig(num_prompts=2, parametrization="vocab", vocab_words=["left", "red", "tank"])
    bank = _train_bank(tiny_model, cfg, steps=2)
    bank.save(tmp_path / "bank.safetensors")
    loaded = ReferenceBank.load(tmp_path / "bank.safetensors")  # variant read from the file
    assert loaded.cfg.parametrization == "vocab" and loaded.cfg.vocab_words == cfg.vocab_words
    rows = torch.arange(3)
    assert torch.equal(loaded.prompts(rows), bank.prompts(rows))
    assert torch.equal(loaded.steps, bank.steps)
    free = ReferenceBank(WEAK_IDS, 8, BankConfig(num_prompts=2))
    with pytest.raises(ValueError, match="lacks"):
        free.load_state_dict(bank.state_dict())
    # norm-bounded free bank keeps its radius
    bounded = ReferenceBank.for_model(WEAK_IDS, tiny_model, BankConfig(max_norm=0.3))
    bounded.save(tmp_path / "b.safetensors")
    assert ReferenceBank.load(tmp_path / "b.safetensors").embed_norm == pytest.approx(
        bounded.embed_norm
    )


def test_default_bank_is_the_plain_free_bank(tiny_model) -> None:
    bank = ReferenceBank.for_model(WEAK_IDS, tiny_model, BankConfig(num_prompts=3))
    plain = ReferenceBank(WEAK_IDS, 8, BankConfig(num_prompts=3))
    assert torch.equal(bank.rows, plain.rows)
    assert set(bank.state_dict()) == {"ids", "rows", "exp_avg", "exp_avg_sq", "steps"}
    assert torch.equal(
        bank.gather(torch.tensor([0, -1])),
        torch.stack([bank.rows[0], torch.zeros_like(bank.rows[0])]),
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"parametrization": "vocab", "max_norm": 1.0}, "max_norm applies to the free bank"),
        ({"temperature_start": 0.1, "temperature_end": 1.0}, "temperature"),
        ({"vocab_words": []}, "vocab_words"),
        ({"leakage_samples": -1}, "leakage_samples"),
    ],
)
def test_bad_variant_settings_are_refused(tiny_model, changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ReferenceBank.for_model(WEAK_IDS, tiny_model, BankConfig(**changes))
