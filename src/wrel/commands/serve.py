"""``wrel serve``: a local web page to try a trained model on uploaded or example images."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from wrel.core.distributed import resolve_device
from wrel.inference import Predictor
from wrel.web.server import DemoApp, DemoServer, ServerLimits, load_examples

if TYPE_CHECKING:
    from wrel.web.server import ServerLimits


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``wrel serve``."""
    p = subparsers.add_parser(
        "serve",
        help="local web demo: upload an image, type an expression, see the mask",
        description=(
            "Start a small web page (fully offline, no CDN) on http://HOST:PORT: upload an image "
            "or pick an example of a generated benchmark (--data), type an expression, see the "
            "mask over the image and download it. Binds to 127.0.0.1 by default; uploads are "
            "processed in memory and never stored. One request at a time runs the model; see "
            "docs/inference.md for the limits below."
        ),
    )
    p.add_argument("--checkpoint", required=True, help="model folder written by training")
    p.add_argument("--data", help="a generated benchmark root whose images are offered as examples")
    p.add_argument("--num-examples", type=int, default=8, help="examples listed (default 8)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    g = p.add_argument_group("limits")
    g.add_argument(
        "--max-upload-mb", type=float, default=20.0, help="upload size limit (default 20)"
    )
    g.add_argument(
        "--max-side",
        type=int,
        default=4096,
        help="largest image side in pixels, checked in the header before decoding; the pixel "
        "cap is its square (default 4096)",
    )
    g.add_argument(
        "--max-decode-mb",
        type=float,
        default=1024.0,
        help="memory one request may use, estimated from the image header before decoding "
        "(about 22 bytes per pixel for 8-bit images, 52 for 16-bit or float, plus 44 per "
        "pixel of the overlay, at most 2048 x 2048; default 1024)",
    )
    g.add_argument(
        "--max-queue",
        type=int,
        default=4,
        help="requests waiting for the model besides the running one; more get 503 (default 4)",
    )
    g.add_argument(
        "--max-buffered-mb",
        type=float,
        default=None,
        help="upload bytes held by all requests together; more get 503 "
        "(default 4 x --max-upload-mb)",
    )
    g.add_argument(
        "--limit-concurrency",
        type=int,
        default=64,
        help="open connections + running requests; more get 503 (default 64)",
    )
    g.add_argument(
        "--max-connections-per-client",
        type=int,
        default=16,
        help="open connections one client address may hold; a new one above it gets 429 with "
        "Retry-After, so one client cannot take the whole --limit-concurrency (default 16)",
    )
    g.add_argument(
        "--request-timeout",
        type=float,
        default=30.0,
        help="seconds for a request body to arrive (408 after) and for a client to resume "
        "reading a response (default 30)",
    )
    g.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="seconds for the request line and headers to arrive (default 10)",
    )
    g.add_argument(
        "--keep-alive",
        type=float,
        default=5.0,
        help="seconds an idle keep-alive connection stays open (default 5)",
    )
    p.set_defaults(func=run)


def limits_from_args(args: argparse.Namespace) -> ServerLimits:
    """:class:`~wrel.web.server.ServerLimits` from the parsed flags (``ValueError`` names a bad one)."""

    for flag, value in (
        ("--max-upload-mb", args.max_upload_mb),
        ("--max-decode-mb", args.max_decode_mb),
    ):
        if not value > 0:
            raise ValueError(f"{flag} {value} must be > 0")
    buffered = args.max_buffered_mb
    if buffered is not None and buffered < args.max_upload_mb:
        raise ValueError(
            f"--max-buffered-mb {buffered} must be at least --max-upload-mb {args.max_upload_mb}"
        )
    flags = {
        "max_side": "--max-side",
        "max_queue": "--max-queue",
        "limit_concurrency": "--limit-concurrency",
        "max_connections_per_client": "--max-connections-per-client",
        "request_timeout": "--request-timeout",
        "header_timeout": "--header-timeout",
        "keep_alive": "--keep-alive",
    }
    try:
        return ServerLimits(
            max_upload_bytes=int(args.max_upload_mb * 2**20),
            max_buffered_bytes=int(buffered * 2**20) if buffered is not None else 0,
            max_decode_bytes=int(args.max_decode_mb * 2**20),
            **{name: getattr(args, name) for name in flags},
        )
    except ValueError as err:
        for name, flag in flags.items():
            if f"ServerLimits.{name} " in str(err):
                raise ValueError(str(err).replace(f"ServerLimits.{name}", flag)) from None
        raise


def run(args: argparse.Namespace) -> int:
    """Load the model and serve until interrupted."""
    import logging

    log = logging.getLogger("wrel.serve")
    limits = limits_from_args(args)
    predictor = Predictor.from_checkpoint(args.checkpoint, device=resolve_device(args.device))
    examples = load_examples(args.data, args.num_examples) if args.data else []
    server = DemoServer(DemoApp(predictor, examples, limits), args.host, args.port)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "listening on %s: anyone who can reach this address can use the demo", args.host
        )
    log.info("wrel demo on %s (%d examples); Ctrl+C to stop", server.url, len(examples))
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
