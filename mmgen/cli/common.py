"""What every command shares: the typer apps, the common option types, error handling.

Only the `mmgen.cli` modules turn library errors (`MmgenError`) into messages and exit codes.
Heavy libraries (torch, faiss, open_clip, SQLAlchemy models) are imported inside the commands, so
`mmgen --help` stays instant.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

app = typer.Typer(
    name="mmgen",
    help="Index image and text collections into FAISS and a SQL store; search them from the command line.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Fetch the demo corpora and write manifests.", no_args_is_help=True)
db_app = typer.Typer(help="The SQL store: migrations.", no_args_is_help=True)
eval_app = typer.Typer(help="Evaluate encoders with the field's standard protocols.", no_args_is_help=True)
train_app = typer.Typer(help="Train models on the workspace's corpora.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")
app.add_typer(db_app, name="db")
app.add_typer(eval_app, name="eval")

WorkspaceOpt = Annotated[
    Optional[Path],
    typer.Option("--workspace", "-w", envvar="MMGEN_WORKSPACE", help="Workspace folder [default: ./indexes]."),
]
DbOpt = Annotated[
    Optional[str],
    typer.Option("--db", envvar="MMGEN_DB", help="SQLAlchemy URL of the store [default: SQLite in the workspace]."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
FromOpt = Annotated[
    Optional[int], typer.Option("--from", help="The prompt this one refines (its id): recorded as its parent.")
]
DataDirOpt = Annotated[
    Optional[Path], typer.Option("--data-dir", envvar="MMGEN_DATA", help="Where `mmgen data fetch` put corpora.")
]
ShardsOpt = Annotated[
    Optional[int],
    typer.Option(
        "--shards", min=1,
        help="Split each FAISS index into N shard files (row_id % N); changing it rebuilds them [default: keep, "
        "adding shards past 5M rows each, or $MMGEN_SHARD_ROWS; 0 there: never].",
    ),
]
MergeOndiskOpt = Annotated[
    bool,
    typer.Option("--merge-ondisk", help="IVF presets: also merge the shards into one on-disk, memory-mapped index."),
]
EngineOpt = Annotated[
    str,
    typer.Option(
        "--engine",
        help="local (this process) | ray (decode and encode on a Ray cluster's actors, one GPU or CPU each; "
        "this process still plans and commits; pip install 'mmgen[ray]').",
    ),
]
RayAddressOpt = Annotated[
    Optional[str],
    typer.Option(
        "--ray-address",
        help="--engine ray: auto (the running cluster) or HOST:PORT [default: RAY_ADDRESS, else a local cluster].",
    ),
]
UntrustedOpt = Annotated[
    bool,
    typer.Option(
        "--untrusted",
        help="For folders from elsewhere: refuse images over 20 MB, 40 megapixels or 10 s of decoding, and render "
        "SVGs without following any reference outside them (files, URLs, entities); each refusal is one failed item.",
    ),
]

# The training budget and resume options: one meaning in every `mmgen train` command (mmgen.train.loop).
StepsOpt = Annotated[Optional[int], typer.Option("--steps", min=1, help="Optimiser steps (instead of --epochs).")]
MinutesOpt = Annotated[
    Optional[float],
    typer.Option(
        "--minutes",
        help="Time budget of the training loop: alone, the schedule is planned to fill it; with --steps or --epochs, "
        "the loop stops there if not done. The model is saved either way.",
    ),
]
ResumeOpt = Annotated[
    str, typer.Option("--resume", help="auto (continue a compatible saved state) | require | never.")
]

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


@contextmanager
def _errors() -> Iterator[None]:
    """Turn library errors into one line on stderr and a non-zero exit code."""
    from mmgen.errors import MmgenError

    try:
        yield
    except MmgenError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(EXIT_ERROR) from None
    except KeyboardInterrupt:
        typer.secho("interrupted", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _workspace(workspace: Path | None, db: str | None) -> Any:
    from mmgen.workspace import Workspace

    return Workspace.resolve(workspace, db)


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False, indent=2))


MlflowOpt = Annotated[
    Optional[str],
    typer.Option(
        "--mlflow",
        help="Also log the run to MLflow: a folder (a local store, DIR/mlflow.db and DIR/artifacts) or a tracking "
        "URI. Needs mmgen[mlflow].",
    ),
]


def _check_tracking(target: str | None) -> None:
    """Before training: --mlflow names a usable store and MLflow is installed (not only after an hour's run)."""
    if target is not None:
        from mmgen.tracking import check_available

        check_available(target)


def _track(target: str | None, kind: str, result: Any) -> dict[str, Any] | None:
    """Log a completed training run to MLflow when --mlflow was given; where it went, as JSON."""
    if not target or result.path is None or getattr(result, "status", "completed") != "completed":
        return None
    from mmgen.tracking import log_training
    from mmgen.versions import current_number

    run = log_training(target, kind, result.manifest, result.path, version=current_number(result.path),
                       model_id=result.model_id)  # fmt: skip
    return run.to_json()


def _tracked_line(tracked: dict[str, Any] | None) -> None:
    if tracked:
        typer.echo(f"  logged to MLflow: experiment {tracked['experiment']}, run {tracked['run_id']} "
                   f"({tracked['tracking_uri']})")  # fmt: skip
