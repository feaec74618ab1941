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
import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Literal

from wrel.core.bounded import DATA_FILE_ENV, check_depth, data_file_limit, read_limited
from wrel.core.outfiles import atomic_output
from wrel.data.images import check_image_size, validate_segmentation

__all__ = [
    "REFS_FILE",
    "INSTANCES_FILE",
    "ReferAnnotation",
    "ReferCategory",
    "ReferData",
    "ReferImage",
    "ReferRef",
    "ReferSentence",
    "check_ref",
    "dump_refs",
    "refs_bytes",
    "image_dir",
    "image_file",
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
# Advice when an annotation file is over the size limit (checked before it is read).
_BIG = (
    f"if this is a real data set, raise the limit with {DATA_FILE_ENV}=<MiB> (the RRSIS-D "
    "refs file is 2.5 MB)"
)


class _PlainUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global: only lists, dicts, strings and numbers come out."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing persistent ids")


#: Most objects (containers, strings, numbers) a refs pickle may hold; a ref is about 40, so
#: this allows some 500,000 refs.
MAX_PICKLE_NODES = 20_000_000
#: Deepest nesting of lists and dicts in a refs pickle (a ref needs 4 levels).
MAX_PICKLE_DEPTH = 32


def _check_plain(obj: Any) -> None:
    """Check that ``obj`` is a tree of plain types, in time linear in its size.

    Lists and dicts may not be shared (the same container reached twice): a pickle of a few
    hundred bytes can otherwise describe a structure with billions of paths.
    """
    seen: set[int] = set()
    stack: list[tuple[Any, int]] = [(obj, 0)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > MAX_PICKLE_NODES:
            raise pickle.UnpicklingError(
                f"more than {MAX_PICKLE_NODES:,} objects; a refs file is far smaller"
            )
        if not isinstance(item, _PLAIN):
            raise pickle.UnpicklingError(f"unexpected {type(item).__name__} object")
        if not isinstance(item, list | dict):
            continue
        if depth >= MAX_PICKLE_DEPTH:
            raise pickle.UnpicklingError(f"lists or dicts nested deeper than {MAX_PICKLE_DEPTH}")
        if id(item) in seen:
            raise pickle.UnpicklingError(
                f"a {type(item).__name__} is shared (referenced twice); refs files hold a plain "
                "tree of lists and dicts"
            )
        seen.add(id(item))
        if isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
        else:
            for key, value in item.items():
                stack.append((key, depth + 1))
                stack.append((value, depth + 1))


def restricted_loads(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` allowing only plain lists, dicts, str, int, float, bool and None.

    The result must be a tree: no list or dict reached twice, at most
    :data:`MAX_PICKLE_DEPTH` levels and :data:`MAX_PICKLE_NODES` objects (checked in time
    linear in the pickle's size).

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
    except (
        pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, RecursionError,
        MemoryError,
    ) as err:  # fmt: skip
        raise ValueError(
            f"{source} is not a plain-data pickle ({err}); refs files may hold only lists, "
            "dicts, strings and numbers. Do not load files from untrusted sources; regenerate "
            "or re-download it."
        ) from err
    return obj


def load_refs(path: str | Path) -> list[dict[str, Any]]:
    """Read a ``refs(unc).p`` file (a list of ref dicts) through the restricted unpickler.

    Every ref is checked with :func:`check_ref`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unsafe or malformed pickle, or a malformed ref (naming file and ref).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"refs file {path} does not exist; check --data / the name")
    refs = restricted_loads(read_limited(path, data_file_limit(), "refs file", _BIG), str(path))
    if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
        raise ValueError(f"{path} must hold a list of ref dicts, got {type(refs).__name__}")
    for position, ref in enumerate(refs):
        check_ref(ref, path, position)
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


_ID_KEYS = ("ref_id", "image_id", "ann_id", "category_id")
_MAX_ID = 2**63 - 1  # ids become int64 tensors (sample ids) downstream


def _is_id(value: Any) -> bool:
    return type(value) is int and 0 <= value <= _MAX_ID


def _id_error(value: Any) -> str:
    return (
        f"{value!r} ({type(value).__name__}); ids must be ints in [0, 2**63 - 1] "
        "(not floats, strings, bools, lists or None)"
    )


def check_ref(ref: Any, source: str | Path, position: int | None = None) -> None:
    """Check the fields and their types of one plain ref dict (from a refs pickle).

    ``ref_id``, ``image_id``, ``ann_id``, ``category_id``: ints in [0, 2**63 - 1]; ``split``:
    a non-empty str; ``sentences``: a non-empty list of dicts whose ``raw`` / ``sent`` are str,
    ``tokens`` a list of str and ``sent_id`` an int (each when present); ``file_name``: a str
    when present.

    Raises:
        ValueError: naming ``source``, the ref (its id, else its position) and the bad value.
    """
    ref_id = ref.get("ref_id") if isinstance(ref, dict) else None
    who = f"ref {ref_id}" if _is_id(ref_id) else f"the ref at position {position}"
    where = f"{source}: {who}"
    if not isinstance(ref, dict):
        raise ValueError(f"{where} is a {type(ref).__name__}, not a dict")
    for key in (*_ID_KEYS, "split", "sentences"):
        if key not in ref:
            raise ValueError(
                f"{where} has no {key!r}; a refer-format ref needs ref_id, image_id, ann_id, "
                "category_id, split, sentences"
            )
    for key in _ID_KEYS:
        if not _is_id(ref[key]):
            raise ValueError(f"{where} has {key} = {_id_error(ref[key])}")
    split = ref["split"]
    if not isinstance(split, str) or not split:
        raise ValueError(
            f"{where} has split = {split!r} ({type(split).__name__}); a split is a name such "
            "as 'train', 'val' or 'test'"
        )
    if not isinstance(ref.get("file_name", ""), str):
        raise ValueError(f"{where} has file_name = {ref['file_name']!r}, not a str")
    sentences = ref["sentences"]
    if not isinstance(sentences, list) or not sentences:
        raise ValueError(
            f"{where} has sentences = {sentences!r:.80} ({type(sentences).__name__}); expected "
            "a non-empty list of {'raw', 'tokens', 'sent_id'} dicts"
        )
    for index, sentence in enumerate(sentences):
        if not isinstance(sentence, dict):
            raise ValueError(
                f"{where}: sentence {index} is a {type(sentence).__name__}, not a dict with 'raw'"
            )
        for key in ("raw", "sent"):
            if not isinstance(sentence.get(key, ""), str):
                raise ValueError(
                    f"{where}: sentence {index} has {key} = {sentence[key]!r:.80}, not a str"
                )
        tokens = sentence.get("tokens", [])
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise ValueError(f"{where}: sentence {index} has tokens = {tokens!r:.80}; expected "
                             "a list of str")  # fmt: skip
        sent_id = sentence.get("sent_id", -1)
        if type(sent_id) is not int:
            raise ValueError(f"{where}: sentence {index} has sent_id = {sent_id!r}, not an int")


def parse_ref(ref: dict[str, Any], source: Path, names: dict[int, str] | None = None) -> ReferRef:
    """Turn a plain ref dict into a :class:`ReferRef` (``sent`` is dropped).

    Raises:
        ValueError: the ref fails :func:`check_ref` or has no sentence with a ``raw`` text.
    """
    check_ref(ref, source)
    category_id = ref["category_id"]
    sentences = tuple(
        ReferSentence(
            sent_id=s.get("sent_id", -1),
            raw=s.get("raw", ""),
            tokens=tuple(s.get("tokens", ())),
        )
        for s in ref["sentences"]
    )
    if not sentences[0].raw.strip():
        raise ValueError(f"{source}: ref {ref['ref_id']} has no sentence with a 'raw' text")
    weak = is_weak_ref(ref, (names or {}).get(category_id))
    return ReferRef(
        ref_id=ref["ref_id"],
        image_id=ref["image_id"],
        ann_id=ref["ann_id"],
        category_id=category_id,
        split=ref["split"],
        file_name=ref.get("file_name", ""),
        sentences=sentences,
        quality="weak" if weak else "accurate",
    )


def _entries(data: Any, key: str, path: Path) -> list[Any]:
    entries = data.get(key) if isinstance(data, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError(
            f"{path}: missing or malformed field {key!r} (expected a list of dicts); "
            "expected COCO-like images (id, file_name, height, width), annotations (id, "
            "image_id, categories_id or category_id, segmentation) and categories (id, name)"
        )
    return entries


def _get(entry: dict[str, Any], key: str, what: str, path: Path) -> Any:
    if key not in entry:
        raise ValueError(f"{path}: {what} has no {key!r}")
    return entry[key]


def _entry_id(entry: dict[str, Any], key: str, what: str, path: Path) -> int:
    value = _get(entry, key, what, path)
    if not _is_id(value):
        raise ValueError(f"{path}: {what} has {key} = {_id_error(value)}")
    return value


def _parse_image(entry: dict[str, Any], path: Path) -> ReferImage:
    image_id = _entry_id(entry, "id", "an image", path)
    what = f"image {image_id}"
    file_name = _get(entry, "file_name", what, path)
    if not isinstance(file_name, str) or not file_name or "\0" in file_name:
        raise ValueError(f"{path}: {what} has file_name = {file_name!r}; expected a file name")
    try:
        height, width = check_image_size(
            _get(entry, "height", what, path), _get(entry, "width", what, path)
        )
    except ValueError as err:
        raise ValueError(f"{path}: {what} ({file_name}): {err}") from err
    return ReferImage(image_id, file_name, height, width)


def _parse_annotation(
    entry: dict[str, Any], images: dict[int, ReferImage], path: Path
) -> ReferAnnotation:
    ann_id = _entry_id(entry, "id", "an annotation", path)
    what = f"annotation {ann_id}"
    image_id = _entry_id(entry, "image_id", what, path)
    key = "categories_id" if "categories_id" in entry else "category_id"
    category_id = _entry_id(entry, key, what, path)
    segmentation = _get(entry, "segmentation", what, path)
    bbox = entry.get("bbox", [])
    if (
        not isinstance(bbox, list)
        or len(bbox) > 4
        or not all(type(v) in (int, float) and math.isfinite(v) for v in bbox)
    ):
        raise ValueError(f"{path}: {what} has bbox = {bbox!r:.80}; expected [x, y, w, h]")
    image = images.get(image_id)
    if image is not None:  # an annotation of no image is never decoded (no ref can use it)
        try:
            segmentation = validate_segmentation(segmentation, image.height, image.width)
        except ValueError as err:
            raise ValueError(
                f"{path}: {what} (image {image_id}, {image.file_name}): bad segmentation: {err}"
            ) from err
    return ReferAnnotation(ann_id, image_id, category_id, segmentation, tuple(bbox))


def _parse_category(entry: dict[str, Any], path: Path) -> ReferCategory:
    category_id = _entry_id(entry, "id", "a category", path)
    name = _get(entry, "name", f"category {category_id}", path)
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{path}: category {category_id} has name = {name!r}; expected a str")
    return ReferCategory(category_id, name)


def _unique(items: list[Any], key: str, kind: str, path: Path) -> dict[int, Any]:
    out: dict[int, Any] = {}
    for item in items:
        ident = getattr(item, key)
        if ident in out:
            raise ValueError(f"{path}: duplicate {kind} id {ident}; ids must be unique")
        out[ident] = item
    return out


def _read_instances(path: Path) -> tuple[dict, dict, dict]:
    """Images, annotations and categories of ``instances.json``, every value checked.

    Ids are ints in [0, 2**63 - 1] and unique, image sizes positive and within
    :data:`~wrel.data.images.MAX_IMAGE_PIXELS`, segmentations pass
    :func:`~wrel.data.images.validate_segmentation` against their image's size.
    """
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; the refer layout needs <root>/<name>/{INSTANCES_FILE} "
            "beside refs(unc).p (images, annotations, categories)"
        )
    raw = read_limited(path, data_file_limit(), "annotation file", _BIG)
    try:
        data = check_depth(json.loads(raw), str(path))
    except RecursionError as err:
        raise ValueError(
            f"{path} nests lists or objects too deeply to parse; an instances.json nests only "
            "a few levels. Regenerate or re-download it"
        ) from err
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, huge int literals
        raise ValueError(f"{path} is not valid JSON ({err}); regenerate or re-download it") from err
    images = _unique(
        [_parse_image(e, path) for e in _entries(data, "images", path)], "image_id", "image", path
    )
    annotations = _unique(
        [_parse_annotation(e, images, path) for e in _entries(data, "annotations", path)],
        "ann_id", "annotation", path,
    )  # fmt: skip
    categories = _unique(
        [_parse_category(e, path) for e in _entries(data, "categories", path)],
        "category_id", "category", path,
    )  # fmt: skip
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


def image_file(folder: Path, file_name: str, *, allow_outside_root: bool = False) -> Path:
    """``folder / file_name``, refusing names that leave ``folder``.

    An absolute ``file_name`` (``/etc/hostname``, ``C:\\x``) or one with a ``..`` component
    (``../../x``, with ``/`` or ``\\`` separators) is refused unless ``allow_outside_root``
    (``DataConfig.allow_outside_root``) is set. Symbolic links inside the folder are followed
    as usual.

    Raises:
        ValueError: a name that leaves the folder, naming it and the option that allows it.
    """
    parts = file_name.replace("\\", "/").split("/")
    absolute = PurePosixPath(file_name).is_absolute() or PureWindowsPath(file_name).anchor != ""
    if not allow_outside_root and (absolute or ".." in parts):
        raise ValueError(
            f"file_name {file_name!r} points outside {folder} ("
            f"{'an absolute path or drive' if absolute else 'a .. component'}); images must lie under "
            "<root>/images/<name>/JPEGImages/. Set allow_outside_root=True "
            "(data.allow_outside_root) only for data you trust"
        )
    return folder / file_name


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


def refs_bytes(refs: list[dict[str, Any]]) -> bytes:
    """A refs pickle (protocol 4) of ``refs``, after checking it holds plain data only."""
    _check_plain(refs)
    return pickle.dumps(refs, protocol=4)


def dump_refs(refs: list[dict[str, Any]], path: str | Path) -> Path:
    """Write a refs pickle (protocol 4) atomically (no temporary file is left on a failure)."""
    data = refs_bytes(refs)
    path = Path(path)
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
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
