"""The RRSIS-D "refer" layout: typed records, a restricted unpickler, reading and writing.

Layout (``<name>`` is the data set name, ``rrsisd`` or ``synthetic``)::

    <root>/<name>/refs(unc).p        pickled list of plain ref dicts
    <root>/<name>/instances.json     COCO-like {"images", "annotations", "categories"}
    <root>/images/<name>/JPEGImages/<file_name>

A ref dict holds ``ref_id``, ``image_id``, ``ann_id``, ``category_id``, ``split``,
``file_name``, ``sent_ids`` and ``sentences`` (one or more ``{"raw", "tokens", "sent_id",
"sent"}``). Annotations key their class as ``categories_id`` (RRSIS-D) or ``category_id``
(COCO); segmentations are polygons or RLE (``counts`` as str or list).

Weak refs, as the WREL authors publish them, keep the original expression in ``sent`` and put
the class name in ``raw`` (and ``tokens``). The records below never carry ``sent``: a reader
reads ``raw`` and derives the quality from the marking (:func:`is_weak_ref`).
"""

from __future__ import annotations

import io
import json
import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "REFS_FILE",
    "INSTANCES_FILE",
    "ReferAnnotation",
    "ReferCategory",
    "ReferData",
    "ReferImage",
    "ReferRef",
    "ReferSentence",
    "dump_refs",
    "image_dir",
    "is_weak_ref",
    "load_refs",
    "parse_ref",
    "read_refer",
    "ref_to_dict",
    "restricted_loads",
    "write_refer",
]

logger = logging.getLogger(__name__)

REFS_FILE = "refs(unc).p"
INSTANCES_FILE = "instances.json"
Quality = Literal["accurate", "weak"]
_PLAIN = (list, dict, str, int, float, bool, type(None))


class _PlainUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global: only lists, dicts, strings and numbers come out."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing persistent ids")


def _check_plain(obj: Any, depth: int = 0) -> None:
    if depth > 32 or not isinstance(obj, _PLAIN):
        raise pickle.UnpicklingError(f"unexpected {type(obj).__name__} object")
    if isinstance(obj, list):
        for item in obj:
            _check_plain(item, depth + 1)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            _check_plain(key, depth + 1)
            _check_plain(value, depth + 1)


def restricted_loads(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` allowing only plain lists, dicts, str, int, float, bool and None.

    Args:
        data: pickle bytes.
        source: name used in error messages (a file path).

    Raises:
        ValueError: the pickle refers to any class or function (it could run code), holds
            other object types, or is corrupt.
    """
    try:
        obj = _PlainUnpickler(io.BytesIO(data)).load()
        _check_plain(obj)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError) as err:
        raise ValueError(
            f"{source} is not a plain-data pickle ({err}); refs files may hold only lists, "
            "dicts, strings and numbers. Do not load files from untrusted sources; regenerate "
            "or re-download it."
        ) from err
    return obj


def load_refs(path: str | Path) -> list[dict[str, Any]]:
    """Read a ``refs(unc).p`` file (a list of ref dicts) through the restricted unpickler."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"refs file {path} does not exist; check --data / the name")
    refs = restricted_loads(path.read_bytes(), str(path))
    if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
        raise ValueError(f"{path} must hold a list of ref dicts, got {type(refs).__name__}")
    return refs


@dataclass(frozen=True)
class ReferSentence:
    """One expression of a ref: ``raw`` text and its tokens (``sent`` is never kept)."""

    sent_id: int
    raw: str
    tokens: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReferRef:
    """One referred object: an annotation of an image plus its expressions."""

    ref_id: int
    image_id: int
    ann_id: int
    category_id: int
    split: str
    file_name: str
    sentences: tuple[ReferSentence, ...]
    quality: Quality = "accurate"


@dataclass(frozen=True)
class ReferImage:
    """An image entry of ``instances.json``."""

    image_id: int
    file_name: str
    height: int
    width: int


@dataclass(frozen=True)
class ReferAnnotation:
    """An object annotation: segmentation as polygons (list of lists) or an RLE dict."""

    ann_id: int
    image_id: int
    category_id: int
    segmentation: Any
    bbox: tuple[float, ...] = ()


@dataclass(frozen=True)
class ReferCategory:
    """A class: its id and its name (the weak expression, verbatim)."""

    category_id: int
    name: str


@dataclass
class ReferData:
    """A whole refer-format data set, indexed by id."""

    refs: list[ReferRef]
    images: dict[int, ReferImage] = field(default_factory=dict)
    annotations: dict[int, ReferAnnotation] = field(default_factory=dict)
    categories: dict[int, ReferCategory] = field(default_factory=dict)

    @property
    def category_names(self) -> dict[int, str]:
        """``{category_id: name}``."""
        return {c.category_id: c.name for c in self.categories.values()}


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def is_weak_ref(ref: dict[str, Any], category_name: str | None = None) -> bool:
    """Whether a ref dict is marked weak the way the WREL split files mark it.

    A weak ref's first sentence has ``raw`` replaced by the class name while ``sent`` keeps the
    original expression; so weak means ``raw != sent`` and, when the class name is known,
    ``raw`` equals it (case and spacing ignored). ``sent`` is compared here, never returned.
    """
    sentences = ref.get("sentences") or []
    if not sentences:
        return False
    first = sentences[0]
    raw, sent = str(first.get("raw", "")), first.get("sent")
    if sent is None or _norm(raw) == _norm(str(sent)):
        return False
    return category_name is None or _norm(raw) == _norm(category_name)


def _field(ref: dict[str, Any], key: str, source: Path, kind: type = int) -> Any:
    if key not in ref:
        raise ValueError(
            f"{source}: ref {ref.get('ref_id', '?')} has no {key!r}; "
            "a refer-format ref needs ref_id, image_id, ann_id, category_id, split, sentences"
        )
    return kind(ref[key])


def parse_ref(ref: dict[str, Any], source: Path, names: dict[int, str] | None = None) -> ReferRef:
    """Turn a plain ref dict into a :class:`ReferRef` (``sent`` is dropped)."""
    category_id = _field(ref, "category_id", source)
    sentences = tuple(
        ReferSentence(
            sent_id=int(s.get("sent_id", -1)),
            raw=str(s.get("raw", "")),
            tokens=tuple(str(t) for t in s.get("tokens", ())),
        )
        for s in ref.get("sentences") or []
    )
    if not sentences or not sentences[0].raw.strip():
        raise ValueError(f"{source}: ref {ref.get('ref_id')} has no sentence with a 'raw' text")
    weak = is_weak_ref(ref, (names or {}).get(category_id))
    return ReferRef(
        ref_id=_field(ref, "ref_id", source),
        image_id=_field(ref, "image_id", source),
        ann_id=_field(ref, "ann_id", source),
        category_id=category_id,
        split=_field(ref, "split", source, str),
        file_name=str(ref.get("file_name", "")),
        sentences=sentences,
        quality="weak" if weak else "accurate",
    )


def _read_instances(path: Path) -> tuple[dict, dict, dict]:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; the refer layout needs <root>/<name>/{INSTANCES_FILE} "
            "beside refs(unc).p (images, annotations, categories)"
        )
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); regenerate or re-download it") from err
    try:
        images = {
            int(im["id"]): ReferImage(
                int(im["id"]), str(im["file_name"]), int(im["height"]), int(im["width"])
            )
            for im in data["images"]
        }
        annotations = {}
        for ann in data["annotations"]:
            cat = ann.get("categories_id", ann.get("category_id"))
            annotations[int(ann["id"])] = ReferAnnotation(
                int(ann["id"]), int(ann["image_id"]), int(cat), ann["segmentation"],
                tuple(ann.get("bbox", ())),
            )  # fmt: skip
        categories = {
            int(c["id"]): ReferCategory(int(c["id"]), str(c["name"])) for c in data["categories"]
        }
    except (KeyError, TypeError) as err:
        raise ValueError(
            f"{path}: missing or malformed field {err}; expected COCO-like images (id, "
            "file_name, height, width), annotations (id, image_id, categories_id or "
            "category_id, segmentation) and categories (id, name)"
        ) from err
    return images, annotations, categories


def read_refer(root: str | Path, name: str, *, refs_file: str | Path | None = None) -> ReferData:
    """Read ``<root>/<name>/refs(unc).p`` (or ``refs_file``) and ``instances.json``.

    Args:
        root: data root.
        name: data set folder name.
        refs_file: another refs pickle to use instead (a published weak split).

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: a file is malformed, unsafe, or holds duplicate ref ids.
    """
    folder = Path(root) / name
    refs_path = Path(refs_file) if refs_file is not None else folder / REFS_FILE
    images, annotations, categories = _read_instances(folder / INSTANCES_FILE)
    names = {cid: c.name for cid, c in categories.items()}
    refs = [parse_ref(r, refs_path, names) for r in load_refs(refs_path)]
    seen: set[int] = set()
    for ref in refs:
        if ref.ref_id in seen:
            raise ValueError(
                f"{refs_path}: duplicate ref_id {ref.ref_id}; every ref needs a unique id "
                "(it is the sample id); fix or regenerate the file"
            )
        seen.add(ref.ref_id)
    return ReferData(refs, images, annotations, categories)


def image_dir(root: str | Path, name: str) -> Path:
    """``<root>/images/<name>/JPEGImages``."""
    return Path(root) / "images" / name / "JPEGImages"


def ref_to_dict(ref: ReferRef) -> dict[str, Any]:
    """A plain ref dict in the RRSIS-D format (``sent`` equals ``raw``)."""
    return {
        "image_id": ref.image_id,
        "split": ref.split,
        "sentences": [
            {"tokens": list(s.tokens) or s.raw.split(), "raw": s.raw, "sent_id": s.sent_id,
             "sent": s.raw}
            for s in ref.sentences
        ],
        "file_name": ref.file_name,
        "category_id": ref.category_id,
        "ann_id": ref.ann_id,
        "sent_ids": [s.sent_id for s in ref.sentences],
        "ref_id": ref.ref_id,
    }  # fmt: skip


def _plain_segmentation(segmentation: Any) -> Any:
    if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), bytes):
        return {**segmentation, "counts": segmentation["counts"].decode("ascii")}
    return segmentation


def dump_refs(refs: list[dict[str, Any]], path: str | Path) -> Path:
    """Write a refs pickle (protocol 4) after checking it holds plain data only."""
    _check_plain(refs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(pickle.dumps(refs, protocol=4))
    tmp.replace(path)
    return path


def write_refer(root: str | Path, name: str, data: ReferData) -> Path:
    """Write ``data`` as ``<root>/<name>/refs(unc).p`` and ``instances.json``.

    Images are not copied: put them under :func:`image_dir` ``(root, name)``. Annotations are
    written with the RRSIS-D key ``categories_id``; RLE counts as str.

    Returns:
        The ``<root>/<name>`` folder.
    """
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    dump_refs([ref_to_dict(r) for r in data.refs], folder / REFS_FILE)
    instances = {
        "images": [
            {"id": im.image_id, "file_name": im.file_name, "height": im.height, "width": im.width}
            for im in data.images.values()
        ],
        "annotations": [
            {"id": a.ann_id, "image_id": a.image_id, "categories_id": a.category_id,
             "segmentation": _plain_segmentation(a.segmentation), "bbox": list(a.bbox),
             "iscrowd": 0}
            for a in data.annotations.values()
        ],
        "categories": [{"id": c.category_id, "name": c.name} for c in data.categories.values()],
    }  # fmt: skip
    (folder / INSTANCES_FILE).write_text(json.dumps(instances))
    logger.info("wrote %d refs to %s", len(data.refs), folder)
    return folder
