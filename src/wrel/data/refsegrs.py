"""Reader for the RefSegRS / RISBench layout, yielding the same :class:`Sample` records.

Accepted layout::

    <root>/output_phrase_<split>.txt   one sample a line: "<image_index> <phrase words...>"
    <root>/images/<image_index>.<ext>  the image (.tif, .tiff, .png, .jpg, .jpeg, .bmp)
    <root>/masks/<image_index>.<ext>   its target mask ({0, 1} or 0/255)

Blank lines and lines starting with ``#`` are skipped. The sample id is the image index when it
is an ASCII integer below 2**63, else a stable CRC32 of it; ids must be unique within a split. An
image index is a file stem: one holding ``/``, ``\\`` or NUL, or equal to ``.`` or ``..``, is
refused (it could name a file outside ``images/`` and ``masks/``). Image and mask files hold at
most :data:`wrel.data.images.MAX_IMAGE_PIXELS` pixels (checked when they are read). The files carry no
class label, so the category (the weak text) is the earliest class word of the phrase from a
vocabulary (RefSegRS and DIOR classes by default) found in the phrase's head chunk, falling back
to its head noun (see :func:`category_of`).

RefSegRS: Yuan et al., "RRSIS: Referring Remote Sensing Image Segmentation", IEEE TGRS 2024.
"""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import Sequence
from pathlib import Path

from wrel.core.bounded import data_file_limit, read_limited
from wrel.data.samples import Sample

__all__ = ["DEFAULT_VOCABULARY", "IMAGE_EXTENSIONS", "category_of", "load_refsegrs_samples"]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
DEFAULT_VOCABULARY = (
    "low vegetation", "impervious surface", "road marking", "parking lot", "bikeway",
    "sidewalk", "building", "vehicle", "trailer", "truck", "car", "van", "bus", "road",
    "tree", "lane", "airplane", "airport", "baseball field", "basketball court", "bridge",
    "chimney", "dam", "golf field", "ground track field", "harbor", "overpass", "ship",
    "stadium", "storage tank", "tennis court", "train station", "windmill",
)  # fmt: skip
_BREAK_WORDS = {
    "on", "in", "at", "near", "of", "with", "which", "that", "along", "beside", "next", "to",
    "from", "by", "under", "above", "between", "behind", "around", "across", "is", "are",
}  # fmt: skip


def _head_chunk(words: list[str]) -> list[str]:
    head: list[str] = []
    for word in words:
        if word in _BREAK_WORDS and head:
            break
        head.append(word)
    return head


def category_of(phrase: str, vocabulary: Sequence[str] = DEFAULT_VOCABULARY) -> str:
    """The class word of ``phrase``.

    The head chunk is the phrase up to its first preposition ("the white car" of "the white car
    on the left"); the result is the vocabulary term in it (longest, then earliest), else its
    last word (the head noun), else "object".
    """
    head = " ".join(_head_chunk(re.findall(r"[a-z]+", phrase.lower())))
    best: tuple[int, int, str] | None = None
    for term in vocabulary:
        match = re.search(rf"\b{re.escape(term.lower())}s?\b", head)
        if match and (best is None or (-len(term), match.start()) < best[:2]):
            best = (-len(term), match.start(), term)
    if best is not None:
        return best[2]
    return head.split()[-1] if head else "object"


def _index_files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} does not exist; the RefSegRS layout needs images/ and masks/ beside "
            "output_phrase_<split>.txt"
        )
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    return {p.stem: p for p in files}


_MAX_ID = 2**63 - 1


def _sample_id(index: str) -> int:
    if index.isascii() and index.isdigit() and int(index) <= _MAX_ID:
        return int(index)
    return zlib.crc32(index.encode("utf-8", "surrogatepass")) & 0x7FFFFFFF


def _check_index(index: str, path: Path, number: int) -> None:
    if index in (".", "..") or any(c in index for c in "/\\\0"):
        raise ValueError(
            f"{path}:{number}: image index {index!r} is not a plain file stem; it may not hold "
            "'/', '\\' or NUL or be '.' or '..'"
        )


def _parse_lines(path: Path) -> list[tuple[int, str, str]]:
    out = []
    text = read_limited(path, data_file_limit(), "phrase file").decode("utf-8")
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        if len(parts) < 2:
            raise ValueError(
                f"{path}:{number}: expected '<image_index> <phrase>', got {line!r}; add the phrase"
            )
        out.append((number, parts[0], parts[1]))
    return out


def load_refsegrs_samples(
    root: str | Path,
    split: str,
    *,
    vocabulary: Sequence[str] = DEFAULT_VOCABULARY,
    check_files: bool = True,
) -> list[Sample]:
    """Samples of ``split`` from a RefSegRS / RISBench folder (all accurate).

    Raises:
        ValueError: unknown split, malformed line, duplicate ids.
        FileNotFoundError: a folder, image or mask is missing.
    """
    root = Path(root)
    path = root / f"output_phrase_{split}.txt"
    if not path.is_file():
        available = sorted(p.stem.removeprefix("output_phrase_")
                           for p in root.glob("output_phrase_*.txt"))  # fmt: skip
        raise ValueError(f"unknown split {split!r}: no {path}; available splits: {available}")
    images, masks = _index_files(root / "images"), _index_files(root / "masks")
    samples: list[Sample] = []
    seen: dict[int, int] = {}
    for number, index, phrase in _parse_lines(path):
        _check_index(index, path, number)
        sample_id = _sample_id(index)
        if sample_id in seen:
            raise ValueError(
                f"{path}:{number}: duplicate image index {index!r} (first on line "
                f"{seen[sample_id]}); each line needs its own image and mask"
            )
        seen[sample_id] = number
        image, mask = images.get(index), masks.get(index)
        if check_files and (image is None or mask is None):
            kind, folder = ("image", "images") if image is None else ("mask", "masks")
            raise FileNotFoundError(
                f"{path}:{number}: no {kind} {root / folder / index}.<{'|'.join(IMAGE_EXTENSIONS)}>"
                f"; add the file or remove the line"
            )
        samples.append(
            Sample(
                sample_id=sample_id,
                image_path=image or root / "images" / f"{index}.tif",
                split=split,
                category=category_of(phrase, vocabulary),
                text=phrase,
                quality="accurate",
                mask_path=mask or root / "masks" / f"{index}.tif",
            )
        )
    logger.info("%s/%s: %d samples", root, split, len(samples))
    return samples
