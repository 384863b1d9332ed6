"""The FastAPI application of `mmgen serve` (routes over `mmgen.serve.app.Service`)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response

from mmgen.errors import MmgenError
from mmgen.serve.access import OPEN_CALLER
from mmgen.serve.app import STATIC, HTTPError, ServerConfig, Service, parse_body
from mmgen.serve.history_routes import need
from mmgen.serve.history_routes import router as history_router
from mmgen.serve.makers import Makers

if TYPE_CHECKING:
    from mmgen.store.db import Store
    from mmgen.workspace import Workspace


OPEN_PATHS = ("/healthz", "/")  # the page is static HTML with no data: it sends the token (URL #token=T) itself


def create_app(ws: Workspace, store: Store, config: ServerConfig) -> Any:
    """The ASGI app: routes, the token and role checks, and errors as `{"error": ...}` with a 4xx status."""
    service = Service(ws, store, config)
    makers = Makers(ws, store, config.device, config.max_upload_bytes)
    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> Any:
        yield
        if service.writer is not None:
            service.writer.close()  # drain: every answered /knn-service query is recorded before exit

    app = FastAPI(title="mmgen", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.service = service

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Any:
        where = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        return JSONResponse({"error": f"bad request ({where})"}, status_code=400)

    @app.exception_handler(HTTPError)
    async def refused(request: Request, exc: HTTPError) -> Any:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        request.state.caller = OPEN_CALLER
        if config.token and request.url.path not in OPEN_PATHS:
            caller = config.caller_of(request.headers.get("authorization", ""))
            if caller is None:
                return JSONResponse({"error": "missing or wrong token (Authorization: Bearer T)"}, status_code=401)
            request.state.caller = caller
        request.state.user = request.state.caller.name
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > 2 * config.max_upload_bytes:
            return JSONResponse({"error": "request body too large"}, status_code=413)
        try:
            return await call_next(request)
        except HTTPError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        except MmgenError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    def answer(fn: Any, *args: Any) -> Any:
        try:
            return JSONResponse(fn(*args))
        except HTTPError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        except MmgenError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    async def body_of(request: Request) -> dict[str, Any]:
        return parse_body(await request.body(), config.max_upload_bytes)

    @app.get("/healthz")
    def healthz() -> Any:
        return {"ok": True}

    @app.get("/indices-list")
    def indices_list() -> Any:
        return answer(service.index_names)

    @app.get("/api/indexes")
    def indexes() -> Any:
        return answer(service.index_names)

    async def post(request: Request, fn: Any) -> Any:
        """Read the JSON body (any Content-Type), run `fn` on it in a worker thread, answer JSON."""
        try:
            body = await body_of(request)
        except HTTPError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        return await _threaded(answer, fn, body, request.state.user)

    @app.post("/knn-service")
    async def knn(request: Request) -> Any:
        return await post(request, service.knn)

    @app.post("/metadata")
    async def metadata(request: Request) -> Any:
        return await post(request, service.metadata)

    @app.post("/api/search")
    async def search(request: Request) -> Any:
        return await post(request, service.search)

    @app.post("/api/caption")
    async def caption(request: Request) -> Any:
        return await post(request, makers.caption)

    @app.post("/api/generate", dependencies=[need("writer")])
    async def generate(request: Request) -> Any:
        return await post(request, makers.generate)

    def png(fn: Any, *args: Any) -> Any:
        """A PNG answer, or the HTTPError's `{"error"}` with its status."""
        try:
            return Response(fn(*args), media_type="image/png")
        except HTTPError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.get("/api/outputs/{output_id}")
    def output(output_id: int) -> Any:
        return png(makers.output_png, output_id)

    @app.get("/api/items/{item_id}")
    def item(item_id: int) -> Any:
        return answer(service.item, item_id)

    @app.get("/image/{item_id}")
    def image(item_id: int, size: int = 256) -> Any:
        return png(service.thumbnail, item_id, size)

    @app.get("/")
    def page() -> Any:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.include_router(history_router)  # /api/history, /api/prompts/{id}, /api/outputs/{id}/rate, /api/me

    return app


async def _threaded(fn: Any, *args: Any) -> Any:
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)
