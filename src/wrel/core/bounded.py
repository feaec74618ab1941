"""Bounded parsing: every file a command reads is checked for size before it is read and for
nesting depth while (or right after) it is parsed, so a small hostile file cannot exhaust
memory or the interpreter's stack.

Limits (the errors name the file and say how to raise a limit where a real data set may need
it):

=================================  =====================================================
JSON and YAML nesting depth         :data:`MAX_NESTING_DEPTH` levels (configs nest 4-6)
config, state, manifest, metadata   :data:`MAX_CONFIG_BYTES` (16 MiB) per file
data set annotations                :data:`MAX_DATA_FILE_BYTES` (2 GiB) per file
(``refs(unc).p``, instances.json)   (override: environment variable ``WREL_MAX_DATA_FILE_MB``)
YAML aliases (``*name``, ``<<``)    refused: a 1 kB file of nested aliases ("billion laughs")
                                    would otherwise expand to gigabytes
=================================  =====================================================
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_DATA_FILE_BYTES",
    "MAX_NESTING_DEPTH",
    "DATA_FILE_ENV",
    "check_depth",
    "check_range",
    "data_file_limit",
    "load_json",
    "loads_json",
    "read_limited",
    "safe_yaml_load",
]

#: Deepest nesting of lists and mappings in any JSON or YAML file wrel reads.
MAX_NESTING_DEPTH = 64
#: Largest config / state / manifest / checkpoint metadata file (JSON or YAML).
MAX_CONFIG_BYTES = 16 * 1024 * 1024
#: Largest data set annotation file (refs pickle, instances.json) unless overridden.
MAX_DATA_FILE_BYTES = 2 * 1024 * 1024 * 1024
#: Environment variable that raises (or lowers) :data:`MAX_DATA_FILE_BYTES`, in MiB.
DATA_FILE_ENV = "WREL_MAX_DATA_FILE_MB"


def data_file_limit() -> int:
    """The data-file size limit in bytes (:data:`DATA_FILE_ENV` overrides the default)."""
    text = os.environ.get(DATA_FILE_ENV, "").strip()
    if not text:
        return MAX_DATA_FILE_BYTES
    try:
        mib = int(text)
    except ValueError:
        mib = 0
    if mib < 1:
        raise ValueError(f"{DATA_FILE_ENV}={text!r} must be a whole number of MiB >= 1")
    return mib * 1024 * 1024


def check_range(name: str, value: Any, low: int, high: int) -> None:
    """Refuse a command-line size outside ``[low, high]`` (``None`` passes: a default).

    Raises:
        ValueError: ``name must be in [low, high], got value``.
    """
    if value is not None and not low <= value <= high:
        raise ValueError(f"{name} must be in [{low:,}, {high:,}], got {value:,}")


def read_limited(path: str | Path, max_bytes: int, what: str = "file", hint: str = "") -> bytes:
    """The bytes of ``path`` after checking its size against ``max_bytes`` (before reading).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is larger than ``max_bytes`` (names the file and the limit).
    """
    path = Path(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise ValueError(
            f"{what} {path} is {size:,} bytes, over the limit of {max_bytes:,} bytes; "
            + (hint or "it is not a file wrel wrote, or it is damaged")
        )
    with open(path, "rb") as handle:
        data = handle.read(size)  # read() allocates what it is asked for: the checked size
        grown = handle.read(1)  # the file may have grown since stat()
    if grown or len(data) > max_bytes:
        raise ValueError(f"{what} {path} changed while it was read; retry when it is complete")
    return data


def check_depth(value: Any, where: str, max_depth: int = MAX_NESTING_DEPTH) -> Any:
    """Return ``value`` after checking lists / dicts nest at most ``max_depth`` levels.

    Iterative (no recursion), linear in the number of containers.

    Raises:
        ValueError: nested deeper than ``max_depth`` (names ``where``).
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > max_depth:
            raise ValueError(
                f"{where} nests lists or mappings more than {max_depth} levels deep; wrel's "
                "files nest only a few levels (damaged or hostile file?)"
            )
        stack.extend((child, depth + 1) for child in children)
    return value


def loads_json(text: str | bytes, where: str, max_depth: int = MAX_NESTING_DEPTH) -> Any:
    """Parse JSON ``text`` with a nesting limit; errors name ``where`` (a file or a key).

    Raises:
        ValueError: invalid JSON, nested too deeply (never ``RecursionError``).
    """
    try:
        data = json.loads(text)
    except RecursionError as err:
        raise ValueError(
            f"{where} nests lists or objects too deeply to parse (more than {max_depth} "
            "levels); wrel's files nest only a few levels"
        ) from err
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, huge int literals
        raise ValueError(f"{where} is not valid JSON ({err})") from err
    return check_depth(data, where, max_depth)


def load_json(
    path: str | Path,
    what: str = "JSON file",
    *,
    max_bytes: int = MAX_CONFIG_BYTES,
    max_depth: int = MAX_NESTING_DEPTH,
    hint: str = "",
) -> Any:
    """Read a JSON file: size checked before reading, nesting checked while parsing.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: too large, invalid JSON or nested too deeply (names the file).
    """
    return loads_json(read_limited(path, max_bytes, what, hint), f"{what} {path}", max_depth)


@functools.cache
def _no_alias_loader() -> type:
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        """``yaml.SafeLoader`` that refuses aliases and nesting over the depth limit."""

        _depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"aliases ({event.anchor and '*' + event.anchor}) are not supported; "
                    "write the value out",
                    event.start_mark,
                )
            self._depth += 1
            try:
                if self._depth > MAX_NESTING_DEPTH:
                    raise yaml.composer.ComposerError(
                        None,
                        None,
                        f"lists or mappings nested more than {MAX_NESTING_DEPTH} levels deep",
                        self.peek_event().start_mark,
                    )
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

    return NoAliasLoader


def safe_yaml_load(text: str) -> Any:
    """``yaml.safe_load`` without aliases (``*name``, ``<<: *name``) and with a depth limit.

    Raises:
        yaml.YAMLError: invalid YAML, a tag, an alias, or nesting over
            :data:`MAX_NESTING_DEPTH` (``ComposerError`` with the line and column).
    """
    import yaml

    return yaml.load(text, Loader=_no_alias_loader())  # noqa: S506 - a SafeLoader subclass
