"""`wrel bench`: the method x accurate-ratio x seed grid, resumable, with a report after each run.

Every run is an ordinary training run (``wrel.engine.trainer.train``) under
``<runs_dir>/<run name>``; its record (config, seed, wall time, best-on-val metrics, test
metrics once, per category, training curve) goes to ``<out>/runs/<run name>.json``, and with
``train.trace_class_names`` (set by the profiles) its per-evaluation accurate vs class-name val
losses to ``<out>/traces/<run name>.jsonl`` (read by ``wrel bound``). A record
that exists means the run is finished and is skipped when the command is run again; a run
folder without a record (a killed run) is resumed from its last checkpoint. After every run the
report (``results.json``, ``results.md``, plots) is rewritten from all records in ``<out>``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wrel.core.bounded import load_json, loads_json
from wrel.core.config_io import flatten, from_dict, to_dict
from wrel.core.outfiles import check_output_paths, write_file
from wrel.data.splits import split_file_info
from wrel.data.synth import generate_benchmark
from wrel.data.synth.config import HASH_NEUTRAL, SynthConfig
from wrel.engine.experiment import build_experiment
from wrel.engine.shared_prefix import STORAGE_KEYS, start_from_shared_prefix
from wrel.engine.state import find_resume_dir
from wrel.engine.trainer import TRACE_FILE, train
from wrel.methods.base import ONE_PASS_KINDS
from wrel.studies.plateau import plateau_check, plateau_table
from wrel.studies.plots import plot_leakage, plot_ratio_curves, plot_training_curves
from wrel.studies.profiles import METHOD_ORDER, Profile, preset_of
from wrel.studies.report import (
    ABOVE_RULE,
    gap_lines,
    headline_table,
    markdown_table,
    paired_table,
    variant_choice,
    wall_time_table,
)

__all__ = [
    "RunSpec",
    "plan_runs",
    "run_benchmark",
    "ensure_benchmark_data",
    "build_run_config",
    "run_record",
    "load_records",
    "write_report",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSpec:
    """One cell of the grid."""

    method: str
    accurate_ratio: float
    seed: int

    @property
    def name(self) -> str:
        if self.method == "full":
            return f"full-s{self.seed}"
        return f"{self.method}-r{round(100 * self.accurate_ratio):02d}-s{self.seed}"


def plan_runs(
    methods: Sequence[str], ratios: Sequence[float], seeds: Sequence[int]
) -> list[RunSpec]:
    """The grid in execution order: seed-major, then ratio, then method; Full once per seed.

    Raises:
        ValueError: unknown method or a ratio outside (0, 1].
    """
    unknown = [m for m in methods if m not in METHOD_ORDER]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; valid methods: {METHOD_ORDER}")
    bad = [r for r in ratios if not 0.0 < r <= 1.0]
    if bad:
        raise ValueError(f"accurate ratios must lie in (0, 1], got {bad}")
    ordered = [m for m in METHOD_ORDER if m in methods]
    specs: list[RunSpec] = []
    for seed in seeds:
        for ratio in ratios:
            specs.extend(RunSpec(m, ratio, seed) for m in ordered if m != "full")
        if "full" in ordered:
            specs.append(RunSpec("full", 1.0, seed))
    return specs


def ensure_benchmark_data(profile: Profile, root: str | Path, *, workers: int = 2) -> Path:
    """Render the profile's synthetic benchmark under ``root`` unless it is already there.

    An existing benchmark must have been rendered with the profile's generator settings;
    otherwise the numbers would not be comparable, and the error says how to fix it.
    """

    root = Path(root)
    config = from_dict(SynthConfig, {**to_dict(SynthConfig()), **profile.synth})
    meta_path = root / "synthetic" / "meta.json"
    if meta_path.is_file():
        found = load_json(meta_path, "benchmark meta file").get("config", {})
        # a render made before a setting existed rendered as that setting's neutral value
        found = {**HASH_NEUTRAL, **found}
        if found != to_dict(config):
            diff = sorted(k for k in to_dict(config) if found.get(k) != to_dict(config)[k])
            raise ValueError(
                f"{root}/synthetic was rendered with other generator settings than profile "
                f"{profile.name!r} (differs in {diff}); use another --data folder or delete it"
            )
        return root
    log.info("rendering the embedded benchmark (profile %s) into %s", profile.name, root)
    generate_benchmark(root, config, num_workers=workers)
    return root


def build_run_config(
    profile: Profile,
    spec: RunSpec,
    data_root: str | Path,
    runs_dir: str | Path,
    extra_sets: Sequence[str] = (),
    split_file: str | None = None,
) -> Any:
    """The resolved ``ExperimentConfig`` of one run.

    The seed sets both the training seed and the weak-split seed, so the seed spread covers
    which expressions are accurate as well as initialisation and data order. With
    ``split_file`` (a weak-split file) the split is taken as-is and the accurate ratio is the
    file's (read and checked by :func:`wrel.engine.experiment.build_experiment`); Full, the
    all-accurate reference, reads the data set's own refs file.
    """

    # the file's split and ratio (build_experiment reads and checks the file); not for Full
    file_sets = (
        [f"data.split_file={json.dumps(str(split_file))}", "data.accurate_ratio=null"]
        if split_file and spec.method != "full"
        else []
    )
    sets = [
        *profile.experiment_sets(spec.method, spec.accurate_ratio),
        f"data.root={data_root}",
        f"data.accurate_ratio={spec.accurate_ratio}",
        f"data.split_seed={spec.seed}",
        f"train.seed={spec.seed}",
        f"train.output_dir={runs_dir}",
        f"name={spec.name}",
        *extra_sets,
        *file_sets,
    ]
    cfg = build_experiment(preset_of(spec.method), assignments=sets)
    if cfg.data.split_file:
        ratio = split_file_info(cfg.data.split_file, cfg.data.train_split).accurate_ratio
    else:
        ratio = cfg.data.accurate_ratio or 1.0
    stage_epochs = profile.stage_epochs(spec.method, ratio)
    for stage in cfg.stages:
        if stage.name not in stage_epochs:
            continue
        epochs = stage_epochs[stage.name]
        if profile.equal_steps and stage.kind not in ONE_PASS_KINDS and stage.samples != "all":
            # Same number of optimizer steps as a stage on all samples: a stage on the accurate
            # (weak) share r (1 - r) runs epochs / r (epochs / (1 - r)) epochs, evaluated about
            # as often.
            share = ratio if stage.samples == "accurate" else 1.0 - ratio
            scale = 1.0 / max(share, 1e-6)
            stage.eval_every = max(1, round(scale))
            epochs = max(1, round(epochs * scale))
        stage.epochs = epochs
    return cfg


def _curve(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    points = []
    for line in path.read_text().splitlines():
        rec = loads_json(line, f"a line of {path}")
        if rec.get("event") == "train":
            points.append(
                {
                    "step": rec["step"],
                    "epoch": rec.get("epoch"),
                    "stage": rec.get("stage"),
                    "loss": rec.get("loss"),
                }
            )
        elif rec.get("event") == "val":
            points.append(
                {
                    "step": rec["step"],
                    "epoch": rec.get("epoch"),
                    "stage": rec.get("stage"),
                    "val_mIoU": rec.get("mIoU"),
                    "val_oIoU": rec.get("oIoU"),
                }
            )
        elif rec.get("event") == "leakage":  # wrel.engine.leakage, runs with a bank
            keys = ("mIoU_bank", "mIoU_class_name", "mIoU_expression", "gap", "num_samples")
            points.append(
                {
                    "step": rec["step"],
                    "epoch": rec.get("epoch"),
                    "stage": rec.get("stage"),
                    "leakage": {k: rec.get(k) for k in keys},
                }
            )
    return points


def code_version(where: str | Path | None = None) -> dict[str, Any]:
    """The code a run used: the git commit of the wrel source tree and whether the tree had
    uncommitted changes (None for both outside a git checkout, e.g. an installed wheel)."""

    src = Path(where) if where is not None else Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(src), *args], capture_output=True, text=True, timeout=20,
                check=True,
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": commit.strip() if commit else None,
        "dirty": bool(status.strip()) if status is not None else None,
    }


def data_version(root: str | Path) -> dict[str, Any] | None:
    """The embedded benchmark's generator version, regime and settings hash under ``root``
    (None for other data: a real data set names itself by its path)."""

    meta_path = Path(root) / "synthetic" / "meta.json"
    if not meta_path.is_file():
        return None
    meta = load_json(meta_path, "benchmark meta file")
    config = meta.get("config", {})
    regime = config.get("regime", "ambiguous")  # renders before 2.0 had no regime key
    settings = (
        meta.get("settings_hash")
        or (
            from_dict(
                SynthConfig,
                {**to_dict(SynthConfig.for_regime(regime)), **HASH_NEUTRAL, **config},
            )
        ).settings_hash()
    )
    return {
        "generator_version": meta.get("version"),
        "regime": regime,
        "settings_hash": settings,
    }


def run_record(
    spec: RunSpec,
    cfg: Any,
    result: dict[str, Any],
    wall_time_s: float,
    code: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON record of a finished run (see :mod:`wrel.studies.report`).

    ``code`` is the code version taken when the run started (the source tree may have moved to
    another commit while it trained; the record must name the code the process imported).
    Where the tree has moved since, the record also names where it stands now
    (``code.tree_at_record``).
    """
    now = code_version()
    if code is None:
        code = now
    elif now != code:
        code = {**code, "tree_at_record": now}

    best = result.get("best") or {}
    curve = _curve(Path(result["run_dir"]))
    return {
        "name": spec.name,
        "method": spec.method,
        "accurate_ratio": spec.accurate_ratio,
        "seed": spec.seed,
        "wall_time_s": round(wall_time_s, 1),
        "run_dir": result.get("run_dir"),
        "best": {k: best.get(k) for k in ("stage", "epoch", "step")},
        "val": best.get("val"),
        "test": result.get("test"),
        "curve": curve,
        "plateau": plateau_check(curve),
        "code": code,
        "data": data_version(cfg.data.root),
        "config": to_dict(cfg),
    }


#: Config keys that do not change a run's numbers: a record made with other values of these
#: is not stale (the data root may move; the data's own settings are compared).
_NOT_RESULT_KEYS = STORAGE_KEYS | {"data.root"}


def record_differences(record: dict[str, Any], cfg: Any) -> list[str]:
    """The settings that differ between a finished run's record and the config ``cfg`` that
    the profile now gives the same run, as ``"key: recorded -> now"`` lines; empty when the
    record still stands.

    Keys that only one side has (a setting added or dropped between wrel versions, or per-kind
    stage settings) are not compared, nor those in ``_NOT_RESULT_KEYS``.
    """

    old = flatten(record.get("config") or {})
    new = flatten(json.loads(json.dumps(to_dict(cfg))))
    return [
        f"{key}: {old[key]!r} -> {new[key]!r}"
        for key in sorted(old.keys() & new.keys())
        if key not in _NOT_RESULT_KEYS and old[key] != new[key]
    ]


def stale_records(
    profile: Profile, out_dir: str | Path, data_root: str | Path, runs_dir: str | Path = "runs"
) -> dict[str, list[str]]:
    """Records under ``out_dir`` whose settings differ from what ``profile`` gives the same run
    (name -> :func:`record_differences`); records of methods the profile does not know are
    skipped."""

    out: dict[str, list[str]] = {}
    for record in load_records(out_dir):
        try:
            spec = RunSpec(record["method"], record["accurate_ratio"], record["seed"])
            cfg = build_run_config(profile, spec, data_root, runs_dir)
        except (KeyError, ValueError):
            continue
        if diffs := record_differences(record, cfg):
            out[record["name"]] = diffs
    return out


def _set_aside_stale(
    names: Sequence[str], out: Path, runs_dir: Path, echo: Callable[[str], None]
) -> None:
    """Move stale records, their traces and run folders aside (nothing is deleted)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = out / "runs" / "stale"
    aside.mkdir(parents=True, exist_ok=True)
    for name in names:
        os.replace(out / "runs" / f"{name}.json", aside / f"{name}.{stamp}.json")
        trace = out / "traces" / f"{name}.jsonl"
        if trace.is_file():
            (out / "traces" / "stale").mkdir(exist_ok=True)
            os.replace(trace, out / "traces" / "stale" / f"{name}.{stamp}.jsonl")
        run_dir = runs_dir / name
        moved = ""
        if run_dir.exists():
            target = runs_dir / f"{name}.stale-{stamp}"
            os.replace(run_dir, target)
            moved = f", run folder -> {target}"
        echo(f"    set aside the stale record of {name} -> {aside / f'{name}.{stamp}.json'}{moved}")


def load_records(out_dir: str | Path) -> list[dict[str, Any]]:
    """Every run record under ``<out_dir>/runs``, sorted by name."""
    folder = Path(out_dir) / "runs"
    if not folder.is_dir():
        return []
    return [load_json(p, "run record") for p in sorted(folder.glob("*.json"))]


def _write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` atomically; no temporary file is left on a failure."""
    write_file(path, text, overwrite=True)


#: The files write_report rewrites in the --out folder of wrel bench.
REPORT_FILES = (
    "results.json",
    "results.md",
    "miou_vs_ratio.png",
    "training_curves.png",
    "leakage.png",
)


def check_report_paths(out_dir: str | Path, overwrite: bool = False) -> None:
    """Refuse, before any run, report files in ``out_dir`` that wrel bench did not write.

    A folder holding run records (``runs/*.json``) is wrel bench's own: its reports are
    rewritten from the records on every run. Elsewhere an existing report file needs
    ``overwrite`` (``--overwrite``).

    Raises:
        ValueError: naming the file and the fix.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder; give a folder for the report")
    if any((out / "runs").glob("*.json")):
        return
    reports = {f"report file ({name})": out / name for name in REPORT_FILES}
    check_output_paths(reports, overwrite=overwrite)


def record_version(record: dict[str, Any]) -> str:
    """``<commit>[+dirty] / data <settings hash>`` of a record ("unrecorded" where an older
    record does not say)."""
    code = record.get("code") or {}
    commit = (code.get("commit") or "unrecorded")[:10] + ("+dirty" if code.get("dirty") else "")
    data = (record.get("data") or {}).get("settings_hash") or "unrecorded"
    return f"code {commit} / data {data}"


def mixed_cells(records: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
    """Table cells (method at a ratio) whose runs name more than one code or data version."""
    cells: dict[str, set[str]] = {}
    for rec in records:
        cell = f"{rec['method']} at {float(rec['accurate_ratio']):.0%}"
        cells.setdefault(cell, set()).add(record_version(rec))
    return {cell: sorted(v) for cell, v in sorted(cells.items()) if len(v) > 1}


def write_report(
    out_dir: str | Path, title: str = "", *, allow_mixed_versions: bool = False
) -> dict[str, Path]:
    """``results.json`` (all records), ``results.md`` (tables) and the plots, from the records.

    A cell whose runs name different code or data versions is an error unless
    ``allow_mixed_versions``; the report then lists every such cell with its versions. Every
    record's plateau verdict is recomputed from its curve with today's one rule.
    """

    out = Path(out_dir)
    records = load_records(out)
    mixed = mixed_cells(records)
    if mixed and not allow_mixed_versions:
        first = next(iter(mixed.items()))
        raise ValueError(
            f"{len(mixed)} table cell(s) in {out} mix runs of different code or data versions "
            f"(e.g. {first[0]}: {'; '.join(first[1])}); rerun them on one version, or pass "
            "--allow-mixed-versions and the report lists them"
        )
    for rec in records:
        if rec.get("curve"):
            stage = (rec.get("plateau") or {}).get("stage")
            rec["plateau"] = plateau_check(rec["curve"], stage=stage)
    paths = {"json": out / "results.json", "md": out / "results.md"}
    _write_atomic(paths["json"], json.dumps(records, indent=1, sort_keys=True) + "\n")
    if not records:
        return paths
    seeds = sorted({r["seed"] for r in records})
    text = [
        f"# {title or 'Benchmark results'}",
        "",
        "Test split, scored once per run with the checkpoint chosen on val. Cells: oIoU / mIoU "
        f"(%), mean ± std over the seeds present (n); seeds in these records: {seeds}.",
        "",
        *_plateau_warning(records),
        *_mixed_lines(mixed),
        "## The table",
        "",
        "Test mIoU (%), mean ± std over the seeds present (n), in the paper's layout: the "
        "baselines, LRB-WREL as released (scaled to this budget), the bank variant chosen on "
        "val at that ratio (see below), Full. The share of the Only-Accurate -> Full gap is "
        "computed per seed against that seed's Only-Accurate and Full runs.",
        "",
        headline_table(records),
        "",
        "## Every method",
        "",
        markdown_table(records, "test"),
        "",
        "Share of the Only-Accurate -> Full mIoU gap closed (of the means over seeds):",
        "",
        *(gap_lines(records) or ["- (needs Only-Accurate, the method and Full)"]),
        "",
        "## Bank variant chosen on val",
        "",
        "The table's best bank variant is the bank variant (not the paper recipe, not an "
        "ablation) highest on val mIoU at each ratio: each variant's val minus the paper "
        "recipe's on the same seeds, averaged over the seeds both ran (variants that ran "
        "different seeds are compared through the recipe every seed has); test plays no part. "
        "With one seed a variant's difference is no finding until it exceeds the seed spread.",
        "",
        *(variant_choice(records) or ["- (no bank variant run yet)"]),
        "",
        "## Paired by seed, against Naive-WREL",
        "",
        "Each method's test mIoU minus Naive-WREL's in the same seed (same weak split, same "
        f"initialisation), mean ± std over the seeds both ran. {ABOVE_RULE}",
        "",
        paired_table(records),
        "",
        "## Plateau check",
        "",
        "A run reached its plateau when its val mIoU gains less than 1 point over the last "
        "20 % of its final stage's steps, counted from the best of the last three evaluations "
        "before that window (wrel.studies.plateau; one rule, recomputed here for every record).",
        "",
        plateau_table(records),
        "",
        "## Training cost (wall time per run, this machine)",
        "",
        wall_time_table(records),
        "",
    ]
    _write_atomic(paths["md"], "\n".join(text))
    paths["ratio_plot"] = plot_ratio_curves(records, out / "miou_vs_ratio.png")
    paths["curves_plot"] = plot_training_curves(records, out / "training_curves.png")
    if any(p.get("leakage") for r in records for p in r.get("curve") or []):
        paths["leakage_plot"] = plot_leakage(records, out / "leakage.png")
    return paths


def _refuse_mixed_versions(
    specs: Sequence[RunSpec], done: dict[str, dict[str, Any]], data_root: str | Path
) -> None:
    """Refuse, before training, runs that would join a cell holding another code or data
    version (a finished run of the same cell, another seed)."""
    planned = {(s.method, round(s.accurate_ratio, 4)) for s in specs if s.name not in done}
    if not planned:
        return
    now = record_version({"code": code_version(), "data": data_version(data_root)})
    clash = [
        f"{r['name']} ({record_version(r)})"
        for r in done.values()
        if (r["method"], round(float(r["accurate_ratio"]), 4)) in planned
        and record_version(r) != now
    ]
    if clash:
        raise ValueError(
            f"the planned runs would share table cells with runs of another code or data "
            f"version than this one ({now}): {', '.join(clash[:4])}; use another --out, or pass "
            "--allow-mixed-versions and the report lists the mixed cells"
        )


def _mixed_lines(mixed: dict[str, list[str]]) -> list[str]:
    """The override notice: every cell that mixes code or data versions, with its versions."""
    if not mixed:
        return []
    lines = [f"**{len(mixed)} cell(s) mix code or data versions** (--allow-mixed-versions):", ""]
    lines += [f"- {cell}: {'; '.join(versions)}" for cell, versions in mixed.items()]
    return [*lines, ""]


def _plateau_warning(records: Sequence[dict[str, Any]]) -> list[str]:
    """A warning above the table when runs stopped before their plateau (else nothing)."""
    short = [r["name"] for r in records if (r.get("plateau") or {}).get("reached") is False]
    if not short:
        return []
    return [
        f"**{len(short)} of {len(records)} runs did not reach their plateau** ({', '.join(short)}; "
        'see "Plateau check"): their numbers measure training length as much as the method, '
        "and a comparison that involves them is not a method comparison.",
        "",
    ]


def _eta(remaining: Sequence[RunSpec], records: Sequence[dict[str, Any]]) -> float | None:
    """Seconds left: each remaining run costs the mean wall time of finished runs of the same
    method and ratio (else of the method, else of all runs). Records without a wall time (NaN:
    a run resumed across sessions or started from another run's stages) do not count."""
    records = [r for r in records if math.isfinite(float(r.get("wall_time_s", math.nan)))]
    if not records:
        return None
    total = 0.0
    overall = sum(r["wall_time_s"] for r in records) / len(records)
    for spec in remaining:
        same = [
            r["wall_time_s"]
            for r in records
            if r["method"] == spec.method and r["accurate_ratio"] == spec.accurate_ratio
        ] or [r["wall_time_s"] for r in records if r["method"] == spec.method]
        total += sum(same) / len(same) if same else overall
    return total


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "unknown until the first run ends"
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def run_benchmark(
    profile: Profile,
    specs: Sequence[RunSpec],
    *,
    data_root: str | Path,
    out_dir: str | Path,
    runs_dir: str | Path,
    extra_sets: Sequence[str] = (),
    split_file: str | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    train_fn: Callable[..., dict[str, Any]] | None = None,
    rerun_stale: bool = False,
    allow_mixed_versions: bool = False,
) -> list[dict[str, Any]]:
    """Run every spec not finished yet, writing its record and the report after each.

    A finished record whose settings differ from what the profile now gives the same run
    (:func:`record_differences`: the profile's epochs were changed, say) is stale: it is an
    error that lists the differences, unless ``rerun_stale``, which moves the record, its trace
    and its run folder aside (``<out>/runs/stale/``, ``<runs_dir>/<name>.stale-<time>``) and
    trains the run again.

    Args:
        profile: generator / training settings (see :mod:`wrel.studies.profiles`).
        specs: the runs, e.g. from :func:`plan_runs`.
        data_root: refer-format data root.
        out_dir: where records, tables and plots go (e.g. ``docs/results``).
        runs_dir: parent of the run folders (checkpoints, logs).
        extra_sets: ``--set`` overrides applied to every run after the profile's.
        split_file: a published weak-split refs file used instead of built splits.
        progress: progress bars inside each run.
        echo: where the per-run status lines go.
        train_fn: the training function (``wrel.engine.trainer.train``; injectable for tests).
        rerun_stale: set stale records aside and train those runs again (else: an error).
        allow_mixed_versions: let a table cell hold runs of different code or data versions
            (the report then lists them); else such a plan is refused before any training.

    Returns:
        The records of ``specs`` (finished earlier or now).
    """

    if train_fn is None:
        train_fn = train
    title = f"wrel bench, profile {profile.name}"
    out = Path(out_dir)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    records_dir = out / "runs"
    started_code = code_version()  # what this process imports, whatever the tree does later
    done_records = {r["name"]: r for r in load_records(out)}
    if not allow_mixed_versions:
        _refuse_mixed_versions(specs, done_records, data_root)
    stale = {
        spec.name: diffs
        for spec in specs
        if spec.name in done_records
        and (
            diffs := record_differences(
                done_records[spec.name],
                build_run_config(profile, spec, data_root, runs_dir, extra_sets, split_file),
            )
        )
    }
    if stale and not rerun_stale:
        lines = [
            f"  {name}: "
            + "; ".join(diffs[:4])
            + (f"; +{len(diffs) - 4} more" if len(diffs) > 4 else "")
            for name, diffs in stale.items()
        ]
        raise ValueError(
            f"{len(stale)} finished record(s) in {records_dir} were made with other settings than "
            "the profile now gives them (recorded -> now):\n" + "\n".join(lines) + "\nPass "
            "--rerun-stale to set them aside (nothing is deleted) and train them again, or write "
            "to another --out"
        )
    if stale:
        _set_aside_stale(list(stale), out, Path(runs_dir), echo)
        for name in stale:
            del done_records[name]
    todo = [s for s in specs if s.name not in done_records]
    echo(
        f"wrel bench: profile {profile.name}, {len(specs)} runs, {len(specs) - len(todo)} "
        f"finished earlier, {len(todo)} to go"
    )
    for index, spec in enumerate(todo):
        eta = _eta(todo[index:], list(done_records.values()))
        echo(
            f"[{index + 1}/{len(todo)}] {spec.name}: {spec.method} at "
            f"{spec.accurate_ratio:.0%} accurate, seed {spec.seed} (time left ~{_fmt_s(eta)})"
        )
        cfg = build_run_config(profile, spec, data_root, runs_dir, extra_sets, split_file)
        cfg.train.progress = progress
        run_dir = Path(runs_dir) / spec.name
        shared = None
        if cfg.train.keep_stage_checkpoints:
            shared = start_from_shared_prefix(cfg, runs_dir)
        resume = find_resume_dir(run_dir / "checkpoints" / "last") is not None
        if shared is not None:
            echo(
                f"    its first {shared[1]} stage(s) are those of {shared[0].name} (same "
                "settings and seed): starting from that run's checkpoint at their end"
            )
        elif resume:
            echo(f"    resuming the unfinished run in {run_dir}")
        final = run_dir / "final_metrics.json"
        if shared is None and not resume and not final.is_file() and run_dir.exists():
            # stopped before its first resumable checkpoint (a `best` export may exist, which
            # the trainer will not train over): keep it aside and train the run from the start
            aside = run_dir.with_name(
                f"{run_dir.name}.unfinished-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
            )
            os.replace(run_dir, aside)
            echo(
                f"    {run_dir} stopped before its first resumable checkpoint: moved aside to "
                f"{aside}; training the run from the start"
            )
        start = time.perf_counter()
        if shared is None and not resume and final.is_file():
            # finished (and its training state removed) but killed before its record
            echo(f"    {run_dir} is finished: its record is made from {final.name}")
            result, resume = load_json(final, "final metrics"), True
        else:
            result = train_fn(cfg, resume=resume)
        elapsed = time.perf_counter() - start
        if resume:
            # the trainer's own count over every process that worked on the run (a killed
            # one up to its last checkpoint); unknown (NaN) for a run whose checkpoints
            # predate that count: say so rather than under-report
            counted = result.get("wall_time_s")
            elapsed = float(counted) if isinstance(counted, (int, float)) else float("nan")
        record = run_record(spec, cfg, result, elapsed, code=started_code)
        if shared is not None:
            record["shared_prefix"] = {"run": shared[0].name, "stages": shared[1]}
        trace = run_dir / TRACE_FILE
        if trace.is_file():  # before the record: a record means the run is complete
            (out / "traces").mkdir(exist_ok=True)
            _write_atomic(out / "traces" / f"{spec.name}.jsonl", trace.read_text())
        _write_atomic(records_dir / f"{spec.name}.json", json.dumps(record, indent=1) + "\n")
        done_records[spec.name] = record
        test = record["test"] or {}
        echo(
            f"    done in {'n/a (resumed, time not recorded)' if math.isnan(elapsed) else _fmt_s(elapsed)}: test "
            f"mIoU {test.get('mIoU', float('nan')):.2f}, oIoU {test.get('oIoU', float('nan')):.2f}"
        )
        write_report(out, title=title, allow_mixed_versions=allow_mixed_versions)
    write_report(out, title=title, allow_mixed_versions=allow_mixed_versions)
    return [done_records[s.name] for s in specs]
