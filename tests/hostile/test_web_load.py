"""Bounded load on the web demo (uvicorn on 127.0.0.1, an ephemeral port, a stand-in model).

(a) ~100 clients that announce a body and send 3 bytes, plus clients stuck in their request
head: all are dropped within the timeouts, while normal requests are answered meanwhile.
(b) 20 concurrent uploads of PNGs of a few KB that declare 2048 x 2048 (at the cap) or
4096 x 4096 (above it): each gets 200, 413 or 503; the process RSS and thread count stay bounded
because decoding happens in one worker, after a header check.

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


def exchange_all(
    address: tuple[str, int], payloads: list[bytes], deadline: float
) -> list[tuple[bytes, float]]:
    """Send every payload on its own connection at once; read each answer until the server
    closes. Returns ``(answer bytes, seconds until closed)`` per payload (``inf``: still open)."""
    start = time.monotonic()
    selector = selectors.DefaultSelector()
    answers: list[list[bytes]] = [[] for _ in payloads]
    closed_after = [float("inf")] * len(payloads)
    socks = []
    for index, payload in enumerate(payloads):
        sock = socket.create_connection(address, timeout=5)
        sock.sendall(payload)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, index)
        socks.append(sock)
    try:
        while selector.get_map() and time.monotonic() - start < deadline:
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
    finally:
        for sock in socks:
            sock.close()
    return [(b"".join(a), t) for a, t in zip(answers, closed_after, strict=True)]


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
