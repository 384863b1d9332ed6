"""Synthetic items: `mmgen index outputs` indexes generated images, marked; search and the readers
of an index for training leave them out unless asked, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

from PIL import Image
from sqlalchemy import select
from typer.testing import CliRunner

from mmgen.cli import app
from mmgen.index.rows import load_vectors
from mmgen.store import open_store
from mmgen.store.models import Item, ModelRecord, Output, Prompt
from mmgen.workspace import Workspace

runner = CliRunner()


def invoke(*args: str):  # noqa: ANN201 - click's Result
    res = runner.invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res


def record_generation(ws: Workspace, text: str, n: int, missing: int = 0) -> list[int]:
    """What `mmgen generate` records: a generate prompt, a generator row, and one output per PNG it wrote."""
    ws.outputs_dir.mkdir(parents=True, exist_ok=True)
    with open_store(ws.db_url) as store, store.session(write=True) as s:
        model = ModelRecord(kind="generator", name="gen", version="abc123", checksum="abc123" * 8)
        prompt = Prompt(kind="generate", text=text, params={"n": n}, user="ann")
        s.add_all([model, prompt])
        s.flush()
        ids = []
        for i in range(n + missing):
            path = ws.outputs_dir / f"{prompt.id}-{i}.png"
            if i < n:
                Image.new("RGB", (48, 48), (220, 30 + 20 * i, 30)).save(path)
            out = Output(prompt_id=prompt.id, file_uri=str(path), model_id=model.id)
            s.add(out)
            s.flush()
            ids.append(int(out.id))
        s.commit()
    return ids


def test_outputs_index_as_synthetic_and_stay_out_unless_asked(tmp_path, image_folder, tiny_clip, db_url) -> None:
    ws_dir = str(tmp_path / "ws")
    ws = Workspace.resolve(ws_dir, db_url)
    common = ("--workspace", ws_dir, "--db", db_url)
    invoke("index", str(image_folder), *common, "--encoder", tiny_clip.dir_name, "--quiet")
    outputs = record_generation(ws, "a red circle", 2, missing=1)

    report = json.loads(invoke("index", "outputs", *common, "--json").output)
    assert report["added"] == 2 and report["failed"] == 1
    assert "is gone" in report["failures"][0]["reason"]
    with open_store(db_url) as store, store.session() as s:
        made = s.scalars(select(Item).where(Item.synthetic.is_(True)).order_by(Item.id)).all()
        assert [i.key for i in made] == [f"output-{outputs[0]}", f"output-{outputs[1]}"]
        assert all(i.text == "a red circle" and i.meta["prompt_id"] and i.meta["model"] == "gen@abc123" for i in made)
        real = s.scalar(select(Item).where(Item.synthetic.is_(False)).limit(1))
        assert real is not None

    def corpora(*extra: str) -> set[str]:
        res = invoke("search", "a red circle", *common, "--to", "image", "-k", "40", "--json", *extra)
        return {h["corpus"] for h in json.loads(res.output)["hits"]}

    assert "outputs" not in corpora()
    assert "outputs" in corpora("--with-synthetic")
    assert corpora("--where", "synthetic=true") == {"outputs"}

    with open_store(db_url) as store:
        plain = load_vectors(ws, store, None, ("image",))
        both = load_vectors(ws, store, None, ("image",), with_synthetic=True)
    assert len(both.modalities["image"]) == len(plain.modalities["image"]) + 2
    assert plain.synthetic == {"rows": 2, "used": False} and both.synthetic == {"rows": 2, "used": True}

    again = json.loads(invoke("index", "outputs", *common, "--json").output)  # incremental, as every source
    assert again["added"] == 0 and again["failed"] == 1


def test_forget_removes_the_synthetic_items_of_the_users_outputs(tmp_path, image_folder, tiny_clip) -> None:
    ws_dir = str(tmp_path / "ws")
    ws = Workspace.resolve(ws_dir)
    invoke("index", str(image_folder), "--workspace", ws_dir, "--encoder", tiny_clip.dir_name, "--quiet")
    record_generation(ws, "a red circle", 2)
    invoke("index", "outputs", "--workspace", ws_dir, "--quiet")
    report = json.loads(invoke("forget", "--user", "ann", "--workspace", ws_dir, "--json").output)
    assert report["deleted"]["items"] == 2 and len(report["files"]) == 2
    with open_store(ws.db_url) as store, store.session() as s:
        assert s.scalar(select(Item).where(Item.synthetic.is_(True))) is None
    res = invoke("search", "a red circle", "--workspace", ws_dir, "--to", "image", "-k", "40", "--json",
                 "--with-synthetic")  # fmt: skip
    assert {h["corpus"] for h in json.loads(res.output)["hits"]} == {str(image_folder)}
