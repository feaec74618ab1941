"""Bounded load on the web demo (uvicorn on 127.0.0.1, an ephemeral port, a stand-in model).

(a) ~100 clients that announce a body and send 3 bytes, plus clients stuck in their request
head: all are dropped within the timeouts, while normal requests are answered meanwhile.
(b) 20 concurrent uploads of PNGs of a few KB that declare 2048 x 2048 (at the cap) or
4096 x 4096 (above it): each gets 200, 413 or 503; the process RSS and thread count stay bounded
because decoding happens in one worker, after a header check.
(c) One client (127.0.0.1) opens more slow connections than the global connection limit: past
the per-client cap they get 429 at once, and a second client (127.0.0.2) gets 200 for all its
requests meanwhile; with the per-client cap as large as the global limit, it gets 503s.

All clients are raw sockets driven from this thread, so the thread count is the server's.
"""

from __future__ import annotations

import io
import json
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from wrel.inference import Predictor
from wrel.web.server import DemoApp, DemoServer, ServerLimits, make_server

TIMEOUT = 2.0  # request body and request head deadlines of the server under test


class BrightModel(torch.nn.Module):
    """Stand-in model: foreground where the image is bright."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = torch.nn.Parameter(torch.tensor(8.0))

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.zeros(len(texts), 8, dtype=torch.long)
        return ids, torch.ones_like(ids)

    def forward(self, images, input_ids=None, attention_mask=None, inputs_embeds=None):
        logit = self.gain * images.mean(dim=1)
        return SimpleNamespace(logits=torch.stack([-logit, logit], dim=1))


def proc_status(key: str) -> int:
    """A number from /proc/self/status (``VmRSS`` in kB, ``Threads``)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


class Sampler:
    """Peak RSS (kB) and thread count of this process, sampled every 10 ms in a thread."""

    def __init__(self) -> None:
        self.peak_rss = self.peak_threads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, proc_status("VmRSS"))
            self.peak_threads = max(self.peak_threads, proc_status("Threads") - 1)  # not itself
            self._stop.wait(0.01)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def request(path: str, body: bytes = b"", method: str = "POST") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def open_all(
    address: tuple[str, int], payloads: list[bytes], source: str | None = None
) -> list[socket.socket]:
    """One connection per payload (from the local address ``source``), each payload sent."""
    socks = []
    bind = (source, 0) if source else None
    for payload in payloads:
        sock = socket.create_connection(address, timeout=5, source_address=bind)
        sock.sendall(payload)
        sock.setblocking(False)
        socks.append(sock)
    return socks


def read_all(
    socks: list[socket.socket], deadline: float, stop_after: int | None = None
) -> list[tuple[bytes, float]]:
    """Read each socket until the server closes it, for at most ``deadline`` seconds (or until
    ``stop_after`` of them are closed). Returns ``(answer bytes, seconds until closed)`` per
    socket (``inf``: still open); the sockets stay open."""
    start = time.monotonic()
    selector = selectors.DefaultSelector()
    for index, sock in enumerate(socks):
        selector.register(sock, selectors.EVENT_READ, index)
    answers: list[list[bytes]] = [[] for _ in socks]
    closed_after = [float("inf")] * len(socks)
    n_closed = 0
    while selector.get_map() and time.monotonic() - start < deadline:
        if stop_after is not None and n_closed >= stop_after:
            break
        for key, _ in selector.select(timeout=0.05):
            try:
                chunk = key.fileobj.recv(65536)  # type: ignore[union-attr]
            except ConnectionResetError:
                chunk = b""
            if chunk:
                answers[key.data].append(chunk)
            else:
                closed_after[key.data] = time.monotonic() - start
                selector.unregister(key.fileobj)
                n_closed += 1
    selector.close()
    return [(b"".join(a), t) for a, t in zip(answers, closed_after, strict=True)]


def exchange_all(
    address: tuple[str, int], payloads: list[bytes], deadline: float, source: str | None = None
) -> list[tuple[bytes, float]]:
    """Send every payload on its own connection at once; read each answer until the server
    closes. Returns ``(answer bytes, seconds until closed)`` per payload (``inf``: still open)."""
    socks = open_all(address, payloads, source)
    try:
        return read_all(socks, deadline)
    finally:
        for sock in socks:
            sock.close()


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def get(server: DemoServer, path: str) -> tuple[int, bytes]:
    answer, _ = exchange_all(server.server_address, [request(path, method="GET")], 10.0)[0]
    return status_of(answer), answer.split(b"\r\n\r\n", 1)[-1]


def png(side: int, mode: str = "1") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (side, side), 1).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def server() -> Iterator[DemoServer]:
    limits = ServerLimits(
        max_upload_bytes=20 * 2**20,
        max_side=2048,
        max_queue=2,
        limit_concurrency=256,
        max_connections_per_client=256,  # (a) and (b) are about timeouts and memory, not (c)
        request_timeout=TIMEOUT,
        header_timeout=TIMEOUT,
        keep_alive=TIMEOUT,
    )
    demo = DemoApp(Predictor(BrightModel(), image_size=(32, 32)), limits=limits)
    with make_server(demo, "127.0.0.1", 0) as running:
        # warm up: the model worker, torch's threads and the imports exist before measuring
        warm_up = [request("/api/predict?text=x", png(64))]
        answer, _ = exchange_all(running.server_address, warm_up, 30)[0]
        assert status_of(answer) == 200
        yield running


def test_slow_clients_are_dropped_while_others_are_served(server: DemoServer) -> None:
    threads_before = proc_status("Threads")
    slow_body = request("/api/predict?text=x", b"")
    slow_body = slow_body.replace(b"Content-Length: 0", b"Content-Length: 10000000") + b"abc"
    slow_head = b"GET /api/info HTTP/1.1\r\nHost: t\r\nX-Slow"
    payloads = [slow_body] * 100 + [slow_head] * 20
    results: list = []
    with Sampler() as sampler:
        worker = threading.Thread(
            target=lambda: results.extend(
                exchange_all(server.server_address, payloads, TIMEOUT + 6)
            )
        )
        worker.start()
        time.sleep(0.5)  # the slow clients are connected and waiting
        start = time.monotonic()
        status, body = get(server, "/api/info")
        assert status == 200 and json.loads(body)["limits"]["max_side"] == 2048
        answer = exchange_all(server.server_address, [request("/api/predict?text=x", png(64))], 10)
        assert status_of(answer[0][0]) == 200
        assert time.monotonic() - start < TIMEOUT  # answered before any slow client timed out
        worker.join()
    assert len(results) == len(payloads)
    for answer, seconds in results[:100]:  # 408 at the body deadline, then closed
        assert status_of(answer) == 408 and b"did not arrive within 2 s" in answer, answer[:120]
        assert seconds < TIMEOUT + 3
    for answer, seconds in results[100:]:  # closed at the head deadline without an answer
        assert answer == b"" and seconds < TIMEOUT + 3
    # the result-collecting thread is the only client-side thread; the server adds none
    assert sampler.peak_threads <= threads_before + 1


def test_concurrent_bomb_uploads_are_answered_within_bounds(server: DemoServer) -> None:
    at_cap, over_cap = png(2048), png(4096)  # a few KB each; 4 M and 16.7 M pixels decoded
    assert max(len(at_cap), len(over_cap)) < 20_000
    payloads = [
        request("/api/predict?text=the+roof", at_cap if i % 2 else over_cap) for i in range(20)
    ]
    rss_before, threads_before = proc_status("VmRSS"), proc_status("Threads")
    with Sampler() as sampler:
        results = exchange_all(server.server_address, payloads, 15.0)
    statuses = [status_of(answer) for answer, _ in results]
    assert all(s in (200, 413, 503) for s in statuses), statuses
    assert all(seconds < 15 for _, seconds in results)  # every connection was answered and closed
    over = [s for i, s in enumerate(statuses) if i % 2 == 0]
    at = [s for i, s in enumerate(statuses) if i % 2]
    assert over == [413] * 10  # refused from the header, never decoded
    assert 1 <= at.count(200) <= 3 and at.count(200) + at.count(503) == 10  # 1 running + 2 queued
    for (answer, _), status in zip(results, statuses, strict=True):
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1]).get("error") or status == 200
    # one white 2048 x 2048 request peaks at ~250 MB (decode, full-mask overlay, answer), so
    # decoding the 10 accepted uploads at once would take ~2.5 GB
    assert (sampler.peak_rss - rss_before) / 1024 < 500, (rss_before, sampler.peak_rss)
    assert sampler.peak_threads <= threads_before + 1


CLIENT_CAP = 8  # per-client connection cap of the server under test (c)
GLOBAL_LIMIT = 24  # its global connection limit; the greedy client opens more than this


def second_loopback_address() -> str:
    """127.0.0.2 (Linux routes all of 127/8 to lo), or skip where it cannot be bound."""
    try:
        with socket.socket() as probe:
            probe.bind(("127.0.0.2", 0))
    except OSError as err:
        pytest.skip(f"cannot bind 127.0.0.2 as a second client address: {err}")
    return "127.0.0.2"


def greedy_client_against(per_client: int) -> tuple[list[tuple[bytes, float]], list[int]]:
    """A greedy client (127.0.0.1) holds 40 connections stuck in their request head while a
    second client (127.0.0.2) sends 20 requests, 5 at a time. Returns the greedy client's
    ``(answer, seconds until closed)`` per connection and the second client's statuses."""
    other = second_loopback_address()
    limits = ServerLimits(
        max_side=256,
        limit_concurrency=GLOBAL_LIMIT,
        max_connections_per_client=per_client,
        header_timeout=10.0,  # the greedy connections outlive the test unless refused
    )
    demo = DemoApp(Predictor(BrightModel(), image_size=(32, 32)), limits=limits)
    slow_head = b"GET /api/info HTTP/1.1\r\nHost: t\r\nX-Slow: "
    with make_server(demo, "127.0.0.1", 0) as server:
        address = server.server_address
        greedy = open_all(address, [slow_head] * 40)
        try:
            time.sleep(0.3)  # the server has accepted them all
            statuses = []
            for round_ in range(4):
                payloads = [request("/api/info", method="GET")] * 4
                payloads.append(request("/api/predict?text=x", png(64)) if round_ else payloads[0])
                answers = exchange_all(address, payloads, 10.0, source=other)
                statuses += [status_of(answer) for answer, _ in answers]
            refused = len(greedy) - min(per_client, len(greedy))
            greedy_results = read_all(greedy, 5.0, stop_after=refused)
        finally:
            for sock in greedy:
                sock.close()
        if per_client < GLOBAL_LIMIT:  # the greedy client's slots are freed once it closes
            time.sleep(0.3)
            again = exchange_all(address, [request("/api/info", method="GET")] * per_client, 10)
            assert [status_of(answer) for answer, _ in again] == [200] * per_client
    return greedy_results, statuses


def test_one_client_cannot_take_the_connection_budget() -> None:
    greedy, statuses = greedy_client_against(CLIENT_CAP)
    assert statuses == [200] * 20  # the second client is served throughout
    held = [(answer, seconds) for answer, seconds in greedy if seconds == float("inf")]
    refused = [(answer, seconds) for answer, seconds in greedy if seconds < float("inf")]
    assert len(held) == CLIENT_CAP and all(answer == b"" for answer, _ in held)
    assert len(refused) == 40 - CLIENT_CAP
    for answer, seconds in refused:  # 429 with Retry-After and the reason, then closed
        head, body = answer.split(b"\r\n\r\n", 1)
        assert status_of(answer) == 429 and b"\r\nretry-after: 2" in head.lower(), head
        assert f"already has {CLIENT_CAP} open connections" in json.loads(body)["error"]
        assert seconds < 3.0


def test_without_a_per_client_cap_one_client_starves_the_others() -> None:
    """The control of the test above: a per-client cap as large as the global limit (as
    before the cap existed) lets the greedy client fill the global budget."""
    greedy, statuses = greedy_client_against(GLOBAL_LIMIT)
    assert statuses == [503] * 20  # uvicorn's global limit answers 503 to every request
    assert sum(1 for answer, _ in greedy if status_of(answer) == 429) == 40 - GLOBAL_LIMIT
