"""One error path: every exception that reaches the CLI becomes one line and an exit code.

:func:`describe_error` maps an exception to ``(exit code, one-line message)``:

- 2, bad input: ``ValueError`` (damaged JSON / YAML / UTF-8 too), missing or unreadable given
  paths (``FileNotFoundError``, ``PermissionError``, ``NotADirectoryError``, ...), ``KeyError``
  (a key missing from a data file), ``TypeError`` (a value of the wrong type),
  ``OverflowError`` (a number too large), ``RecursionError`` (a file nested too deeply), a
  damaged safetensors file, pickle (``UnpicklingError``, ``EOFError``) or tokenizer, and an
  ``OSError`` without an OS error number (a library refusing a file's content, e.g. Pillow's
  ``UnidentifiedImageError`` or "image file is truncated");
- 1, a fault of the environment: other ``OSError`` (a full disk: ``ENOSPC``, I/O errors), also
  when safetensors or another library reports it in its own error type; ``MemoryError`` and
  allocation failures of torch (the message says how much memory was asked);
- an ``exit_code`` attribute on the exception wins (e.g. ``CheckpointWriteError``: 1);
- anything else: 1, named as an internal error (a bug) with a hint to rerun with ``--debug``.

:func:`os_error_in` finds the operating-system error inside a library's own error type
(safetensors reports a full disk as ``SafetensorError("... os error 28 ...")``).
"""

from __future__ import annotations

import errno
import os
import pickle
import re

__all__ = ["describe_error", "memory_asked", "os_error_in"]

#: Path problems of the user's input (exit 2); any other OSError is a fault while working.
INPUT_OS_ERRORS = (
    FileNotFoundError,
    PermissionError,
    NotADirectoryError,
    IsADirectoryError,
    FileExistsError,
)
# Rust's std::io::Error as libraries print it: "... (os error 28)" or "Os { code: 28, ... }"
_OS_ERROR_CODE = re.compile(r"os error (\d+)|Os \{ code: (\d+)")
# torch CPU: "you tried to allocate 10000000000000 bytes"; CUDA: "Tried to allocate 20.00 GiB"
_BYTES_ASKED = re.compile(r"tried to allocate (\d+) bytes", re.IGNORECASE)
_SIZE_ASKED = re.compile(r"tried to allocate ([\d.]+ ?[KMGTP]i?B)", re.IGNORECASE)
_NUMPY_ASKED = re.compile(r"unable to allocate ([\d.]+ ?[KMGTP]i?B)", re.IGNORECASE)
_MEMORY_WORDS = ("out of memory", "not enough memory", "can't allocate memory", "cannot allocate")


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    if isinstance(err, OSError) and not text:
        text = err.strerror or ""
    return text or type(err).__name__


def _bytes_text(count: int) -> str:
    size = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}" if unit != "bytes" else f"{count} bytes"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def memory_asked(message: str) -> str | None:
    """How much memory an allocation failure asked for, from torch's or numpy's message."""
    if found := _BYTES_ASKED.search(message):
        return _bytes_text(int(found.group(1)))
    if found := _SIZE_ASKED.search(message) or _NUMPY_ASKED.search(message):
        return found.group(1)
    return None


def os_error_in(err: BaseException) -> OSError | None:
    """The operating-system error a library reports in its own type (``os error 28``), if any."""
    if isinstance(err, OSError):
        return err
    if isinstance(err, ValueError | LookupError | TypeError | ArithmeticError):
        return None  # our own messages may quote numbers; only library errors are parsed
    found = _OS_ERROR_CODE.search(str(err))
    if found is None:
        return None
    code = int(found.group(1) or found.group(2))
    if code not in errno.errorcode:
        return None
    return OSError(code, os.strerror(code))


def _is_allocation_failure(err: BaseException) -> bool:
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(w in text for w in _MEMORY_WORDS)


def _memory_line(err: BaseException) -> str:
    asked = memory_asked(str(err))
    what = f"an allocation of {asked} failed" if asked else "an allocation failed"
    detail = _one_line(err)
    return (
        f"out of memory: {what} ({detail}); use a smaller input, batch or --max-pixels, or a "
        "machine with more memory"
    )


def _input_line(err: BaseException) -> str | None:
    """The one line of a bad-input error (exit 2), or None when ``err`` is not one."""
    name = type(err).__name__
    if isinstance(err, KeyError):
        key = err.args[0] if err.args else "?"
        return f"missing key {key!r} in the input (a required entry is absent)"
    if isinstance(err, RecursionError):
        return (
            "an input file is nested too deeply to read (RecursionError); check the config, "
            "state or JSON files given"
        )
    if isinstance(err, OverflowError):
        return f"a number is too large: {_one_line(err)}"
    if isinstance(err, TypeError):
        return f"a value has the wrong type: {_one_line(err)}"
    if isinstance(err, pickle.UnpicklingError | EOFError):
        return f"a damaged or truncated file: {_one_line(err)}"
    if name == "SafetensorError":
        return f"damaged safetensors file (truncated or corrupt?): {_one_line(err)}"
    if isinstance(err, (ValueError, *INPUT_OS_ERRORS)):
        return _one_line(err)
    return None


def describe_error(err: BaseException) -> tuple[int, str]:
    """``(exit code, one line)`` of an exception that reached the CLI (see the module doc)."""
    code = getattr(err, "exit_code", None)
    if isinstance(code, int):
        return code, _one_line(err)
    if _is_allocation_failure(err):
        return 1, _memory_line(err)
    if isinstance(err, FloatingPointError):  # non-finite numbers while working
        return 1, _one_line(err)
    if isinstance(err, OSError) and err.errno is None and not isinstance(err, INPUT_OS_ERRORS):
        return 2, _one_line(err)  # no OS error code: a library refusing a file's content
    os_error = os_error_in(err)
    if os_error is not None and not isinstance(os_error, INPUT_OS_ERRORS):
        if os_error is err:
            return 1, _one_line(err)
        return 1, f"{_one_line(err)} ({os_error.strerror})"
    line = _input_line(err)
    if line is not None:
        return 2, line
    return 1, (
        f"internal error ({type(err).__name__}: {_one_line(err)}); this is a bug in wrel: "
        "rerun with --debug for the traceback and report it"
    )
