"""The demo's HTTP protocol: uvicorn's h11 protocol with the connection-level limits.

:func:`guarded_protocol` adds to uvicorn's own limits (503 above ``limit_concurrency`` open
connections or running requests, idle keep-alive connections closed after ``keep_alive``):

- a cap per client address (``max_connections_per_client``): a new connection from an address
  that already holds that many is answered 429 with ``Retry-After`` at once and closed, before
  uvicorn counts it, so one client cannot take the global ``limit_concurrency`` budget;
- a request-head deadline (``header_timeout``): a connection whose request line and headers
  have not arrived that long after it opened (or after its previous response) is closed;
- a stalled-write abort (``request_timeout``): a connection whose client stops reading a
  response for that long is aborted and the answer freed.
"""

from __future__ import annotations

import asyncio
import logging

from wrel.web.limits import RETRY_AFTER_S, ClientConnections, ServerLimits
from wrel.web.middleware import SECURITY_HEADERS, error_body

__all__ = ["RefusedConnection", "guarded_protocol", "peer_host", "refusal_answer"]

log = logging.getLogger(__name__)

#: Seconds a refused connection stays half-open, reading and dropping what the client still
#: sends, so that closing it does not reset the connection before the client reads the 429.
LINGER_S = 1.0


def peer_host(transport: asyncio.BaseTransport) -> str | None:
    """The client's IP address (``None`` for a peer without one, e.g. a Unix socket)."""
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple | list) and peer:
        return str(peer[0])
    return None


def refusal_answer(message: str) -> bytes:
    """A complete ``429 Too Many Requests`` HTTP/1.1 answer with ``message`` as its JSON error."""
    body, headers = error_body(429, message)
    lines = [b"HTTP/1.1 429 Too Many Requests"]
    lines += [name + b": " + value for name, value in headers]
    lines.append(b"retry-after: " + str(RETRY_AFTER_S).encode())
    lines += [f"{name.lower()}: {value}".encode() for name, value in SECURITY_HEADERS.items()]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class RefusedConnection(asyncio.Protocol):
    """A connection refused when it opened: one answer, then a lingering close.

    The answer is written and the sending side shut; what the client still sends is read and
    dropped until it closes its side or :data:`LINGER_S` pass, then the socket is closed.
    """

    def __init__(self, transport: asyncio.Transport, answer: bytes) -> None:
        self.transport = transport
        transport.write(answer)
        if transport.can_write_eof():
            transport.write_eof()
        self._timer = asyncio.get_running_loop().call_later(LINGER_S, transport.close)

    def data_received(self, data: bytes) -> None:
        """Drop it: the request of a refused connection is never parsed."""

    def eof_received(self) -> bool:
        return False  # the client is done: the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        self._timer.cancel()


def guarded_protocol(limits: ServerLimits) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol plus a per-client connection cap, a request-head deadline and a
    stalled-write abort (one class per server: its connection counts are the server's)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    clients = ClientConnections(limits.max_connections_per_client)

    class GuardedH11Protocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None
        _write_timer: asyncio.TimerHandle | None = None
        _host: str | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
            host = peer_host(transport)  # None (no address, e.g. a Unix socket): not capped
            if host is not None and not clients.admit(host):
                if clients.refused[host] == 1:
                    log.warning(
                        "refusing new connections from %s: it holds %d, the per-client cap "
                        "(wrel serve --max-connections-per-client)",
                        host,
                        clients.limit,
                    )
                answer = refusal_answer(clients.refusal(host))
                transport.set_protocol(RefusedConnection(transport, answer))  # type: ignore[arg-type]
                return
            self._host = host
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
            if self._host is not None:
                clients.release(self._host)
            for timer in (self._head_timer, self._write_timer):
                if timer is not None:
                    timer.cancel()
            self._head_timer = self._write_timer = None
            super().connection_lost(exc)

    return GuardedH11Protocol
