"""`mmgen serve`: the HTTP API and the search page."""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

from mmgen.cli.common import DbOpt, DeviceOpt, WorkspaceOpt, _errors, _workspace, app


@app.command("serve")
def serve_cmd(
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (beyond loopback needs a token).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 1234,
    token: Annotated[
        Optional[list[str]],
        typer.Option(
            "--token",
            envvar="MMGEN_TOKEN",
            help="Require `Authorization: Bearer T` on every route but /healthz and the page (open it as /#token=T). "
            "T alone: user `http`, role admin; NAME:T records NAME as the caller, role writer; NAME:T:ROLE sets "
            "the role: reader (search, caption, own history), writer (+ generate, rate), admin (+ everyone's "
            "history). Repeat for several callers (MMGEN_TOKEN: space-separated).",
        ),
    ] = None,
    allow_remote_urls: Annotated[
        bool,
        typer.Option("--allow-remote-urls", help="Let /knn-service fetch `image_url` (off: no server-side requests)."),
    ] = False,
    max_upload_mb: Annotated[int, typer.Option("--max-upload-mb", min=1, help="Largest image upload.")] = 20,
    sync_records: Annotated[
        bool,
        typer.Option("--sync-records", help="Record /knn-service queries before answering (default: just after)."),
    ] = False,
    device: DeviceOpt = "auto",
) -> None:
    """Serve the workspace over HTTP: clip-retrieval's /knn-service API, mmgen's /api, and a search page at /."""
    with _errors():
        import uvicorn

        from mmgen.serve.app import ServerConfig, check_config
        from mmgen.serve.routes import create_app
        from mmgen.store.db import open_store

        check_config(host, token)
        ws = _workspace(workspace, db)
        store = open_store(ws.db_url)
        config = ServerConfig(token=token, allow_remote_urls=allow_remote_urls,
                              max_upload_bytes=max_upload_mb * 1024 * 1024, device=device,
                              background_records=not sync_records)  # fmt: skip
        shown = "localhost" if host in ("127.0.0.1", "::1") else host
        typer.echo(f"mmgen serve: http://{shown}:{port}/  (workspace {ws.root}; clip-retrieval: /knn-service)",
                   err=True)  # fmt: skip
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            uvicorn.run(create_app(ws, store, config), host=host, port=port, log_level="warning")
        finally:
            store.close()
