"""The demo's Starlette app through TestClient, then uvicorn on 127.0.0.1 with an ephemeral port."""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from starlette.testclient import TestClient

from wrel.inference import Predictor
from wrel.web.limits import ClientConnections
from wrel.web.server import (
    SECURITY_HEADERS,
    DemoApp,
    Example,
    RequestRejected,
    ServerLimits,
    create_app,
    decode_cost,
    guarded_protocol,
    make_server,
)


class BrightModel(torch.nn.Module):
    """Stand-in model: foreground where the image is bright."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = torch.nn.Parameter(torch.tensor(8.0))

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.zeros(len(texts), 8, dtype=torch.long)
        return ids, torch.ones_like(ids)

    def forward(self, images, input_ids=None, attention_mask=None, inputs_embeds=None):
        logit = self.gain * images.mean(dim=1)  # (B, H, W)
        return SimpleNamespace(logits=torch.stack([-logit, logit], dim=1))


def png_bytes(height: int = 24, width: int = 32) -> bytes:
    img = np.full((height, width, 3), 10, np.uint8)
    img[4:12, 8:20] = 250
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def declared_png(side: int, mode: str = "1") -> bytes:
    """A small PNG whose header declares ``side x side`` pixels (it compresses to a few KB)."""
    buf = io.BytesIO()
    Image.new(mode, (side, side)).save(buf, format="PNG")
    return buf.getvalue()


LIMITS = dict(max_upload_bytes=50_000, max_side=64)


@pytest.fixture
def demo(tmp_path: Path) -> DemoApp:
    Image.open(io.BytesIO(png_bytes())).save(tmp_path / "ex.jpg")
    examples = [Example("7", tmp_path / "ex.jpg", "the bright roof", "building")]
    return DemoApp(Predictor(BrightModel(), image_size=(32, 32)), examples, ServerLimits(**LIMITS))


@pytest.fixture
def client(demo: DemoApp):
    with TestClient(create_app(demo)) as test_client:
        yield test_client


def test_examples_are_served_while_the_model_is_busy(tmp_path: Path) -> None:
    # a page asks for every example thumbnail at once, more than the model worker's queue
    # admits: they are rendered before serving and answered without the worker
    Image.open(io.BytesIO(png_bytes())).save(tmp_path / "ex.png")
    examples = [Example(str(i), tmp_path / "ex.png", "the bright roof", "x") for i in range(8)]
    (tmp_path / "broken.png").write_bytes(b"not an image")
    examples.append(Example("9", tmp_path / "broken.png", "nothing", "x"))
    app = DemoApp(
        Predictor(BrightModel(), image_size=(32, 32)), examples, ServerLimits(max_queue=0)
    )
    with TestClient(create_app(app)) as test_client:
        app.pending = 1  # the worker is busy: a request that needs it is refused
        answers = [test_client.get(f"/api/examples/{i}.png") for i in range(8)]
        assert all(r.status_code == 200 and r.content.startswith(b"\x89PNG") for r in answers)
        # an example that could not be rendered goes to the worker: refused while it is busy
        assert test_client.get("/api/examples/9.png").status_code == 503
        app.pending = 0
        assert test_client.get("/api/examples/9.png").status_code == 415  # not an image


def decode_data_url(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def test_static_pages_info_and_headers(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and b"<form" in page.content
    for key, value in SECURITY_HEADERS.items():
        assert page.headers[key] == value
    for name in ("/", "/static/app.js", "/static/style.css"):  # offline: nothing external
        body = client.get(name).content
        assert not re.search(rb"(src=|href=|url\()[\"']?(https?:)?//", body), name
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    info = client.get("/api/info").json()
    assert info["examples"] == [{"id": "7", "text": "the bright roof", "category": "building"}]
    assert info["limits"]["max_side"] == 64
    example = client.get("/api/examples/7.png")
    assert example.status_code == 200 and example.content.startswith(b"\x89PNG")
    assert client.get("/api/examples/8.png").status_code == 404
    assert client.get("/api/examples/7.jpg").status_code == 404
    missing = client.get("/static/server.py")
    assert missing.status_code == 404 and missing.json() == {"error": "/static/server.py not found"}
    assert missing.headers["Content-Security-Policy"] == SECURITY_HEADERS["Content-Security-Policy"]


def test_predict_raw_body_form_and_example(client: TestClient) -> None:
    response = client.post("/api/predict?text=the+bright+roof", content=png_bytes())
    assert response.status_code == 200, response.text
    data = response.json()
    mask = decode_data_url(data["mask"])
    assert mask.shape == (24, 32) and set(np.unique(mask)) <= {0, 255}
    assert mask[6:10, 10:18].all() and not mask[20:, :].any()
    assert decode_data_url(data["overlay"]).shape == (24, 32, 3)
    assert 0 < data["foreground_fraction"] < 0.5 and data["text"] == "the bright roof"

    form = client.post(
        "/api/predict",
        files={"image": ("roof.png", png_bytes(), "image/png")},
        data={"text": "the bright roof"},
    )
    assert form.status_code == 200, form.text
    assert form.json()["mask"] == data["mask"]  # the same answer through the multipart parser

    example = client.post("/api/predict?text=roof&example=7")
    assert example.status_code == 200 and example.json()["width"] == 32


def test_big_images_get_a_decimated_overlay(demo: DemoApp) -> None:
    demo.limits = ServerLimits(max_side=4096)
    with TestClient(create_app(demo)) as client:
        data = client.post("/api/predict?text=x", content=declared_png(2100, "RGB")).json()
    assert (data["width"], data["height"]) == (2100, 2100)
    assert decode_data_url(data["mask"]).shape == (2100, 2100)
    assert decode_data_url(data["overlay"]).shape == (1050, 1050, 3)  # at most 2048 px per side


def test_bad_requests_get_clear_errors(client: TestClient) -> None:
    def error(response, status: int) -> str:
        assert response.status_code == status, response.text
        assert response.headers["connection"] == "close"
        return response.json()["error"]

    post = client.post
    assert "0.0477 MB limit" in error(post("/api/predict?text=x", content=b"x" * 60_000), 413)
    not_image = error(post("/api/predict?text=x", content=b"%PDF-1.4 definitely not"), 415)
    assert "not a supported image" in not_image
    truncated = declared_png(64, "RGB")[:60]  # a valid header, then the pixel data stops
    assert "cannot decode" in error(post("/api/predict?text=x", content=truncated), 415)
    assert "expression" in error(post("/api/predict?text=%20", content=png_bytes()), 400)
    assert "up to 64 per side" in error(
        post("/api/predict?text=x", content=png_bytes(10, 100)), 413
    )
    assert "empty" in error(post("/api/predict?text=x", content=b""), 400)
    assert "limit is 300" in error(post("/api/predict?text=" + "a" * 400, content=png_bytes()), 400)
    assert "no example" in error(post("/api/predict?text=x&example=../../etc"), 404)
    assert "DELETE / is not supported" in error(client.delete("/"), 405)
    assert "not supported" in error(client.get("/api/predict"), 405)
    no_file = post("/api/predict", files={"other": ("a.png", png_bytes())}, data={"text": "x"})
    assert "no file field 'image'" in error(no_file, 400)
    two_files = post(
        "/api/predict",
        files=[("image", ("a.png", png_bytes())), ("image", ("b.png", png_bytes()))],
        data={"text": "x"},
    )
    assert "Too many files" in error(two_files, 400)
    no_text = post("/api/predict", files={"image": ("a.png", png_bytes())})
    assert "type an expression" in error(no_text, 400)


def test_pixel_and_memory_caps_apply_before_decoding(
    demo: DemoApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*args, **kwargs):
        raise AssertionError("the image was decoded")

    monkeypatch.setattr(DemoApp, "segment", never)
    with TestClient(create_app(demo)) as client:
        bomb = declared_png(4096)  # a few KB that decode to 16.7 M pixels
        assert len(bomb) < 20_000
        response = client.post("/api/predict?text=x", content=bomb)
        assert response.status_code == 413
        assert "4096 x 4096 pixels; the demo accepts up to 64 per side" in response.json()["error"]

    # the decode budget depends on the bit depth read from the header
    assert decode_cost(100, 100, "I;16") > decode_cost(100, 100, "RGB")
    monkeypatch.undo()
    demo.limits = ServerLimits(max_upload_bytes=50_000, max_side=64, max_decode_bytes=64 * 64 * 70)
    with TestClient(create_app(demo)) as client:
        deep = client.post("/api/predict?text=x", content=declared_png(64, "I;16"))
        assert deep.status_code == 413 and "budget" in deep.json()["error"], deep.text
        assert "64 x 64 I;16" in deep.json()["error"]
        assert client.post("/api/predict?text=x", content=declared_png(64, "L")).status_code == 200


def test_declared_length_over_the_cap_is_refused_unread(demo: DemoApp) -> None:
    app = create_app(demo)
    reads: list[dict] = []
    sent: list[dict] = []

    async def receive() -> dict:
        reads.append({})
        return {"type": "http.request", "body": b"x" * 10, "more_body": True}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/predict",
        "raw_path": b"/api/predict",
        "query_string": b"text=x",
        "root_path": "",
        "headers": [(b"content-length", b"999999")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(app(scope, receive, send))
    assert reads == [] and sent[0]["status"] == 413
    assert (b"connection", b"close") in sent[0]["headers"]

    # a chunked upload (no Content-Length) is cut off while it streams
    sent.clear()
    scope["headers"] = [(b"transfer-encoding", b"chunked")]
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413 and len(reads) == 50_000 // 10 + 1


def test_buffered_bytes_budget_and_worker_queue(demo: DemoApp) -> None:
    demo.limits = ServerLimits(max_upload_bytes=50_000, max_side=64, max_queue=1)
    with TestClient(create_app(demo)) as client:
        demo.buffered = demo.limits.max_buffered_bytes - 10  # other uploads hold the budget
        busy = client.post("/api/predict?text=x", content=png_bytes())
        assert busy.status_code == 503 and busy.headers["retry-after"] == "2"
        assert "too many uploads" in busy.json()["error"]
        demo.buffered = 0
        assert client.post("/api/predict?text=x", content=png_bytes()).status_code == 200
        assert demo.buffered == 0  # released after the answer

    release = threading.Event()
    started: list[str] = []

    def job(name: str) -> str:
        started.append(name)
        release.wait(10)
        return name

    async def three_at_once() -> list:
        tasks = [asyncio.ensure_future(demo.in_worker(job, n)) for n in "abc"]
        await asyncio.sleep(0.2)
        release.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    a, b, c = asyncio.run(three_at_once())
    assert (a, b) == ("a", "b") and started == ["a", "b"]  # one worker, one at a time
    assert isinstance(c, RequestRejected) and c.status == 503 and "busy" in c.message
    assert demo.pending == 0
    demo.close()


def raw_exchange(
    address: tuple[str, int], request: bytes, wait: float = 5.0
) -> tuple[bytes, float]:
    """Send ``request`` and read until the server closes; returns the bytes and the seconds."""
    start = time.monotonic()
    with socket.create_connection(address, timeout=wait) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks), time.monotonic() - start


def test_uvicorn_server_on_port_zero(demo: DemoApp) -> None:
    demo.limits = ServerLimits(
        **LIMITS, request_timeout=1.0, header_timeout=1.0, keep_alive=1.0, limit_concurrency=4
    )
    with make_server(demo, "127.0.0.1", 0) as server:
        host, port = server.server_address
        assert host == "127.0.0.1" and port > 0 and server.url == f"http://127.0.0.1:{port}/"
        with urllib.request.urlopen(server.url) as resp:
            assert resp.status == 200 and resp.headers["X-Content-Type-Options"] == "nosniff"
            assert resp.headers["Server"] is None  # the stack is not advertised
        req = urllib.request.Request(
            server.url + "api/predict?text=roof", data=png_bytes(), method="POST"
        )
        with urllib.request.urlopen(req) as resp:
            assert json.loads(resp.read())["height"] == 24
        bad = urllib.request.Request(
            server.url + "api/predict?text=roof", data=b"x" * 60_000, method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(bad)
        assert err.value.code == 413

        # no path from the URL reaches the file system
        for path in ("/static/../server.py", "/static/%2e%2e/server.py", "/static/..%2fapp.js"):
            answer, _ = raw_exchange(server.server_address, f"GET {path} HTTP/1.0\r\n\r\n".encode())
            assert answer.startswith(b"HTTP/1.1 404"), (path, answer[:80])

        # a body that stops arriving gets 408 at the request timeout, then the connection closes
        slow = b"POST /api/predict?text=x HTTP/1.1\r\nHost: a\r\nContent-Length: 40000\r\n\r\nabc"
        answer, seconds = raw_exchange(server.server_address, slow)
        assert answer.startswith(b"HTTP/1.1 408") and b"within 1 s" in answer
        assert 0.9 < seconds < 3.0
        # a request head that stops arriving, and an idle connection, are closed
        answer, seconds = raw_exchange(server.server_address, b"GET / HTTP/1.1\r\nHost")
        assert answer == b"" and 0.9 < seconds < 3.0
        answer, seconds = raw_exchange(server.server_address, b"")
        assert answer == b"" and 0.9 < seconds < 3.0

        # above limit_concurrency open connections, uvicorn answers 503
        idle = [socket.create_connection(server.server_address) for _ in range(4)]
        try:
            answer, _ = raw_exchange(server.server_address, b"GET /api/info HTTP/1.0\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 503")
        finally:
            for sock in idle:
                sock.close()


def test_stalled_reader_is_aborted() -> None:
    import uvicorn
    from uvicorn.server import ServerState

    class Transport:
        aborted = closed = False

        def get_extra_info(self, name: str, default=None):
            return default

        def is_closing(self) -> bool:
            return self.aborted or self.closed

        def abort(self) -> None:
            self.aborted = True

        def close(self) -> None:
            self.closed = True

        def set_protocol(self, protocol) -> None:  # pragma: no cover - unused
            pass

    async def scenario() -> tuple[Transport, Transport]:
        limits = ServerLimits(request_timeout=0.1, header_timeout=5.0)
        config = uvicorn.Config(lambda *a: None, http=guarded_protocol(limits), log_config=None)
        config.load()
        transports = Transport(), Transport()
        protocols = []
        for transport in transports:
            protocol = config.http_protocol_class(
                config=config, server_state=ServerState(), app_state={}
            )
            protocol.connection_made(transport)
            protocol.pause_writing()  # the response fills the socket buffer
            protocols.append(protocol)
        protocols[0].resume_writing()  # the first client reads again, the second does not
        await asyncio.sleep(0.3)
        for protocol in protocols:
            protocol.connection_lost(None)
        return transports

    reading, stalled = asyncio.run(scenario())
    assert stalled.aborted and not reading.aborted


def test_cli_flags_become_limits() -> None:
    from wrel.commands.serve import add_parser, limits_from_args

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["serve", "--checkpoint", "c", "--max-upload-mb", "2", "--max-queue", "0"]
    )
    limits = limits_from_args(args)
    assert limits.max_upload_bytes == 2 * 2**20 and limits.max_buffered_bytes == 8 * 2**20
    assert limits.max_queue == 0 and limits.limit_concurrency == 64
    assert limits.max_connections_per_client == 16
    assert limits.request_timeout == 30.0 and limits.max_pixels == 4096 * 4096
    for flags, message in [
        (["--max-side", "8"], "--max-side = 8 must be at least 16"),
        (["--request-timeout", "0"], "--request-timeout = 0.0 must be > 0"),
        (["--max-connections-per-client", "0"], "--max-connections-per-client = 0 must be at"),
        (["--max-buffered-mb", "1"], "--max-buffered-mb 1.0 must be at least --max-upload-mb"),
        (["--max-upload-mb", "-1"], "--max-upload-mb -1.0 must be > 0"),
    ]:
        bad = parser.parse_args(["serve", "--checkpoint", "c", *flags])
        with pytest.raises(ValueError, match=re.escape(message)):
            limits_from_args(bad)


def test_load_examples_prefers_accurate_test_samples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wrel.web.server
    from wrel.web.server import load_examples

    def fake_load_samples(root, split, **kwargs):  # stands in for wrel.data.dataset
        if split == "test":
            return []
        return [
            SimpleNamespace(
                sample_id=i,
                image_path=str(tmp_path / f"{i}.png"),
                text=f"t{i}",
                category="ship",
                quality="weak" if i % 2 else "accurate",
            )
            for i in range(6)
        ]

    monkeypatch.setattr(wrel.web.server, "load_samples", fake_load_samples)
    examples = load_examples(tmp_path, limit=2)
    assert [(e.example_id, e.text) for e in examples] == [("0", "t0"), ("2", "t2")]
    with pytest.raises(FileNotFoundError, match="generate the benchmark"):
        load_examples(tmp_path / "missing")


def test_client_connections_are_capped_per_address() -> None:
    clients = ClientConnections(limit=2)
    assert clients.admit("10.0.0.1") and clients.admit("10.0.0.1")
    assert not clients.admit("10.0.0.1") and not clients.admit("10.0.0.1")  # at the cap
    assert clients.admit("10.0.0.2")  # another address has its own budget
    assert clients.refused["10.0.0.1"] == 2 and "already has 2" in clients.refusal("10.0.0.1")
    clients.release("10.0.0.1")  # one closed: a new one fits, the refusal count starts over
    assert clients.refused["10.0.0.1"] == 0 and clients.admit("10.0.0.1")
    for host in ("10.0.0.1", "10.0.0.1", "10.0.0.2"):
        clients.release(host)
    assert not clients.open  # nothing left behind
