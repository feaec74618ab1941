"""Which files reading an input touches: the files an output must never replace.

An image is more than its own file: GDAL also reads sidecars next to it (``scene.tif.aux.xml``
statistics, ``scene.tif.ovr`` overviews, ``scene.tfw`` / ``scene.wld`` world files, ``.prj``
projections, ``.msk`` masks), and a ``.vrt`` reads its source rasters (relative to the VRT or
absolute, nested VRTs included). :func:`files_read_by` lists them all, existing or not: a new
sidecar written next to an input changes how it is read, so that path is protected too.
:func:`folder_files` lists a model or run folder (bounded).

The lists feed :func:`wrel.core.outfiles.check_output_paths`, which compares resolved paths and
device / inode numbers, so other spellings, symlinks and hard links are caught.
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path

__all__ = ["files_read_by", "folder_files", "sidecar_paths", "vrt_sources"]

log = logging.getLogger(__name__)

MAX_VRT_BYTES = 16 * 2**20  # a VRT larger than this is not parsed (its sources stay unknown)
MAX_VRT_DEPTH = 8  # nested VRTs followed this deep
MAX_READ_FILES = 10_000  # files listed per input at most
# Sidecars GDAL may read next to ``scene.ext`` (appended to the full name or to the stem).
_FULL_NAME_SIDECARS = (".aux.xml", ".aux", ".ovr", ".msk", ".ovr.aux.xml")
_STEM_SIDECARS = (".aux", ".wld", ".prj", ".rpb", ".imd", ".tab", "_rpc.txt")


def sidecar_paths(path: str | Path) -> list[Path]:
    """GDAL sidecar files of ``path`` (whether they exist or not).

    ``scene.tif`` -> ``scene.tif.aux.xml``, ``scene.tif.ovr``, ``scene.tif.msk``, ``scene.tfw``,
    ``scene.tifw``, ``scene.wld``, ``scene.prj``, ... (also in upper case, as GDAL looks for).
    """
    path = Path(path)
    ext = path.suffix.lstrip(".")
    names = [path.name + s for s in _FULL_NAME_SIDECARS]
    stem_suffixes = list(_STEM_SIDECARS)
    if ext:
        stem_suffixes += [f".{ext[0]}{ext[-1]}w", f".{ext}w"]  # world files: .tfw, .tifw, .pgw
    names += [path.stem + s for s in stem_suffixes]
    names += [n.upper() for n in names] + [path.stem + s.upper() for s in stem_suffixes]
    return [path.with_name(n) for n in dict.fromkeys(names)]


def _vsi_to_file(name: str) -> Path | None:
    """The local file behind a GDAL ``/vsizip/a.zip/x`` (-> ``a.zip``) style path, if any."""
    parts = Path(name).parts[2:]  # drop "/" and "vsizip"
    current = Path("/")
    for part in parts:
        current = current / part
        if current.is_file():
            return current
    return None


def vrt_sources(vrt: str | Path) -> list[Path]:
    """The source files named in a GDAL VRT (``SourceFilename`` anywhere), resolved.

    Unreadable, oversized or malformed VRTs give ``[]`` (GDAL refuses them when reading too).
    """
    vrt = Path(vrt)
    try:
        if vrt.stat().st_size > MAX_VRT_BYTES:
            log.warning("%s: VRT over %d bytes, its sources are not listed", vrt, MAX_VRT_BYTES)
            return []
        root = ET.fromstring(vrt.read_bytes())  # expat refuses entity expansion bombs
    except (OSError, ET.ParseError, ValueError):
        return []
    sources: list[Path] = []
    for element in root.iter("SourceFilename"):
        name = (element.text or "").strip()
        if not name:
            continue
        if name.startswith("/vsi"):
            local = _vsi_to_file(name)
            if local is not None:
                sources.append(local)
            continue
        relative = element.get("relativeToVRT", "0").strip() == "1"
        source = Path(name)
        sources.append(vrt.parent / source if relative and not source.is_absolute() else source)
    return sources


def _looks_like_vrt(path: Path) -> bool:
    if path.suffix.lower() == ".vrt":
        return True
    try:
        with open(path, "rb") as handle:
            return handle.read(64).lstrip().startswith(b"<VRTDataset")
    except OSError:
        return False


def files_read_by(paths: Iterable[str | Path | None]) -> list[Path]:
    """Every file reading ``paths`` can touch: the files, their sidecars, VRT sources (nested).

    ``None`` entries are skipped. At most :data:`MAX_READ_FILES` files; VRTs are followed
    :data:`MAX_VRT_DEPTH` levels deep.
    """
    found: dict[str, Path] = {}
    expanded: set[str] = set()
    pending = [(Path(p), 0) for p in paths if p is not None]
    while pending and len(found) < MAX_READ_FILES:
        path, depth = pending.pop()
        key = os.path.realpath(path)
        if key in expanded:
            continue
        expanded.add(key)
        found.setdefault(key, path)
        for sidecar in sidecar_paths(path):
            found.setdefault(os.path.realpath(sidecar), sidecar)
        if depth < MAX_VRT_DEPTH and path.is_file() and _looks_like_vrt(path):
            pending += [(source, depth + 1) for source in vrt_sources(path)]
    return list(found.values())[:MAX_READ_FILES]


def folder_files(folder: str | Path | None, limit: int = MAX_READ_FILES) -> list[Path]:
    """Files under ``folder`` (recursively, at most ``limit``); ``[]`` when it is not a folder."""
    if folder is None or not Path(folder).is_dir():
        return []
    files: list[Path] = []
    for parent, _, names in os.walk(folder):
        files += [Path(parent) / n for n in names]
        if len(files) >= limit:
            break
    return files[:limit]
