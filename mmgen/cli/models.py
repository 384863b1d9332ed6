"""`mmgen models`: the model versions a workspace keeps, and removing an old one."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from mmgen.cli.common import DbOpt, JsonOpt, WorkspaceOpt, _errors, _print_json, _workspace, app

models_app = typer.Typer(help="Model versions: list them, remove an old one.", invoke_without_command=True)
app.add_typer(models_app, name="models")
KindOpt = Annotated[
    Optional[str], typer.Option("--kind", help="encoder | hasher | captioner | generator [default: all].")
]


@models_app.callback()
def models_cmd(
    ctx: typer.Context, workspace: WorkspaceOpt = None, db: DbOpt = None, kind: KindOpt = None, as_json: JsonOpt = False
) -> None:
    """List every model version: kind, NAME@N, checksum, training steps, outputs and indexes that use it."""
    if ctx.invoked_subcommand is not None:
        return
    with _errors():
        from mmgen.versions import list_models

        rows = list_models(_workspace(workspace, db), kind)
        if as_json:
            _print_json(rows)
            return
        if not rows:
            typer.echo("no models registered in this workspace (train one: mmgen train encoder ...)")
            return
        for row in rows:
            typer.echo(_line(row))


@models_app.command("rm")
def rm_cmd(
    version: Annotated[str, typer.Argument(help="NAME@N: a kept older version (see `mmgen models`).")],
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    kind: KindOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Remove it even though indexes or outputs use it.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete an old model version's files and row; refused while indexes or outputs depend on it."""
    with _errors():
        from mmgen.versions import remove_version

        removed = remove_version(_workspace(workspace, db), version, kind, force)
        if as_json:
            _print_json(removed)
        else:
            typer.echo(f"removed {removed['kind']} {version} ({removed['path']})")


def _line(row: dict[str, Any]) -> str:
    label = f"{row['name']}@{row['version']}" if row["version"] else f"{row['name']} (weights gone)"
    steps = f"{row['steps']} steps" if row.get("steps") else ""
    uses = [f"{row['outputs']} outputs"] if row["outputs"] else []
    if row["indexes"]:
        uses.append("indexes " + ", ".join(row["indexes"]))
    created = (row["created"] or "")[:19].replace("T", " ")
    parts = [f"{row['kind']:<9}", f"{label:<28}", str(row["checksum"] or "")[:12], created, steps, "; ".join(uses)]
    return "  ".join(p for p in parts if p)
