"""`wrel serve`: a small offline web page over :class:`~wrel.inference.Predictor`.

The page is a Starlette application served by uvicorn, one process with one event-loop thread
and one model worker thread. This module binds the socket and runs uvicorn
(:class:`DemoServer`) and reads the examples of a generated benchmark (:func:`load_examples`);
each other concern has its own module, from the socket inwards:

- :mod:`wrel.web.limits`: :class:`ServerLimits` (every limit, and where each acts),
  :class:`RequestRejected`, the per-client connection counter;
- :mod:`wrel.web.protocol`: the HTTP protocol: per-client connection cap (429), request-head
  deadline, stalled-write abort;
- :mod:`wrel.web.middleware`: security headers, upload cap, body deadline, buffered-bytes budget;
- :mod:`wrel.web.routes`: the routes, static files and error answers (:func:`create_app`);
- :mod:`wrel.web.decoding`: image headers checked before decoding, and decoding as
  ``wrel predict`` does;
- :mod:`wrel.web.worker`: :class:`DemoApp`, the model worker that decodes, predicts and encodes
  the answer, one request at a time.

The names other code uses are importable from here as well. Nothing is written to disk.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from wrel.core.paths import require_folder
from wrel.data.dataset import load_samples
from wrel.web.decoding import (
    ACCEPTED_FORMATS,
    UPLOAD_FORMATS,
    decode_cost,
    is_tiff,
    probe_image,
)
from wrel.web.limits import RequestRejected, ServerLimits
from wrel.web.middleware import SECURITY_HEADERS, BodyGuard
from wrel.web.protocol import guarded_protocol
from wrel.web.routes import STATIC_FILES, create_app, parse_threshold
from wrel.web.worker import DemoApp, Example

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
    "parse_threshold",
    "probe_image",
]


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
