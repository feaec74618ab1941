"""The expression bank (wrel.methods.retrieval): candidates, choice, texts, state, a whole run."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tiny_model import make_batch

from wrel.methods.base import RetrieveConfig, StageContext, SupervisedConfig
from wrel.methods.losses import per_sample_seg_loss
from wrel.methods.retrieval import ExpressionBank, RetrieveStage, draw_candidates
from wrel.methods.supervised import SupervisedStage
from wrel.models import ModelConfig, build_model


def _sample(i: int, category: str, quality: str, text: str) -> SimpleNamespace:
    return SimpleNamespace(sample_id=i, category=category, quality=quality, text=text)


def _samples() -> list[SimpleNamespace]:
    """Weak ids 11 and 13 (vehicle), 20 (ship, no accurate ship), 12 (vehicle, in a batch of
    make_batch as sample 12 is accurate there: only the bank's ids matter)."""
    return [
        _sample(1, "vehicle", "accurate", "the white vehicle on the left"),
        _sample(2, "vehicle", "accurate", "the red vehicle at the top"),
        _sample(3, "vehicle", "accurate", "the large vehicle"),
        _sample(4, "bridge", "accurate", "the gray bridge"),
        _sample(11, "vehicle", "weak", "vehicle"),
        _sample(13, "vehicle", "weak", "vehicle"),
        _sample(20, "ship", "weak", "ship"),
    ]


def test_candidates_come_from_the_rows_category_distinct_and_seeded() -> None:
    rows = ["vehicle"] * 50 + ["ship"] * 5 + ["bridge"] * 5
    pool = ["vehicle"] * 6 + ["bridge"] * 2
    draw = draw_candidates(rows, pool, 4, torch.Generator().manual_seed(0))
    assert draw.shape == (60, 4)
    assert bool((draw[:50] >= 0).all()) and bool((draw[:50] < 6).all())  # vehicle entries
    assert all(len(set(r)) == 4 for r in draw[:50].tolist())  # distinct when 4 <= 6 exist
    assert len({tuple(r) for r in draw[:50].tolist()}) > 1  # rows draw independently
    assert bool((draw[50:55] == -1).all())  # no accurate ship: the class name stays
    assert set(draw[55:].flatten().tolist()) <= {6, 7}  # 2 bridges < 4: with replacement
    again = draw_candidates(rows, pool, 4, torch.Generator().manual_seed(0))
    assert torch.equal(draw, again)
    with pytest.raises(ValueError, match="candidates"):
        draw_candidates(rows, pool, 0, torch.Generator())


def test_bank_texts_choice_state_and_file(tmp_path: Path) -> None:
    bank = ExpressionBank.for_samples(_samples(), [20, 13, 11], k=2, seed=0)
    assert bank.ids.tolist() == [11, 13, 20]
    pool_vehicle = {
        "the white vehicle on the left",
        "the red vehicle at the top",
        "the large vehicle",
    }
    texts = bank.candidate_texts(torch.tensor([0, 2]), ["vehicle", "ship"])
    assert texts[0] == "vehicle" and set(texts[1:3]) <= pool_vehicle
    assert texts[3:] == ["ship", "ship", "ship"]  # no candidate: reads the class name
    bank.set_choice(torch.tensor([0, 1]), torch.tensor([2, 0]))
    out = bank.texts(
        torch.tensor([11, 1, 13]), torch.tensor([True, False, True]), ["vehicle", "expr", "vehicle"]
    )
    assert out[1] == "expr" and out[2] == "vehicle"  # accurate untouched; 13 kept its name
    assert out[0] == bank.pool[int(bank.candidates[0, 1])]
    with pytest.raises(ValueError, match="no row"):
        bank.texts(torch.tensor([99]), torch.tensor([True]), ["vehicle"])
    with pytest.raises(ValueError, match="outside"):
        bank.set_choice(torch.tensor([0]), torch.tensor([3]))

    restored = ExpressionBank.for_samples(_samples(), [11, 13, 20], k=2, seed=0)
    restored.load_state_dict(copy.deepcopy(bank.state_dict()))
    assert torch.equal(restored.choice, bank.choice)
    assert torch.equal(ExpressionBank.from_state(bank.state_dict()).choice, bank.choice)
    other = ExpressionBank.for_samples(_samples(), [11, 13, 20], k=2, seed=1)
    if not torch.equal(other.candidates, bank.candidates):
        with pytest.raises(ValueError, match="other samples or candidates"):
            other.load_state_dict(bank.state_dict())

    bank.save(tmp_path / "expressions.json", {11: "vehicle", 13: "vehicle", 20: "ship"})
    saved = json.loads((tmp_path / "expressions.json").read_text())
    assert saved["rows"] == 3 and saved["candidates"] == 2
    assert saved["kept_class_name"] == pytest.approx(2 / 3)
    assert [s["text"] for s in saved["samples"]] == [out[0], "vehicle", "ship"]


def _ctx(model, samples) -> StageContext:
    return StageContext(
        model=model,
        device=torch.device("cpu"),
        iters_per_epoch=4,
        weak_ids=[s.sample_id for s in samples if s.quality == "weak"],
        train_samples=samples,
    )


@pytest.fixture(params=["stand-in", "refseg"])
def scoring_model(request, tiny_model):
    """The method tests' stand-in, and the real model (tiny parts): the stage encodes each text
    once and reuses its word features, which must score as the text's own forward."""
    if request.param == "stand-in":
        return tiny_model
    torch.manual_seed(0)
    return build_model(ModelConfig.tiny())


def test_retrieve_stage_keeps_the_lowest_loss_candidate_and_moves_no_weight(
    scoring_model,
) -> None:
    tiny_model = scoring_model
    samples = _samples()
    stage = RetrieveStage(RetrieveConfig(candidates=3, chunk=2), _ctx(tiny_model, samples))
    before = copy.deepcopy(tiny_model.state_dict())
    batch = make_batch(weak=[False, True, False, True])  # ids 10..13: 11 and 13 weak
    logs = stage.training_step(batch, 0.0)
    for key, value in tiny_model.state_dict().items():
        assert torch.equal(value, before[key]), key  # BN statistics included
    # the reference: each candidate scored on its own by the same frozen model in eval mode
    net = copy.deepcopy(tiny_model).eval()
    bank = stage.expressions
    for j, sid in ((1, 11), (3, 13)):
        row = bank.row_index(torch.tensor([sid]))
        texts = bank.candidate_texts(row, ["vehicle"])
        losses = []
        for text in texts:
            ids, att = net.tokenize([text])
            with torch.no_grad():
                logits = net(batch["image"][j : j + 1], input_ids=ids, attention_mask=att).logits
            losses.append(
                float(per_sample_seg_loss(logits, batch["mask"][j : j + 1], stage.cfg.dice))
            )
        best = min(range(len(losses)), key=lambda i: (losses[i], i))
        assert int(bank.choice[row]) == best, (sid, losses)
    assert int(bank.choice[bank.row_index(torch.tensor([20]))]) == 0  # not in the batch
    assert logs["retrieve_loss"] > 0 and 0 <= logs["kept_class_name"] <= 1
    hand = stage.handover()
    assert hand.expressions is bank and hand.model is tiny_model
    # bf16 ranking (the CPU profile's setting): the forwards run under autocast
    fast = RetrieveStage(RetrieveConfig(candidates=3, autocast="bf16"), _ctx(tiny_model, samples))
    dtypes: list[torch.dtype] = []
    # the frozen copy's decoder (a deep copy of the student's) runs the candidates
    hook = fast.frozen.module.decoder.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    fast.training_step(batch, 0.0)
    hook.remove()
    assert dtypes and all(d == torch.bfloat16 for d in dtypes)
    assert bool((fast.expressions.choice >= 0).all())
    assert bool((fast.expressions.choice <= 3).all())


def test_each_text_is_encoded_once_per_stage(tiny_model, monkeypatch) -> None:
    """The word table: the pool once at the first step, a class name at its first sight, and
    nothing again at later steps (texts meet many images; encoding them per pair was 35 % of a
    forward)."""
    samples = _samples()
    stage = RetrieveStage(RetrieveConfig(candidates=3, chunk=2), _ctx(tiny_model, samples))
    encoded: list[int] = []
    original = stage.frozen.module.encode_text
    monkeypatch.setattr(
        stage.frozen.module,
        "encode_text",
        lambda ids, att: (encoded.append(ids.shape[0]), original(ids, att))[1],
    )
    batch = make_batch(weak=[False, True, False, True])
    stage.training_step(batch, 0.0)
    pool = len(stage.expressions.pool)
    assert sum(encoded) == pool + 1  # the pool and "vehicle"
    assert max(encoded) <= stage.cfg.chunk
    stage.training_step(batch, 0.5)
    assert sum(encoded) == pool + 1  # nothing new
    other = make_batch(weak=[False, True, False, True])
    other["text"] = ["x", "car", "x", "car"]  # another class name for the same rows
    stage.training_step(other, 0.9)
    assert sum(encoded) == pool + 2


def test_student_reads_the_chosen_expressions_and_resumes_them(tiny_model, monkeypatch) -> None:
    samples = _samples()
    ctx = _ctx(tiny_model, samples)
    ctx.expressions = ExpressionBank.for_samples(samples, ctx.weak_ids, k=2, seed=0)
    ctx.expressions.set_choice(torch.tensor([0]), torch.tensor([1]))  # id 11 reads candidate 1
    stage = SupervisedStage(SupervisedConfig(weak_text="retrieved"), ctx)
    seen: list[list[str]] = []
    original = tiny_model.tokenize
    monkeypatch.setattr(
        tiny_model, "tokenize", lambda texts: (seen.append(texts), original(texts))[1]
    )
    stage.training_step(make_batch(weak=[False, True, False, True]), 0.0)
    expected = ctx.expressions.pool[int(ctx.expressions.candidates[0, 0])]
    assert seen[0] == [
        "the small white vehicle left",
        expected,
        "the small white vehicle left",
        "vehicle",
    ]
    state = stage.state_dict()
    assert torch.equal(state["expressions"]["choice"], ctx.expressions.choice)
    # resumed inside the student stage: no handover, the state brings the bank back
    fresh = SupervisedStage(
        SupervisedConfig(weak_text="retrieved"), _ctx(copy.deepcopy(tiny_model), samples)
    )
    fresh.load_state_dict(state)
    assert torch.equal(fresh.ctx.expressions.choice, ctx.expressions.choice)
    lost = SupervisedStage(SupervisedConfig(weak_text="retrieved"), _ctx(tiny_model, samples))
    with pytest.raises(ValueError, match="retrieve stage"):
        lost.training_step(make_batch(), 0.0)


def test_config_rules_of_retrieval() -> None:
    from wrel.engine.experiment import build_experiment

    cfg = build_experiment("retrieve")
    assert [s.kind for s in cfg.stages] == ["supervised", "retrieve", "supervised"]
    assert cfg.stages[2].weak_text == "retrieved" and cfg.stages[1].candidates == 16
    with pytest.raises(ValueError, match="weak_text"):
        build_experiment("naive", assignments=["stages.naive.weak_text=retrieved"])
    with pytest.raises(ValueError, match="one pass"):
        build_experiment("retrieve", assignments=["stages.retrieve.epochs=2"])
    with pytest.raises(ValueError, match="candidates"):
        build_experiment("retrieve", assignments=["stages.retrieve.candidates=0"])
    with pytest.raises(ValueError, match="autocast"):
        build_experiment("retrieve", assignments=["stages.retrieve.autocast=fp16"])
    with pytest.raises(ValueError, match="weak_text"):  # a key of supervised stages only
        build_experiment("retrieve", assignments=["stages.retrieve.weak_text=retrieved"])


def test_a_retrieve_run_trains_resumes_and_writes_its_expressions(
    tmp_path: Path, tiny_bench: Path, tiny_model_sets: list[str], monkeypatch
) -> None:
    from wrel.engine.experiment import build_experiment
    from wrel.engine.trainer import train

    def cfg(name: str):
        c = build_experiment(
            "retrieve",
            assignments=[
                f"train.output_dir={tmp_path}",
                f"name={name}",
                "train.batch_size=2",
                "train.eval_batch_size=4",
                "train.progress=false",
                "train.checkpoint_every=1",
                "data.image_size=16",
                "data.accurate_ratio=0.5",
                f"data.root={tiny_bench}",
                "stages.retrieve.candidates=3",
                *tiny_model_sets,
            ],
        )
        for stage in c.stages:
            stage.epochs = 1 if stage.kind == "retrieve" else 2
        return c

    reference = train(cfg("ref"))
    saved = json.loads((tmp_path / "ref" / "expressions.json").read_text())
    weak = [json.loads(x) for x in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("stage") == "retrieve" and "kept_class_name" in r for r in weak)
    # the leakage monitor scores the retrieved texts: at the retrieve stage's end (the teacher)
    # and at each val evaluation of the student stage
    leaks = [r for r in weak if r.get("event") == "leakage"]
    assert {r["stage"] for r in leaks} == {"retrieve", "joint"}
    assert all(r["num_samples"] > 0 and r["mIoU_bank"] is not None for r in leaks)
    assert saved["rows"] == len(saved["samples"]) > 0 and saved["candidates"] == 3
    assert all(isinstance(s["text"], str) and s["text"] for s in saved["samples"])

    # wrel bank decode reads the expression bank and scores it against attributes.json
    from wrel.cli import main

    out = tmp_path / "decode.json"
    assert (
        main(
            ["bank", "decode", str(tmp_path / "ref"), "--data", str(tiny_bench), "--out", str(out)]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert report["rows"] == saved["rows"] and report["candidates"] == 3
    by_id = {s["sample_id"]: s for s in saved["samples"]}
    assert all(s["chosen"] == by_id[s["sample_id"]]["text"] for s in report["samples"])
    assert report["scores"]["any"]["samples"] > 0
    assert 0 <= report["scores"]["any"]["chance"] <= 1

    # crash inside the student stage, resume: same result as uninterrupted
    calls = {"n": 0}
    original = SupervisedStage.training_step

    def crashing(self, batch, progress):
        if self.retrieved:
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt("simulated kill")
        return original(self, batch, progress)

    monkeypatch.setattr(SupervisedStage, "training_step", crashing)
    with pytest.raises(KeyboardInterrupt):
        train(cfg("crash"))
    monkeypatch.setattr(SupervisedStage, "training_step", original)
    resumed = train(cfg("crash"), resume=True)
    assert resumed["test"] == reference["test"]
    again = json.loads((tmp_path / "crash" / "expressions.json").read_text())
    assert again == saved


def test_recovery_counts_named_attributes_against_the_candidates() -> None:
    from wrel.studies.bank_decode import expression_recovery, named_kinds

    kinds = [{"colour": {"white"}, "position": {"left", "leftmost"}}, {"size": {"large"}}, {}]
    assert named_kinds("The WHITE ship on the right", kinds[0]) == {
        "colour": True,
        "position": False,
    }
    chosen = ["the white ship at the left", "a ship", "ship"]
    candidates = [
        ["the white ship at the left", "the red ship", "a ship", "the ship on the right"],
        ["the large ship", "a ship"],
        ["a ship"],
    ]
    out = expression_recovery(chosen, candidates, kinds)
    assert out["colour"] == {"samples": 1, "chosen": 1.0, "chance": 0.25}
    assert out["position"] == {"samples": 1, "chosen": 1.0, "chance": 0.25}
    assert out["size"] == {"samples": 1, "chosen": 0.0, "chance": 0.5}
    assert out["relation"]["samples"] == 0 and out["relation"]["chosen"] is None
    # any kind: sample 0 named one (chance 1/4: only its first candidate names one), sample 1
    # named none (chance 1/2); the sample without attributes does not count
    assert out["any"] == {"samples": 2, "chosen": 0.5, "chance": 0.375}


def test_a_retrieve_stage_iterates_every_weak_sample_once_without_cutout(
    tiny_bench: Path, tiny_model_sets: list[str]
) -> None:
    from wrel.core.distributed import DistInfo
    from wrel.engine.experiment import build_experiment
    from wrel.engine.loaders import load_split_samples, stage_data

    cfg = build_experiment(
        "retrieve",
        assignments=[
            f"data.root={tiny_bench}",
            "data.accurate_ratio=0.5",
            "data.image_size=16",
            "data.cutout_prob=1.0",
            "train.batch_size=3",  # does not divide the weak samples: a last partial batch
            *tiny_model_sets,
        ],
    )
    train = load_split_samples(cfg.data)["train"]
    weak = sorted(s.sample_id for s in train if s.quality == "weak")
    assert len(weak) % 3 != 0
    data = stage_data(cfg, cfg.stages[1], train, DistInfo())
    seen = [int(i) for batch in data.loader(0, 0) for i in batch["sample_id"]]
    assert sorted(seen) == weak and data.iters_per_epoch == -(-len(weak) // 3)
    assert data.dataset.cutout_prob == 0.0
    # a training stage keeps the configured cut-outs and drops its last partial batch
    teacher = stage_data(cfg, cfg.stages[2], train, DistInfo())
    assert teacher.dataset.cutout_prob == 1.0 and teacher.drop_last


def test_leakage_monitor_scores_a_retrieve_run_with_its_chosen_texts(
    tiny_bench: Path, tiny_model_sets: list[str], monkeypatch
) -> None:
    import wrel.engine.leakage as leakage
    from wrel.engine.experiment import build_experiment
    from wrel.engine.loaders import load_split_samples

    cfg = build_experiment(
        "retrieve",
        assignments=[
            f"data.root={tiny_bench}",
            "data.accurate_ratio=0.5",
            "bank.leakage_samples=3",
            *tiny_model_sets,
        ],
    )
    train = load_split_samples(cfg.data)["train"]
    weak_ids = [s.sample_id for s in train if s.quality == "weak"]
    bank = ExpressionBank.for_samples(train, weak_ids, k=2, seed=0)
    bank.set_choice(torch.arange(len(weak_ids)), torch.ones(len(weak_ids), dtype=torch.int64))
    scored: list[list[str]] = []

    def fake_evaluate(model, loader, device, **kw):
        assert kw.get("bank") is None  # an expression bank is text, not prompts
        scored.append([s.text for s in loader.dataset.samples])
        return {"mIoU": 50.0}

    monkeypatch.setattr(leakage, "evaluate_model", fake_evaluate)
    out = leakage.measure_leakage(None, bank, train, cfg, torch.device("cpu"))
    assert out["num_samples"] == 3 and out["mIoU_bank"] == 50.0
    weak = {s.sample_id: s.text for s in train if s.quality == "weak"}
    rows = bank.row_index(torch.tensor(list(weak)))
    names = set(weak.values())
    # the retrieved texts (a class name only where its category has no accurate expression)
    assert set(scored[0]) <= set(bank.chosen_texts(rows, list(weak.values())))
    assert set(scored[0]) - names  # some weak sample reads an expression
    assert set(scored[1]) <= names  # then the bare class names
