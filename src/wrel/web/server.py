"""`wrel serve`: a small offline web page over :class:`~wrel.inference.Predictor`.

The request logic lives in :class:`DemoApp` (``handle(method, target, headers, body)`` returns a
:class:`Response`), so it is tested without a socket; :func:`make_server` wraps it in the
standard library's ``ThreadingHTTPServer``. Uploads arrive as the raw request body (the page
sends the file with ``fetch``); the declared length is checked against the limit before a byte
is read, the bytes are decoded in memory by Pillow with a pixel cap, and nothing is written to
disk. Static files come from a fixed list inside the package (no CDN, no path from the URL).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

__all__ = ["ServerLimits", "Example", "Response", "DemoApp", "make_server", "load_examples"]

log = logging.getLogger(__name__)

STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:",
    "Referrer-Policy": "no-referrer",
}


@dataclass
class ServerLimits:
    """What the demo accepts."""

    max_upload_bytes: int = 20 * 2**20  # request bodies above this are refused unread
    max_side: int = 4096  # pixels, width and height
    max_text_chars: int = 300


@dataclass
class Example:
    """An image of the embedded benchmark offered on the page."""

    example_id: str
    image_path: Path
    text: str
    category: str = ""


@dataclass
class Response:
    """An HTTP response: status, body bytes, content type and extra headers."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        """The body parsed as JSON (for tests and clients)."""
        return json.loads(self.body)


def _json(status: int, data: Any) -> Response:
    return Response(status, json.dumps(data).encode())


def _error(status: int, message: str) -> Response:
    return _json(status, {"error": message})


def _png_data_url(array: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


class DemoApp:
    """Routes of the demo page.

    Args:
        predictor: a loaded :class:`~wrel.inference.Predictor` (used under a lock).
        examples: images offered on the page (may be empty).
        limits: upload limits.
    """

    def __init__(
        self, predictor: Any, examples: Sequence[Example] = (), limits: ServerLimits | None = None
    ) -> None:
        self.predictor = predictor
        self.examples = {e.example_id: e for e in examples}
        self.limits = limits or ServerLimits()
        self._lock = threading.Lock()

    def handle(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str] | Message,
        read_body: Callable[[int], bytes] | None = None,
    ) -> Response:
        """Answer one request; ``read_body(n)`` is called only for accepted uploads."""
        url = urlsplit(target)
        query = parse_qs(url.query)
        if method == "GET":
            return self._get(url.path)
        if method == "POST" and url.path == "/api/predict":
            return self._predict(query, headers, read_body)
        return _error(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} {url.path} is not supported")

    def _get(self, path: str) -> Response:
        if path in STATIC_FILES:
            name, ctype = STATIC_FILES[path]
            body = resources.files("wrel.web").joinpath("static", name).read_bytes()
            return Response(HTTPStatus.OK, body, ctype)
        if path == "/api/info":
            return _json(HTTPStatus.OK, self._info())
        if path.startswith("/api/examples/") and path.endswith(".png"):
            example = self.examples.get(path[len("/api/examples/") : -len(".png")])
            if example is None:
                return _error(HTTPStatus.NOT_FOUND, "no such example")
            return Response(HTTPStatus.OK, _example_png(example.image_path), "image/png")
        return _error(HTTPStatus.NOT_FOUND, f"{path} not found")

    def _info(self) -> dict[str, Any]:
        return {
            "image_size": list(self.predictor.image_size),
            "limits": {
                "max_upload_mb": round(self.limits.max_upload_bytes / 2**20, 1),
                "max_side": self.limits.max_side,
                "max_text_chars": self.limits.max_text_chars,
            },
            "examples": [
                {"id": e.example_id, "text": e.text, "category": e.category}
                for e in self.examples.values()
            ],
        }

    def _read_upload(
        self, headers: Mapping[str, str] | Message, read_body: Callable[[int], bytes] | None
    ) -> bytes | Response:
        raw_length = headers.get("Content-Length") or headers.get("content-length")
        if raw_length is None or not raw_length.strip().isdigit():
            return _error(HTTPStatus.LENGTH_REQUIRED, "send the image as the request body")
        length = int(raw_length)
        if length > self.limits.max_upload_bytes:
            mb = self.limits.max_upload_bytes / 2**20
            return _error(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"the upload is {length / 2**20:.1f} MB, over the {mb:.0f} MB limit",
            )
        if length == 0 or read_body is None:
            return _error(HTTPStatus.BAD_REQUEST, "the upload is empty: choose an image file")
        return read_body(length)

    def _predict(
        self,
        query: dict[str, list[str]],
        headers: Mapping[str, str] | Message,
        read_body: Callable[[int], bytes] | None,
    ) -> Response:
        from wrel.inference.images import decode_picture

        text = (query.get("text") or [""])[0].strip()
        if not text:
            return _error(HTTPStatus.BAD_REQUEST, "type an expression, e.g. 'the white ship'")
        if len(text) > self.limits.max_text_chars:
            return _error(
                HTTPStatus.BAD_REQUEST,
                f"the expression has {len(text)} characters; the limit is "
                f"{self.limits.max_text_chars}",
            )
        example_id = (query.get("example") or [""])[0]
        try:
            if example_id:
                if example_id not in self.examples:
                    return _error(HTTPStatus.NOT_FOUND, f"no example {example_id!r}")
                source: bytes | Path = self.examples[example_id].image_path
            else:
                upload = self._read_upload(headers, read_body)
                if isinstance(upload, Response):
                    return upload
                source = upload
            side = self.limits.max_side
            rgb = decode_picture(source, max_pixels=side * side)
        except ValueError as err:
            return _error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, str(err))
        if max(rgb.shape[:2]) > side:
            return _error(
                HTTPStatus.BAD_REQUEST,
                f"the image is {rgb.shape[1]} x {rgb.shape[0]} pixels; the demo accepts up to "
                f"{side} per side (use `wrel predict` for large scenes)",
            )
        return self._run_model(rgb, text)

    def _run_model(self, rgb: np.ndarray, text: str) -> Response:
        from wrel.inference.outputs import overlay_mask

        try:
            with self._lock:
                mask = self.predictor.predict(rgb, text)
        except ValueError as err:
            return _error(HTTPStatus.BAD_REQUEST, str(err))
        return _json(
            HTTPStatus.OK,
            {
                "text": text,
                "width": int(rgb.shape[1]),
                "height": int(rgb.shape[0]),
                "foreground_fraction": float(mask.mean()),
                "mask": _png_data_url(mask.astype(np.uint8) * 255),
                "overlay": _png_data_url(overlay_mask(rgb, mask)),
            },
        )


def _example_png(path: Path) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    with Image.open(path) as img:
        img.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def load_examples(data_root: str | Path, limit: int = 8) -> list[Example]:
    """Up to ``limit`` accurate-expression samples of a generated benchmark (test split first)."""
    from wrel.data.dataset import load_samples

    root = Path(data_root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"--data {root} does not exist; generate the benchmark first (wrel data --help)"
        )
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


def make_server(app: DemoApp, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """A threading HTTP server answering with ``app`` (port 0 picks a free port)."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "wrel-demo"

        def _send(self, response: Response) -> None:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for key, value in {**SECURITY_HEADERS, **response.headers}.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(response.body)

        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            self._send(app.handle("GET", self.path, self.headers))

        def do_POST(self) -> None:  # noqa: N802
            response = app.handle("POST", self.path, self.headers, self.rfile.read)
            if response.status >= 400:
                self.close_connection = True  # an unread body must not be parsed as a request
            self._send(response)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            log.debug("%s " + format, self.address_string(), *args)

    return ThreadingHTTPServer((host, port), Handler)
