"""`wrel bench`: grid planning, resumable records, report files, and one real tiny run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from wrel.studies.profiles import PROFILES, Profile, get_profile
from wrel.studies.report import BANK_VARIANTS, gap_closed, wall_time_table
from wrel.studies.runner import (
    RunSpec,
    build_run_config,
    ensure_benchmark_data,
    load_records,
    plan_runs,
    run_benchmark,
    stale_records,
)

TINY = Profile(
    name="tiny",
    description="test",
    synth={},
    data_dir="unused",
    sets=(
        "data.image_size=32",
        "train.batch_size=4",
        "train.eval_batch_size=8",
        "train.trace_class_names=true",
    ),
    epochs={"only-accurate": 1, "naive": 1, "full": 1, "teacher-warmup": 1, "joint": 1},
)


def test_plan_runs_grid_and_names() -> None:
    specs = plan_runs(["lrb", "full", "naive", "only-accurate"], [0.1, 0.3], [0, 1])
    names = [s.name for s in specs]
    assert names[:4] == [
        "only-accurate-r10-s0",
        "naive-r10-s0",
        "lrb-r10-s0",
        "only-accurate-r30-s0",
    ]
    assert names.count("full-s0") == 1 and names.count("full-s1") == 1
    assert len(specs) == 2 * (3 * 2 + 1)
    with pytest.raises(ValueError, match="valid methods"):
        plan_runs(["nope"], [0.1], [0])
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        plan_runs(["naive"], [0.0], [0])
    with pytest.raises(ValueError, match="valid profiles"):
        get_profile("nope")


def test_run_config_applies_profile_seed_and_epochs(tmp_path: Path) -> None:
    cfg = build_run_config(PROFILES["full"], RunSpec("lrb", 0.3, 2), tmp_path, tmp_path / "r")
    assert cfg.data.accurate_ratio == 0.3 and cfg.data.split_seed == 2 and cfg.train.seed == 2
    assert cfg.data.image_size == 96 and cfg.name == "lrb-r30-s2"
    assert cfg.model.backbone.frozen_stages == 1 and cfg.train.val_every_steps == 100
    epochs = PROFILES["full"].stage_epochs("lrb", 0.3)
    assert epochs["joint"] == PROFILES["full"].epochs["full"]  # from 30 % on, as long as Full
    # The warm-up on the 30 % accurate share gets the steps of a stage on all samples.
    assert [(s.name, s.epochs) for s in cfg.stages] == [
        ("teacher-warmup", round(epochs["teacher-warmup"] / 0.3)),
        ("bank-init", epochs["bank-init"]),
        ("joint", epochs["joint"]),
    ]
    assert cfg.stages[0].eval_every == 3 and cfg.stages[2].eval_every == 0
    only = build_run_config(PROFILES["full"], RunSpec("only-accurate", 0.1, 0), tmp_path, tmp_path)
    assert only.stages[0].epochs == 10 * PROFILES["full"].epochs["only-accurate"]
    full = build_run_config(PROFILES["full"], RunSpec("full", 1.0, 0), tmp_path, tmp_path)
    assert full.data.accurate_ratio == 1.0


def _fake_train(calls: list[str], score: dict[str, float]):
    def train(cfg, resume=False):
        calls.append(cfg.name)
        run = Path(cfg.train.output_dir) / cfg.name
        run.mkdir(parents=True, exist_ok=True)
        lines = [
            {"event": "train", "stage": "s", "epoch": 0, "step": 1, "loss": 1.0},
            {"event": "val", "stage": "s", "epoch": 0, "step": 1, "mIoU": 5.0, "oIoU": 6.0},
        ]
        (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        m = score[cfg.method]
        test = {"mIoU": m, "oIoU": m + 1, "Prec@0.5": m / 2}
        return {"run_dir": str(run), "test": test, "best": {"stage": "s", "step": 1, "val": test}}

    return train


def test_a_run_killed_before_its_first_resumable_checkpoint_is_set_aside(tmp_path: Path) -> None:
    """A run killed after exporting `best` but before its first `last` used to stop the bench:
    the runner said "starting over" and the trainer refused a folder holding checkpoints."""
    score = {"naive": 20.0}
    specs = plan_runs(["naive"], [0.1], [0])
    run = tmp_path / "runs" / specs[0].name
    (run / "checkpoints" / "best").mkdir(parents=True)
    (run / "checkpoints" / "best" / "model.safetensors").write_bytes(b"partial export")
    seen: list[bool] = []
    fake = _fake_train([], score)

    def train(cfg, resume=False):
        seen.append(resume)
        assert not (run / "checkpoints").exists()  # the trainer gets a clean folder
        return fake(cfg, resume)

    lines: list[str] = []
    run_benchmark(
        TINY, specs, echo=lines.append, train_fn=train, data_root=tmp_path,
        out_dir=tmp_path / "out", runs_dir=tmp_path / "runs",
    )  # fmt: skip
    assert seen == [False]
    aside = [p for p in (tmp_path / "runs").iterdir() if ".unfinished-" in p.name]
    assert len(aside) == 1  # nothing deleted: the partial export is kept aside
    assert (
        aside[0] / "checkpoints" / "best" / "model.safetensors"
    ).read_bytes() == b"partial export"
    assert any("moved aside" in x for x in lines)


def test_run_benchmark_records_report_and_skips_finished(tmp_path: Path) -> None:
    score = {"only-accurate": 10.0, "naive": 20.0, "lrb": 28.0, "full": 30.0}
    calls: list[str] = []
    specs = plan_runs(list(score), [0.1], [0])
    kwargs = dict(data_root=tmp_path, out_dir=tmp_path / "out", runs_dir=tmp_path / "runs")
    lines: list[str] = []
    run_benchmark(TINY, specs, echo=lines.append, train_fn=_fake_train(calls, score), **kwargs)
    assert calls == [s.name for s in specs]
    records = load_records(tmp_path / "out")
    assert {r["name"] for r in records} == set(calls)
    rec = next(r for r in records if r["method"] == "lrb")
    assert rec["test"]["mIoU"] == 28.0 and rec["curve"][1]["val_mIoU"] == 5.0
    assert rec["config"]["data"]["accurate_ratio"] == 0.1
    assert gap_closed(records, 0.1, "lrb") == pytest.approx(0.9)
    md = (tmp_path / "out" / "results.md").read_text()
    assert "LRB-WREL [beyond the paper] 90%" in md and "Naive-WREL 50%" in md
    assert "did not reach their plateau" not in md  # one val point each: the curve cannot tell
    assert (tmp_path / "out" / "miou_vs_ratio.png").stat().st_size > 1000
    assert (tmp_path / "out" / "training_curves.png").stat().st_size > 1000
    assert any("time left" in x for x in lines)
    # A second invocation skips every finished run.
    calls.clear()
    run_benchmark(TINY, specs, echo=lines.append, train_fn=_fake_train(calls, score), **kwargs)
    assert calls == []
    # A run folder elsewhere does not make a record stale; changed epochs do.
    moved = {**kwargs, "runs_dir": tmp_path / "elsewhere"}
    run_benchmark(TINY, specs, echo=lines.append, train_fn=_fake_train(calls, score), **moved)
    assert calls == []
    longer = Profile(**{**TINY.__dict__, "epochs": {**TINY.epochs, "full": 3}})
    with pytest.raises(
        ValueError, match=r"(?s)full-s0: stages\[0\]\.epochs: 1 -> 3.*--rerun-stale"
    ):
        run_benchmark(
            longer, specs, echo=lines.append, train_fn=_fake_train(calls, score), **kwargs
        )
    assert calls == [] and (tmp_path / "out" / "runs" / "full-s0.json").is_file()
    stale = stale_records(longer, tmp_path / "out", tmp_path)  # what --report-only warns of
    assert stale == {"full-s0": ["stages[0].epochs: 1 -> 3"]}
    run_benchmark(
        longer,
        specs,
        echo=lines.append,
        train_fn=_fake_train(calls, score),
        rerun_stale=True,
        **kwargs,
    )
    assert calls == ["full-s0"]  # only the run whose settings changed trains again
    aside = list((tmp_path / "out" / "runs" / "stale").glob("full-s0.*.json"))
    assert (
        len(aside) == 1 and json.loads(aside[0].read_text())["config"]["stages"][0]["epochs"] == 1
    )
    assert list((tmp_path / "runs").glob("full-s0.stale-*"))  # the old run folder, renamed
    now = {r["name"]: r for r in load_records(tmp_path / "out")}
    assert now["full-s0"]["config"]["stages"][0]["epochs"] == 3 and len(now) == len(specs)
    # --dry-run says what would happen to each run
    import argparse

    from wrel.commands.bench import _status

    args = argparse.Namespace(data=str(tmp_path), assignments=[], split_file=None)
    full = next(s for s in specs if s.method == "full")
    status = _status(full, now, longer, args, tmp_path / "runs")
    assert status == "done"
    assert _status(full, now, TINY, args, tmp_path / "runs").startswith(
        "stale (stages[0].epochs: 3 -> 1"
    )
    assert _status(full, {}, TINY, args, tmp_path / "runs") == "to train"


def test_report_warns_above_the_table_when_runs_stopped_before_their_plateau(
    tmp_path: Path,
) -> None:
    from wrel.studies.runner import write_report

    def rec(name: str, method: str, reached: bool | None) -> dict:
        return {
            "name": name, "method": method, "accurate_ratio": 0.1, "seed": 0,
            "wall_time_s": 60.0, "val": {"mIoU": 50.0}, "test": {"mIoU": 50.0, "oIoU": 50.0},
            "curve": [], "plateau": {"reached": reached, "gain": 3.0, "num_points": 5},
        }  # fmt: skip

    runs = tmp_path / "runs"
    runs.mkdir()
    for r in (rec("naive-r10-s0", "naive", True), rec("full-s0", "full", False)):
        (runs / f"{r['name']}.json").write_text(json.dumps(r))
    md = write_report(tmp_path)["md"].read_text()
    head, table = md.split("| accurate |", 1)
    assert "**1 of 2 runs did not reach their plateau** (full-s0;" in head
    (runs / "full-s0.json").unlink()
    assert "did not reach" not in write_report(tmp_path)["md"].read_text()


def test_a_cell_of_two_code_or_data_versions_is_refused_unless_named(tmp_path: Path) -> None:
    from wrel.studies.runner import RunSpec, mixed_cells, run_benchmark, write_report

    def rec(seed: int, commit: str, data: str) -> dict:
        return {
            "name": f"naive-r10-s{seed}", "method": "naive", "accurate_ratio": 0.1, "seed": seed,
            "wall_time_s": 60.0, "val": {"mIoU": 50.0}, "test": {"mIoU": 50.0, "oIoU": 50.0},
            "curve": [], "plateau": {"reached": True, "gain": 0.1, "num_points": 5},
            "code": {"commit": commit, "dirty": False}, "data": {"settings_hash": data},
        }  # fmt: skip

    runs = tmp_path / "runs"
    runs.mkdir()
    for r in (rec(0, "a" * 40, "d1"), rec(1, "a" * 40, "d1")):
        (runs / f"{r['name']}.json").write_text(json.dumps(r))
    assert mixed_cells([rec(0, "a" * 40, "d1"), rec(1, "a" * 40, "d1")]) == {}
    write_report(tmp_path)  # one version per cell: fine
    (runs / "naive-r10-s2.json").write_text(json.dumps(rec(2, "b" * 40, "d2")))
    with pytest.raises(ValueError, match="mix runs of different code or data versions"):
        write_report(tmp_path)
    md = write_report(tmp_path, allow_mixed_versions=True)["md"].read_text()
    assert "**1 cell(s) mix code or data versions**" in md
    assert "naive at 10%: code aaaaaaaaaa / data d1; code bbbbbbbbbb / data d2" in md
    # a new run that would join that cell under this checkout's version is refused up front
    with pytest.raises(ValueError, match="another code or data"):
        run_benchmark(
            get_profile("quick"), [RunSpec("naive", 0.1, 3)], data_root=tmp_path,
            out_dir=tmp_path, runs_dir=tmp_path / "rd", train_fn=lambda **_: {},
        )  # fmt: skip


def test_records_name_their_code_and_data(tmp_path: Path) -> None:
    from wrel.data.synth import SynthConfig, generate_benchmark
    from wrel.studies.runner import code_version, data_version

    code = code_version()
    assert set(code) == {"commit", "dirty"}
    assert code["commit"] is None or len(code["commit"]) == 40
    cfg = SynthConfig(num_train=4, num_val=1, num_test=1)
    generate_benchmark(tmp_path, cfg, progress=False)
    data = data_version(tmp_path)
    assert data == {
        "generator_version": data["generator_version"],
        "regime": "rrsisd",
        "settings_hash": cfg.settings_hash(),
    }
    assert data_version(tmp_path / "elsewhere") is None


def test_time_left_ignores_records_without_a_wall_time() -> None:
    """A run started from another run's stages (or resumed across sessions) records NaN wall
    time; the next bench's time-left estimate once crashed on it ("cannot convert float NaN
    to integer") before training anything."""
    from wrel.studies.runner import _eta, _fmt_s

    records = [
        {"method": "lrb-words", "accurate_ratio": 0.1, "wall_time_s": math.nan},
        {"method": "naive", "accurate_ratio": 0.1, "wall_time_s": 600.0},
    ]
    left = _eta([RunSpec("lrb-fixed", 0.1, 1), RunSpec("naive", 0.1, 1)], records)
    assert left == 1200.0  # no lrb-fixed record yet: the mean of the timed runs
    assert _fmt_s(left) == "20 min 00 s"
    only_nan = [records[0]]
    assert _eta([RunSpec("lrb-words", 0.1, 1)], only_nan) is None
    assert _fmt_s(None).startswith("unknown")


def test_wall_time_table_reports_lrb_over_naive() -> None:
    records = [
        {"method": "naive", "accurate_ratio": 0.1, "wall_time_s": 60.0},
        {"method": "lrb", "accurate_ratio": 0.1, "wall_time_s": 150.0},
        {"method": "lrb", "accurate_ratio": 0.3, "wall_time_s": math.nan},
    ]
    table = wall_time_table(records)
    assert "2.50x" in table and "1.0 min" in table and "30%" not in table
    records.append({"method": "lrb-paper", "accurate_ratio": 0.1, "wall_time_s": 120.0})
    row = next(x for x in wall_time_table(records).splitlines() if x.startswith("| 10%"))
    assert row.endswith("| 2.50x, paper 2.00x |")


def test_existing_data_with_other_generator_settings_is_refused(tiny_bench: Path) -> None:
    with pytest.raises(ValueError, match="other generator settings"):
        ensure_benchmark_data(PROFILES["full"], tiny_bench)


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory, tiny_bench: Path, tiny_model_sets) -> Path:
    """The four methods at 50 % on the tiny benchmark with tiny models; returns the out dir."""
    tmp = tmp_path_factory.mktemp("bench")
    run_benchmark(
        TINY,
        plan_runs(["only-accurate", "naive", "lrb", "full"], [0.5], [0]),
        data_root=tiny_bench,
        out_dir=tmp / "out",
        runs_dir=tmp / "runs",
        extra_sets=[*tiny_model_sets, "train.progress=false"],
        progress=False,
        echo=lambda _: None,
    )
    return tmp / "out"


def test_real_tiny_benchmark_run(tiny_runs: Path) -> None:
    records = load_records(tiny_runs)
    assert [r["name"] for r in records] == [
        "full-s0", "lrb-r50-s0", "naive-r50-s0", "only-accurate-r50-s0"
    ]  # fmt: skip
    for rec in records:
        assert 0.0 <= rec["test"]["mIoU"] <= 100.0 and rec["wall_time_s"] > 0
        assert any("val_mIoU" in p for p in rec["curve"])
        assert (Path(rec["run_dir"]) / "checkpoints" / "best").is_dir()
    assert json.loads((tiny_runs / "results.json").read_text())[0]["name"] == "full-s0"
    assert "LRB-WREL" in (tiny_runs / "results.md").read_text()


def test_bound_command_on_tiny_runs(tiny_runs: Path, tiny_bench: Path, capsys) -> None:
    from wrel.cli import main

    assert main(["bound", "--runs", str(tiny_runs), "--data", str(tiny_bench)]) == 0
    printed = capsys.readouterr().out
    assert "| 50% | naive |" in printed and "Delta with bank" in printed
    result = json.loads((tiny_runs / "bound.json").read_text())
    records = {r["name"]: r for r in load_records(tiny_runs)}
    full = 1 - records["full-s0"]["test"]["mIoU"] / 100
    for row in result["rows"]:
        # The measured gap comes from the records; the bound from its own terms.
        measured = 1 - records[row["run"]]["test"]["mIoU"] / 100 - full
        assert row["measured_gap"] == pytest.approx(measured)
        expected = 2 * (1 - row["rho"]) * result["delta"]["estimate"] + 2 * result["eps"]["eps_n"]
        assert row["bound_mix"] == pytest.approx(expected)
        assert row["holds"] == (row["measured_gap"] <= row["bound_mix"])
    assert 0.0 <= result["delta"]["ci"][0] <= result["delta"]["estimate"] <= 1.0
    # Delta covers every checkpoint the four runs visited (each val evaluation), from the traces
    evals = []
    for name, rec in records.items():
        lines = (Path(rec["run_dir"]) / "metrics.jsonl").read_text().splitlines()
        vals = [json.loads(x) for x in lines if '"event": "val"' in x]
        evals += [f"{name}@{v['stage']}:{v['epoch']}" for v in vals]
        assert (tiny_runs / "traces" / f"{name}.jsonl").is_file()
    assert sorted(result["delta"]["per_run"]) == sorted(evals) and len(evals) > 4
    assert result["delta"]["runs_traced"] == sorted(records)
    worst = max(result["delta"]["per_run"].values(), key=lambda g: g["gap"])
    assert result["delta"]["estimate"] == pytest.approx(worst["gap"])
    assert len(result["eps"]["points"]) == 2
    bank = result["bank"][0]
    assert bank["run"] == "lrb-r50-s0" and bank["num_weak"] > 0
    assert (tiny_runs / "bound.png").stat().st_size > 1000


def test_bound_without_traces_uses_best_checkpoints(tiny_runs: Path, tiny_bench: Path) -> None:
    from wrel.studies.bound import load_traces, measure_bound

    records = load_records(tiny_runs)
    traces = load_traces(tiny_runs, [r["name"] for r in records])
    assert set(traces) == {r["name"] for r in records}
    quiet = measure_bound(records, tiny_bench, traces={}, echo=lambda _: None)
    assert sorted(quiet["delta"]["per_run"]) == sorted(f"{r['name']}@best" for r in records)
    assert quiet["delta"]["runs_traced"] == []
    # the best checkpoint is one of the visited ones: its scores match the trace's line
    for rec in records:
        best = quiet["delta"]["per_run"][f"{rec['name']}@best"]
        line = next(x for x in traces[rec["name"]] if x["step"] == rec["best"]["step"])
        assert best["risk"] == pytest.approx(line["risk"], abs=1e-4)
        assert best["risk_class_name"] == pytest.approx(line["risk_class_name"], abs=1e-4)
    other = {n: [{**x, "sample_ids": x["sample_ids"][::-1]} for x in t] for n, t in traces.items()}
    with pytest.raises(ValueError, match="other val samples"):
        measure_bound(records, tiny_bench, traces=other, echo=lambda _: None)


def test_bench_epochs_option_replaces_profile_epochs(capsys) -> None:
    import argparse

    from wrel.cli import main
    from wrel.commands.bench import _stage_epochs

    assert _stage_epochs("teacher-warmup=3, joint=2") == {"teacher-warmup": 3, "joint": 2}
    for bad in ("warmup=3", "joint=0", "joint", "joint=x"):
        with pytest.raises(argparse.ArgumentTypeError, match="STAGE=EPOCHS"):
            _stage_epochs(bad)
    with pytest.raises(SystemExit):
        main(["bench", "--epochs", "warmup=3", "--dry-run"])
    assert "STAGE=EPOCHS" in capsys.readouterr().err


def test_bound_names_a_missing_run_folder(tiny_runs: Path, tiny_bench: Path) -> None:
    from wrel.studies.bound import load_traces, measure_bound

    records = [
        {**r, "run_dir": str(tiny_runs / "gone" / r["name"])} for r in load_records(tiny_runs)
    ]
    traces = load_traces(tiny_runs, [r["name"] for r in records])
    with pytest.raises(FileNotFoundError, match="checkpoints.best does not exist"):
        measure_bound(records, tiny_bench, traces=traces, echo=lambda _: None)


def test_run_stopped_before_its_first_checkpoint_starts_over(tmp_path: Path) -> None:
    """A run folder with no record and no checkpoint (killed early) is set aside and trained afresh."""
    score = {"naive": 20.0}
    specs = plan_runs(["naive"], [0.1], [0])
    stale = tmp_path / "runs" / specs[0].name
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")
    resumes: list[bool] = []
    fake = _fake_train([], score)

    def train(cfg, resume=False):
        resumes.append(resume)
        return fake(cfg, resume)

    lines: list[str] = []
    run_benchmark(
        TINY, specs, data_root=tmp_path, out_dir=tmp_path / "out", runs_dir=tmp_path / "runs",
        echo=lines.append, train_fn=train,
    )  # fmt: skip
    assert resumes == [False]
    assert any("training the run from the start" in line for line in lines)
    assert [r["name"] for r in load_records(tmp_path / "out")] == [specs[0].name]


def test_paper_recipe_on_the_cpu_profile_scales_to_its_stage_lengths(tmp_path: Path) -> None:
    from wrel.engine.experiment import PAPER_BANK_LR, PAPER_STAGE_EPOCHS

    profile = PROFILES["full"]
    cfg = build_run_config(profile, RunSpec("lrb-paper", 0.1, 0), tmp_path, tmp_path / "r")
    assert cfg.method == "lrb-paper" and cfg.name == "lrb-paper-r10-s0"
    stages = {s.name: s for s in cfg.stages}
    # the method's own settings stay the released ones
    assert stages["bank-init"].frozen_mode == "train" and stages["joint"].ema_scope == "segmenter"
    assert cfg.bank.optimizer == "sparse"
    # a row moves over each stage as far as over the released stage: lr x released / our epochs
    for name in ("bank-init", "joint"):
        want = PAPER_BANK_LR[name] * PAPER_STAGE_EPOCHS[name] / profile.epochs[name]
        assert stages[name].bank_lr == pytest.approx(want, rel=1e-3)
        assert stages[name].epochs == profile.epochs[name]
    # the network's rates are this project's, the joint stage at 2/3 of the teacher's
    teacher, joint = stages["teacher-warmup"].optim, stages["joint"].optim
    assert teacher.lr_backbone == 3e-4 and teacher.lr_head == 1e-3
    assert joint.lr_backbone == pytest.approx(2 / 3 * teacher.lr_backbone, rel=1e-3)
    assert joint.lr_text == pytest.approx(2 / 3 * teacher.lr_text, rel=1e-3)
    # what every method of the table shares is the baselines': no cut-outs, the same Dice
    naive = build_run_config(profile, RunSpec("naive", 0.1, 0), tmp_path, tmp_path / "r")
    assert cfg.data.cutout_prob == naive.data.cutout_prob == 0
    assert {s.dice for s in cfg.stages} == {naive.stages[0].dice}


def test_word_bank_method_is_the_paper_recipe_with_a_bank_of_words(tmp_path: Path) -> None:
    profile = PROFILES["full"]
    paper = build_run_config(profile, RunSpec("lrb-paper", 0.1, 0), tmp_path, tmp_path / "r")
    words = build_run_config(profile, RunSpec("lrb-words", 0.1, 0), tmp_path, tmp_path / "r")
    assert words.method == "lrb-paper" and words.name == "lrb-words-r10-s0"
    assert words.bank.parametrization == "vocab" and words.bank.projection == "none"
    # the screened temperature (0.5 from the first update on) and the paper's joint/init ratio
    assert (words.bank.temperature_end, words.bank.temperature_steps) == (0.5, 1)
    ratio = paper.stages[2].bank_lr / paper.stages[1].bank_lr
    assert words.stages[2].bank_lr == pytest.approx(words.stages[1].bank_lr * ratio, rel=1e-2)
    for a, b in zip(paper.stages, words.stages, strict=True):
        assert type(a) is type(b) and (a.name, a.epochs, a.optim) == (b.name, b.epochs, b.optim)
    assert words.stages[1].frozen_mode == paper.stages[1].frozen_mode
    assert words.stages[2].ema_scope == paper.stages[2].ema_scope
    assert words.stages[2].prompt_dropout > 0 == paper.stages[2].prompt_dropout
    names = [s.name for s in plan_runs(list(profile.methods), [0.1], [0])]
    assert names == [
        "only-accurate-r10-s0",
        "naive-r10-s0",
        "lrb-paper-r10-s0",
        "lrb-words-r10-s0",
        "retrieve-r10-s0",
        "full-s0",
    ]


def test_paired_table_pairs_seeds_and_applies_the_one_above_rule() -> None:
    from wrel.studies.report import paired_table, paired_verdict

    def rec(method: str, seed: int, miou: float) -> dict:
        return {"method": method, "accurate_ratio": 0.1, "seed": seed, "test": {"mIoU": miou}}

    records = [
        rec("naive", 0, 50.0),
        rec("naive", 1, 52.0),
        rec("naive", 2, 51.0),
        rec("lrb-paper", 0, 53.0),
        rec("lrb-paper", 1, 55.0),  # seed 2 missing: paired over seeds 0 and 1 only
        rec("lrb-words", 0, 51.5),  # +1.5, -0.5, +0.5: mean 0.5, std 1.0
        rec("lrb-words", 1, 51.5),
        rec("lrb-words", 2, 51.5),
        {"method": "full", "accurate_ratio": 1.0, "seed": 0, "test": {"mIoU": 70.0}},
    ]
    lines = paired_table(records).splitlines()
    paper = next(x for x in lines if "paper recipe" in x)
    words = next(x for x in lines if "word bank" in x)
    assert "3.00 ± 0.00" in paper and "| 2 |" in paper and paper.endswith("| above |")
    # 0.5 - 2.920 * 1.0 / sqrt(3) < 0 < 0.5 + ...: the one-sided paired t interval holds 0
    assert "0.50 ± 1.00" in words and "| 3 |" in words and words.endswith("| not separated |")
    # by hand: mean 2, std 1, n 3 -> 2 - 2.920 / sqrt(3) = 0.31 > 0: above; mirrored: below
    assert paired_verdict([1.0, 2.0, 3.0]) == "above"
    assert paired_verdict([-1.0, -2.0, -3.0]) == "below"
    assert paired_verdict([0.5, 2.0, 3.5]) == "not separated"  # 2 - 2.920 * 1.5 / 1.73 < 0
    single = paired_table([rec("naive", 0, 50.0), rec("lrb-paper", 0, 49.0)])
    assert "-1.00" in single and "one seed" in single
    assert "no method paired" in paired_table([rec("naive", 0, 50.0)])


def test_bank_variant_is_chosen_on_val_not_test() -> None:
    from wrel.studies.report import variant_choice

    def rec(method: str, seed: int, val: float, test: float, ratio: float = 0.1) -> dict:
        return {
            "method": method, "accurate_ratio": ratio, "seed": seed,
            "val": {"mIoU": val}, "test": {"mIoU": test},
        }  # fmt: skip

    records = [
        rec("lrb-paper", 0, 70.0, 70.0),  # the paper recipe is shown, never chosen
        rec("lrb", 0, 60.0, 90.0),  # best on test, worse on val
        rec("lrb-words", 0, 62.0, 50.0),
        rec("lrb-words", 1, 64.0, 50.0),
        rec("lrb-fixed", 0, 99.0, 99.0),  # an ablation: not a candidate
        rec("lrb", 0, 65.0, 40.0, ratio=0.3),
    ]
    lines = variant_choice(records)
    assert len(lines) == 2 and lines[0].startswith("- 10% accurate")
    assert lines[0].endswith("chosen: LRB-WREL (word bank) [beyond the paper]")
    assert "LRB-WREL (paper recipe) 70.00 (n=1)" in lines[0] and "63.00 ± 1.41 (n=2)" in lines[0]
    # scored against the paper recipe on the same seeds (seed 0): -10 and -8
    assert (
        "LRB-WREL [beyond the paper] -10.00 (seeds [0]), LRB-WREL (word bank) [beyond the paper] -8.00 (seeds [0])"
        in lines[0]
    )
    assert lines[1].startswith("- 30% accurate") and lines[1].endswith(
        "chosen: LRB-WREL [beyond the paper]"
    )
    assert "all of them ran" not in lines[1]  # one method, nothing uneven
    assert variant_choice([rec("lrb-paper", 0, 70.0, 70.0)]) == []


def test_bank_variant_choice_compares_the_seeds_both_ran() -> None:
    """A variant that ran only an easy seed must not win on its mean against one that also ran
    a hard seed: the choice is made on the seeds both ran."""
    from wrel.studies.report import variant_choice

    def rec(method: str, seed: int, val: float) -> dict:
        return {"method": method, "accurate_ratio": 0.1, "seed": seed, "val": {"mIoU": val}}

    records = [
        rec("lrb", 0, 70.0),  # seed 0 is easy
        rec("lrb-words", 0, 72.0),
        rec("lrb-words", 1, 50.0),  # seed 1 is hard; lrb has not run it yet
    ]
    (line,) = variant_choice(records)
    # over every seed lrb (70.0) would beat lrb-words (61.0); on seed 0 lrb-words wins
    assert "LRB-WREL [beyond the paper] 70.00 (n=1)" in line and "61.00 ± 15.56 (n=2)" in line
    assert (
        "on the seeds all of them ran ([0]): LRB-WREL [beyond the paper] 70.00, LRB-WREL (word bank) [beyond the paper] 72.00"
        in line
    )
    assert line.endswith("chosen: LRB-WREL (word bank) [beyond the paper]")
    # the paper recipe is listed, not a candidate: its seeds do not narrow the comparison
    (line,) = variant_choice([*records, rec("lrb-paper", 1, 60.0)])
    assert line.endswith("chosen: LRB-WREL (word bank) [beyond the paper]")


def test_bank_variants_of_disjoint_seeds_are_compared_through_the_paper_recipe() -> None:
    """Variants that share no seed are each paired with the paper recipe of their own seeds: a
    variant that ran only an easy seed does not win on its raw mean."""
    from wrel.studies.report import variant_choice

    def rec(method: str, seed: int, val: float) -> dict:
        return {"method": method, "accurate_ratio": 0.1, "seed": seed, "val": {"mIoU": val}}

    records = [
        *(rec("lrb-paper", s, v) for s, v in ((0, 62.0), (1, 61.0), (2, 57.0))),
        rec("lrb-oa-teacher", 0, 62.5),  # easy seed: highest raw value, +0.5 over the recipe
        rec("retrieve", 2, 58.5),  # hard seed: +1.5 over the recipe
        *(rec("lrb-words", s, v) for s, v in ((0, 64.0), (1, 59.0), (2, 57.0))),  # 0 on average
    ]
    (line,) = variant_choice(records)
    assert "Retrieved expressions [beyond the paper] +1.50 (seeds [2])" in line
    assert "LRB-WREL (Only-Accurate teacher) [beyond the paper] +0.50 (seeds [0])" in line
    assert "LRB-WREL (word bank) [beyond the paper] +0.00 (seeds [0, 1, 2])" in line
    assert line.endswith("chosen: Retrieved expressions [beyond the paper]")


def test_headline_table_names_the_variant_chosen_on_val_and_pairs_gap_shares_by_seed() -> None:
    """The paper-layout table takes the variant chosen on val (not the best on test) and
    computes each seed's gap share against that seed's own Only-Accurate and Full."""
    from wrel.studies.report import chosen_variants, gap_share_by_seed, headline_table

    def rec(method: str, seed: int, test: float, val: float | None = None) -> dict:
        ratio = 1.0 if method == "full" else 0.1
        out = {"method": method, "accurate_ratio": ratio, "seed": seed, "test": {"mIoU": test}}
        if val is not None:
            out["val"] = {"mIoU": val}
        return out

    records = [
        rec("only-accurate", 0, 50.0),
        rec("only-accurate", 1, 40.0),
        rec("full", 0, 70.0),
        rec("full", 1, 80.0),
        rec("naive", 0, 45.0),
        rec("naive", 1, 40.0),
        rec("lrb-paper", 0, 60.0, val=60.0),
        rec("lrb-paper", 1, 50.0, val=50.0),
        # higher on test, lower on val: must not be chosen
        rec("lrb-words", 0, 69.0, val=59.0),
        rec("lrb-words", 1, 79.0, val=49.0),
        rec("retrieve", 0, 62.0, val=61.0),
        rec("retrieve", 1, 60.0, val=52.0),
    ]
    assert chosen_variants(records) == {0.1: "retrieve"}
    # seed 0: (62 - 50) / (70 - 50) = 60 %; seed 1: (60 - 40) / (80 - 40) = 50 %
    share = gap_share_by_seed(records, 0.1, "retrieve")
    assert share is not None and share.num_seeds == 2
    assert share.mean == pytest.approx(55.0)
    assert share.std == pytest.approx(7.0710678, rel=1e-6)
    # a seed without its own Only-Accurate run does not count
    no_oa_1 = [r for r in records if r["seed"] == 0 or r["method"] != "only-accurate"]
    one = gap_share_by_seed(no_oa_1, 0.1, "retrieve")
    assert one is not None and one.num_seeds == 1 and one.mean == pytest.approx(60.0)
    assert gap_share_by_seed(records, 0.3, "retrieve") is None

    table = headline_table(records)
    row = next(line for line in table.splitlines() if line.startswith("| 10% |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "45.00 ± 7.07 (n=2)"  # Only-Accurate: no gap share of its own
    assert cells[2].startswith("42.50 ± 3.54 (n=2); gap -12 ± 18 % (n=2)")
    assert (
        cells[4]
        == "Retrieved expressions [beyond the paper]: 61.00 ± 1.41 (n=2); gap 55 ± 7 % (n=2)"
    )
    assert cells[5] == "75.00 ± 7.07 (n=2)"


def test_ablation_methods_isolate_teacher_init_steps_and_bank(tmp_path: Path) -> None:
    profile = PROFILES["ablations"]
    assert profile.ratios == (0.1,)

    def build(method: str):
        return build_run_config(profile, RunSpec(method, 0.1, 0), tmp_path, tmp_path / "r")

    paper, imagenet = build("lrb-paper"), build("lrb-imagenet")
    teacher, long = build("naive-teacher"), build("naive-long")
    # LRB with an ImageNet student: the paper recipe except where the joint student starts
    assert imagenet.stages[2].student_init == "pretrained" == "pretrained"
    assert paper.stages[2].student_init == "handover"
    for a, b in zip(paper.stages, imagenet.stages, strict=True):
        assert type(a) is type(b) and (a.epochs, a.optim) == (b.epochs, b.optim)
        assert getattr(a, "bank_lr", None) == getattr(b, "bank_lr", None)
    # Naive from the teacher: the same teacher stage, then the joint schedule without a bank
    assert [(s.kind, s.samples, s.epochs) for s in teacher.stages] == [
        ("supervised", "accurate", paper.stages[0].epochs),
        ("supervised", "all", paper.stages[2].epochs),
    ]
    assert teacher.stages[1].optim == paper.stages[2].optim
    # LRB with its bank fixed after initialisation: no bank step in the joint stage
    fixed = build("lrb-fixed")
    assert fixed.stages[2].bank_steps == 0 and paper.stages[2].bank_steps == 1
    assert [
        (s.name, s.epochs, s.bank_lr if hasattr(s, "bank_lr") else None) for s in fixed.stages
    ] == [(s.name, s.epochs, s.bank_lr if hasattr(s, "bank_lr") else None) for s in paper.stages]
    # LRB with prompt dropout: the paper recipe's free bank plus the word bank's dropout only
    dropout, words = build("lrb-dropout"), build("lrb-words")
    assert dropout.stages[2].prompt_dropout == words.stages[2].prompt_dropout == 0.3
    assert paper.stages[2].prompt_dropout == 0.0
    assert dropout.bank == paper.bank and words.bank.parametrization == "vocab"
    assert [(type(s), s.epochs, getattr(s, "bank_lr", None)) for s in dropout.stages] == [
        (type(s), s.epochs, getattr(s, "bank_lr", None)) for s in paper.stages
    ]
    # Naive with LRB's optimizer steps: teacher (in epoch-equivalents) + joint epochs
    e = profile.epochs
    assert long.stages[0].epochs == e["teacher-warmup"] + e["joint"]


def test_train_accepts_every_method_preset() -> None:
    from wrel.commands.train import METHODS
    from wrel.engine.experiment import METHOD_PRESETS

    assert sorted(METHODS) == sorted(METHOD_PRESETS)
    assert "lrb-paper" in METHODS


def test_every_wrel_bench_method_has_a_bound_role() -> None:
    from wrel.studies.bound import role_of
    from wrel.studies.profiles import METHOD_ORDER

    for method in METHOD_ORDER:
        role = role_of(method)
        if method in ("only-accurate", "full"):
            assert role.accurate_only
        else:  # trained on accurate + weak samples: a bound row, with its bank where it has one
            assert role.mixed, method
            assert role.bank == method.startswith("lrb"), method


def test_variants_of_a_seed_share_their_first_stages(
    tmp_path: Path, tiny_bench: Path, tiny_model_sets
) -> None:
    # lrb-fixed without its bank_steps=0 (TINY has no method sets) is lrb-paper's config: it
    # starts after lrb-paper's teacher and bank initialisation and must end exactly as it did
    sharing = Profile(
        **{
            **TINY.__dict__,
            "sets": (*TINY.sets, "train.keep_stage_checkpoints=true"),
            "epochs": {**TINY.epochs, "bank-init": 1},
        }
    )
    lines: list[str] = []
    run_benchmark(
        sharing,
        plan_runs(["lrb-paper", "lrb-fixed"], [0.5], [0]),
        data_root=tiny_bench,
        out_dir=tmp_path / "out",
        runs_dir=tmp_path / "runs",
        extra_sets=[*tiny_model_sets, "train.progress=false"],
        progress=False,
        echo=lines.append,
    )
    records = {r["name"]: r for r in load_records(tmp_path / "out")}
    donor, taker = records["lrb-paper-r50-s0"], records["lrb-fixed-r50-s0"]
    assert "shared_prefix" not in donor
    # the taker's time counts the shared stages as the donor took them (its cost trained whole)
    from wrel.engine.state import load_resume_state, stage_checkpoint_dir

    donor_ckpt = tmp_path / "runs" / "lrb-paper-r50-s0" / "checkpoints"
    shared_s = load_resume_state(stage_checkpoint_dir(donor_ckpt, 1))["loop"]["elapsed_s"]
    assert 0 < shared_s < taker["wall_time_s"]
    assert taker["shared_prefix"] == {"run": "lrb-paper-r50-s0", "stages": 2}
    assert taker["test"] == donor["test"] and taker["val"] == donor["val"]
    assert any("first 2 stage(s) are those of lrb-paper-r50-s0" in x for x in lines)


def test_lrb_oa_teacher_is_the_paper_recipe_from_an_only_accurate_length_best_teacher(
    tmp_path: Path,
) -> None:
    profile = PROFILES["ablations"]

    def build(method: str, p=profile):
        return build_run_config(p, RunSpec(method, 0.1, 0), tmp_path, tmp_path / "r")

    paper, oa, only = build("lrb-paper"), build("lrb-oa-teacher"), build("only-accurate")
    # the teacher trains as many steps as Only-Accurate and is handed over at its best val point
    assert (oa.stages[0].epochs, oa.stages[0].samples) == (only.stages[0].epochs, "accurate")
    assert oa.stages[0].epochs == 2 * paper.stages[0].epochs == 40
    assert oa.stages[0].handover == "best" and paper.stages[0].handover == "last"
    assert oa.stages[0].optim == paper.stages[0].optim
    # everything after the teacher is the paper recipe's
    assert oa.stages[1:] == paper.stages[1:] and oa.bank == paper.bank
    assert "lrb-oa-teacher" in BANK_VARIANTS and "lrb-oa-teacher" in PROFILES["ablations"].methods
    # `wrel bench --epochs teacher-warmup=3` sets every method's teacher, this one's too
    three = profile.with_epochs({"teacher-warmup": 3})
    assert build("lrb-oa-teacher", three).stages[0].epochs == 30
    assert build("lrb-paper", three).stages[0].epochs == 30
    assert build("only-accurate", three).stages[0].epochs == only.stages[0].epochs


def test_dry_run_names_the_run_whose_kept_stages_a_new_run_starts_from(tmp_path: Path) -> None:
    import argparse

    import torch

    from wrel.commands.bench import _status
    from wrel.core.config_io import dumps
    from wrel.engine.state import save_resume_state, stage_checkpoint_dir

    profile, runs = PROFILES["ablations"], tmp_path / "runs"
    donor_cfg = build_run_config(profile, RunSpec("lrb-paper", 0.1, 2), tmp_path, runs)
    donor = runs / donor_cfg.name
    donor.mkdir(parents=True)
    (donor / "config.json").write_text(dumps(donor_cfg))
    for index in (0, 1):  # the kept ends of the teacher warm-up and the bank initialisation
        state = {"loop": {"stage_index": index}, "stage": {"w": torch.zeros(1)}, "rng": {}}
        save_resume_state(stage_checkpoint_dir(donor / "checkpoints", index), state)
    args = argparse.Namespace(data=str(tmp_path), assignments=[], split_file=None)

    def status(method: str, seed: int = 2) -> str:
        return _status(RunSpec(method, 0.1, seed), {}, profile, args, runs)

    after = "to train after the first {} stage(s) of lrb-paper-r10-s2 (shared prefix)"
    assert status("lrb-dropout") == after.format(2)
    assert status("naive-teacher") == after.format(1)  # the teacher only
    assert status("lrb-oa-teacher") == "to train"  # another teacher
    assert status("naive-long") == "to train"
    assert status("lrb-dropout", seed=1) == "to train"


def test_runs_from_30_percent_accurate_train_as_long_as_full(tmp_path: Path) -> None:
    from wrel.engine.experiment import PAPER_BANK_LR, PAPER_STAGE_EPOCHS

    profile = PROFILES["full"]

    def stages(method: str, ratio: float, p: Profile = profile) -> dict:
        cfg = build_run_config(p, RunSpec(method, ratio, 0), tmp_path, tmp_path / "r")
        return {s.name: s for s in cfg.stages}

    full = profile.epochs["full"]
    assert full == 8
    for ratio in (0.3, 0.5):
        assert stages("naive", ratio)["naive"].epochs == full
        assert stages("only-accurate", ratio)["only-accurate"].epochs == round(full / ratio)
        lrb = stages("lrb-paper", ratio)
        # the short teacher and the one bank-initialisation visit stay; the joint stage is longer
        assert lrb["teacher-warmup"].epochs == round(profile.epochs["teacher-warmup"] / ratio)
        assert (lrb["bank-init"].epochs, lrb["joint"].epochs) == (1, full)
        # its bank still moves as far over the stage as the released one: half the rate
        want = PAPER_BANK_LR["joint"] * PAPER_STAGE_EPOCHS["joint"] / full
        assert lrb["joint"].bank_lr == pytest.approx(want, rel=1e-3)
        oa = stages("lrb-oa-teacher", ratio, PROFILES["ablations"])
        assert oa["teacher-warmup"].epochs == round(full / ratio)
    # 10 % keeps the calibrated schedule; Naive-WREL learns slower than Full on its samples
    assert stages("naive", 0.1)["naive"].epochs == 10
    assert stages("lrb-paper", 0.1)["joint"].epochs == 4
    # `wrel bench --epochs` sets a stage at every ratio, and the paper recipe's bank rate follows
    five = profile.with_epochs({"joint": 5})
    assert stages("lrb-paper", 0.3, five)["joint"].epochs == 5
    assert stages("lrb-paper", 0.3, five)["joint"].bank_lr == pytest.approx(
        PAPER_BANK_LR["joint"] * PAPER_STAGE_EPOCHS["joint"] / 5, rel=1e-3
    )
    assert stages("naive", 0.3, five)["naive"].epochs == full
    bad = Profile(**{**TINY.__dict__, "method_epochs": {"naive": {"naive": "nothing"}}})
    with pytest.raises(ValueError, match="runs as long as nothing"):
        bad.stage_epochs("naive", 0.1)


def test_a_finished_run_without_its_record_is_recorded_from_its_final_metrics(
    tmp_path: Path,
) -> None:
    """A run killed after it finished (training state removed) but before its record was
    written: the record is made from final_metrics.json, nothing is trained again."""
    specs = plan_runs(["naive"], [0.1], [0])
    kwargs = dict(data_root=tmp_path, out_dir=tmp_path / "out", runs_dir=tmp_path / "runs")
    result = _fake_train([], {"naive": 20.0})(
        build_run_config(TINY, specs[0], tmp_path, tmp_path / "runs")
    )
    (Path(result["run_dir"]) / "final_metrics.json").write_text(json.dumps(result))
    calls: list[str] = []
    lines: list[str] = []
    run_benchmark(TINY, specs, echo=lines.append, train_fn=_fake_train(calls, {}), **kwargs)
    assert calls == [] and any("is finished: its record is made from" in x for x in lines)
    (record,) = load_records(tmp_path / "out")
    assert record["test"]["mIoU"] == 20.0 and math.isnan(record["wall_time_s"])


def test_a_record_names_the_code_its_run_started_with(tmp_path: Path, monkeypatch) -> None:
    """The source tree moved to another commit while a run trained (a worktree checked out
    under a running bench): the record names the commit the process imported, not the tree's
    new one, and says where the tree stands now."""
    import wrel.studies.runner as runner

    old, new = {"commit": "a" * 40, "dirty": False}, {"commit": "b" * 40, "dirty": False}
    versions = iter([old] + [new] * 9)
    monkeypatch.setattr(runner, "code_version", lambda where=None: next(versions))
    calls: list[str] = []
    specs = plan_runs(["naive"], [0.1], [0])
    runner.run_benchmark(
        TINY, specs, echo=lambda _: None, train_fn=_fake_train(calls, {"naive": 20.0}),
        data_root=tmp_path, out_dir=tmp_path / "out", runs_dir=tmp_path / "runs",
        allow_mixed_versions=True,
    )  # fmt: skip
    (record,) = load_records(tmp_path / "out")
    assert record["code"]["commit"] == "a" * 40
    assert record["code"]["tree_at_record"] == {"commit": "b" * 40, "dirty": False}
    assert runner.record_version(record).startswith("code aaaaaaaaaa")


@pytest.mark.parametrize(("counted", "want"), [(1234.56, 1234.6), (None, None)])
def test_a_resumed_runs_record_takes_the_trainers_count_of_its_time(
    tmp_path: Path, counted: float | None, want: float | None
) -> None:
    """A run picked up again (here: finished, killed before its record) records the trainer's
    own count over every process, not the last process's minutes; NaN where it is unknown."""
    specs = plan_runs(["naive"], [0.1], [0])
    run = tmp_path / "runs" / specs[0].name
    fake = _fake_train([], {"naive": 20.0})
    result = fake(
        SimpleNamespace(
            name=specs[0].name,
            method="naive",
            train=SimpleNamespace(output_dir=str(tmp_path / "runs")),
        )
    )
    result["wall_time_s"] = counted
    (run / "final_metrics.json").write_text(json.dumps(result))
    lines: list[str] = []
    run_benchmark(
        TINY, specs, echo=lines.append, train_fn=fake, data_root=tmp_path,
        out_dir=tmp_path / "out", runs_dir=tmp_path / "runs",
    )  # fmt: skip
    [record] = load_records(tmp_path / "out")
    if want is None:
        assert math.isnan(record["wall_time_s"])
        assert any("time not recorded" in line for line in lines)
    else:
        assert record["wall_time_s"] == want
        assert any("done in 20 min 34 s" in line for line in lines)
