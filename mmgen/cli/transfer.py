"""`mmgen export workspace` and `mmgen import`: a whole workspace to a folder or tarball and back."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmgen.cli.common import DbOpt, JsonOpt, WorkspaceOpt, _errors, _print_json, _workspace, app
from mmgen.cli.records import export_app


@export_app.command("workspace")
def export_workspace_cmd(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="A new folder, or FILE.tar / FILE.tar.gz.")
    ],
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Store rows, indexes, models and outputs, with checksums, to move the workspace (or change backend)."""
    with _errors():
        from mmgen.transfer import export_workspace

        report = export_workspace(_workspace(workspace, db), output)
        if as_json:
            _print_json(report.to_json())
        else:
            rows = sum(report.rows.values())
            typer.echo(f"exported {rows} rows of {len(report.rows)} tables and {report.files} files "
                       f"({report.bytes / 1e6:.1f} MB) to {report.path}")  # fmt: skip


@app.command("import")
def import_cmd(
    source: Annotated[Path, typer.Argument(help="An export folder or tarball (`mmgen export workspace`).")],
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Restore an exported workspace into an empty store (SQLite or PostgreSQL) and workspace folder."""
    with _errors():
        from mmgen.transfer import import_workspace

        report = import_workspace(source, _workspace(workspace, db))
        if as_json:
            _print_json(report.to_json())
        else:
            typer.echo(f"imported {sum(report.rows.values())} rows and {report.files} files from {report.path}")
