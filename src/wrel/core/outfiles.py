"""Output files: check user-given paths before any work, then replace them atomically.

:func:`check_output_paths` refuses, before anything is computed, an output that is the input
(also through a symlink, a relative path or a hard link), a folder, a path whose suffix the
writer does not support, a location that cannot be written, two outputs on the same file and,
unless ``overwrite``, a file that already exists.

Writers never write to the final path: :func:`atomic_output` (one file) and
:class:`StagedOutputs` (several files, all or nothing) hand out a temporary file in the same
folder (``.NAME.<random>.partial<suffix>``), fsync it and ``os.replace`` it over the final path
only once it is complete. A failure or Ctrl-C removes the temporary file and leaves a previous
file intact; a hard kill (SIGKILL, power loss) can leave a ``.partial`` file behind, never a
truncated output.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

__all__ = [
    "PARTIAL_MARKER",
    "OutputWriteError",
    "check_output_paths",
    "atomic_output",
    "StagedOutputs",
]

PARTIAL_MARKER = ".partial"  # temporary files are named .NAME.<hex>.partial<suffix>


class OutputWriteError(OSError):
    """Writing an output failed (disk full, I/O error, ...); no final path was half-written.

    ``exit_code`` 1: a fault while working, not a usage error.
    """

    exit_code = 1


def _same_file(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` name one file (symlinks, ``..``, relative paths, hard links)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def _nearest_existing(folder: Path) -> Path:
    """``folder`` or its closest existing ancestor (the folder ``mkdir -p`` would create in)."""
    current = folder
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def check_output_paths(
    outputs: Mapping[str, str | Path | None],
    *,
    suffixes: Mapping[str, Iterable[str]] | None = None,
    inputs: Iterable[str | Path | None] = (),
    overwrite: bool = False,
) -> dict[str, Path]:
    """Validate output paths before any work is done; return them as ``Path`` s.

    Args:
        outputs: ``{name: path}``, e.g. ``{"--out": "mask.tif"}``; ``None`` values are skipped.
            The name is used in the error messages.
        suffixes: allowed suffixes (lower case, with the dot) per name; any when absent.
        inputs: files that must never be written over (the input image).
        overwrite: allow replacing an existing file; an input is never replaced.

    Raises:
        ValueError: naming the output, the path and the fix.
    """
    checked: dict[str, Path] = {}
    sources = [Path(p) for p in inputs if p is not None]
    for name, value in outputs.items():
        if value is None:
            continue
        path = Path(value).expanduser()
        if str(value).strip() == "" or path.name in ("", ".", ".."):
            raise ValueError(f"{name} {str(value)!r} is not a file name; give e.g. out/mask.png")
        for source in sources:
            if _same_file(path, source):
                raise ValueError(
                    f"{name} {path} is the input image {source}; refusing to write over the "
                    "input, choose another output path"
                )
        for other, seen in checked.items():
            if _same_file(path, seen):
                raise ValueError(f"{name} {path} is the same file as {other}; give two paths")
        allowed = tuple((suffixes or {}).get(name, ()))
        if path.is_dir():
            raise ValueError(
                f"{name} {path} is a folder; give a file path such as "
                f"{path / ('output' + (allowed[0] if allowed else ''))}"
            )
        if allowed and path.suffix.lower() not in allowed:
            raise ValueError(
                f"{name} {path} has an unsupported suffix {path.suffix or '(none)'!r}; "
                f"use one of {', '.join(allowed)}"
            )
        if (path.exists() or path.is_symlink()) and not overwrite:
            raise ValueError(
                f"{name} {path} already exists; pass --overwrite to replace it, or choose "
                "another path"
            )
        folder = _nearest_existing(path.parent if str(path.parent) else Path("."))
        if not folder.is_dir():
            raise ValueError(f"{name} {path}: {folder} is a file, not a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ValueError(
                f"{name} {path}: cannot write to the folder {folder} (permission denied or "
                "read-only); choose a writable folder"
            )
        checked[name] = path
    return checked


def _temp_path(final: Path) -> Path:
    """Create (exclusively) an empty temporary file next to ``final``; umask applies."""
    final.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = final.with_name(f".{final.name}.{secrets.token_hex(4)}{PARTIAL_MARKER}{final.suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue
        os.close(fd)
        return tmp


def fsync_file(path: Path) -> None:
    """Flush a written file (or folder entry) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be fsynced
        fsync_file(folder)


class StagedOutputs:
    """Write several outputs to temporary files, then replace the final paths together.

    >>> staged = StagedOutputs()  # doctest: +SKIP
    >>> write_png(staged.temp("mask.png"))  # doctest: +SKIP
    >>> staged.commit()  # doctest: +SKIP

    :meth:`abort` (or leaving the ``with`` block on an exception) removes the temporary files
    and leaves every final path as it was.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []

    def temp(self, final: str | Path) -> Path:
        """A new empty temporary file in ``final``'s folder (created, with parents, if needed)."""
        final = Path(final)
        tmp = _temp_path(final)
        self._pending.append((tmp, final))
        return tmp

    def commit(self) -> list[Path]:
        """fsync every temporary file, then ``os.replace`` each over its final path."""
        done: list[Path] = []
        try:
            for tmp, _ in self._pending:
                fsync_file(tmp)
            for tmp, final in self._pending:
                os.replace(tmp, final)
                done.append(final)
        except BaseException:
            self.abort()
            raise
        for folder in {final.parent for _, final in self._pending}:
            _fsync_folder(folder)
        self._pending.clear()
        return done

    def abort(self) -> None:
        """Remove the temporary files; the final paths are untouched."""
        for tmp, _ in self._pending:
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._pending.clear()

    def __enter__(self) -> StagedOutputs:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; replace ``path`` on success.

    On an exception (or ``KeyboardInterrupt``) the temporary file is removed and ``path`` keeps
    its previous content.
    """
    with StagedOutputs() as staged:
        yield staged.temp(path)
