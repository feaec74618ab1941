"""Output files: check user-given paths before any work, then replace them atomically.

:func:`check_output_paths` refuses, before anything is computed, an output that is an input or
a file reading the input touches (sidecars, VRT sources: :mod:`wrel.core.readfiles`), also
through a symlink, a relative path or a hard link; a folder; a path whose suffix the writer
does not support; a location that cannot be written; two outputs on the same file and, unless
``overwrite``, a file that already exists. :func:`write_file` is the one way commands write a
user-visible file: the same checks again, then an atomic write.

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
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

from wrel.core.readfiles import files_read_by

__all__ = [
    "PARTIAL_MARKER",
    "Inputs",
    "OutputWriteError",
    "check_output_paths",
    "atomic_output",
    "input_files",
    "StagedOutputs",
    "write_file",
]

PARTIAL_MARKER = ".partial"  # temporary files are named .NAME.<hex>.partial<suffix>


class OutputWriteError(OSError):
    """Writing an output failed (disk full, I/O error, ...); no final path was half-written.

    ``exit_code`` 1: a fault while working, not a usage error.
    """

    exit_code = 1


def _identity(path: Path) -> tuple[str, tuple[int, int] | None]:
    """The resolved path and, for an existing file, its (device, inode)."""
    try:
        stat = os.stat(path)
        inode: tuple[int, int] | None = (stat.st_dev, stat.st_ino)
    except (OSError, ValueError):  # missing, or a name the OS refuses
        inode = None
    return os.path.realpath(path), inode


def _same_file(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` name one file (symlinks, ``..``, relative paths, hard links)."""
    real_a, inode_a = _identity(a)
    real_b, inode_b = _identity(b)
    return real_a == real_b or (inode_a is not None and inode_a == inode_b)


def _nearest_existing(folder: Path) -> Path:
    """``folder`` or its closest existing ancestor (the folder ``mkdir -p`` would create in)."""
    current = folder
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


Inputs = Mapping[str | Path, str] | Iterable[str | Path | None]


def input_files(paths: Iterable[str | Path | None], label: str = "image") -> dict[Path, str]:
    """``{file: description}`` of the inputs and every file reading them touches.

    Sidecars and VRT sources (:func:`wrel.core.readfiles.files_read_by`) are described as read
    with their input, e.g. ``"a source or sidecar file that the input image a.vrt reads (b.tif)"``.
    """
    described: dict[Path, str] = {}
    for path in (Path(p) for p in paths if p is not None):
        described.setdefault(path, f"the input {label} {path}")
        for extra in files_read_by([path])[1:]:
            described.setdefault(
                extra, f"a source or sidecar file that the input {label} {path} reads ({extra})"
            )
    return described


def _protected(inputs: Inputs) -> list[tuple[str, tuple[int, int] | None, str]]:
    if isinstance(inputs, Mapping):
        pairs = [(Path(p), str(d)) for p, d in inputs.items()]
    else:
        pairs = list(input_files(inputs).items())
    return [(*_identity(p), description) for p, description in pairs]


def _refusal(name: str, path: Path, protected: list, folders: list[Path]) -> str | None:
    """Why ``path`` may not be written: it is a protected input, or lies in a kept folder."""
    real, inode = _identity(path)
    for source_real, source_inode, description in protected:
        if real == source_real or (inode is not None and inode == source_inode):
            return (
                f"{name} {path} is {description}; refusing to write over an input (also with "
                "--overwrite), choose another output path"
            )
    for folder in folders:
        if Path(real).is_relative_to(os.path.realpath(folder)):
            return (
                f"{name} {path} is inside {folder}, which this command reads or rewrites; "
                "choose a path outside it"
            )
    return None


def check_output_paths(
    outputs: Mapping[str, str | Path | None],
    *,
    suffixes: Mapping[str, Iterable[str]] | None = None,
    inputs: Inputs = (),
    overwrite: bool = False,
    folders: Iterable[str | Path] = (),
) -> dict[str, Path]:
    """Validate output paths before any work is done; return them as ``Path`` s.

    Args:
        outputs: ``{name: path}``, e.g. ``{"--out": "mask.tif"}``; ``None`` values are skipped.
            The name is used in the error messages.
        suffixes: allowed suffixes (lower case, with the dot) per name; any when absent.
        inputs: files that must never be written over: paths of input images (their sidecars
            and VRT sources are protected too, :func:`input_files`), or ``{path: description}``
            taken as they are (e.g. a data set's ``refs(unc).p``).
        overwrite: allow replacing an existing file; an input is never replaced.
        folders: folders no output may lie in (e.g. the benchmark a command is about to write).

    Raises:
        ValueError: naming the output, the path and the fix.
    """
    checked: dict[str, Path] = {}
    protected = _protected(inputs)
    kept = [Path(f) for f in folders]
    for name, value in outputs.items():
        if value is None:
            continue
        path = Path(value).expanduser()
        if str(value).strip() == "" or path.name in ("", ".", ".."):
            raise ValueError(f"{name} {str(value)!r} is not a file name; give e.g. out/mask.png")
        refusal = _refusal(name, path, protected, kept)
        if refusal:
            raise ValueError(refusal)
        for other, seen in checked.items():
            if _same_file(path, seen):
                raise ValueError(f"{name} {path} is the same file as {other}; give two paths")
        _check_one(name, path, tuple((suffixes or {}).get(name, ())), overwrite)
        checked[name] = path
    return checked


def _check_one(name: str, path: Path, allowed: tuple[str, ...], overwrite: bool) -> None:
    """Folder, suffix, existing file and writable folder checks of one output."""
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
            f"{name} {path} already exists; pass --overwrite to replace it, or choose another path"
        )
    folder = _nearest_existing(path.parent if str(path.parent) else Path("."))
    if not folder.is_dir():
        raise ValueError(f"{name} {path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(
            f"{name} {path}: cannot write to the folder {folder} (permission denied or "
            "read-only); choose a writable folder"
        )


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


def write_file(
    path: str | Path,
    content: bytes | str | Callable[[Path], object],
    *,
    name: str = "output",
    overwrite: bool = False,
    inputs: Inputs = (),
    folders: Iterable[str | Path] = (),
    suffixes: Iterable[str] = (),
) -> Path:
    """Check ``path`` (:func:`check_output_paths`), then write ``content`` to it atomically.

    The one way ``wrel`` commands write a user-visible file. ``content`` is bytes, text
    (UTF-8) or a function that writes the file it is given (a temporary file in the same
    folder, with the final suffix). Commands call :func:`check_output_paths` with the same
    arguments before their work starts; this call checks again right before writing.

    Raises:
        ValueError: the path is refused (nothing is written).
        OutputWriteError: writing failed (disk full, ...); ``path`` keeps its previous content
            and no temporary file is left.
    """
    allowed = tuple(suffixes)
    final = check_output_paths(
        {name: path},
        suffixes={name: allowed} if allowed else None,
        inputs=inputs,
        overwrite=overwrite,
        folders=folders,
    )[name]
    try:
        with atomic_output(final) as tmp:
            if isinstance(content, bytes):
                tmp.write_bytes(content)
            elif isinstance(content, str):
                tmp.write_text(content, encoding="utf-8")
            else:
                content(tmp)
    except OutputWriteError:
        raise
    except OSError as err:
        reason = " ".join(str(err).split()) or err.strerror or type(err).__name__
        raise OutputWriteError(
            f"could not write {name} {final}: {reason}; nothing was replaced (a previous file "
            "at that path is intact)"
        ) from err
    return final
