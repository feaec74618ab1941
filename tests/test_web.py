"""The demo's request handler without a server, then over a real socket on port 0."""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from wrel.inference import Predictor
from wrel.web.server import DemoApp, Example, ServerLimits, make_server


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


@pytest.fixture
def app(tmp_path: Path) -> DemoApp:
    Image.open(io.BytesIO(png_bytes())).save(tmp_path / "ex.jpg")
    examples = [Example("7", tmp_path / "ex.jpg", "the bright roof", "building")]
    limits = ServerLimits(max_upload_bytes=50_000, max_side=64)
    return DemoApp(Predictor(BrightModel(), image_size=(32, 32)), examples, limits)


def post(app: DemoApp, query: str, body: bytes):
    reader = io.BytesIO(body)
    return app.handle(
        "POST", f"/api/predict?{query}", {"Content-Length": str(len(body))}, reader.read
    )


def decode_data_url(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def test_static_pages_and_info(app: DemoApp) -> None:
    page = app.handle("GET", "/", {})
    assert page.status == 200 and b"<form" in page.body
    for name in ("/", "/static/app.js", "/static/style.css"):  # offline: nothing external
        body = app.handle("GET", name, {}).body
        assert not re.search(rb"(src=|href=|url\()[\"']?(https?:)?//", body), name
    assert app.handle("GET", "/static/app.js", {}).content_type.startswith("text/javascript")
    assert app.handle("GET", "/static/../server.py", {}).status == 404
    info = app.handle("GET", "/api/info", {}).json()
    assert info["examples"] == [{"id": "7", "text": "the bright roof", "category": "building"}]
    assert info["limits"]["max_side"] == 64
    example = app.handle("GET", "/api/examples/7.png", {})
    assert example.status == 200 and example.body.startswith(b"\x89PNG")
    assert app.handle("GET", "/api/examples/8.png", {}).status == 404


def test_predict_upload_returns_mask_and_overlay(app: DemoApp) -> None:
    response = post(app, "text=the+bright+roof", png_bytes())
    assert response.status == 200, response.body
    data = response.json()
    mask = decode_data_url(data["mask"])
    assert mask.shape == (24, 32) and set(np.unique(mask)) <= {0, 255}
    assert mask[6:10, 10:18].all() and not mask[20:, :].any()
    assert decode_data_url(data["overlay"]).shape == (24, 32, 3)
    assert 0 < data["foreground_fraction"] < 0.5
    example = app.handle("POST", "/api/predict?text=roof&example=7", {})
    assert example.status == 200 and example.json()["width"] == 32


def test_bad_requests_get_clear_errors(app: DemoApp) -> None:
    calls: list[int] = []

    def never(n: int) -> bytes:
        calls.append(n)
        return b""

    big = app.handle("POST", "/api/predict?text=x", {"Content-Length": "999999"}, never)
    assert big.status == 413 and "limit" in big.json()["error"] and calls == []
    not_image = post(app, "text=x", b"%PDF-1.4 definitely not an image")
    assert not_image.status == 415 and "not a supported image" in not_image.json()["error"]
    assert "expression" in post(app, "text=%20", png_bytes()).json()["error"]
    too_wide = post(app, "text=x", png_bytes(10, 100))
    assert too_wide.status == 400 and "up to 64 per side" in too_wide.json()["error"]
    assert app.handle("POST", "/api/predict?text=x", {}).status == 411
    assert post(app, "text=x", b"").status == 400
    assert post(app, "text=" + "a" * 400, png_bytes()).status == 400
    assert app.handle("POST", "/api/predict?text=x&example=../../etc", {}).status == 404
    assert app.handle("DELETE", "/", {}).status == 405


def test_server_on_port_zero(app: DemoApp) -> None:
    server = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        with urllib.request.urlopen(base + "/") as resp:
            assert resp.status == 200 and resp.headers["X-Content-Type-Options"] == "nosniff"
        req = urllib.request.Request(
            base + "/api/predict?text=roof", data=png_bytes(), method="POST"
        )
        with urllib.request.urlopen(req) as resp:
            assert json.loads(resp.read())["height"] == 24
        bad = urllib.request.Request(
            base + "/api/predict?text=roof", data=b"x" * 60_000, method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(bad)
        assert err.value.code == 413
    finally:
        server.shutdown()
        server.server_close()


def test_load_examples_prefers_accurate_test_samples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys
    import types

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

    module = types.ModuleType("wrel.data.dataset")
    module.load_samples = fake_load_samples  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wrel.data.dataset", module)
    examples = load_examples(tmp_path, limit=2)
    assert [(e.example_id, e.text) for e in examples] == [("0", "t0"), ("2", "t2")]
    with pytest.raises(FileNotFoundError, match="generate the benchmark"):
        load_examples(tmp_path / "missing")
