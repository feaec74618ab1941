"""Read a trained reference bank as words (``wrel bank decode``).

Each prompt slot of each bank row is mapped to its ``k`` nearest words (cosine) in the word-
embedding table of a model, among whole-word tokens (no special, ``[unused]``, ``##`` subword or
non-alphabetic tokens); a bank with its own vocabulary (``parametrization="vocab"`` or
``projection="nearest"``) is decoded within the whole-word tokens of that vocabulary, so that
words and chance come from the same set. On the embedded benchmark (``<root>/synthetic/attributes.json``) the words
are scored against what each weak sample's class name left out: position words (a 3x3 cell or an
extreme, e.g. "upper left", "leftmost"), size words ("largest"), colour words and, for a
relation, the other class's name. A sample-kind is *recovered* when any of the row's ``P * k``
words names it. The chance baseline is the exact expected recovery rate of ``k`` distinct
uniformly random words per slot from the same vocabulary.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from wrel.core.bounded import data_file_limit, load_json
from wrel.core.paths import require_folder
from wrel.data.synth.categories import spoken_name
from wrel.engine.checkpoint import load_model
from wrel.engine.state import find_resume_dir, load_resume_state
from wrel.engine.trainer import EXPRESSION_BANK_DIR
from wrel.methods.bank import ReferenceBank, word_embedding_table
from wrel.methods.retrieval import ExpressionBank

__all__ = [
    "KINDS",
    "attribute_words",
    "chance_of_hit",
    "decode_bank",
    "decode_expressions",
    "expression_recovery",
    "expression_summary_table",
    "named_kinds",
    "nearest_words",
    "score_recovery",
    "word_vocabulary",
]

#: Attribute kinds scored, in report order.
KINDS = ("position", "size", "colour", "relation")

_WORD = re.compile(r"[a-z][a-z'-]+")
_POSITION_SYNONYMS = {
    "upper": ("top",),
    "lower": ("bottom",),
    "top": ("upper",),
    "bottom": ("lower",),
    "middle": ("center", "centre"),
}
_EXTREME_WORDS = {
    "leftmost": ("leftmost", "left"),
    "rightmost": ("rightmost", "right"),
    "topmost": ("topmost", "uppermost", "top"),
    "bottommost": ("bottommost", "lowest", "bottom"),
}
_SIZE_WORDS = {
    "largest": ("largest", "biggest", "large", "big"),
    "smallest": ("smallest", "tiniest", "small", "tiny"),
}
_COLOUR_WORDS = {"grey": ("grey", "gray"), "gray": ("grey", "gray")}


def word_vocabulary(tokenizer: Any, size: int) -> tuple[Tensor, list[str]]:
    """Token ids ``(V',)`` and strings of the whole-word tokens among the first ``size`` ids.

    Dropped: the tokenizer's special tokens, bracketed tokens (``[PAD]``, ``[unused3]``),
    subword continuations (``##ing``) and anything that is not an alphabetic word of two or
    more letters (digits, punctuation, single letters).
    """
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    tokens = tokenizer.convert_ids_to_tokens(list(range(size)))
    keep = [
        i
        for i, tok in enumerate(tokens)
        if i not in special and tok is not None and _WORD.fullmatch(tok.lower())
    ]
    if not keep:
        raise ValueError("the tokenizer has no whole-word tokens to decode the bank with")
    return torch.tensor(keep, dtype=torch.int64), [tokens[i].lower() for i in keep]


def nearest_words(
    prompts: Tensor, table: Tensor, k: int, chunk: int = 2048
) -> tuple[Tensor, Tensor]:
    """Indices into ``table`` ``(M, k)`` and cosines of the ``k`` rows of ``table (V, D)``
    closest (cosine) to each of ``prompts (M, D)``, computed ``chunk`` prompts at a time."""
    if not 1 <= k <= table.shape[0]:
        raise ValueError(f"k must be in [1, {table.shape[0]}] (the vocabulary size), got {k}")
    unit = torch.nn.functional.normalize(table.float(), dim=-1)  # (V, D)
    idx, sims = [], []
    for start in range(0, prompts.shape[0], chunk):  # chunks bound the (chunk, V) matrix
        block = torch.nn.functional.normalize(prompts[start : start + chunk].float(), dim=-1)
        top = (block @ unit.T).topk(k, dim=-1)
        idx.append(top.indices)
        sims.append(top.values)
    return torch.cat(idx), torch.cat(sims)


def attribute_words(
    attributes: dict[str, Any], class_name: str
) -> dict[str, set[str]]:  # fmt: skip
    """Words that name each attribute kind of one sample (``attributes.json`` entry).

    The relation's words are the other class's spoken name minus the target class's words.
    """

    out: dict[str, set[str]] = {}
    if "position" in attributes:
        words = set(str(attributes["position"]).split())
        out["position"] = words | {s for w in words for s in _POSITION_SYNONYMS.get(w, ())}
    if "extreme" in attributes:
        out.setdefault("position", set()).update(
            _EXTREME_WORDS.get(str(attributes["extreme"]), (str(attributes["extreme"]),))
        )
    if "size" in attributes:
        out["size"] = set(_SIZE_WORDS.get(str(attributes["size"]), (str(attributes["size"]),)))
    if "scale" in attributes:  # rrsisd regime: "tiny" / "huge" against the class's usual size
        out.setdefault("size", set()).add(str(attributes["scale"]))
    if "colour" in attributes:
        colour = str(attributes["colour"])
        out["colour"] = set(_COLOUR_WORDS.get(colour, (colour,)))
    if "next_to" in attributes:
        own = set(spoken_name(class_name).lower().split())
        other = set(spoken_name(str(attributes["next_to"])).lower().split())
        out["relation"] = other - own
    return {k: {w.lower() for w in v} for k, v in out.items() if v}


def _targets(words_per_sample: Sequence[set[str]], index: dict[str, int]) -> Tensor:
    """Padded vocabulary indices ``(N, T)`` of each sample's target words (-1 padding)."""
    lists = [sorted(index[w] for w in words if w in index) for words in words_per_sample]
    width = max([len(x) for x in lists] + [1])
    out = torch.full((len(lists), width), -1, dtype=torch.int64)
    for i, ids in enumerate(lists):  # data preparation, once per report
        out[i, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
    return out


def _hits(words: Tensor, targets: Tensor) -> Tensor:
    """``(..., N)`` whether any of ``words (..., N, M)`` is among ``targets (N, T)``."""
    return (words[..., :, None] == targets[:, None, :]).any(-1).any(-1)


def chance_of_hit(num_targets: Tensor, vocab_size: int, slots: int, k: int) -> Tensor:
    """Probability that ``slots`` draws of ``k`` distinct uniform random words (from
    ``vocab_size``) name at least one of ``num_targets (N,)`` target words, per sample:
    ``1 - (C(V - t, k) / C(V, k)) ** slots``."""
    t = num_targets.to(torch.float64)[:, None]  # (N, 1)
    j = torch.arange(k, dtype=torch.float64)[None, :]  # (1, k)
    miss_slot = ((vocab_size - t - j).clamp_min(0) / (vocab_size - j)).prod(dim=-1)  # (N,)
    return 1.0 - miss_slot**slots


def score_recovery(
    words: Tensor, samples: Sequence[dict[str, Any]], vocab: Sequence[str]
) -> dict[str, Any]:
    """Recovery rates of the attribute words and their chance baseline.

    Args:
        words: ``(N, P, k)`` vocabulary indices of each row's recovered words.
        samples: per row ``{"attributes": {...}, "class_name": str}`` (attributes.json entries).
        vocab: the decoding vocabulary (index -> word).

    Returns:
        ``{"kinds": {kind: {"samples", "recovered", "chance"}}, "any": {...}, "unscorable"}``;
        rates in [0, 1]; ``chance`` is the exact expected rate of ``k`` distinct random words
        per slot from the same vocabulary (:func:`chance_of_hit`); a kind without scorable
        samples has rates None.
    """
    index = {w: i for i, w in enumerate(vocab)}
    num, slots, k = words.shape
    flat = words.reshape(num, slots * k)
    per_sample = [
        attribute_words(s.get("attributes") or {}, s.get("class_name", "")) for s in samples
    ]
    out: dict[str, Any] = {"kinds": {}}
    unscorable: dict[str, int] = {}
    for kind in (*KINDS, "any"):
        sets = [
            set().union(*p.values()) if kind == "any" else p.get(kind, set()) for p in per_sample
        ]
        targets = _targets(sets, index)  # (N, T)
        count = (targets >= 0).sum(-1)  # (N,) target words that are vocabulary tokens
        has = count > 0
        unscorable[kind] = sum(bool(s) for s in sets) - int(has.sum())
        n = int(has.sum())
        entry: dict[str, Any] = {"samples": n, "recovered": None, "chance": None}
        if n:
            entry["recovered"] = float(_hits(flat, targets)[has].double().mean())
            entry["chance"] = float(chance_of_hit(count[has], len(vocab), slots, k).mean())
        if kind == "any":
            out["any"] = entry
        else:
            out["kinds"][kind] = entry
    out["unscorable"] = unscorable  # sample-kinds whose words are not whole vocabulary tokens
    return out


def _attributes_file(data_root: Path, name: str | None) -> Path:
    return data_root / (name or "synthetic") / "attributes.json"


def decode_bank(
    run_dir: str | Path,
    *,
    k: int = 5,
    data_root: str | Path | None = None,
    model_dir: str | Path | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Decode a run's bank into words and, where attributes.json exists, score them.

    Args:
        run_dir: a run folder holding ``bank.safetensors`` and ``checkpoints/best``.
        k: nearest words per prompt slot.
        data_root: the data root (default: the run's ``config.json`` ``data.root``).
        model_dir: the model whose word-embedding table is used (default: the run's best).
        device: where the cosine products run.

    Returns:
        The JSON-able report (see ``wrel bank decode --help``).
    """

    run_dir = require_folder(run_dir, "run folder")
    bank_file = run_dir / "bank.safetensors"
    if not bank_file.is_file():
        raise FileNotFoundError(
            f"{bank_file} does not exist: only finished LRB-WREL runs save a bank"
        )
    model_dir = Path(model_dir) if model_dir is not None else run_dir / "checkpoints" / "best"
    require_folder(model_dir, "model folder", "pass --model")
    if not 1 <= k <= 100:
        raise ValueError(f"k must be in [1, 100], got {k}")
    config: dict[str, Any] = {}
    if (run_dir / "config.json").is_file():
        config = load_json(run_dir / "config.json", "run config")
    data_cfg = config.get("data") or {}
    model, _ = load_model(model_dir, device=device)
    tokenizer = getattr(getattr(model, "text_encoder", None), "tokenizer", None)
    if tokenizer is None:
        raise ValueError(f"the model in {model_dir} has no tokenizer to turn tokens into words")
    table = word_embedding_table(model).detach().to(device)  # (V_all, D)
    word_ids, vocab = word_vocabulary(tokenizer, table.shape[0])
    bank = ReferenceBank.load(bank_file, device=device)
    _check_finite_bank(bank, bank_file)
    vocabulary = "table"
    if bank.vocab_ids.numel():  # a vocab bank / projected bank: decode within its vocabulary
        inside = torch.isin(word_ids, bank.vocab_ids.cpu())
        word_ids = word_ids[inside]
        vocab = [w for w, keep in zip(vocab, inside.tolist(), strict=True) if keep]
        vocabulary = "bank"
        if len(vocab) < k:
            raise ValueError(
                f"the bank's vocabulary has {len(vocab)} whole-word tokens, fewer than k={k}; "
                "lower --k"
            )
    if bank.cfg.parametrization == "free" and bank.rows.shape[-1] != table.shape[1]:
        raise ValueError(
            f"{bank_file} has prompts of width {bank.rows.shape[-1]} but {model_dir}'s word "
            f"embeddings have width {table.shape[1]}; pass the run's own model"
        )
    rows = torch.arange(bank.num_rows, device=device)
    with torch.no_grad():
        prompts = bank.prompts(rows)  # (N, P, D)
        num, slots, dim = prompts.shape
        idx, sims = nearest_words(prompts.reshape(-1, dim), table[word_ids.to(device)], k)
    idx = idx.reshape(num, slots, k).cpu()
    sims = sims.reshape(num, slots, k).cpu()
    mixture = None
    if bank.cfg.parametrization == "vocab":
        with torch.no_grad():
            weights = bank.mixture_weights(rows)  # (N, P, V)
        top = weights.topk(min(k, weights.shape[-1]), dim=-1)
        mix_tokens = tokenizer.convert_ids_to_tokens(bank.vocab_ids.cpu().tolist())
        mixture = (top.indices.cpu(), top.values.cpu(), mix_tokens)

    root = Path(data_root) if data_root is not None else Path(data_cfg.get("root") or "data")
    attr_file = _attributes_file(root, data_cfg.get("name"))
    attrs: dict[str, Any] = {}
    if attr_file.is_file():
        attrs = load_json(attr_file, "attributes file", max_bytes=data_file_limit())
    ids = bank.ids.cpu().tolist()
    samples: list[dict[str, Any]] = []
    for r, sample_id in enumerate(ids):  # report assembly, one entry per row
        info = attrs.get(str(sample_id)) or {}
        entry: dict[str, Any] = {
            "sample_id": int(sample_id),
            "class_name": info.get("class_name"),
            "expression": info.get("expression"),
            "attributes": info.get("attributes"),
            "nearest": [[vocab[int(j)] for j in idx[r, p]] for p in range(slots)],
            "cosine": [[round(float(c), 4) for c in sims[r, p]] for p in range(slots)],
        }
        if mixture is not None:
            m_idx, m_w, m_tok = mixture
            entry["mixture"] = [
                [[m_tok[int(j)], round(float(w), 4)] for j, w in zip(m_idx[r, p], m_w[r, p], strict=True)]
                for p in range(slots)
            ]  # fmt: skip
        samples.append(entry)
    report: dict[str, Any] = {
        "run": str(run_dir),
        "bank_file": str(bank_file),
        "model": str(model_dir),
        "parametrization": bank.cfg.parametrization,
        "projection": bank.cfg.projection,
        "num_rows": num,
        "num_prompts": slots,
        "k": k,
        "vocabulary": vocabulary,  # "bank": the bank's own words; "table": the whole table
        "vocabulary_size": len(vocab),
        "attributes_file": str(attr_file) if attrs else None,
        "scores": None,
        "samples": samples,
    }
    scored = [s for s in samples if s["attributes"] is not None]
    if scored:
        keep = torch.tensor([s["attributes"] is not None for s in samples])
        report["scores"] = score_recovery(idx[keep], scored, vocab)
        report["scores"]["samples_with_attributes"] = len(scored)
    return report


def named_kinds(text: str, kinds: dict[str, set[str]]) -> dict[str, bool]:
    """Per attribute kind of a sample (:func:`attribute_words`), whether ``text`` names it."""
    words = set(_WORD.findall(text.lower()))
    return {kind: bool(words & targets) for kind, targets in kinds.items()}


def expression_recovery(
    chosen: Sequence[str],
    candidates: Sequence[Sequence[str]],
    kinds: Sequence[dict[str, set[str]]],
) -> dict[str, Any]:
    """How often a chosen text names what the class name left out, per kind and for any kind,
    against chance: the mean over each sample's own candidates (a uniformly random candidate).

    A sample counts for a kind when it has words of that kind and at least one candidate.
    """
    out: dict[str, Any] = {}
    for kind in (*KINDS, "any"):
        hits, chance, n = 0.0, 0.0, 0
        for text, cands, target in zip(chosen, candidates, kinds, strict=True):
            if kind == "any":
                target = {"any": set().union(*target.values())} if target else {}
            if not target.get(kind) or not cands:
                continue
            n += 1
            hits += named_kinds(text, target)[kind]
            chance += sum(named_kinds(c, target)[kind] for c in cands) / len(cands)
        out[kind] = {
            "samples": n,
            "chosen": hits / n if n else None,
            "chance": chance / n if n else None,
        }
    return out


def _check_finite_bank(bank: ReferenceBank, path: Path) -> None:
    """Refuse a bank whose prompts hold NaN or infinity: their nearest words would be noise.

    Raises:
        ValueError: naming the file and how many rows are affected.
    """
    with torch.no_grad():
        prompts = bank.prompts(torch.arange(bank.num_rows, device=bank.rows.device))
    bad = ~torch.isfinite(prompts.reshape(prompts.shape[0], -1)).all(dim=1)  # (N,)
    if bool(bad.any()):
        first = int(bank.ids[bad.nonzero()[0, 0]].item())
        raise ValueError(
            f"{path}: {int(bad.sum())} of {bank.num_rows} bank rows hold NaN or infinite values "
            f"(first: sample id {first}); the run diverged or the file is damaged, so no "
            "words can be decoded. Decode the bank of another run or checkpoint"
        )


def decode_expressions(
    run_dir: str | Path, *, data_root: str | Path | None = None
) -> dict[str, Any]:
    """Read the expression bank of a ``retrieve`` run (wrel.methods.retrieval) and score it.

    The bank (candidates, choices, expression pool) is read from the run's ``expression_bank``
    folder, written when the run finishes, else from its last resume state (an unfinished
    run); per weak sample the report lists the chosen text beside the true expression and
    attributes (``attributes.json``), and scores how often the chosen text names the left-out
    attribute against a random candidate of the same sample.
    """
    run_dir = require_folder(run_dir, "run folder")
    last = run_dir / EXPRESSION_BANK_DIR
    if find_resume_dir(last) is not None:
        saved = load_resume_state(last).get("expressions")
    else:
        last = run_dir / "checkpoints" / "last"
        saved = (load_resume_state(last).get("stage") or {}).get("expressions")
    if saved is None:
        raise ValueError(
            f"{last} holds no expression bank: the run has not reached its retrieve stage, "
            "or it is not a retrieve run"
        )
    bank = ExpressionBank.from_state(saved)
    config = (
        load_json(run_dir / "config.json", "run config")
        if (run_dir / "config.json").is_file()
        else {}
    )
    data_cfg = config.get("data") or {}
    root = Path(data_root) if data_root is not None else Path(data_cfg.get("root") or "data")
    attr_file = _attributes_file(root, data_cfg.get("name"))
    attrs: dict[str, Any] = (
        load_json(attr_file, "attributes file", max_bytes=data_file_limit())
        if attr_file.is_file()
        else {}
    )
    ids = bank.ids.tolist()
    names = [str((attrs.get(str(i)) or {}).get("class_name") or "") for i in ids]
    rows = torch.arange(len(ids))
    chosen = bank.chosen_texts(rows, names)
    cands = [[bank.pool[j] for j in row if j >= 0] for row in bank.candidates.tolist()]
    samples: list[dict[str, Any]] = [
        {
            "sample_id": int(i),
            "class_name": (attrs.get(str(i)) or {}).get("class_name"),
            "expression": (attrs.get(str(i)) or {}).get("expression"),
            "attributes": (attrs.get(str(i)) or {}).get("attributes"),
            "choice": int(c),
            "chosen": t if (c or attrs) else None,
        }
        for i, c, t in zip(ids, bank.choice.tolist(), chosen, strict=True)
    ]
    report: dict[str, Any] = {
        "run": str(run_dir),
        "state": str(last),
        **bank.summary(),
        "attributes_file": str(attr_file) if attrs else None,
        "scores": None,
        "samples": samples,
    }
    scored = [k for k, s in enumerate(samples) if s["attributes"] is not None]
    if scored:
        kinds = [attribute_words(samples[k]["attributes"] or {}, names[k]) for k in scored]
        report["scores"] = expression_recovery(
            [chosen[k] for k in scored], [cands[k] for k in scored], kinds
        )
        report["scores"]["samples_with_attributes"] = len(scored)
    return report


def expression_summary_table(report: dict[str, Any]) -> str:
    """Markdown table of an expression bank's recovery against a random candidate."""
    scores = report.get("scores")
    if not scores:
        return "(no attributes.json entries for these samples: nothing scored; pass --data)"
    lines = [
        "| kind | samples | chosen text names it | a random candidate |",
        "|---|---|---|---|",
    ]
    for kind in (*KINDS, "any"):
        row = scores[kind]
        if row["samples"]:
            lines.append(
                f"| {kind} | {row['samples']} | {100 * row['chosen']:.1f} % | "
                f"{100 * row['chance']:.1f} % |"
            )
    return "\n".join(lines)


def summary_table(report: dict[str, Any]) -> str:
    """Markdown table of the recovery rates against chance (or a line saying why none)."""
    scores = report.get("scores")
    if not scores:
        return (
            "(no attributes.json entries for these samples: nothing scored, words only; the "
            "embedded benchmark has <data>/synthetic/attributes.json: pass --data)"
        )
    lines = [
        f"| attribute | samples | recovered (top-{report['k']} x {report['num_prompts']} slots)"
        " | chance | ratio |",
        "|---|---|---|---|---|",
    ]
    for kind, entry in [*scores["kinds"].items(), ("any", scores["any"])]:
        rec, chance = entry["recovered"], entry["chance"]
        if rec is None:
            lines.append(f"| {kind} | 0 | - | - | - |")
            continue
        ratio = f"{rec / chance:.2f}x" if chance else "-"
        lines.append(f"| {kind} | {entry['samples']} | {rec:.1%} | {chance:.1%} | {ratio} |")
    return "\n".join(lines)
