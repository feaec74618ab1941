"""``wrel serve``: a local web page to try a trained model on uploaded or example images."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``wrel serve``."""
    p = subparsers.add_parser(
        "serve",
        help="local web demo: upload an image, type an expression, see the mask",
        description=(
            "Start a small web page (fully offline, no CDN) on http://HOST:PORT: upload an image "
            "or pick an example of a generated benchmark (--data), type an expression, see the "
            "mask over the image and download it. Binds to 127.0.0.1 by default; uploads are "
            "processed in memory and never stored."
        ),
    )
    p.add_argument("--checkpoint", required=True, help="model folder written by training")
    p.add_argument("--data", help="a generated benchmark root whose images are offered as examples")
    p.add_argument("--num-examples", type=int, default=8, help="examples listed (default 8)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="upload size limit")
    p.add_argument("--max-side", type=int, default=4096, help="largest image side in pixels")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the model and serve until interrupted."""
    import logging

    from wrel.engine.distributed import resolve_device
    from wrel.inference import Predictor
    from wrel.web.server import DemoApp, ServerLimits, load_examples, make_server

    log = logging.getLogger("wrel.serve")
    if args.max_upload_mb <= 0 or args.max_side < 16:
        raise ValueError("--max-upload-mb must be > 0 and --max-side at least 16")
    predictor = Predictor.from_checkpoint(args.checkpoint, device=resolve_device(args.device))
    examples = load_examples(args.data, args.num_examples) if args.data else []
    limits = ServerLimits(max_upload_bytes=int(args.max_upload_mb * 2**20), max_side=args.max_side)
    server = make_server(DemoApp(predictor, examples, limits), args.host, args.port)
    host, port = server.server_address[:2]
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: anyone who can reach this address can use the demo", host)
    log.info("wrel demo on http://%s:%d/ (%d examples); Ctrl+C to stop", host, port, len(examples))
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
