"""End to end: the demo page in headless Chromium against a server with a tiny checkpoint.

Needs Debian's ``chromium`` and the ``playwright`` package (``make test`` installs both; never
``playwright install``). Set ``WREL_DEMO_SCREENSHOT=path.png`` to save a screenshot of the page.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def aerial_scene(seed: int, size: int = 96) -> np.ndarray:
    """A toy aerial image: textured ground, a road and a few coloured 'vehicles'."""
    rng = np.random.default_rng(seed)
    img = (rng.normal(0, 6, (size, size, 3)) + [96, 110, 84]).clip(0, 255)
    img[size // 2 - 6 : size // 2 + 6] = [70, 70, 74]
    for _ in range(5):
        r, c = rng.integers(4, size - 12, 2)
        img[r : r + 6, c : c + 10] = rng.integers(120, 255, 3)
    return img.astype(np.uint8)


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (scripts/install_browser.sh)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    import torch

    from wrel.engine.checkpoint import save_model
    from wrel.inference import Predictor
    from wrel.models import ModelConfig, build_model
    from wrel.web.server import DemoApp, Example, ServerLimits, make_server

    root = tmp_path_factory.mktemp("demo")
    torch.manual_seed(0)
    ckpt = save_model(root / "ckpt", build_model(ModelConfig.tiny()), {"image_size": [32, 32]})
    examples = []
    for i, text in enumerate(["the red vehicle on the left", "the long grey road"]):
        Image.fromarray(aerial_scene(i)).save(root / f"ex{i}.png")
        examples.append(Example(str(i), root / f"ex{i}.png", text, "vehicle"))
    limits = ServerLimits(max_side=256)
    demo = DemoApp(Predictor.from_checkpoint(ckpt), examples, limits)
    with make_server(demo, "127.0.0.1", 0) as server:  # uvicorn on an ephemeral port
        yield server.url


@pytest.fixture(scope="module")
def browser(demo_url: str) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        try:
            chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Exception as err:  # a chromium that playwright cannot drive
            pytest.skip(f"cannot start chromium through playwright: {err}")
        yield chromium
        chromium.close()


def test_upload_predict_and_bad_upload(browser, demo_url: str, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1100, "height": 720})
    page.goto(demo_url)
    page.wait_for_selector("#examples button")  # examples listed from the server
    image = tmp_path / "scene.png"
    Image.fromarray(aerial_scene(5, 80)).save(image)
    page.set_input_files("#file", str(image))
    page.fill("#text", "the red vehicle at the top")
    page.click("#submit")
    page.wait_for_selector("#overlay[src^='data:image/png']", state="visible", timeout=30_000)
    assert page.evaluate("document.getElementById('overlay').naturalWidth") == 80
    assert page.get_attribute("#download", "href").startswith("data:image/png;base64,")
    assert page.is_hidden("#error")

    page.set_input_files(
        "#file", {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not an image"}
    )
    page.click("#submit")
    page.wait_for_selector("#error", state="visible", timeout=30_000)
    assert "not a supported image" in page.inner_text("#error")
    assert page.is_hidden("#result-panel")

    # an image above the demo's side limit: refused from its header with a clear message
    buf = io.BytesIO()
    Image.new("1", (1000, 300)).save(buf, format="PNG")
    page.set_input_files(
        "#file", {"name": "wide.png", "mimeType": "image/png", "buffer": buf.getvalue()}
    )
    page.click("#submit")
    page.wait_for_selector("#error:has-text('1000 x 300')", timeout=30_000)  # no eval: CSP
    assert "accepts up to 256 per side" in page.inner_text("#error")
    assert page.is_hidden("#result-panel")
    page.close()


def test_example_pick_and_screenshot(browser, demo_url: str, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1100, "height": 640})
    page.goto(demo_url)
    page.click("#examples button >> nth=0")
    assert page.input_value("#text") == "the red vehicle on the left"
    page.click("#submit")
    page.wait_for_selector("#overlay[src^='data:image/png']", state="visible", timeout=30_000)
    assert "96 x 96" in page.inner_text("#caption")
    shot = Path(os.environ.get("WREL_DEMO_SCREENSHOT") or tmp_path / "demo.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 1000
    page.close()


def test_geotiff_upload_and_threshold_slider(browser, demo_url: str, tmp_path: Path) -> None:
    """A 16-bit single-band GeoTIFF: the page shows the model's 8-bit rendering, the result,
    the highest probability, and the slider re-thresholds the mask in the page."""
    import base64

    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import Affine

    rng = np.random.default_rng(7)
    pan = rng.integers(300, 900, (70, 90)).astype(np.uint16)
    pan[10:30, 20:50] = 3800
    path = tmp_path / "pan.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=90, height=70, count=1, dtype="uint16",
        crs="EPSG:32633", transform=Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_600_000.0),
    ) as ds:  # fmt: skip
        ds.write(pan, 1)

    def png(url: str) -> np.ndarray:
        assert url.startswith("data:image/png;base64,")
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))

    page = browser.new_page(viewport={"width": 1100, "height": 720})
    page.goto(demo_url)
    page.wait_for_selector("#examples button")
    page.set_input_files("#file", str(path))
    assert "cannot show this file" in page.inner_text("#preview-note")  # no TIFF in browsers
    page.fill("#text", "the bright building")
    page.click("#submit")
    page.wait_for_selector("#overlay[src^='data:image/png']", state="visible", timeout=30_000)
    assert page.is_hidden("#error")
    assert page.evaluate("document.getElementById('overlay').naturalWidth") == 90
    rendering = png(page.get_attribute("#preview", "src"))  # the 8-bit rendering, displayable
    assert rendering.shape == (70, 90, 3) and rendering[15, 30, 0] > rendering[60, 5, 0]
    assert "highest foreground probability" in page.inner_text("#caption")
    assert page.input_value("#threshold") == "0.5"
    first_download = page.get_attribute("#download", "href")

    page.focus("#threshold")
    page.keyboard.press("Home")  # 0.01: nearly every pixel is above it
    page.wait_for_selector("#threshold-value:has-text('0.01')")
    low = png(page.get_attribute("#overlay", "src"))[..., :3]
    assert (low != rendering).any(axis=2).mean() > 0.9  # tinted
    page.keyboard.press("End")  # 0.99: above the tiny model's probabilities
    page.wait_for_selector("#caption:has-text('no pixel above the threshold 0.99')")
    assert "highest foreground probability 0." in page.inner_text("#caption")
    high = png(page.get_attribute("#overlay", "src"))[..., :3]
    assert np.array_equal(high, rendering)  # nothing tinted: the displayed mask is empty
    download = page.get_attribute("#download", "href")
    assert download != first_download and not png(download)[..., 0].any()
    page.close()
