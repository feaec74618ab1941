"""The demo's HTTP routes: :func:`create_app` builds the Starlette application.

``GET /`` and the static files come from a fixed table inside the package (:data:`STATIC_FILES`:
no CDN, no path from the URL); ``GET /api/info`` answers the limits and examples,
``GET /api/examples/<id>.png`` an example as the model sees it, and ``POST /api/predict``
segments an upload (the raw request body or a ``multipart/form-data`` form, parsed in memory)
or an example. Every refusal is JSON ``{"error": ...}`` with ``Connection: close``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

from wrel.web.decoding import probe_image
from wrel.web.limits import RequestRejected, ServerLimits
from wrel.web.middleware import BodyGuard
from wrel.web.worker import DemoApp

__all__ = ["STATIC_FILES", "create_app", "parse_threshold"]

log = logging.getLogger(__name__)

STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}


def parse_threshold(value: str | None, default: float) -> float:
    """The ``threshold`` query parameter, a probability in (0, 1) (``default`` when absent)."""
    if value is None or value == "":
        return default
    try:
        threshold = float(value)
    except ValueError:
        threshold = float("nan")
    if not 0.0 < threshold < 1.0:  # also refuses NaN
        raise RequestRejected(
            400, f"threshold must be a probability between 0 and 1 (exclusive), got {value!r}"
        )
    return threshold


def _multipart_parser(request: Any, limits: ServerLimits) -> Any:
    from starlette.formparsers import MultiPartParser

    parser = MultiPartParser(
        request.headers, request.stream(), max_files=1, max_fields=4, max_part_size=16 * 1024
    )
    parser.spool_max_size = limits.max_upload_bytes + 1  # keep the file in memory, never on disk
    return parser


async def _read_upload(request: Any, limits: ServerLimits) -> tuple[bytes, str | None]:
    """The uploaded image bytes and, for a form, its ``text`` field."""
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException

    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        return await request.body(), None
    try:
        form = await _multipart_parser(request, limits).parse()
    except MultiPartException as err:
        raise RequestRejected(400, f"cannot read the form: {err.message}") from err
    try:
        upload = form.get("image")
        text = form.get("text")
        if not isinstance(upload, UploadFile):
            raise RequestRejected(400, "the form has no file field 'image': choose an image file")
        data = await upload.read()
    finally:
        await form.close()
    return data, text if isinstance(text, str) else None


def _check_text(text: str, limits: ServerLimits) -> str:
    text = text.strip()
    if not text:
        raise RequestRejected(400, "type an expression, e.g. 'the white ship'")
    if len(text) > limits.max_text_chars:
        raise RequestRejected(
            400,
            f"the expression has {len(text)} characters; the limit is {limits.max_text_chars}",
        )
    return text


def create_app(demo: DemoApp) -> Any:
    """The Starlette application of ``demo`` (also usable with ``starlette.testclient``)."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    limits = demo.limits
    if failed := demo.prerender_examples():
        log.warning("examples %s could not be rendered; the page shows them broken", failed)
    static = {
        path: (resources.files("wrel.web").joinpath("static", name).read_bytes(), ctype)
        for path, (name, ctype) in STATIC_FILES.items()
    }

    async def static_file(request: Request) -> Response:
        body, ctype = static[request.url.path]
        return Response(body, media_type=ctype)

    async def api_info(request: Request) -> Response:
        return JSONResponse(demo.info())

    async def api_example(request: Request) -> Response:
        name = request.path_params["name"]
        example_id = name[: -len(".png")] if name.endswith(".png") else None
        if example_id is None or example_id not in demo.examples:
            raise RequestRejected(404, "no such example")
        png = demo.cached_example(example_id)
        if png is None:
            png = await demo.in_worker(demo.example_png, example_id)
        return Response(png, media_type="image/png")

    async def api_predict(request: Request) -> Response:
        query_text = request.query_params.get("text")
        threshold = parse_threshold(
            request.query_params.get("threshold"), float(demo.predictor.config.threshold)
        )
        example_id = request.query_params.get("example", "")
        if example_id:
            text = _check_text(query_text or "", limits)
            if example_id not in demo.examples:
                raise RequestRejected(404, f"no example {example_id!r}")
            source: bytes | Path = demo.examples[example_id].image_path
        else:
            if query_text is not None:
                text = _check_text(query_text, limits)  # refuse before reading the body
            data, form_text = await _read_upload(request, limits)
            if query_text is None:
                text = _check_text(form_text or "", limits)
            if not data:
                raise RequestRejected(400, "the upload is empty: choose an image file")
            probe_image(data, limits)
            source = data
        body = await demo.in_worker(demo.segment, source, text, threshold)
        return Response(body, media_type="application/json")

    async def rejected(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestRejected)
        headers = {"Connection": "close", **exc.headers}
        return JSONResponse({"error": exc.message}, exc.status, headers=headers)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        path = request.url.path
        message = {
            404: f"{path} not found",
            405: f"{request.method} {path} is not supported",
        }.get(exc.status_code, str(exc.detail))
        headers = {"Connection": "close", **(exc.headers or {})}
        return JSONResponse({"error": message}, exc.status_code, headers=headers)

    async def client_gone(request: Request, exc: Exception) -> Response:
        return JSONResponse(
            {"error": "the client disconnected"}, 400, headers={"Connection": "close"}
        )

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.exception("demo request %s %s failed", request.method, request.url.path)
        message = f"internal error ({type(exc).__name__}); see the server log"
        return JSONResponse({"error": message}, 500, headers={"Connection": "close"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        import anyio.to_thread

        # nothing here should use anyio's worker threads; cap them in case something does
        anyio.to_thread.current_default_thread_limiter().total_tokens = 4
        try:
            yield
        finally:
            demo.close()

    routes = [Route(path, static_file, methods=["GET"]) for path in STATIC_FILES]
    routes += [
        Route("/api/info", api_info, methods=["GET"]),
        Route("/api/examples/{name}", api_example, methods=["GET"]),
        Route("/api/predict", api_predict, methods=["POST"]),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(BodyGuard, demo=demo)],
        exception_handlers={
            RequestRejected: rejected,
            HTTPException: http_error,
            ClientDisconnect: client_gone,
            Exception: internal_error,
        },
        lifespan=lifespan,
    )
