"""Input folders a user names: one check with an error that says what is wrong with the path."""

from __future__ import annotations

from pathlib import Path

__all__ = ["require_folder"]


def require_folder(path: str | Path, what: str, hint: str = "") -> Path:
    """``path`` as a Path if it is a folder; else FileNotFoundError (missing) or
    NotADirectoryError (a file or something else), naming ``what`` it should be and ``hint``."""

    path = Path(path)
    tail = f"; {hint}" if hint else ""
    if path.is_dir():
        return path
    if path.exists():
        raise NotADirectoryError(f"{what} {path} is a file, not a folder{tail}")
    raise FileNotFoundError(f"{what} {path} does not exist{tail}")
