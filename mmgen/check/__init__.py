"""`mmgen check`: verify a workspace against its contracts, and rebuild what can be derived.

The truth is the SQL store (items, index rows, models) and the append-only vector files; FAISS
files and binary-code files are caches of them (README, Architecture). A check walks:

- the store's Alembic revision against the head of the shipped migrations;
- per index and modality (`indexes`): SQL items <-> index rows <-> vector-file slots <-> FAISS ids
  (and code ids); the live vectors (finite, unit-norm); a sample of FAISS rows against the vector
  file; the codes' hasher (loads, with the checksum and width the codes were built with) and a
  sample of rows re-encoded against the stored codes;
- model folders (`models`): each manifest's checksum against its weights, computed as the loaders
  compute it, and each index's encoder weights against the checksum the index was built with.

Every inconsistency is a `Problem` (`report`) with a stable code, what it concerns, what it means
and how to repair it. A repair (`repair`) rebuilds caches and migrates the store; it deletes SQL
rows only when pruning: index rows whose vectors are gone or corrupt (the next `mmgen index`
re-embeds their items) and items that no index refers to. After a repair the workspace is checked
again, and the report says what was found, what was done and what is left.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from mmgen.check.indexes import check_index, check_stray_folders, check_unindexed_items
from mmgen.check.models import check_models
from mmgen.check.repair import repair
from mmgen.check.report import ERROR, INFO, WARNING, Action, CheckOptions, CheckReport, Problem
from mmgen.errors import ConfigError, StoreError
from mmgen.store.models import IndexRecord

if TYPE_CHECKING:
    from mmgen.workspace import Workspace

__all__ = ["ERROR", "INFO", "WARNING", "Action", "CheckOptions", "CheckReport", "Problem", "check_workspace"]


def check_workspace(ws: Workspace, options: CheckOptions | None = None) -> CheckReport:
    """Check a workspace; with `options.repair`, repair what is derivable and check again."""
    opts = options or CheckOptions()
    if opts.prune and not opts.repair:
        raise ConfigError("--prune only widens --repair: give both (`mmgen check --repair --prune`)")
    _require_store(ws)
    report = _inspect(ws, opts)
    actions = [p.action for p in report.problems if p.action and (opts.prune or not p.action.prune)]
    if not opts.repair or not actions:
        return report
    done = repair(ws, actions)
    after = _inspect(ws, opts)
    after.found, after.repaired = report.problems, done
    return after


def _require_store(ws: Workspace) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(ws.db_url)
    local = url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:") and not url.query
    if local and not Path(str(url.database)).is_file():
        raise StoreError(f"no store at {url.database}: not an mmgen workspace (give --workspace or --db)")


# ---- inspection -----------------------------------------------------------------------------
def _inspect(ws: Workspace, opts: CheckOptions) -> CheckReport:
    from mmgen.store.db import mask_url, open_store

    report = CheckReport(str(ws.root), mask_url(ws.db_url))
    _check_revision(ws, report)
    store = open_store(ws.db_url, upgrade=False)
    try:
        with store.session() as s:
            records = list(s.scalars(select(IndexRecord).order_by(IndexRecord.name)))
        for rec in records:
            check_index(ws, store, rec, report, opts)
        check_stray_folders(ws, {r.name for r in records}, report)
        check_unindexed_items(store, report)
        check_models(ws, store, report)
    except SQLAlchemyError as exc:
        report.add(Problem("store-unreadable", ERROR, f"the store cannot be read: {str(exc).splitlines()[0]}",
                           "its schema is not the one this mmgen reads, so the rows were not checked",
                           "migrate it (`mmgen check --repair` or `mmgen db upgrade`), then check again"))  # fmt: skip
    finally:
        store.close()
    return report


def _check_revision(ws: Workspace, report: CheckReport) -> None:
    from alembic.script import ScriptDirectory

    from mmgen.store.db import current_revision, head_revision, migrations_dir

    report.revision, report.head = current_revision(ws.db_url), head_revision()
    if report.revision == report.head:
        return
    migrate = Action("migrate")
    if report.revision is None:
        report.add(Problem("store-uninitialised", ERROR, "the store has no Alembic revision (never migrated)",
                           "it holds no mmgen tables", "`mmgen check --repair` (or `mmgen db upgrade`) creates them",
                           action=migrate))  # fmt: skip
    elif report.revision not in {r.revision for r in ScriptDirectory(str(migrations_dir())).walk_revisions()}:
        report.add(Problem("store-newer", ERROR, f"the store is at revision {report.revision}, unknown to this mmgen "
                           f"(head {report.head})", "a newer mmgen migrated it; this one may misread it",
                           "upgrade mmgen; never downgrade the store with an older one"))  # fmt: skip
    else:
        report.add(Problem("store-behind", WARNING, f"the store is at revision {report.revision}, head is {report.head}",
                           "its schema lacks what this mmgen writes; any command that opens it migrates it first",
                           "`mmgen check --repair` (or `mmgen db upgrade`) applies the migrations",
                           action=migrate))  # fmt: skip

