"""`mmgen export workspace` / `mmgen import`: a workspace moves to another folder and backend whole."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from mmgen.cli import app
from mmgen.store import open_store
from mmgen.store.models import Base

runner = CliRunner()


def invoke(*args: str, ok: bool = True):  # noqa: ANN201 - click's Result
    res = runner.invoke(app, list(args))
    if ok:
        assert res.exit_code == 0, res.output
    return res


def hits(ws: Path, *db: str) -> list[tuple[str, float]]:
    res = invoke("search", "a red circle", "--workspace", str(ws), *db, "--to", "image", "-k", "6", "--json")
    return [(h["key"], round(h["score"], 5)) for h in json.loads(res.stdout)["hits"]]


def counts(url: str) -> dict[str, int]:
    with open_store(url) as store, store.session() as s:
        return {t.name: s.scalar(select(func.count()).select_from(t)) or 0 for t in Base.metadata.sorted_tables}


@pytest.mark.parametrize("archive", ["export", "export.tar.gz"])
def test_export_then_import_elsewhere_and_on_each_backend(tmp_path, image_folder, tiny_clip, db_url, archive) -> None:
    src = tmp_path / "src"
    invoke("index", str(image_folder), "--workspace", str(src), "--encoder", tiny_clip.dir_name, "--quiet")
    before = hits(src)  # also records a prompt, its retrievals and an output
    dest = tmp_path / archive
    out = json.loads(invoke("export", "workspace", "-o", str(dest), "--workspace", str(src), "--json").stdout)
    assert out["rows"]["items"] == 16 and out["rows"]["prompts"] == 1 and out["files"] > 0

    moved = tmp_path / "moved"
    invoke("import", str(dest), "--workspace", str(moved), "--db", db_url)
    assert counts(db_url) == counts(f"sqlite:///{src / 'mmgen.db'}")  # every row of every table
    assert hits(moved, "--db", db_url) == before

    def problems(*where: str) -> list[tuple[str, int]]:  # the 4 bad images of the folder, in both
        found = json.loads(runner.invoke(app, ["check", *where, "--json"]).stdout)["problems"]
        return [(p["code"], p["count"]) for p in found]

    assert problems("--workspace", str(moved), "--db", db_url) == problems("--workspace", str(src)) == [
        ("row-missing", 4)
    ]
    # A new row after the import gets a fresh id (PostgreSQL's sequences moved past the imported ids).
    invoke("search", "a blue square", "--workspace", str(moved), "--db", db_url, "--json")
    assert counts(db_url)["prompts"] == 3

    again = invoke("import", str(dest), "--workspace", str(tmp_path / "third"), "--db", db_url, ok=False)
    assert again.exit_code != 0 and "already holds rows" in again.output


def test_a_damaged_export_is_refused(tmp_path, image_folder, tiny_clip) -> None:
    src = tmp_path / "src"
    invoke("index", str(image_folder), "--workspace", str(src), "--encoder", tiny_clip.dir_name, "--quiet")
    dest = tmp_path / "export"
    invoke("export", "workspace", "-o", str(dest), "--workspace", str(src))
    vectors = next((dest / "files").rglob("image.f32"))
    vectors.write_bytes(vectors.read_bytes()[:-4] + b"\0\0\0\0")
    res = invoke("import", str(dest), "--workspace", str(tmp_path / "new"), ok=False)
    assert res.exit_code != 0 and "does not match its checksum" in res.output
    assert counts(f"sqlite:///{tmp_path / 'new' / 'mmgen.db'}")["items"] == 0  # nothing half-imported
    again = invoke("export", "workspace", "-o", str(dest), "--workspace", str(src), ok=False)
    assert again.exit_code != 0 and "exists already" in again.output
    with tarfile.open(tmp_path / "junk.tar", "w"):
        pass
    junk = invoke("import", str(tmp_path / "junk.tar"), "--workspace", str(tmp_path / "new"), ok=False)
    assert junk.exit_code != 0 and "not an mmgen export" in junk.output
