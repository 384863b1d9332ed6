"""The typer app end to end with CliRunner: index, search (all four directions), info, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select
from typer.testing import CliRunner

from mmgen.cli import app
from mmgen.store.db import open_store
from mmgen.store.models import Output, Prompt, Retrieval
from mmgen.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def invoke(*args: str) -> object:
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_help_is_fast_and_imports_nothing_heavy() -> None:
    code = (
        "import runpy, sys\n"
        "sys.argv = ['mmgen', '--help']\n"
        "try:\n"
        f"    runpy.run_path({str(ROOT / 'cli.py')!r}, run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('torch', 'faiss', 'open_clip', 'sentence_transformers', 'sqlalchemy', 'numpy')"
        " if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "Usage" in out.stdout
    assert "HEAVY []" in out.stdout, out.stdout[-500:]


def test_index_search_json_where_and_recording(tmp_path, text_folder) -> None:
    ws = str(tmp_path / "ws")
    res = invoke("index", str(text_folder), "--workspace", ws, "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["added"] == 30 and report["failed"] == 1 and report["encoder"] == "st:all-MiniLM-L6-v2"
    assert report["failures"][0]["key"] == "latin1"

    res = invoke("search", "a picture of a bus number 7", "--workspace", ws, "-k", "3", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["query"]["to"] == "text" and len(out["hits"]) == 3
    first = out["hits"][0]
    assert set(first) >= {"id", "score", "modality", "text", "uri", "meta"}
    assert first["text"] == "a picture of a bus number 7" and first["score"] > 0.99

    # where: a column filter and a hostile value that must match nothing (and break nothing)
    res = invoke("search", "bus", "--workspace", ws, "--where", "corpus=nope", "--json")
    assert json.loads(res.stdout)["hits"] == []
    res = invoke("search", "bus", "--workspace", ws, "--where", "group=x' OR 1=1 --", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["hits"] == []

    store = open_store(Workspace.resolve(ws).db_url)
    with store.session() as s:
        assert s.scalar(select(func.count(Prompt.id))) == 3
        prompt = s.scalars(select(Prompt).order_by(Prompt.id)).first()
        assert prompt.kind == "search" and prompt.text == "a picture of a bus number 7"
        ranks = s.execute(select(Retrieval.rank, Retrieval.item_id).where(Retrieval.prompt_id == prompt.id)).all()
        assert [r for r, _ in ranks] == [1, 2, 3] and ranks[0][1] == first["id"]
        assert s.scalar(select(Output.latency_ms).where(Output.prompt_id == prompt.id)) > 0
    store.close()

    res = invoke("info", "--workspace", ws, "--json")
    info = json.loads(res.stdout)
    assert info["indexes"][0]["vectors"] == {"text": 30} and "flat" in info["presets"]


def test_all_four_directions_with_a_local_open_clip_checkpoint(tmp_path, image_folder, tiny_clip) -> None:
    ws = str(tmp_path / "ws")
    res = invoke("index", str(image_folder), "--workspace", ws, "--encoder", tiny_clip.dir_name, "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["failed"] == 4
    query_image = str(image_folder / "img005.png")
    for args, to in (
        (["a red circle"], "image"),
        (["a red circle", "--to", "text"], "text"),
        (["--image", query_image], "image"),
        (["--image", query_image, "--to", "text"], "text"),
    ):
        res = invoke("search", *args, "--workspace", ws, "-k", "4", "--json")
        assert res.exit_code == 0, res.output
        out = json.loads(res.stdout)
        assert out["query"]["to"] == to and len(out["hits"]) == 4
        assert all(h["modality"] == to for h in out["hits"])
    # image -> image: the indexed image itself is the nearest neighbour
    res = invoke("search", "--image", query_image, "--workspace", ws, "-k", "1", "--json")
    assert json.loads(res.stdout)["hits"][0]["uri"] == query_image


def test_errors_are_one_clear_line(tmp_path, text_folder) -> None:
    ws = str(tmp_path / "ws")
    res = invoke("index", str(text_folder), "--workspace", ws, "--encoder", "nosuch:thing")
    assert res.exit_code == 2 and "unknown encoder" in res.stderr and "st:" in res.stderr and "openclip:" in res.stderr
    res = invoke("index", str(tmp_path / "missing-folder"), "--workspace", ws)
    assert res.exit_code == 2 and "error:" in res.stderr
    res = invoke("search", "anything", "--workspace", ws)
    assert res.exit_code == 2 and "no index yet" in res.stderr
    invoke("index", str(text_folder), "--workspace", ws, "--quiet")
    res = invoke("search", "--image", str(tmp_path / "x.png"), "--workspace", ws)
    assert res.exit_code == 2 and "text-only encoder" in res.stderr
    res = invoke("search", "bus", "--workspace", ws, "--where", "novalue")
    assert res.exit_code == 2 and "key=value" in res.stderr
    res = invoke("search", "--workspace", ws)
    assert res.exit_code == 2 and "query text or --image" in res.stderr


def test_data_manifest_round_trip(tmp_path, text_folder) -> None:
    out = tmp_path / "m.jsonl"
    res = invoke("data", "manifest", str(text_folder), "-o", str(out))
    assert res.exit_code == 0, res.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 30 and all("text" in r for r in lines)
    ws = str(tmp_path / "ws")
    res = invoke("index", str(out), "--workspace", ws, "--json")
    assert json.loads(res.stdout)["added"] == 30


def test_db_upgrade_command(tmp_path) -> None:
    ws = str(tmp_path / "ws")
    res = invoke("db", "upgrade", "--workspace", ws)
    assert res.exit_code == 0 and "revision" in res.stdout
    assert (tmp_path / "ws" / "mmgen.db").exists()


def test_index_and_search_on_each_backend(tmp_path, text_folder, db_url) -> None:
    """The whole flow on SQLite and on PostgreSQL (`--db`), including an incremental re-run and prune."""
    ws = str(tmp_path / "ws")
    res = invoke("index", str(text_folder), "--workspace", ws, "--db", db_url, "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["added"] == 30
    (text_folder / "c005.txt").unlink()
    res = invoke("index", str(text_folder), "--workspace", ws, "--db", db_url, "--prune", "--json")
    report = json.loads(res.stdout)
    assert (report["added"], report["unchanged"], report["removed"]) == (0, 29, 1)
    res = invoke("search", "a picture of a cat number 8", "--workspace", ws, "--db", db_url, "-k", "2",
                 "--where", "corpus=" + str(text_folder.resolve()), "--json")
    assert res.exit_code == 0, res.output
    hits = json.loads(res.stdout)["hits"]
    assert hits[0]["text"] == "a picture of a cat number 8" and len(hits) == 2


def test_eval_retrieval_command(tmp_path, image_folder, tiny_clip) -> None:
    manifest = tmp_path / "m.jsonl"
    assert invoke("data", "manifest", str(image_folder), "-o", str(manifest)).exit_code == 0
    res = invoke("eval", "retrieval", str(manifest), "--encoder", tiny_clip.dir_name, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out["image_to_text"]) == {"R@1", "R@5", "R@10"} and out["n_images"] == 12
    assert out["skipped"] == 4  # the four unreadable images, each with its reason
    res = invoke("eval", "retrieval", str(manifest), "--encoder", "st:all-MiniLM-L6-v2")
    assert res.exit_code == 2 and "embeds text only" in res.stderr
    res = invoke("data", "protocol", "nope", "-o", str(tmp_path / "p"))
    assert res.exit_code == 2 and "loso" in res.stderr and "product" in res.stderr


def test_iconify_set_indexes_with_its_licence_and_fetch_names_the_choices(tmp_path) -> None:
    from mmgen.data import iconify

    data = tmp_path / "data"
    root = iconify.package_dir(data, "tabler")
    root.mkdir(parents=True)
    icons = {"bus": {"body": '<path d="M2 2h8v8H2z"/>'}, "bus-off": {"body": '<path d="M2 2h4v8H2z"/>'}}
    (root / "icons.json").write_text(json.dumps({"prefix": "tabler", "icons": icons, "width": 24, "height": 24}))
    (root / "info.json").write_text(json.dumps({"name": "Tabler Icons", "license": {"spdx": "MIT"}}))
    iconify.render_set(data, "tabler", progress=False)
    ws = str(tmp_path / "ws")
    res = invoke("index", "tabler", "--workspace", ws, "--data-dir", str(data), "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["added"] == 2
    info = json.loads(invoke("info", "--workspace", ws, "--json").stdout)
    assert info["corpora"] == {"tabler": 2} and info["licences"] == {"tabler": "MIT (Tabler Icons)"}
    res = runner.invoke(app, ["data", "fetch", "nope", "--data-dir", str(data)])
    assert res.exit_code == 2 and "iconify:PREFIX" in res.output


def test_index_untrusted_reports_each_refused_file_and_indexes_the_rest(tmp_path, tiny_clip) -> None:
    import struct
    import zlib

    from PIL import Image

    folder = tmp_path / "from-elsewhere"
    folder.mkdir()
    for i, color in enumerate(("red", "green", "blue")):
        Image.new("RGB", (32, 32), color).save(folder / f"ok{i}.png")
    (folder / "ref.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8">'
                                    '<image href="ok0.png" width="8" height="8"/></svg>', encoding="utf-8")  # fmt: skip
    (folder / "entity.svg").write_text('<!DOCTYPE svg [<!ENTITY x "y">]><svg xmlns="http://www.w3.org/2000/svg"/>')
    with open(folder / "big.png", "wb") as fh:
        fh.truncate(20_000_001)
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 8000, 8000, 8, 2, 0, 0, 0)  # a header declaring 64 Mpx, and no pixels
    (folder / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    assert "For folders from elsewhere" in " ".join(invoke("index", "--help").output.replace("│", " ").split())
    ws = str(tmp_path / "ws")
    res = invoke("index", str(folder), "--workspace", ws, "--encoder", tiny_clip.dir_name, "--untrusted", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    reasons = {f["key"]: f["reason"] for f in out["failures"]}
    assert (out["added"], out["failed"], out["totals"]) == (4, 3, {"image": 4})
    assert "max_bytes" in reasons["big"] and "max_pixels" in reasons["huge"] and "DOCTYPE" in reasons["entity"]
