"""What the web demo accepts and how long it waits: :class:`ServerLimits`, and the refusals.

Every limit lives in one :class:`ServerLimits`; from the socket inwards:

1. The HTTP protocol (:func:`wrel.web.protocol.guarded_protocol`) answers 429 to a new
   connection from an address that already holds ``max_connections_per_client`` open
   connections, before uvicorn counts it; uvicorn (:class:`wrel.web.server.DemoServer`) answers
   503 above ``limit_concurrency`` open connections or running requests and closes idle
   keep-alive connections after ``keep_alive`` seconds; the protocol closes a connection whose
   request line and headers have not arrived ``header_timeout`` seconds after it opened (or
   after its previous response), and aborts one whose client stops reading a response for
   ``request_timeout`` seconds.
2. :class:`wrel.web.middleware.BodyGuard` (ASGI middleware) refuses a declared
   ``Content-Length`` above ``max_upload_bytes`` before reading a byte (413), counts the body
   while it streams (413 at the cap, also for chunked uploads), gives the whole body
   ``request_timeout`` seconds (408), and keeps the bytes held by all requests together under
   ``max_buffered_bytes`` (503 above).
3. The routes (:mod:`wrel.web.routes`) read an upload either as the raw request body or as
   ``multipart/form-data`` (Starlette's parser, kept in memory), then read the image header
   (:func:`wrel.web.decoding.probe_image`) and refuse an image above ``max_side`` per side,
   ``max_side**2`` pixels or the ``max_decode_bytes`` estimate (413) before any pixel is decoded.
4. Decoding, the model, the overlay and the PNG/JSON encoding of the answer all run in one model
   worker thread (:class:`wrel.web.worker.DemoApp`), one request at a time; at most
   ``max_queue`` requests wait for it, more get 503. So concurrent uploads queue or are
   refused; they never multiply the decode memory.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

__all__ = ["ClientConnections", "RequestRejected", "ServerLimits", "busy", "mb"]

#: Seconds a refused client is told to wait (``Retry-After``) before it tries again.
RETRY_AFTER_S = 2


@dataclass
class ServerLimits:
    """What the demo accepts and how long it waits; see the module docstring for where each acts.

    ``max_buffered_bytes`` defaults to four uploads (``4 * max_upload_bytes``).
    ``max_connections_per_client`` keeps one address from holding the whole
    ``limit_concurrency`` budget (a browser opens about 6 connections to a site; 16 leaves room
    for a few tabs while 4 such addresses are needed to fill the default 64).
    """

    max_upload_bytes: int = 20 * 2**20
    max_side: int = 4096
    max_text_chars: int = 300
    max_queue: int = 4
    max_buffered_bytes: int = 0
    max_decode_bytes: int = 2**30
    limit_concurrency: int = 64
    max_connections_per_client: int = 16
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
            "max_connections_per_client": self.max_connections_per_client >= 1,
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
                "max_connections_per_client": "at least 1",
            }.get(name, "> 0")
            raise ValueError(f"ServerLimits.{name} = {getattr(self, name)!r} must be {rule}")

    @property
    def max_pixels(self) -> int:
        """Decoded-pixel cap of one image (``max_side ** 2``)."""
        return self.max_side * self.max_side


class RequestRejected(Exception):
    """A request the demo answers with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def mb(n_bytes: int) -> str:
    """``n_bytes`` in MB, three significant digits (for messages)."""
    return f"{n_bytes / 2**20:.3g} MB"


def busy(message: str) -> RequestRejected:
    """A 503 that tells the client when to retry."""
    return RequestRejected(503, message, {"Retry-After": str(RETRY_AFTER_S)})


class ClientConnections:
    """Open connections per client address, capped at ``limit`` each.

    Used from the event loop thread only (every protocol callback runs there), so it needs no
    lock. ``refused[host]`` counts the connections of ``host`` refused since it last held fewer
    than ``limit``.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()

    def admit(self, host: str) -> bool:
        """Count one more connection of ``host``; ``False`` (counted as refused) at the cap."""
        if self.open[host] >= self.limit:
            self.refused[host] += 1
            return False
        self.open[host] += 1
        return True

    def release(self, host: str) -> None:
        """Forget one admitted connection of ``host``."""
        if self.open[host] <= 1:
            self.open.pop(host, None)
        else:
            self.open[host] -= 1
        self.refused.pop(host, None)

    def refusal(self, host: str) -> str:
        """The message a refused connection of ``host`` gets."""
        return (
            f"{host} already has {self.limit} open connections to this demo, the most one "
            f"address may hold: close some (or wait for them to finish) and retry in "
            f"{RETRY_AFTER_S} s"
        )
