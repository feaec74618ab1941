"""`wrel serve`: a small offline web page over :class:`~wrel.inference.Predictor`.

The page is a Starlette application served by uvicorn. Every limit lives in one
:class:`ServerLimits`; from the socket inwards:

1. uvicorn (:class:`DemoServer`) answers 503 above ``limit_concurrency`` open connections or
   running requests, closes idle keep-alive connections after ``keep_alive`` seconds, and its
   HTTP protocol (:func:`guarded_protocol`) closes a connection whose request line and headers
   have not arrived ``header_timeout`` seconds after it opened (or after its previous response),
   and aborts one whose client stops reading a response for ``request_timeout`` seconds.
2. :class:`BodyGuard` (ASGI middleware) refuses a declared ``Content-Length`` above
   ``max_upload_bytes`` before reading a byte (413), counts the body while it streams (413 at the
   cap, also for chunked uploads), gives the whole body ``request_timeout`` seconds (408), and
   keeps the bytes held by all requests together under ``max_buffered_bytes`` (503 above).
3. The routes read an upload either as the raw request body or as ``multipart/form-data``
   (Starlette's parser, kept in memory), then read the image header (rasterio for TIFF/GeoTIFF,
   Pillow's lazy open otherwise) and refuse an image above ``max_side`` per side,
   ``max_side**2`` pixels or the ``max_decode_bytes`` estimate (413) before any pixel is decoded.
4. Decoding, the model, the overlay and the PNG/JSON encoding of the answer all run in one model
   worker thread, one request at a time; at most ``max_queue`` requests wait for it, more get 503.
   So concurrent uploads queue or are refused; they never multiply the decode memory.

Uploads are read exactly as ``wrel predict`` reads files: TIFF/GeoTIFF through
:class:`wrel.data.rasters.GeoRaster` (from memory, ``/vsimem``), other pictures through Pillow, both
with the checkpoint's recorded image scaling (:attr:`Predictor.scaling`), so 8/16-bit and
1-N band images reach the model as the same tensor as through ``Predictor.predict(path)``.
The answer carries the 8-bit rendering the model saw (``image``), the foreground
probabilities as an 8-bit PNG (``probabilities``) and their maximum (``max_probability``): the
page re-thresholds them in the browser, so moving its threshold slider costs the server
nothing.

Static files come from a fixed table inside the package (no CDN, no path from the URL) and
every answer carries :data:`SECURITY_HEADERS`. Nothing is written to disk.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import io
import json
import logging
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from wrel.core.paths import require_folder
from wrel.data.dataset import load_samples
from wrel.data.rasters import GeoRaster
from wrel.inference.outputs import overlay_mask

__all__ = [
    "ACCEPTED_FORMATS",
    "UPLOAD_FORMATS",
    "SECURITY_HEADERS",
    "STATIC_FILES",
    "BodyGuard",
    "DemoApp",
    "DemoServer",
    "Example",
    "RequestRejected",
    "ServerLimits",
    "create_app",
    "decode_cost",
    "guarded_protocol",
    "is_tiff",
    "load_examples",
    "make_server",
    "probe_image",
]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
#: Pillow formats the demo opens; TIFF/GeoTIFF goes through rasterio (as in ``wrel predict``).
ACCEPTED_FORMATS = ("PNG", "JPEG", "BMP", "WEBP", "GIF")
UPLOAD_FORMATS = "PNG, JPEG, TIFF/GeoTIFF, BMP, WebP or GIF"
#: First bytes of a classic or Big TIFF, little or big endian.
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
DATA_URL = b"data:image/png;base64,"
OVERLAY_MAX_SIDE = 2048  # overlays of bigger images are decimated to at most this side
#: Peak memory of one request (decode, model, overlay, rendering, probabilities and answer)
#: measured with a stand-in model on noise (the worst case for PNG): 2048 x 2048 RGB 8-bit
#: 255 MB, 16-bit grey PNG 243 MB; 4096 x 4096 RGB 8-bit 347 MB, 16-bit grey PNG 687 MB,
#: 16-bit GeoTIFF 241 MB. The estimate: bytes per decoded pixel plus bytes per pixel of the
#: overlay and rendering (at most OVERLAY_MAX_SIDE**2 of them).
BYTES_PER_PIXEL_8BIT = 22
BYTES_PER_PIXEL_HIGH_DEPTH = 52
BYTES_PER_OVERLAY_PIXEL = 44
UNSUPPORTED = f"the upload is not a supported image ({UPLOAD_FORMATS})"


@dataclass
class ServerLimits:
    """What the demo accepts and how long it waits; see the module docstring for where each acts.

    ``max_buffered_bytes`` defaults to four uploads (``4 * max_upload_bytes``).
    """

    max_upload_bytes: int = 20 * 2**20
    max_side: int = 4096
    max_text_chars: int = 300
    max_queue: int = 4
    max_buffered_bytes: int = 0
    max_decode_bytes: int = 2**30
    limit_concurrency: int = 64
    request_timeout: float = 30.0
    header_timeout: float = 10.0
    keep_alive: float = 5.0

    def __post_init__(self) -> None:
        if not self.max_buffered_bytes:
            self.max_buffered_bytes = 4 * self.max_upload_bytes
        checks = {
            "max_upload_bytes": self.max_upload_bytes >= 1,
            "max_side": self.max_side >= 16,
            "max_text_chars": self.max_text_chars >= 1,
            "max_queue": self.max_queue >= 0,
            "max_buffered_bytes": self.max_buffered_bytes >= self.max_upload_bytes,
            "max_decode_bytes": self.max_decode_bytes >= 1,
            "limit_concurrency": self.limit_concurrency >= 2,
            "request_timeout": self.request_timeout > 0,
            "header_timeout": self.header_timeout > 0,
            "keep_alive": self.keep_alive > 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            name = bad[0]
            rule = {
                "max_side": "at least 16",
                "max_queue": ">= 0",
                "max_buffered_bytes": f">= max_upload_bytes ({self.max_upload_bytes})",
                "limit_concurrency": "at least 2",
            }.get(name, "> 0")
            raise ValueError(f"ServerLimits.{name} = {getattr(self, name)!r} must be {rule}")

    @property
    def max_pixels(self) -> int:
        """Decoded-pixel cap of one image (``max_side ** 2``)."""
        return self.max_side * self.max_side


@dataclass
class Example:
    """An image of the embedded benchmark offered on the page."""

    example_id: str
    image_path: Path
    text: str
    category: str = ""


class RequestRejected(Exception):
    """A request the demo answers with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _mb(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:.3g} MB"


def _busy(message: str) -> RequestRejected:
    return RequestRejected(503, message, {"Retry-After": "2"})


def decode_cost(width: int, height: int, mode: str, block_bytes: int = 0) -> int:
    """Estimated peak bytes of one request on a ``width x height`` image.

    ``mode`` is a Pillow mode (``RGB``, ``I;16``, ...) or, for TIFF, a numpy dtype name
    (``uint8``, ``uint16``, ``float32``); ``block_bytes`` is the largest block GDAL decodes at
    once (a TIFF strip or tile, all bands of a pixel-interleaved file).
    """
    high_depth = mode in ("I", "F") or mode.startswith("I;") or mode not in _EIGHT_BIT_MODES
    per_pixel = BYTES_PER_PIXEL_HIGH_DEPTH if high_depth else BYTES_PER_PIXEL_8BIT
    step = -(-max(width, height) // OVERLAY_MAX_SIDE)
    overlay_pixels = -(-width // step) * -(-height // step)
    return width * height * per_pixel + overlay_pixels * BYTES_PER_OVERLAY_PIXEL + block_bytes


# Pillow modes and numpy dtypes of 8-bit data (the cheaper per-pixel budget).
_EIGHT_BIT_MODES = frozenset(
    {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB",
     "HSV", "uint8", "int8", "bool"}
)  # fmt: skip


def is_tiff(data: bytes) -> bool:
    """Whether ``data`` starts like a TIFF / BigTIFF file (read through rasterio)."""
    return bytes(data[:4]) in TIFF_MAGIC


@contextlib.contextmanager
def _memory_raster(data: bytes) -> Iterator[str]:
    """A GDAL ``/vsimem`` path holding ``data`` while the block runs (nothing touches disk)."""
    from rasterio.io import MemoryFile

    with MemoryFile(data, ext=".tif") as memfile:
        yield memfile.name


def _tiff_header(data: bytes) -> tuple[int, int, str, int]:
    """``(width, height, label, block_bytes)`` of a TIFF upload, read by rasterio (GTiff
    driver only) from its header: no pixel is decoded."""
    import warnings

    import rasterio
    from rasterio._err import CPLE_BaseError
    from rasterio.enums import Interleaving
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    try:
        with warnings.catch_warnings(), _memory_raster(data) as name:
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(name, driver="GTiff") as ds:
                width, height, count = int(ds.width), int(ds.height), int(ds.count)
                dtype = np.dtype(ds.dtypes[0]) if count else np.dtype(np.uint8)
                blocks = ds.block_shapes or [(height, width)]
                pixel_interleaved = ds.interleaving == Interleaving.pixel
    except (RasterioError, CPLE_BaseError, OSError, ValueError) as err:
        reason = str(err).split(": ", 1)[-1] if ": " in str(err) else str(err)
        raise RequestRejected(
            415, f"cannot read the TIFF header ({reason}); is the file complete?"
        ) from err
    if count == 0:
        raise RequestRejected(415, "the TIFF upload has no band")
    block_rows, block_cols = (int(v) for v in blocks[0])
    block_bytes = block_rows * block_cols * dtype.itemsize * (count if pixel_interleaved else 1)
    label = f"{count}-band {dtype.name}"
    return width, height, label, block_bytes


def _picture_header(data: bytes) -> tuple[int, int, str]:
    """``(width, height, Pillow mode)`` of a PNG/JPEG/... upload from its header."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as img:
            return img.size[0], img.size[1], img.mode
    except Image.DecompressionBombError as err:
        raise RequestRejected(413, f"the image is too large to decode safely: {err}") from err
    except UnidentifiedImageError as err:
        raise RequestRejected(415, UNSUPPORTED) from err
    except (OSError, SyntaxError, ValueError) as err:
        raise RequestRejected(415, f"cannot read the image header: {err}") from err


def probe_image(data: bytes, limits: ServerLimits) -> tuple[int, int]:
    """``(width, height)`` from the image header, without decoding a pixel.

    TIFF/GeoTIFF headers are read by rasterio (as ``wrel predict`` reads them), other formats
    by Pillow's lazy open.

    Raises:
        RequestRejected: 415 for a non-image or unreadable header; 413 above ``max_side``, the
            pixel cap or the decode memory budget.
    """
    block_bytes = 0
    if is_tiff(data):
        width, height, mode, block_bytes = _tiff_header(data)
        cost_mode = mode.split(" ", 1)[1]  # the dtype
    else:
        width, height, mode = _picture_header(data)
        cost_mode = mode
    if width <= 0 or height <= 0:
        raise RequestRejected(415, f"the upload is an empty image ({width} x {height})")
    side = limits.max_side
    if max(width, height) > side or width * height > limits.max_pixels:
        raise RequestRejected(
            413,
            f"the image is {width} x {height} pixels; the demo accepts up to {side} per side "
            f"and {limits.max_pixels:,} pixels: downscale it or use `wrel predict` "
            "for large scenes",
        )
    cost = decode_cost(width, height, cost_mode, block_bytes)
    if cost > limits.max_decode_bytes:
        raise RequestRejected(
            413,
            f"decoding this {width} x {height} {mode} image needs about {_mb(cost)}, over the "
            f"demo's {_mb(limits.max_decode_bytes)} budget: downscale it, convert it to 8 bits "
            "or use `wrel predict`",
        )
    return width, height


def _png_b64(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return base64.b64encode(buf.getbuffer())


def _rendering(raster: Any, step: int) -> np.ndarray:
    """The 8-bit RGB the model is fed (the checkpoint's scaling), every ``step``-th pixel."""
    height, width = -(-raster.height // step), -(-raster.width // step)
    if step == 1:
        return raster.read_rgb()
    if isinstance(getattr(raster, "rgb", None), np.ndarray):  # in memory: plain decimation
        return raster.rgb[::step, ::step]
    return raster.read_rgb_resized(height, width)  # GeoTIFF: a decimated read


def parse_threshold(value: str | None, default: float) -> float:
    """The ``threshold`` query parameter, a probability in (0, 1) (``default`` when absent)."""
    if value is None or value == "":
        return default
    try:
        threshold = float(value)
    except ValueError:
        threshold = float("nan")
    if not 0.0 < threshold < 1.0:  # also refuses NaN
        raise RequestRejected(
            400, f"threshold must be a probability between 0 and 1 (exclusive), got {value!r}"
        )
    return threshold


def _decode_upload(data: bytes) -> Any:
    """A PNG/JPEG/... upload as a loaded PIL image (its header was checked by probe_image)."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
        img.load()
    except UnidentifiedImageError as err:
        raise ValueError(UNSUPPORTED) from err
    except Image.DecompressionBombError as err:
        raise ValueError(f"the upload is too large to decode safely: {err}") from err
    except (OSError, SyntaxError) as err:
        raise ValueError(f"cannot decode the upload: {err}; is the file complete?") from err
    return img


def _upload_message(err: BaseException, vsimem_name: Any) -> str:
    """An error's text with the in-memory file name replaced by "the upload"."""
    message = str(err)
    if vsimem_name:
        message = message.replace(str(vsimem_name), "the upload")
    return message


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
            raise _busy(
                f"the model is busy ({self.pending} requests running or queued); "
                "retry in a few seconds"
            )
        self.pending += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._worker(), functools.partial(fn, *args))
        finally:
            self.pending -= 1

    @contextlib.contextmanager
    def open_upload(self, source: bytes | Path) -> Iterator[Any]:
        """The image as the predictor's raster, read as ``wrel predict`` reads a file.

        TIFF bytes go through :class:`wrel.data.rasters.GeoRaster` on a ``/vsimem`` copy, other bytes
        through Pillow, example files through :meth:`Predictor.open`; the checkpoint's image
        scaling applies to all of them.

        Raises:
            RequestRejected: 415 for an image that cannot be read (corrupt, unknown band, ...).
        """
        predictor = self.predictor
        name = None
        with contextlib.ExitStack() as stack:
            try:
                if isinstance(source, Path):
                    raster = predictor.open(source)
                elif is_tiff(source):
                    name = stack.enter_context(_memory_raster(source))
                    scaling = getattr(predictor, "scaling", None)
                    raster = GeoRaster(name, scaling=scaling, max_pixels=self.limits.max_pixels)
                else:
                    with _decode_upload(source) as img:
                        raster = predictor.open(img)
            except (ValueError, OSError) as err:
                message = _upload_message(err, name)
                bands = getattr(getattr(predictor, "scaling", None), "bands", None)
                if bands and "band index" in message:  # the CLI's --bands hint does not apply
                    message = (
                        f"{message.split('; pass', 1)[0]}; this model reads bands {list(bands)} "
                        "(the image scaling it was trained with): upload an image that has them"
                    )
                raise RequestRejected(415, message) from err
            stack.callback(raster.close)
            yield raster

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
                raise RequestRejected(415, _upload_message(err, name)) from err
            step = -(-max(height, width) // OVERLAY_MAX_SIDE)  # overlays of <= 2048 px
            rgb = _rendering(raster, step)
        mask = predictor.to_mask(probs, threshold)
        top = float(probs.max(initial=0)) / 255.0
        image = _png_b64(rgb)
        overlay = _png_b64(overlay_mask(rgb, mask[::step, ::step]))
        del rgb
        probabilities = _png_b64(probs)
        del probs
        mask_png = _png_b64(mask.astype(np.uint8) * 255)
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
                rgb = _rendering(raster, step)
            buf = io.BytesIO()
            from PIL import Image

            Image.fromarray(rgb).save(buf, format="PNG")
            self._example_cache[example_id] = buf.getvalue()
        return self._example_cache[example_id]

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


# -- ASGI layer ----------------------------------------------------------------------------------
def _error_body(status: int, message: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    body = json.dumps({"error": message}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),  # an unread body must not be parsed as the next request
    ]
    return body, headers


async def _send_error(send: Send, status: int, message: str) -> None:
    body, headers = _error_body(status, message)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class BodyGuard:
    """ASGI middleware: security headers, upload cap, body deadline and buffered-bytes budget.

    Args:
        app: the wrapped ASGI application.
        demo: the :class:`DemoApp` whose limits and byte counter apply.
    """

    def __init__(self, app: ASGIApp, demo: DemoApp) -> None:
        self.app = app
        self.demo = demo

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        limits, demo = self.demo.limits, self.demo
        cap = limits.max_upload_bytes
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            if not length.strip().isdigit():
                await _send_error(send_secured, 400, "Content-Length must be a number of bytes")
                return
            if int(length) > cap:
                await _send_error(
                    send_secured,
                    413,
                    f"the upload is {_mb(int(length))}, over the {_mb(cap)} limit",
                )
                return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limits.request_timeout
        received = charged = 0
        body_done = False

        async def guarded_receive() -> Message:
            nonlocal received, charged, body_done
            if body_done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError as err:
                raise RequestRejected(
                    408, f"the request body did not arrive within {limits.request_timeout:g} s"
                ) from err
            if message["type"] != "http.request":
                body_done = True
                return message
            size = len(message.get("body", b""))
            received += size
            if received > cap:
                raise RequestRejected(413, f"the upload is over the {_mb(cap)} limit")
            if demo.buffered + size > limits.max_buffered_bytes:
                raise _busy("the server is receiving too many uploads; retry in a few seconds")
            demo.buffered += size
            charged += size
            body_done = not message.get("more_body", False)
            return message

        try:
            await self.app(scope, guarded_receive, send_secured)
        finally:
            demo.buffered -= charged


def _multipart_parser(request: Any, limits: ServerLimits) -> Any:
    from starlette.formparsers import MultiPartParser

    parser = MultiPartParser(
        request.headers, request.stream(), max_files=1, max_fields=4, max_part_size=16 * 1024
    )
    parser.spool_max_size = limits.max_upload_bytes + 1  # keep the file in memory, never on disk
    return parser


async def _read_upload(request: Any, limits: ServerLimits) -> tuple[bytes, str | None]:
    """The uploaded image bytes and, for a form, its ``text`` field."""
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException

    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        return await request.body(), None
    try:
        form = await _multipart_parser(request, limits).parse()
    except MultiPartException as err:
        raise RequestRejected(400, f"cannot read the form: {err.message}") from err
    try:
        upload = form.get("image")
        text = form.get("text")
        if not isinstance(upload, UploadFile):
            raise RequestRejected(400, "the form has no file field 'image': choose an image file")
        data = await upload.read()
    finally:
        await form.close()
    return data, text if isinstance(text, str) else None


def _check_text(text: str, limits: ServerLimits) -> str:
    text = text.strip()
    if not text:
        raise RequestRejected(400, "type an expression, e.g. 'the white ship'")
    if len(text) > limits.max_text_chars:
        raise RequestRejected(
            400,
            f"the expression has {len(text)} characters; the limit is {limits.max_text_chars}",
        )
    return text


def create_app(demo: DemoApp) -> Any:
    """The Starlette application of ``demo`` (also usable with ``starlette.testclient``)."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    limits = demo.limits
    static = {
        path: (resources.files("wrel.web").joinpath("static", name).read_bytes(), ctype)
        for path, (name, ctype) in STATIC_FILES.items()
    }

    async def static_file(request: Request) -> Response:
        body, ctype = static[request.url.path]
        return Response(body, media_type=ctype)

    async def api_info(request: Request) -> Response:
        return JSONResponse(demo.info())

    async def api_example(request: Request) -> Response:
        name = request.path_params["name"]
        example_id = name[: -len(".png")] if name.endswith(".png") else None
        if example_id is None or example_id not in demo.examples:
            raise RequestRejected(404, "no such example")
        return Response(await demo.in_worker(demo.example_png, example_id), media_type="image/png")

    async def api_predict(request: Request) -> Response:
        query_text = request.query_params.get("text")
        threshold = parse_threshold(
            request.query_params.get("threshold"), float(demo.predictor.config.threshold)
        )
        example_id = request.query_params.get("example", "")
        if example_id:
            text = _check_text(query_text or "", limits)
            if example_id not in demo.examples:
                raise RequestRejected(404, f"no example {example_id!r}")
            source: bytes | Path = demo.examples[example_id].image_path
        else:
            if query_text is not None:
                text = _check_text(query_text, limits)  # refuse before reading the body
            data, form_text = await _read_upload(request, limits)
            if query_text is None:
                text = _check_text(form_text or "", limits)
            if not data:
                raise RequestRejected(400, "the upload is empty: choose an image file")
            probe_image(data, limits)
            source = data
        body = await demo.in_worker(demo.segment, source, text, threshold)
        return Response(body, media_type="application/json")

    async def rejected(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestRejected)
        headers = {"Connection": "close", **exc.headers}
        return JSONResponse({"error": exc.message}, exc.status, headers=headers)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        path = request.url.path
        message = {
            404: f"{path} not found",
            405: f"{request.method} {path} is not supported",
        }.get(exc.status_code, str(exc.detail))
        headers = {"Connection": "close", **(exc.headers or {})}
        return JSONResponse({"error": message}, exc.status_code, headers=headers)

    async def client_gone(request: Request, exc: Exception) -> Response:
        return JSONResponse(
            {"error": "the client disconnected"}, 400, headers={"Connection": "close"}
        )

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.exception("demo request %s %s failed", request.method, request.url.path)
        message = f"internal error ({type(exc).__name__}); see the server log"
        return JSONResponse({"error": message}, 500, headers={"Connection": "close"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        import anyio.to_thread

        # nothing here should use anyio's worker threads; cap them in case something does
        anyio.to_thread.current_default_thread_limiter().total_tokens = 4
        try:
            yield
        finally:
            demo.close()

    routes = [Route(path, static_file, methods=["GET"]) for path in STATIC_FILES]
    routes += [
        Route("/api/info", api_info, methods=["GET"]),
        Route("/api/examples/{name}", api_example, methods=["GET"]),
        Route("/api/predict", api_predict, methods=["POST"]),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(BodyGuard, demo=demo)],
        exception_handlers={
            RequestRejected: rejected,
            HTTPException: http_error,
            ClientDisconnect: client_gone,
            Exception: internal_error,
        },
        lifespan=lifespan,
    )


# -- uvicorn -------------------------------------------------------------------------------------
def guarded_protocol(limits: ServerLimits) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol plus a request-head deadline and a stalled-write abort."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None
        _write_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
            super().connection_made(transport)  # type: ignore[arg-type]
            self._arm_head_deadline()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_head_deadline()

        def _arm_head_deadline(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            cycle = self.cycle

            def expire() -> None:
                self._head_timer = None
                idle = cycle is None or cycle.response_complete
                if self.cycle is cycle and idle and not self.transport.is_closing():
                    log.debug("closing a connection that sent no request head in time")
                    self.transport.close()

            self._head_timer = self.loop.call_later(limits.header_timeout, expire)

        def pause_writing(self) -> None:
            super().pause_writing()
            if self._write_timer is None:
                self._write_timer = self.loop.call_later(limits.request_timeout, self._stalled)

        def resume_writing(self) -> None:
            super().resume_writing()
            if self._write_timer is not None:
                self._write_timer.cancel()
                self._write_timer = None

        def _stalled(self) -> None:
            self._write_timer = None
            log.info("aborting a connection whose client stopped reading the response")
            self.transport.abort()

        def connection_lost(self, exc: Exception | None) -> None:
            for timer in (self._head_timer, self._write_timer):
                if timer is not None:
                    timer.cancel()
            self._head_timer = self._write_timer = None
            super().connection_lost(exc)

    return GuardedH11Protocol


class DemoServer:
    """uvicorn serving :func:`create_app` on a socket bound at construction (port 0: any free).

    ``serve_forever()`` blocks (Ctrl+C stops it); ``start()`` serves from a background thread
    and ``shutdown()`` stops it; ``with DemoServer(...) as server:`` does both.
    """

    def __init__(self, demo: DemoApp, host: str = "127.0.0.1", port: int = 8000) -> None:
        import uvicorn

        limits = demo.limits
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.create_server((host, port), family=family, backlog=128)
        config = uvicorn.Config(
            create_app(demo),
            http=guarded_protocol(limits),
            ws="none",
            lifespan="on",
            loop="asyncio",
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=False,
            limit_concurrency=limits.limit_concurrency,
            timeout_keep_alive=limits.keep_alive,  # type: ignore[arg-type]
            timeout_graceful_shutdown=5,
            h11_max_incomplete_event_size=32 * 1024,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def server_address(self) -> tuple[str, int]:
        """``(host, port)`` actually bound."""
        host, port = self._sock.getsockname()[:2]
        return host, port

    @property
    def url(self) -> str:
        """``http://host:port/``."""
        host, port = self.server_address
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    def serve_forever(self) -> None:
        """Serve until ``shutdown()`` or, on the main thread, SIGINT/SIGTERM."""
        self._server.run(sockets=[self._sock])

    def start(self, timeout: float = 30.0) -> DemoServer:
        """Serve from a daemon thread; returns once the server accepts connections."""
        self._thread = threading.Thread(
            target=self.serve_forever, name="wrel-demo-server", daemon=True
        )
        self._thread.start()
        for _ in range(int(timeout / 0.01)):
            if self._server.started or not self._thread.is_alive():
                break
            threading.Event().wait(0.01)
        if not self._server.started:
            raise RuntimeError(f"the demo server did not start within {timeout:g} s")
        return self

    def shutdown(self) -> None:
        """Stop serving (open connections get up to 5 s) and wait for the server thread."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(timeout=5)
            self._thread = None

    def server_close(self) -> None:
        """Close the listening socket."""
        self._sock.close()

    def __enter__(self) -> DemoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


def make_server(app: DemoApp, host: str = "127.0.0.1", port: int = 8000) -> DemoServer:
    """A :class:`DemoServer` for ``app`` bound to ``host:port`` (port 0 picks a free port)."""
    return DemoServer(app, host, port)


def load_examples(data_root: str | Path, limit: int = 8) -> list[Example]:
    """Up to ``limit`` accurate-expression samples of a generated benchmark (test split first)."""

    root = require_folder(data_root, "--data", "generate the benchmark first (wrel data --help)")
    for split in ("test", "val", "train"):
        try:
            samples = load_samples(root, split)
        except ValueError:
            continue
        chosen = [s for s in samples if s.quality == "accurate"][:limit]
        if chosen:
            return [
                Example(str(s.sample_id), Path(s.image_path), s.text, s.category) for s in chosen
            ]
    raise ValueError(f"no samples with expressions found under {root}")
