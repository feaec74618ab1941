"""Screenshot of `wrel serve` with a trained checkpoint, for the README.

    .venv/bin/python scripts/screenshot_demo.py runs/demo-lrb-paper-r10-s0/checkpoints/best \
        --data data --out docs/images/demo_screenshot.png --example 0

Needs Debian's chromium and playwright (what `make test` installs). Starts the demo server on a
free local port, picks a benchmark example, submits it and saves the page.
"""

from __future__ import annotations

import argparse
import shutil
import threading
from pathlib import Path

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data", default="data")
    parser.add_argument("--out", default="docs/images/demo_screenshot.png")
    parser.add_argument("--example", type=int, default=0, help="which example button to click")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        parser.error("chromium is not installed (scripts/install_browser.sh)")
    from playwright.sync_api import sync_playwright

    from wrel.inference import Predictor
    from wrel.web.server import DemoApp, load_examples, make_server

    app = DemoApp(Predictor.from_checkpoint(args.checkpoint), load_examples(args.data))
    server = make_server(app, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1100, "height": 640})
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
            page.wait_for_function(  # every example thumbnail loaded
                "() => { const imgs = [...document.querySelectorAll('#examples img')];"
                " return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0); }"
            )
            page.click(f"#examples button >> nth={args.example}")
            page.click("#submit")
            page.wait_for_selector("#overlay[src^='data:image/png']", state="visible")
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.out, full_page=True)
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
