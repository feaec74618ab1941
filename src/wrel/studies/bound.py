"""`wrel bound`: the bound of docs/theory.md evaluated on the runs of `wrel bench`.

Loss: ``1 - IoU`` per sample (in [0, 1]); risks are its means, so ``R = 1 - mIoU / 100``.

- ``Delta``: on the val split, where every sample has its accurate expression and its class
  name, the largest paired gap ``|R(h) - R_w(h)|`` over every checkpoint the benchmark's runs
  (one seed) visit: each evaluation during training, read from the runs' traces
  (``train.trace_class_names``, ``<runs>/traces/<run>.jsonl``). A run without a trace
  contributes its best checkpoint, scored here. A simultaneous bootstrap confidence interval
  covers all checkpoints.
- ``eps_n``: the proxy ``c / sqrt(n)`` fitted through ``|R_val - R_train|`` of the runs trained
  on accurate expressions only (Only-Accurate at each ratio, Full), against their train size.
- Measured gap: ``R(h_mix) - R(h*)`` on test, with Naive-WREL (or LRB-WREL) as ``h_mix`` and
  Full as the proxy of ``h*``.
- Effective ``Delta`` with the reference bank: on the weak training samples of each LRB-WREL
  run, ``|R - R_w|`` with class name + bank prompts as the weak expression, next to the plain
  class-name gap of the same model on the same samples.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wrel.core.bounded import data_file_limit, loads_json, read_limited
from wrel.core.outfiles import check_output_paths, write_file
from wrel.data.dataset import load_samples
from wrel.data.splits import split_file_info
from wrel.engine.checkpoint import load_model
from wrel.evaluation.per_sample import losses_from_counts, paired_losses
from wrel.methods.bank import ReferenceBank
from wrel.studies.scoring import class_name_view, score_samples
from wrel.theory import bound_terms, estimate_delta, fit_eps

__all__ = [
    "BOUND_ROLES",
    "BoundRole",
    "role_of",
    "measure_bound",
    "plot_bound",
    "bound_markdown",
    "load_traces",
    "write_bound",
]

log = logging.getLogger(__name__)


def _train_split(data_root: str | Path, data_cfg: dict[str, Any]) -> list[Any]:
    """The train samples with the weak split a run trained on (built or published)."""

    split_file = data_cfg.get("split_file")
    return load_samples(
        data_root,
        "train",
        # a split file carries its own ratio (records of older versions also kept the default)
        accurate_ratio=None if split_file else data_cfg["accurate_ratio"],
        seed=data_cfg["split_seed"],
        split_file=split_file,
    )


def _rho(rec: dict[str, Any]) -> float:
    """The accurate ratio a run trained with: its split file's own ratio when it had one."""
    split_file = ((rec.get("config") or {}).get("data") or {}).get("split_file")
    if split_file and Path(split_file).is_file():
        return split_file_info(split_file).accurate_ratio
    return float(rec["accurate_ratio"])


def load_traces(runs_dir: str | Path, names: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The per-evaluation class-name traces of the runs ``names`` that have one.

    Args:
        runs_dir: a ``wrel bench --out`` folder; traces are ``traces/<run name>.jsonl``.
        names: run names.

    Returns:
        Run name -> its trace lines (stage, epoch, step, sample_ids, loss, loss_class_name).
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        path = Path(runs_dir) / "traces" / f"{name}.jsonl"
        if path.is_file():
            text = read_limited(path, data_file_limit(), "trace file").decode("utf-8")
            lines = [loads_json(ln, str(path)) for ln in text.splitlines() if ln.strip()]
            if lines:
                out[name] = lines
    return out


def _best_model(run_dir: Path, name: str, device: str) -> Any:
    """The exported best student of a run, with a clear error when the folder is gone."""

    folder = run_dir / "checkpoints" / "best"
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{name}: {folder} does not exist; `wrel bound` scores the runs' best checkpoints "
            "(for eps and the bank), and run folders are not stored with the records: train "
            "them with `wrel bench --out NEW` and pass --runs NEW"
        )
    return load_model(folder, device=device)[0]


def _risk(records: list[Any]) -> float:
    """Mean ``1 - IoU`` of ``(sample_id, category, I, U)`` records."""
    return float(losses_from_counts([r[2] for r in records], [r[3] for r in records]).mean())


def _trace_rows(
    name: str, lines: list[dict[str, Any]], val_ids: np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    acc, weak, labels = [], [], []
    for line in lines:
        ids = np.asarray(line["sample_ids"], dtype=np.int64)
        if not np.array_equal(ids, val_ids):
            raise ValueError(
                f"the trace of {name} covers other val samples than --data holds; pass the data "
                "the runs trained on"
            )
        acc.append(np.asarray(line["loss"], dtype=np.float64))
        weak.append(np.asarray(line["loss_class_name"], dtype=np.float64))
        labels.append(f"{name}@{line['stage']}:{line['epoch']}")
    return acc, weak, labels


@dataclass(frozen=True)
class BoundRole:
    """What the runs of one bench method contribute to the bound (besides ``Delta``)."""

    accurate_only: bool = False  # trained on accurate expressions only: a point of the eps fit
    mixed: bool = False  # trained on accurate + weak expressions: a bound row (``h_mix``)
    bank: bool = False  # with a reference bank: the effective Delta with its bank
    reference: bool = False  # the proxy of ``h*`` the measured gaps are taken against


#: Bench method -> its role; a method not listed only enters ``Delta`` (its val checkpoints).
BOUND_ROLES: dict[str, BoundRole] = {
    "only-accurate": BoundRole(accurate_only=True),
    "full": BoundRole(accurate_only=True, reference=True),
    "naive": BoundRole(mixed=True),
    "lrb": BoundRole(mixed=True, bank=True),
    "lrb-paper": BoundRole(mixed=True, bank=True),
    "lrb-words": BoundRole(mixed=True, bank=True),
    "lrb-imagenet": BoundRole(mixed=True, bank=True),
    "lrb-fixed": BoundRole(mixed=True, bank=True),
    "lrb-dropout": BoundRole(mixed=True, bank=True),
    "lrb-oa-teacher": BoundRole(mixed=True, bank=True),
    "naive-teacher": BoundRole(mixed=True),
    "naive-long": BoundRole(mixed=True),
    "retrieve": BoundRole(mixed=True),
}


def role_of(method: str) -> BoundRole:
    """The :class:`BoundRole` of a bench method (none for a method not in the mapping)."""
    return BOUND_ROLES.get(method, BoundRole())


@dataclass
class _BoundData:
    """What every run is scored against: the data, the val views, and the options."""

    root: str | Path
    val: list[Any]
    val_weak: list[Any]
    val_ids: np.ndarray
    traces: dict[str, list[dict[str, Any]]]
    device: str
    confidence: float
    echo: Callable[[str], None]


@dataclass
class _Terms:
    """The per-run pieces of the bound, collected over the runs of one seed."""

    acc_losses: list[np.ndarray] = field(default_factory=list)
    weak_losses: list[np.ndarray] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    run_of: list[str] = field(default_factory=list)  # the run of each Delta row
    eps_points: list[dict[str, Any]] = field(default_factory=list)
    bank_rows: list[dict[str, Any]] = field(default_factory=list)


def _seed_runs(records: list[dict[str, Any]], seed: int | None) -> tuple[int, list[dict]]:
    """The seed (default: the smallest with a reference run) and its runs."""
    refs = sorted(r["seed"] for r in records if role_of(r["method"]).reference)
    if not refs:
        raise ValueError("the records hold no Full run; run `wrel bench` with the full method")
    seed = refs[0] if seed is None else seed
    runs = [r for r in records if r["seed"] == seed]
    if not any(role_of(r["method"]).reference for r in runs):
        raise ValueError(f"no Full run for seed {seed}; seeds with one: {refs}")
    return seed, runs


def _add_run(rec: dict[str, Any], data: _BoundData, terms: _Terms) -> None:
    """Score one run and add its Delta rows, eps point and bank row to ``terms``."""
    name, role = rec["name"], role_of(rec["method"])
    run_dir = Path(rec["run_dir"])
    size = int(rec["config"]["data"]["image_size"])
    # the best checkpoint is loaded only when something must be scored (a traced Naive-WREL
    # run needs nothing but its trace)
    best = functools.cache(lambda: _best_model(run_dir, name, data.device))

    def score(samples: list[Any], bank: Any = None) -> list[Any]:
        return score_samples(best(), samples, image_size=size, device=data.device, bank=bank)

    traced = name in data.traces
    val_scores = score(data.val) if not traced or role.accurate_only else []
    if traced:
        a, w, labels = _trace_rows(name, data.traces[name], data.val_ids)
        data.echo(f"{name}: {len(labels)} visited checkpoints from its trace")
    else:
        data.echo(f"scoring {name} (best checkpoint only: no trace) on val")
        loss_accurate, loss_weak, _ = paired_losses(val_scores, score(data.val_weak))
        a, w, labels = [loss_accurate], [loss_weak], [f"{name}@best"]
    terms.acc_losses += a
    terms.weak_losses += w
    terms.names += labels
    terms.run_of += [name] * len(labels)
    data_cfg = rec["config"]["data"]
    if role.accurate_only:
        train = [s for s in _train_split(data.root, data_cfg) if s.quality == "accurate"]
        terms.eps_points.append(_eps_point(name, len(train), score(train), val_scores))
    bank_file = run_dir / "bank.safetensors"
    if role.bank and bank_file.is_file():
        data.echo(f"scoring {name}'s weak training samples with and without its bank")
        weak = [s for s in _train_split(data.root, data_cfg) if s.quality == "weak"]
        weak_ids = {s.sample_id for s in weak}
        train_all = load_samples(data.root, "train", accurate_ratio=None)
        accurate = [s for s in train_all if s.sample_id in weak_ids]
        bank = ReferenceBank.load(bank_file, device=data.device)
        row = _bank_row(score(accurate), score(weak, bank), score(weak), data.confidence)
        terms.bank_rows.append(
            {"run": name, "rho": rec["accurate_ratio"], "num_weak": len(weak), **row}
        )


def _eps_point(run: str, n: int, train: list[Any], val: list[Any]) -> dict[str, Any]:
    """One point of the eps fit: a run's train and val risks and their gap."""
    train_risk, val_risk = _risk(train), _risk(val)
    return {
        "run": run,
        "n": n,
        "train_risk": train_risk,
        "val_risk": val_risk,
        "gap": abs(val_risk - train_risk),
    }


def _bank_row(
    accurate: list[Any], with_bank: list[Any], class_name: list[Any], confidence: float
) -> dict[str, Any]:
    """Risks and Deltas of one model's weak training samples, with and without its bank."""
    loss_accurate, loss_bank, _ = paired_losses(accurate, with_bank)
    _, loss_class_name, _ = paired_losses(accurate, class_name)
    banked = estimate_delta(loss_accurate, loss_bank, confidence=confidence)
    plain = estimate_delta(loss_accurate, loss_class_name, confidence=confidence)
    return {
        "risk_accurate": float(loss_accurate.mean()),
        "risk_class_name": float(loss_class_name.mean()),
        "risk_class_name_bank": float(loss_bank.mean()),
        "delta_class_name": plain.delta_hat,
        "delta_class_name_ci": [plain.lower, plain.upper],
        "delta_with_bank": banked.delta_hat,
        "delta_with_bank_ci": [banked.lower, banked.upper],
    }


def _bound_rows(
    runs: list[dict[str, Any]], n_train: int, delta: Any, fit: Any, bank_rows: list[dict]
) -> list[dict[str, Any]]:
    """One row per run trained on mixed expressions: its terms and measured gap to Full."""
    reference = next(r for r in runs if role_of(r["method"]).reference)
    risk_ref = 1.0 - reference["test"]["mIoU"] / 100.0
    rows = []
    for rec in runs:
        if not role_of(rec["method"]).mixed:
            continue
        rho = _rho(rec)
        measured = (1.0 - rec["test"]["mIoU"] / 100.0) - risk_ref
        terms = bound_terms(rho, n_train, delta.delta_hat, fit.at, measured)
        row = {"method": rec["method"], "run": rec["name"], **terms.to_dict()}
        bank_row = next((b for b in bank_rows if b["run"] == rec["name"]), None)
        if bank_row is not None:
            bank_terms = bound_terms(rho, n_train, bank_row["delta_with_bank"], fit.at, measured)
            row["bound_mix_bank_delta"] = bank_terms.bound_mix
            row["holds_bank_delta"] = bank_terms.holds
        rows.append(row)
    rows.sort(key=lambda r: (r["rho"], r["method"]))
    return rows


def measure_bound(
    records: list[dict[str, Any]],
    data_root: str | Path,
    *,
    traces: dict[str, list[dict[str, Any]]] | None = None,
    seed: int | None = None,
    device: str = "cpu",
    confidence: float = 0.95,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Every term of the bound at each accurate ratio of one seed's runs.

    What each run contributes follows its method's :class:`BoundRole` (:data:`BOUND_ROLES`).

    Args:
        records: run records of ``wrel bench`` (``wrel.studies.runner.load_records``).
        data_root: the refer-format data the runs trained on (all expressions available).
        traces: run name -> trace lines (:func:`load_traces`): every checkpoint the run
            visited enters ``Delta``; runs without one contribute their best checkpoint.
        seed: which seed's runs (default: the smallest seed that has a Full run).
        device: where checkpoints are evaluated.
        confidence: joint coverage of the ``Delta`` intervals.
        echo: progress lines.

    Returns:
        A JSON-able dict: ``delta``, ``eps``, ``rows`` (one per ratio and method), ``bank``.
    """

    seed, runs = _seed_runs(records, seed)
    val = load_samples(data_root, "val")
    n_train = len(load_samples(data_root, "train", accurate_ratio=None))
    data = _BoundData(
        root=data_root,
        val=val,
        val_weak=class_name_view(val),
        val_ids=np.array(sorted(s.sample_id for s in val), dtype=np.int64),
        traces=traces or {},
        device=device,
        confidence=confidence,
        echo=echo,
    )
    terms = _Terms()
    for rec in sorted(runs, key=lambda r: (r["method"], r["accurate_ratio"])):
        _add_run(rec, data, terms)
    names = terms.names
    delta = estimate_delta(
        np.stack(terms.acc_losses), np.stack(terms.weak_losses), confidence=confidence
    )
    if not terms.eps_points:
        raise ValueError("no Only-Accurate or Full run to fit eps from")
    fit = fit_eps([p["n"] for p in terms.eps_points], [p["gap"] for p in terms.eps_points])
    return {
        "seed": seed,
        "n_train": n_train,
        "loss": "1 - IoU per sample (risk = 1 - mIoU/100); measured gaps on test vs Full",
        "delta": {
            "estimate": delta.delta_hat,
            "ci": [delta.lower, delta.upper],
            "confidence": confidence,
            "argmax_run": names[delta.argmax],
            "per_run": {
                name: {"risk": g.risk, "risk_class_name": g.risk_weak, "gap": g.gap}
                for name, g in zip(names, delta.gaps, strict=True)
            },
            "checkpoints": len(names),
            "runs": len(set(terms.run_of)),
            "runs_traced": sorted({r for r in terms.run_of if r in data.traces}),
            "num_samples": delta.num_samples,
            "split": "val",
        },
        "eps": {
            "c": fit.c,
            "points": terms.eps_points,
            "residual_rms": fit.residual_rms,
            "eps_n": fit.at(n_train),
        },
        "rows": _bound_rows(runs, n_train, delta, fit, terms.bank_rows),
        "bank": terms.bank_rows,
    }


def bound_markdown(result: dict[str, Any]) -> str:
    """The result as markdown tables."""
    d, e = result["delta"], result["eps"]
    lines = [
        f"Seed {result['seed']}, n = {result['n_train']} training samples; loss: {result['loss']}.",
        "",
        f"- Delta (val, max over {d['checkpoints']} checkpoints of {d['runs']} runs, "
        f"{len(d['runs_traced'])} of them with every visited checkpoint; at {d['argmax_run']}): "
        f"{d['estimate']:.3f} ({100 * d['confidence']:.0f}% CI {d['ci'][0]:.3f}-{d['ci'][1]:.3f})",
        f"- eps proxy: c / sqrt(n) with c = {e['c']:.3f} (fit residual {e['residual_rms']:.3f}); "
        f"eps_n = {e['eps_n']:.3f}",
        "",
        "| rho | method | measured gap to Full | 2(1-rho)Delta | 2 eps_n | bound | holds | "
        "Only-Accurate bound 2 eps_rho_n |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['rho']:.0%} | {r['method']} | {r['measured_gap']:.3f} | "
            f"{2 * (1 - r['rho']) * r['delta_hat']:.3f} | {2 * r['eps_n']:.3f} | "
            f"{r['bound_mix']:.3f} | {'yes' if r['holds'] else 'no'} | "
            f"{r['bound_only_accurate']:.3f} |"
        )
    if result["bank"]:
        lines += [
            "",
            "Effective Delta with the reference bank (weak training samples of each LRB-WREL "
            "run, its best student):",
            "",
            "| run | weak samples | R accurate | R class name | R class name + bank | "
            "Delta class name | Delta with bank |",
            "|---|---|---|---|---|---|---|",
        ]
        for b in result["bank"]:
            lines.append(
                f"| {b['run']} | {b['num_weak']} | {b['risk_accurate']:.3f} | "
                f"{b['risk_class_name']:.3f} | {b['risk_class_name_bank']:.3f} | "
                f"{b['delta_class_name']:.3f} | {b['delta_with_bank']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def plot_bound(result: dict[str, Any], out_png: str | Path) -> Path:
    """Measured gap vs bound per ratio; the gap at every visited checkpoint; Delta with bank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4), constrained_layout=True)
    ax = axes[0]
    mixed = [m for m, role in BOUND_ROLES.items() if role.mixed]
    markers = "os^vD<>ph"
    for index, method in enumerate(mixed):
        marker = markers[index % len(markers)]
        rows = [r for r in result["rows"] if r["method"] == method]
        if not rows:
            continue
        xs = [100 * r["rho"] for r in rows]
        ax.plot(xs, [r["measured_gap"] for r in rows], marker=marker, label=f"{method}: measured")
    rows = sorted({r["rho"]: r for r in result["rows"]}.values(), key=lambda r: r["rho"])
    xs = [100 * r["rho"] for r in rows]
    ax.plot(xs, [r["bound_mix"] for r in rows], "k--", label="bound 2(1-rho)Delta + 2eps_n")
    ax.plot(xs, [r["bound_only_accurate"] for r in rows], "k:", label="Only-Accurate 2eps_rho_n")
    ax.set_xlabel("accurate expressions (%)")
    ax.set_ylabel("excess risk (1 - IoU)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax = axes[1]
    by_run: dict[str, list[float]] = {}
    for label, gap in result["delta"]["per_run"].items():  # in visiting order
        by_run.setdefault(label.split("@")[0], []).append(gap["risk_class_name"] - gap["risk"])
    for run, gaps in by_run.items():
        ax.plot(range(1, len(gaps) + 1), gaps, marker=".", label=run)
    delta = result["delta"]
    ax.axhline(delta["estimate"], color="k", ls="--", lw=1, label="Delta")
    ax.axhspan(*delta["ci"], color="k", alpha=0.08)
    ax.set_xlabel("evaluation during the run (visited checkpoint)")
    ax.set_ylabel("R_w - R on val (class name - accurate)")
    ax.set_title(f"Delta over {delta['checkpoints']} checkpoints")
    ax.legend(fontsize=6, ncol=2)
    ax.grid(alpha=0.3)
    ax = axes[2]
    bank = result["bank"]
    if bank:
        x = np.arange(len(bank))
        ax.bar(x - 0.2, [b["delta_class_name"] for b in bank], 0.4, label="class name")
        ax.bar(x + 0.2, [b["delta_with_bank"] for b in bank], 0.4, label="class name + bank")
        ax.set_xticks(x, [b["run"] for b in bank], rotation=20, fontsize=8)
        ax.set_ylabel("|R - R_w| on weak training samples")
        ax.legend(fontsize=8)
    ax.set_title("effective Delta with the reference bank")
    ax.grid(alpha=0.3, axis="y")
    try:
        return write_file(
            out_png, lambda tmp: fig.savefig(tmp, format="png", dpi=120), overwrite=True
        )
    finally:
        plt.close(fig)


BOUND_FILES = ("bound.json", "bound.md", "bound.png")


def check_bound_paths(out_dir: str | Path, overwrite: bool = False) -> None:
    """Refuse existing ``bound.*`` files in ``out_dir`` unless ``overwrite`` (before measuring).

    Raises:
        ValueError: naming the file and ``--overwrite``.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder; give a folder")
    check_output_paths({f"--out ({n})": out / n for n in BOUND_FILES}, overwrite=overwrite)


def write_bound(
    result: dict[str, Any], out_dir: str | Path, overwrite: bool = True
) -> dict[str, Path]:
    """``bound.json``, ``bound.md`` and ``bound.png`` under ``out_dir``, each atomically.

    ``overwrite=False`` refuses existing files (:func:`check_bound_paths`).
    """
    out = Path(out_dir)
    check_bound_paths(out, overwrite)
    text = "# The bound on the benchmark runs\n\n" + bound_markdown(result)
    return {
        "json": write_file(out / "bound.json", json.dumps(result, indent=1) + "\n", overwrite=True),
        "md": write_file(out / "bound.md", text, overwrite=True),
        "png": plot_bound(result, out / "bound.png"),
    }
