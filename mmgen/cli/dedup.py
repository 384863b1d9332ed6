"""`mmgen dedup`: exact and near duplicate groups of an index, as text, JSON or a contact sheet."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from mmgen.cli.common import DbOpt, WorkspaceOpt, _errors, _print_json, _workspace, app

if TYPE_CHECKING:
    from mmgen.dedup import DedupReport

SHEET_SIDE = 96  # pixels per picture on the sheet
SHEET_COLUMNS = 8  # pictures drawn per group; the rest are counted in the row's note


@app.command("dedup")
def dedup_cmd(
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    index: Annotated[Optional[str], typer.Option("--index", help="Index name [default: default].")] = None,
    threshold: Annotated[
        float,
        typer.Option(
            "--threshold",
            help="Near copies: cosine of their vectors at least this, in (0, 1]. Groups are transitive (a chain "
            "of close pairs is one group).",
        ),
    ] = 0.95,
    exact_only: Annotated[
        bool, typer.Option("--exact-only", help="Only byte-identical copies (same sha256); no vector pass.")
    ] = False,
    modality: Annotated[
        str, typer.Option("--modality", help="image (the files) or text (the captions).")
    ] = "image",
    picture_check: Annotated[
        bool,
        typer.Option(
            "--picture-check/--no-picture-check",
            help="Images: confirm each near pair by the two pictures' structure, grey and chroma maps (drops "
            "two styles of one concept drawn differently); a pair whose file cannot be read, or of two blank "
            "pictures, is kept on its cosine.",
        ),
    ] = True,
    min_structure: Annotated[
        Optional[float],
        typer.Option(
            "--min-structure", help="The picture check's bound: structure correlation in [-1, 1] [default: 0.85]."
        ),
    ] = None,
    sheet: Annotated[
        Optional[Path],
        typer.Option("--sheet", help="Also draw the largest groups (near ones, or exact with --exact-only) as a PNG."),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=0, help="Groups shown (and drawn) per kind, largest first; 0: all.")
    ] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print every group as JSON on stdout (no --limit).")] = False,
) -> None:
    """Find duplicate items in an index: exact copies by content hash, near copies by cosine similarity.

    --json prints {"index", "modality", "threshold", "exact_only", "items", "counts": {"exact_groups",
    "exact_duplicates", "near_groups", "near_duplicates"}, "exact": [{"size", "sha256", "items"}],
    "near": [{"size", "items"}], "picture_check": {"min_structure", "pairs", "dropped", "unchecked",
    "unreadable"} or null, "seconds"}; each item is {"id", "corpus", "key", "text", "uri"}.
    """
    with _errors():
        from mmgen.dedup import check_threshold, find_duplicates
        from mmgen.errors import ConfigError
        from mmgen.store.db import open_store

        threshold = check_threshold(threshold)
        if sheet is not None and modality != "image":
            raise ConfigError("--sheet draws pictures: it needs --modality image")
        ws = _workspace(workspace, db)
        with open_store(ws.db_url) as store:
            report = find_duplicates(ws, store, index, threshold, exact_only=exact_only, modality=modality,
                                     check_pictures=picture_check, min_structure=min_structure)  # fmt: skip
        sheet_path = _write_sheet(report, sheet, limit) if sheet is not None else None
    if as_json:
        _print_json({**report.to_json(), "sheet": str(sheet_path) if sheet_path else None})
        return
    _print_report(report, limit)
    if sheet_path is not None:
        typer.echo(f"sheet: {sheet_path}")


def _print_report(report: DedupReport, limit: int) -> None:
    echo = typer.echo
    near = "skipped (--exact-only)" if report.exact_only else _counts(report, "near")
    echo(f"index {report.index}: {report.items} {report.modality} items")
    echo(f"  exact copies (same sha256): {_counts(report, 'exact')}")
    check = report.picture_check
    confirmed = f", pictures' structure >= {check['min_structure']:g}" if check else ""
    echo(f"  near copies (cosine >= {report.threshold:g}{confirmed}): {near}")
    if check and check["pairs"]:
        echo(f"  picture check: {check['dropped']} of {check['pairs']} close pairs dropped (drawn differently)"
             + (f", {check['unchecked']} kept unchecked ({len(check['unreadable'])} files unreadable)"
                if check["unchecked"] else ""))  # fmt: skip
    sections = [("exact", report.exact)] + ([] if report.exact_only else [("near", report.near)])
    for kind, groups in sections:
        shown = groups if limit == 0 else groups[:limit]
        for number, group in enumerate(shown, 1):
            echo(f"\n{kind} group {number} ({len(group)} items)")
            for item_id in group:
                ref = report.refs.get(item_id)
                where = f"{ref.corpus}:{ref.key}" if ref else "?"
                text = (ref.text or "") if ref else ""
                echo(f"  {item_id:8d}  {text[:50]:50s}  {where}")
        if len(groups) > len(shown):
            echo(f"\n({len(groups) - len(shown)} more {kind} groups; --limit 0 shows all)")


def _counts(report: DedupReport, kind: str) -> str:
    groups = len(report.exact if kind == "exact" else report.near)
    copies = report.duplicates(kind)
    return f"{groups} group{'s' * (groups != 1)}, {copies} item{'s' * (copies != 1)} beyond the first of each"


def _write_sheet(report: DedupReport, path: Path, limit: int) -> Path:
    """The largest groups as rows of pictures (near groups, or exact ones when there are no near ones)."""
    from mmgen.errors import ConfigError
    from mmgen.generate.sheet import SheetRow, save_sheet

    kind, groups = ("near", report.near) if report.near else ("exact", report.exact)
    groups = groups if limit == 0 else groups[:limit]
    if not groups:
        raise ConfigError(f"no duplicate groups in index {report.index!r} to draw on a sheet")
    rows = []
    for number, group in enumerate(groups, 1):
        drawn = group[:SHEET_COLUMNS]
        first = report.refs.get(group[0])
        more = len(group) - len(drawn)
        note = f"ids {drawn[0]}..{drawn[-1]}" + (f", +{more} more" if more else "")
        label = f"{kind} {number}: {len(group)} items" + (f" - {first.text}" if first and first.text else "")
        rows.append(SheetRow(label, [_picture(report.refs.get(i)) for i in drawn], note=note))
    title = f"index {report.index}: {kind} copies" + (f", cosine >= {report.threshold:g}" if kind == "near" else "")
    return save_sheet(rows, path, scale=1, title=title, header="copies (by item id)")


def _picture(ref: Any) -> Any:
    """An item's picture as a (SHEET_SIDE, SHEET_SIDE, 3) uint8 array on white; grey when its file cannot be read."""
    import numpy as np
    from PIL import Image

    from mmgen.data.images import load_image
    from mmgen.errors import ImageLoadError

    box = Image.new("RGB", (SHEET_SIDE, SHEET_SIDE), (255, 255, 255))
    try:
        img = load_image(ref.uri, max_side=SHEET_SIDE * 2) if ref is not None and ref.uri else None
    except ImageLoadError:
        img = None
    if img is None:
        box.paste((200, 200, 200), (0, 0, SHEET_SIDE, SHEET_SIDE))
    else:
        img.thumbnail((SHEET_SIDE, SHEET_SIDE))
        box.paste(img, ((SHEET_SIDE - img.width) // 2, (SHEET_SIDE - img.height) // 2))
    return np.asarray(box, dtype=np.uint8)
