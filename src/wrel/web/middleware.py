"""ASGI middleware of the demo: security headers on every answer, and the request-body limits.

:class:`BodyGuard` refuses a declared ``Content-Length`` above ``max_upload_bytes`` before
reading a byte (413), counts the body while it streams (413 at the cap, also for chunked
uploads), gives the whole body ``request_timeout`` seconds (408), and keeps the bytes held by
all requests together under ``max_buffered_bytes`` (503 above).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from wrel.web.limits import RequestRejected, busy, mb
from wrel.web.worker import DemoApp

__all__ = ["SECURITY_HEADERS", "BodyGuard", "error_body", "send_error"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

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


def error_body(status: int, message: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The JSON body ``{"error": message}`` and its headers (``Connection: close``)."""
    body = json.dumps({"error": message}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),  # an unread body must not be parsed as the next request
    ]
    return body, headers


async def send_error(send: Send, status: int, message: str) -> None:
    """Answer ``status`` with :func:`error_body` through the ASGI ``send``."""
    body, headers = error_body(status, message)
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
                await send_error(send_secured, 400, "Content-Length must be a number of bytes")
                return
            if int(length) > cap:
                await send_error(
                    send_secured,
                    413,
                    f"the upload is {mb(int(length))}, over the {mb(cap)} limit",
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
                raise RequestRejected(413, f"the upload is over the {mb(cap)} limit")
            if demo.buffered + size > limits.max_buffered_bytes:
                raise busy("the server is receiving too many uploads; retry in a few seconds")
            demo.buffered += size
            charged += size
            body_done = not message.get("more_body", False)
            return message

        try:
            await self.app(scope, guarded_receive, send_secured)
        finally:
            demo.buffered -= charged
