"""The demo's state and its single model worker: :class:`DemoApp`.

Decoding, the model, the overlay and the PNG/JSON encoding of the answer all run in one worker
thread, one request at a time; at most ``ServerLimits.max_queue`` requests wait for it, more get
503. So concurrent uploads queue or are refused; they never multiply the decode memory. The
answer carries the 8-bit rendering the model saw (``image``), the foreground probabilities as
an 8-bit PNG (``probabilities``) and their maximum (``max_probability``): the page
re-thresholds them in the browser, so moving its threshold slider costs the server nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import json
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wrel.inference.outputs import overlay_mask
from wrel.web.decoding import (
    DATA_URL,
    OVERLAY_MAX_SIDE,
    open_upload,
    png_b64,
    rendering,
    upload_message,
)
from wrel.web.limits import RequestRejected, ServerLimits, busy

__all__ = ["DemoApp", "Example"]


@dataclass
class Example:
    """An image of the embedded benchmark offered on the page."""

    example_id: str
    image_path: Path
    text: str
    category: str = ""


class DemoApp:
    """The demo's state: model, examples, limits and the single model worker.

    Args:
        predictor: a loaded :class:`~wrel.inference.Predictor`; only the model worker uses it.
        examples: images offered on the page (may be empty).
        limits: upload, queue and timeout limits.
    """

    def __init__(
        self, predictor: Any, examples: Sequence[Example] = (), limits: ServerLimits | None = None
    ) -> None:
        self.predictor = predictor
        self.examples = {e.example_id: e for e in examples}
        self.limits = limits or ServerLimits()
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        self._example_cache: dict[str, bytes] = {}
        self.pending = 0  # requests admitted to the model worker (running + waiting)
        self.buffered = 0  # request body bytes held by all requests

    # -- model worker ---------------------------------------------------------------------------
    def _worker(self) -> ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wrel-model")
            return self._executor

    def close(self) -> None:
        """Stop the model worker (queued jobs are dropped); a later request starts a new one."""
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    async def in_worker(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in the model worker, or 503 when ``max_queue`` already wait."""
        if self.pending >= 1 + self.limits.max_queue:
            raise busy(
                f"the model is busy ({self.pending} requests running or queued); "
                "retry in a few seconds"
            )
        self.pending += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._worker(), functools.partial(fn, *args))
        finally:
            self.pending -= 1

    def open_upload(self, source: bytes | Path) -> contextlib.AbstractContextManager[Any]:
        """The image as the predictor's raster (:func:`wrel.web.decoding.open_upload`).

        Raises:
            RequestRejected: 415 for an image that cannot be read (corrupt, unknown band, ...).
        """
        return open_upload(self.predictor, source, self.limits)

    def segment(self, source: bytes | Path, text: str, threshold: float | None = None) -> bytes:
        """Decode, predict, overlay and encode the JSON answer (runs in the model worker)."""

        predictor = self.predictor
        if threshold is None:
            threshold = float(predictor.config.threshold)
        name = None
        with self.open_upload(source) as raster:
            name = getattr(raster, "path", None)
            height, width = raster.height, raster.width
            if max(height, width) > self.limits.max_side:  # examples skip the header probe
                raise RequestRejected(
                    413,
                    f"the image is {width} x {height} pixels; the demo accepts up to "
                    f"{self.limits.max_side} per side (use `wrel predict` for large scenes)",
                )
            try:
                probs = predictor.predict_raster(raster, text)  # uint8 round(255 p), (H, W)
            except ValueError as err:  # the text was checked: this is the image (corrupt, ...)
                raise RequestRejected(415, upload_message(err, name)) from err
            step = -(-max(height, width) // OVERLAY_MAX_SIDE)  # overlays of <= 2048 px
            rgb = rendering(raster, step)
        mask = predictor.to_mask(probs, threshold)
        top = float(probs.max(initial=0)) / 255.0
        image = png_b64(rgb)
        overlay = png_b64(overlay_mask(rgb, mask[::step, ::step]))
        del rgb
        probabilities = png_b64(probs)
        del probs
        mask_png = png_b64(mask.astype(np.uint8) * 255)
        head = {
            "text": text,
            "width": int(width),
            "height": int(height),
            "threshold": threshold,
            "foreground_fraction": float(mask.mean()),
            "max_probability": round(top, 4),
        }
        del mask
        # assembled as bytes: the big base64 strings are not copied through json.dumps
        parts = [json.dumps(head)[:-1].encode()]
        for key, png in (
            ("mask", mask_png),
            ("probabilities", probabilities),
            ("overlay", overlay),
            ("image", image),
        ):
            parts += [b', "', key.encode(), b'": "', DATA_URL, png, b'"']
        parts.append(b"}")
        return b"".join(parts)

    def example_png(self, example_id: str) -> bytes:
        """The example image as PNG, rendered as the model sees it (runs in the model worker;
        cached)."""
        if example_id not in self._example_cache:
            path = self.examples[example_id].image_path
            with self.open_upload(path) as raster:
                if raster.width * raster.height > self.limits.max_pixels:
                    raise RequestRejected(
                        413, f"example {path.name} is larger than the demo's pixel cap"
                    )
                step = -(-max(raster.height, raster.width) // OVERLAY_MAX_SIDE)
                rgb = rendering(raster, step)
            buf = io.BytesIO()
            from PIL import Image

            Image.fromarray(rgb).save(buf, format="PNG")
            self._example_cache[example_id] = buf.getvalue()
        return self._example_cache[example_id]

    def prerender_examples(self) -> list[str]:
        """Render every example's PNG into the cache before the server answers: the page asks
        for all of them at once, more than the model worker's queue admits (``max_queue``),
        and a cached example is served without the worker. Returns the ids that could not be
        rendered (their requests then go through the worker and answer its error)."""
        failed = []
        for example_id in self.examples:
            try:
                self.example_png(example_id)
            except (RequestRejected, ValueError, OSError):
                failed.append(example_id)
        return failed

    def cached_example(self, example_id: str) -> bytes | None:
        """The example's PNG if :meth:`example_png` rendered it already, else None."""
        return self._example_cache.get(example_id)

    def info(self) -> dict[str, Any]:
        """What ``GET /api/info`` answers."""
        scaling = getattr(self.predictor, "scaling", None)
        return {
            "image_size": list(self.predictor.image_size),
            "threshold": float(self.predictor.config.threshold),
            "image_scaling": None if scaling is None else scaling.describe(),
            "limits": {
                "max_upload_mb": round(self.limits.max_upload_bytes / 2**20, 1),
                "max_side": self.limits.max_side,
                "max_text_chars": self.limits.max_text_chars,
                "max_queue": self.limits.max_queue,
                "request_timeout_s": self.limits.request_timeout,
            },
            "examples": [
                {"id": e.example_id, "text": e.text, "category": e.category}
                for e in self.examples.values()
            ],
        }
