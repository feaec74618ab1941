"""WREL weak splits: which train expressions become the bare class name.

The builder follows the WREL protocol (docs/data.md, "Split files") on the train split only: with
accurate ratio ``rho`` the weak ratio is ``r = 1 - rho`` and the budget ``int(N_train * r)``;
categories are visited in descending order of train count (ties by category id) and from each
``n = min(max(1, int(r * count)), remaining budget, count)`` refs are drawn uniformly at random
(one ``np.random.Generator`` seeded once). A weak ref's first sentence gets the class name
verbatim in ``raw`` and ``tokens`` while ``sent`` keeps the expression, exactly as the published
RRSIS-D split files do, so a built split can be written and imported like a published one.

Inputs are never mutated. Val and test are never touched.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from wrel.data.refer import dump_refs, is_weak_ref, load_refs

__all__ = [
    "SplitFileInfo",
    "WeakSplit",
    "apply_weak_split",
    "build_weak_split",
    "category_names_from_weak_refs",
    "format_counts",
    "import_split",
    "select_weak_ids",
    "split_counts",
    "split_file_info",
    "weak_ids_of",
    "write_split",
]

logger = logging.getLogger(__name__)


def _weak_ratio(accurate_ratio: float) -> float:
    rho = float(accurate_ratio)
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"accurate_ratio must be in [0, 1] (0.1 = 10% accurate), got {rho}")
    # Rounded so that 1 - 0.3 is 0.7 and int(0.7 * count) matches the published counts.
    return round(1.0 - rho, 10)


def select_weak_ids(
    members: Iterable[tuple[int, int]], accurate_ratio: float,
    seed: int | np.random.Generator = 0,
) -> set[int]:  # fmt: skip
    """Ids to turn weak for ``accurate_ratio`` (see the module docstring).

    Args:
        members: ``(ref_id, category_id)`` of every ref of the split drawn from (any order).
        accurate_ratio: share rho of the expressions that stay accurate, in [0, 1].
        seed: seed or generator; the same seed and members give the same ids.
    """
    weak_ratio = _weak_ratio(accurate_ratio)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    by_category: dict[int, list[int]] = {}
    for ref_id, category_id in members:
        by_category.setdefault(int(category_id), []).append(int(ref_id))
    total = sum(len(ids) for ids in by_category.values())
    budget = int(total * weak_ratio)
    weak: set[int] = set()
    for category in sorted(by_category, key=lambda c: (-len(by_category[c]), c)):
        if budget <= 0:
            break
        ids = np.asarray(sorted(by_category[category]), dtype=np.int64)
        count = len(ids)
        n = min(max(1, int(weak_ratio * count)), budget, count)
        weak.update(int(i) for i in rng.choice(ids, size=n, replace=False))
        budget -= n
    return weak


@dataclass(frozen=True)
class WeakSplit:
    """Which train expressions become the bare class name, resolved once per load.

    - ``ratio``: draw weak refs for ``accurate_ratio`` with ``seed`` (:func:`select_weak_ids`);
    - ``file``: read the refs from ``file`` (a published split, or one from ``wrel data
      split``) and keep its accurate / weak marks;
    - ``as-is``: keep the data set's own marks.
    """

    kind: Literal["as-is", "ratio", "file"] = "as-is"
    accurate_ratio: float | None = None
    seed: int = 0
    file: Path | None = None

    @classmethod
    def resolve(
        cls, accurate_ratio: float | None, split_file: str | Path | None, seed: int = 0
    ) -> WeakSplit:
        """The spec of ``load_samples``' arguments.

        Raises:
            ValueError: both a ratio and a file, or a ratio outside [0, 1].
        """
        if split_file is not None and accurate_ratio is not None:
            raise ValueError(
                f"pass either split_file ({split_file}) or accurate_ratio ({accurate_ratio}), "
                "not both: a split file fixes which expressions are weak, so it carries its own "
                "ratio (load it with accurate_ratio=None)"
            )
        if split_file is not None:
            return cls("file", file=Path(split_file))
        if accurate_ratio is not None:
            _weak_ratio(accurate_ratio)
            return cls("ratio", accurate_ratio=float(accurate_ratio), seed=seed)
        return cls()

    def for_split(self, split: str) -> WeakSplit:
        """This spec for loading ``split``: a ratio applies to ``train`` only."""
        return self if self.kind != "ratio" or split == "train" else WeakSplit()

    def weak_ids(self, members: Iterable[tuple[int, int]]) -> set[int]:
        """Ids to turn weak among ``(ref_id, category_id)`` members; none unless ``ratio``."""
        if self.kind != "ratio" or self.accurate_ratio is None:
            return set()
        return select_weak_ids(members, self.accurate_ratio, self.seed)


def apply_weak_split(
    refs: Sequence[Mapping[str, Any]], weak_ids: Iterable[int], category_names: Mapping[int, str]
) -> list[dict[str, Any]]:
    """Copy of ``refs`` where the refs in ``weak_ids`` carry their class name as expression.

    ``sentences[0]['raw']`` and ``tokens`` become the class name; ``sent`` keeps the original
    expression (the published format). ``refs`` is not modified.

    Raises:
        ValueError: a weak ref's category has no name, or an id is not in ``refs``.
    """
    weak = set(weak_ids)
    out: list[dict[str, Any]] = [copy.deepcopy(dict(r)) for r in refs]
    found = set()
    for ref in out:
        if ref["ref_id"] not in weak:
            continue
        found.add(ref["ref_id"])
        category = int(ref["category_id"])
        if category not in category_names:
            raise ValueError(
                f"no class name for category_id {category} (ref {ref['ref_id']}); pass "
                f"category_names covering every category (have {sorted(category_names)})"
            )
        name = category_names[category]
        first = ref["sentences"][0]
        first.setdefault("sent", first.get("raw", ""))
        first["raw"], first["tokens"] = name, [name]
    if missing := weak - found:
        raise ValueError(f"weak ids not in refs: {sorted(missing)[:5]} ({len(missing)} in all)")
    return out


def build_weak_split(
    refs: Sequence[Mapping[str, Any]], category_names: Mapping[int, str],
    accurate_ratio: float, seed: int = 0,
) -> list[dict[str, Any]]:  # fmt: skip
    """The WREL view of ``refs`` (plain ref dicts) for ``accurate_ratio`` and ``seed``."""
    members = [(int(r["ref_id"]), int(r["category_id"])) for r in refs if r["split"] == "train"]
    return apply_weak_split(refs, select_weak_ids(members, accurate_ratio, seed), category_names)


def category_names_from_weak_refs(refs: Sequence[Mapping[str, Any]]) -> dict[int, str]:
    """``{category_id: name}`` read off the weak refs of a published split (their ``raw``)."""
    votes: dict[int, Counter[str]] = {}
    for ref in refs:
        if is_weak_ref(dict(ref)):
            raw = ref["sentences"][0]["raw"]
            votes.setdefault(int(ref["category_id"]), Counter())[raw] += 1
    return {cid: counter.most_common(1)[0][0] for cid, counter in votes.items()}


def weak_ids_of(
    refs: Sequence[Mapping[str, Any]], category_names: Mapping[int, str] | None = None
) -> set[int]:
    """Ref ids a split file marks weak (``raw`` is the class name, ``sent`` differs)."""
    names = category_names or {}
    return {
        int(r["ref_id"]) for r in refs if is_weak_ref(dict(r), names.get(int(r["category_id"])))
    }


def import_split(path: str | Path) -> tuple[list[dict[str, Any]], set[int]]:
    """Read a published split file as-is: its refs and the ids it marks weak."""
    refs = load_refs(path)
    return refs, weak_ids_of(refs, category_names_from_weak_refs(refs))


def split_counts(
    refs: Sequence[Mapping[str, Any]], weak_ids: set[int], category_names: Mapping[int, str],
    split: str = "train",
) -> dict[str, tuple[int, int]]:  # fmt: skip
    """``{class name: (accurate, weak)}`` over the ``split`` refs."""
    counts: dict[str, list[int]] = {}
    for ref in refs:
        if ref["split"] != split:
            continue
        cid = int(ref["category_id"])
        name = category_names.get(cid, f"category {cid}")
        counts.setdefault(name, [0, 0])[int(ref["ref_id"]) in weak_ids] += 1
    return {name: (a, w) for name, (a, w) in sorted(counts.items())}


def format_counts(counts: Mapping[str, tuple[int, int]]) -> str:
    """A per-category accurate / weak table with a total row."""
    width = max([len(n) for n in counts] + [8])
    lines = [f"{'category':<{width}}  accurate      weak"]
    lines += [f"{n:<{width}}  {a:>8}  {w:>8}" for n, (a, w) in counts.items()]
    total_a = sum(a for a, _ in counts.values())
    total_w = sum(w for _, w in counts.values())
    lines.append(f"{'total':<{width}}  {total_a:>8}  {total_w:>8}")
    return "\n".join(lines)


def write_split(refs: list[dict[str, Any]], path: str | Path) -> Path:
    """Write a split as a refer-format refs pickle of plain types (like the published ones)."""
    out = dump_refs(refs, path)
    logger.info("wrote split with %d refs to %s", len(refs), out)
    return out


@dataclass(frozen=True)
class SplitFileInfo:
    """What a weak-split file holds for one split: refs, accurate and weak counts."""

    path: Path
    split: str
    num_refs: int
    num_accurate: int
    num_weak: int

    @property
    def accurate_ratio(self) -> float:
        """Share of the split's refs that keep their expression (0 when it has none)."""
        return self.num_accurate / self.num_refs if self.num_refs else 0.0

    def describe(self) -> str:
        """One line for logs and reports."""
        return (
            f"split file {self.path}: {self.num_refs} {self.split} refs, {self.num_accurate} "
            f"accurate, {self.num_weak} weak: accurate ratio {self.accurate_ratio:.4f} (from "
            "the file)"
        )


def split_file_info(path: str | Path, split: str = "train") -> SplitFileInfo:
    """Read a split file (published or written by ``wrel data split``) and count ``split``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not a valid refs pickle (see :func:`wrel.data.refer.load_refs`), or it has no
            ``split`` refs.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"split file {path} does not exist; pass a refs pickle such as "
            "'refs(unc)-90-all.p' or one written by `wrel data split --out`"
        )
    refs, weak = import_split(path)
    ids = [int(r["ref_id"]) for r in refs if r.get("split") == split]
    if not ids:
        found = sorted({str(r.get("split")) for r in refs})
        raise ValueError(f"split file {path} holds no {split!r} refs (its splits: {found})")
    num_weak = sum(1 for i in ids if i in weak)
    return SplitFileInfo(path, split, len(ids), len(ids) - num_weak, num_weak)
