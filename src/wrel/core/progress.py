"""Progress of long work: a live bar on a terminal, plain periodic log lines elsewhere.

On a terminal (the stream is a TTY) :class:`Progress` draws a ``tqdm`` bar with the stage,
epoch, step, loss and ETA. When the output goes to a file or a pipe (CI, ``nohup``, a
benchmark log) a bar would either be silent or fill the log with carriage returns, so it writes
one plain line every ``interval`` seconds (and one at the end) instead::

    [wrel] joint 2/6: step 310/749 (41%), loss 0.412, 3.1 it/s, elapsed 1:40, ETA 2:21

``WREL_PROGRESS`` overrides the choice: ``bar``, ``lines`` or ``off``;
``WREL_PROGRESS_INTERVAL`` sets the seconds between plain lines (default 30).
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Any

from tqdm import tqdm

__all__ = ["Progress", "progress_mode", "format_duration"]

_MODES = ("bar", "lines", "off")


def progress_mode(stream: IO[str] | None = None) -> str:
    """``bar`` on a terminal, ``lines`` otherwise, unless ``WREL_PROGRESS`` says which."""
    forced = os.environ.get("WREL_PROGRESS", "").strip().lower()
    if forced:
        if forced not in _MODES:
            raise ValueError(f"WREL_PROGRESS={forced!r}; use one of {list(_MODES)}")
        return forced
    stream = stream or sys.stderr
    try:
        return "bar" if stream.isatty() else "lines"
    except (AttributeError, ValueError):  # closed or unusual streams
        return "lines"


def format_duration(seconds: float) -> str:
    """``h:mm:ss`` or ``m:ss``."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _interval() -> float:
    text = os.environ.get("WREL_PROGRESS_INTERVAL", "30")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"WREL_PROGRESS_INTERVAL={text!r} is not a number of seconds") from None
    if not value >= 0:
        raise ValueError(f"WREL_PROGRESS_INTERVAL={text!r} must be >= 0")
    return value


class Progress:
    """Progress of ``total`` units of work; see the module docstring.

    Args:
        total: units of work (steps, batches, tiles).
        desc: what is running, e.g. ``"joint 2/6"``.
        enabled: False: print nothing (other ranks, ``train.progress=false``).
        initial: units already done (a resumed epoch).
        unit: the unit's name in the bar.
        stream: where to write (default: stderr).
    """

    def __init__(
        self,
        total: int,
        desc: str,
        *,
        enabled: bool = True,
        initial: int = 0,
        unit: str = "step",
        stream: IO[str] | None = None,
    ) -> None:
        self.total = int(total)
        self.desc = desc
        self.count = int(initial)
        self.stream = stream or sys.stderr
        self.mode = progress_mode(self.stream) if enabled else "off"
        self.interval = _interval()
        self.start = time.monotonic()
        self.start_count = self.count
        self.last_line = self.start
        self.postfix: dict[str, Any] = {}
        self.bar: tqdm | None = None
        if self.mode == "bar":
            self.bar = tqdm(
                total=self.total,
                initial=self.count,
                desc=desc,
                unit=unit,
                file=self.stream,
                dynamic_ncols=True,
                leave=False,
            )

    def update(self, n: int = 1, **postfix: float | str) -> None:
        """``n`` more units done; ``postfix`` (e.g. ``loss=0.41``) is shown with them."""
        self.count += n
        self.postfix.update(postfix)
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix({k: _short(v) for k, v in self.postfix.items()})
        elif self.mode == "lines":
            now = time.monotonic()
            if now - self.last_line >= self.interval:
                self.last_line = now
                self._line()

    def close(self) -> None:
        """End the bar, or write the final plain line."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.mode == "lines" and self.count > self.start_count:
            self._line()
        self.mode = "off"

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _line(self) -> None:
        elapsed = time.monotonic() - self.start
        done = self.count - self.start_count
        rate = done / elapsed if elapsed > 0 else 0.0
        share = f" ({self.count / self.total:.0%})" if self.total else ""
        parts = [f"[wrel] {self.desc}: {self.count}/{self.total}{share}"]
        parts += [f"{k} {_short(v)}" for k, v in self.postfix.items()]
        parts.append(f"{rate:.2f} it/s" if rate < 10 else f"{rate:.0f} it/s")
        parts.append(f"elapsed {format_duration(elapsed)}")
        if rate > 0 and self.total > self.count:
            parts.append(f"ETA {format_duration((self.total - self.count) / rate)}")
        print(", ".join(parts), file=self.stream, flush=True)


def _short(value: float | str) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
