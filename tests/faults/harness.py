"""The fault-injection harness: the five killed commands, their clean references, one kill cycle,
the verification of a workspace after the rerun, and the summary (tests/faults/conftest.py).

- `Harness.command(name)`: one of the five killed commands, with its clean reference run (timed:
  its wall time, widened by `calibrate` when cycles run side by side, is the upper end of the
  kill delays), how to prepare its starting workspace and how to verify the result;
- `Harness.kill_cycle(name, seed)`: prepare, start, SIGKILL after a seeded delay (uniform in
  [0.3 s, that wall time]), note where the kill landed (before the command changed anything
  durable, during, or after it had exited), run the same command again, verify; one record for
  the summary. `kill_cycles` runs several; `point_cycle` kills at an exact place in the code
  instead (a kill point, forkserver.py);
- workspaces are read with sqlite3 and numpy, independently of the code under test (FAISS codes
  through `IndexFolder`), and checked with `mmgen check --json` and `mmgen search --json`.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import sqlite3
import struct
import sys
import threading
import uuid
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from processes import (  # tests/faults/processes.py (loaded by path in conftest.py)
        Launcher,
        Proc,
    )

PER_GROUP = 32  # 8 concepts x 32 drawings = 256 records
BATCH = 16  # items per batch (and per commit) of the killed `mmgen index` runs
MIN_DELAY_S = 0.3
TOLERANCE = 1e-5
QUERY = "a red circle"
TOWER = {"vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "head_width": 8}}
TRAIN_ENCODER = ["--tower", "TOWER", "--image-size", "32", "--batch-size", "8", "--steps", "12"]
TRAIN_HASHER = ["--bits", "32", "--name", "h32", "--steps", "200", "--hidden", "16"]
COMMANDS = ("index", "index --hash", "index --reembed", "train encoder", "train hasher")
ITEMS = "manifest records without their item or a vector of theirs; items and index rows stored twice"
MODELS = "models that do not load after the rerun; extra SQL models rows for the name"
# Kill cycles run side by side: 2 halves the wall time on an idle 2-core machine; on a loaded one the
# runs only slow each other down (and need a wider kill window, see `Harness.calibrate`).
JOBS = int(os.environ.get("MMGEN_FAULTS_JOBS", "1"))
_IN_PROCESS = threading.Lock()  # loads in the test process itself (the encoder cache is process-wide)


# ---- reading a workspace (sqlite3 and numpy, independent of the code under test) ------------
VECTOR_HEADER = struct.Struct("<8sII48x")


class PgDatabases:
    """The PostgreSQL variant: one database per workspace folder, created on first use, cloned with the
    folder (CREATE DATABASE ... TEMPLATE), dropped at the end. Read back with psycopg."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self._urls: dict[Path, str] = {}
        self._template: str | None = None
        self._lock = threading.Lock()
        _PG_REGISTRIES.append(self)

    def _admin(self, sql: str) -> None:
        sys.modules["mmgen_tests_pgserver"]._admin(self.server_url, sql)  # tests/pgserver.py

    def _url(self, name: str) -> str:
        from sqlalchemy.engine import make_url

        return make_url(self.server_url).set(database=name).render_as_string(hide_password=False)

    def _migrated(self) -> str:
        """A migrated, empty database, the template of every new workspace's (a PostgreSQL deployment's
        database is migrated once; Alembic's DDL there is transactional, so a kill mid-migration rolls back).
        Without it most of a killed `index` run on a fresh database would be the migration itself."""
        if self._template is None:
            from mmgen.store.db import open_store

            name = f"mmgen_fault_{uuid.uuid4().hex[:12]}"
            self._admin(f'CREATE DATABASE "{name}"')
            self._urls[Path(f"/template/{name}")] = self._url(name)  # dropped with the rest
            open_store(self._url(name)).close()
            self._template = name
        return self._template

    def url(self, ws: Path, template: Path | None = None) -> str:
        """The database of `ws` (created on first use: migrated and empty, or a copy of `template`'s)."""
        ws = ws.resolve()
        with self._lock:
            if ws not in self._urls:
                name = f"mmgen_fault_{uuid.uuid4().hex[:12]}"
                source = self._urls[template.resolve()].rsplit("/", 1)[1] if template else self._migrated()
                if source:  # a template must have no sessions (an in-process store's pool may linger)
                    self._admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{source}' "
                                "AND pid <> pg_backend_pid()")  # fmt: skip
                self._admin(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{source}"' if source else ""))
                self._urls[ws] = self._url(name)
            return self._urls[ws]

    def get(self, ws: Path) -> str | None:
        return self._urls.get(ws.resolve())

    def drop_all(self) -> None:
        for url in self._urls.values():
            self._admin(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
        self._urls.clear()


class _PgConnection:
    """psycopg behind the sqlite3 calls used here (`?` placeholders, autocommit reads)."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.con = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return self.con.execute(sql.replace("?", "%s"), params)

    def close(self) -> None:
        self.con.close()


_PG_REGISTRIES: list[PgDatabases] = []  # every PostgreSQL harness's workspaces (none: all SQLite)


def pg_url(ws: Path) -> str | None:
    return next((url for reg in _PG_REGISTRIES if (url := reg.get(ws)) is not None), None)


def db_errors() -> tuple[type[BaseException], ...]:
    try:
        import psycopg
    except ImportError:
        return (sqlite3.Error,)
    return (sqlite3.Error, psycopg.Error)


def has_store(ws: Path) -> bool:
    return pg_url(ws) is not None or (ws / "mmgen.db").exists()


def connect(ws: Path) -> Any:
    """The workspace's store, read with sqlite3 (or psycopg for a PostgreSQL workspace)."""
    url = pg_url(ws)
    if url is not None:
        return _PgConnection(url)
    con = sqlite3.connect(ws / "mmgen.db", timeout=30)
    con.execute("PRAGMA busy_timeout = 30000")
    return con


def read_vectors(path: Path) -> np.ndarray:
    """All rows of an append-only vector file (a torn last row is left out, as the indexer does)."""
    raw = path.read_bytes()
    magic, dim, _ = VECTOR_HEADER.unpack(raw[: VECTOR_HEADER.size])
    assert magic == b"MMGVEC01", path
    body = raw[VECTOR_HEADER.size :]
    n = len(body) // (4 * dim)
    return np.frombuffer(body[: n * 4 * dim], dtype=np.float32).reshape(n, dim)


@dataclass
class IndexState:
    """What SQL and the vector files of one index hold."""

    items: list[tuple[int, str, str]]  # (item id, corpus, key)
    rows: list[tuple[str, int, int]]  # (modality, row id, item id)
    encoder_checksum: str | None
    vectors: dict[str, np.ndarray]

    def by_key(self) -> dict[tuple[str, str], np.ndarray]:
        """(key, modality) -> its live vector."""
        keys = {iid: key for iid, _, key in self.items}
        return {(keys[iid], m): self.vectors[m][rid] for m, rid, iid in self.rows if rid < len(self.vectors[m])}


def read_index(ws: Path, index: str = "default") -> IndexState:
    con = connect(ws)
    try:
        items = con.execute("SELECT i.id, c.name, i.key FROM items i JOIN corpora c ON c.id = i.corpus_id").fetchall()
        rec = con.execute("SELECT id, encoder_checksum FROM indexes WHERE name = ?", (index,)).fetchone()
        rows = [] if rec is None else con.execute(
            "SELECT modality, row_id, item_id FROM index_rows WHERE index_id = ?", (rec[0],)).fetchall()  # fmt: skip
    finally:
        con.close()
    folder = ws / index
    vectors = {m: read_vectors(folder / f"{m}.f32") for m in ("image", "text") if (folder / f"{m}.f32").exists()}
    return IndexState(items, rows, rec[1] if rec else None, vectors)


def snapshot(ws: Path) -> dict[str, Any]:
    """The durable state a command changes: files (size, mtime) and SQL row counts; the lock file left out."""
    files = {}
    if ws.exists():
        for path in ws.rglob("*"):
            if path.is_file() and path.name != ".lock" and not path.name.startswith("mmgen.db"):
                st = path.stat()
                files[str(path.relative_to(ws))] = (st.st_size, st.st_mtime_ns)
    sql: dict[str, Any] = {}
    if has_store(ws):
        con = connect(ws)
        try:
            for table in ("items", "index_rows", "indexes", "models"):
                try:
                    sql[table] = tuple(con.execute(f"SELECT count(*), max(id) FROM {table}").fetchone())
                except db_errors():  # not migrated yet
                    sql[table] = (0, None)
        finally:
            con.close()
    return {"files": files, "sql": {k: v for k, v in sql.items() if v != (0, None)}}


def progress_shown(stderr: str) -> tuple[int, int] | None:
    """The last `N/M` of a tqdm bar in a command's stderr (steps or items done), or None."""
    found = re.findall(r"(\d+)/(\d+) \[", stderr)
    return (int(found[-1][0]), int(found[-1][1])) if found else None


# ---- the commands ---------------------------------------------------------------------------
@dataclass
class Command:
    """One killed command: how to prepare its workspace, its argv, and how to verify it after the rerun."""

    name: str
    prepare: Callable[[Path], Path]  # scratch dir -> workspace
    argv: Callable[[Path], list[str]]
    verify: Callable[[Path, Proc], dict[str, Any]]
    expected_s: float  # wall time of the clean run: the upper end of the kill delays
    unit: str  # what `lost` and `duplicates` count
    calibrated: bool = False  # expected_s widened by `Harness.calibrate`


@dataclass
class Harness:
    """The session's launcher, corpus, encoders, templates, clean references and kill records."""

    launcher: Launcher
    root: Path
    manifest: Path
    encoder_a: str
    encoder_b: str
    records: list[dict[str, Any]] = field(default_factory=list)
    pg: PgDatabases | None = None  # set: every workspace's store is a PostgreSQL database (else SQLite)
    point_records: list[dict[str, Any]] = field(default_factory=list)
    windows: dict[str, Any] = field(default_factory=dict)  # per command: the runs the kill window was fitted to
    timings: dict[str, float] = field(default_factory=dict)
    _commands: dict[str, Command] = field(default_factory=dict)
    _refs: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """The settings of the session, for the summary."""
        return {
            "records": len(self.keys), "batch_size": BATCH, "jobs": JOBS, "tolerance": TOLERANCE,
            "kill_delay": f"uniform in [{MIN_DELAY_S} s, kill_window_s]: the wall time of the clean run (with "
                          "jobs > 1, the slowest of it and of runs side by side, as the cycles run)",
            "train_encoder": TRAIN_ENCODER, "train_hasher": TRAIN_HASHER,
        }  # fmt: skip

    def windows_report(self) -> dict[str, Any]:
        """The kill window of each command used, and the runs it was fitted to."""
        return {"kill_window_s": {n: round(c.expected_s, 2) for n, c in self._commands.items()},
                "window_runs": self.windows}  # fmt: skip

    # -- corpus and workspaces ------------------------------------------------------------
    @staticmethod
    def read_index(ws: Path, index: str = "default") -> IndexState:
        """What SQL and the vector files of an index hold (read with sqlite3 and numpy)."""
        return read_index(ws, index)

    @property
    def keys(self) -> list[str]:
        return [json.loads(line)["id"] for line in self.manifest.read_text(encoding="utf-8").splitlines()]

    def ws_args(self, ws: Path) -> list[str]:
        return ["--workspace", str(ws), *(["--db", self.pg.url(ws)] if self.pg else [])]

    def copy_ws(self, src: Path, dst: Path) -> Path:
        """A copy of a workspace: its folder, and its database where that is PostgreSQL."""
        shutil.copytree(src, dst)
        if self.pg:
            self.pg.url(dst, template=src)
        return dst

    def index_argv(self, ws: Path, *extra: str) -> list[str]:
        return ["index", str(self.manifest), *self.ws_args(ws), "--batch-size", str(BATCH), "--quiet", "--json", *extra]

    def run_ok(self, argv: list[str], tag: str) -> tuple[Proc, float]:
        proc, seconds = self.launcher.run(argv, self.root, tag)
        assert proc.rc == 0, f"mmgen {' '.join(argv)} failed ({proc.rc}): {proc.stderr()[-3000:]}"
        return proc, seconds

    # -- clean references (each built once, on first use) -------------------------------
    def _ref(self, name: str, build: Callable[[], Any]) -> Any:
        if name not in self._refs:
            started = time.monotonic()
            self._refs[name] = build()
            self.timings[f"setup {name}"] = round(time.monotonic() - started, 2)
        return self._refs[name]

    def clean_index(self) -> dict[str, Any]:
        """A clean `mmgen index` with encoder A; its copy before any model is the template `indexed-a`."""

        def build() -> dict[str, Any]:
            ws = self.root / "clean-a"
            _, seconds = self.run_ok(self.index_argv(ws, "--encoder", self.encoder_a), "clean-index")
            self.copy_ws(ws, self.root / "indexed-a")
            return {"ws": ws, "seconds": seconds, "vectors": read_index(ws).by_key()}

        return self._ref("index", build)

    def clean_hasher(self) -> dict[str, Any]:
        """A clean `mmgen train hasher` on the clean index (its folder is copied into `--hash` workspaces)."""

        def build() -> dict[str, Any]:
            ws = self.clean_index()["ws"]
            _, seconds = self.run_ok(["train", "hasher", *self.ws_args(ws), *TRAIN_HASHER], "clean-hasher")
            manifest = json.loads((ws / "models" / "h32" / "manifest.json").read_text())
            return {"ws": ws, "seconds": seconds, "checksum": manifest["checksum"], "folder": ws / "models" / "h32"}

        return self._ref("hasher", build)

    def hash_start(self, scratch: Path) -> Path:
        """A fresh workspace holding only the trained hasher h32 (saved and registered)."""
        template = self._ref("hash-start", lambda: self._hash_template())
        return self.copy_ws(template, scratch / "ws")

    def _hash_template(self) -> Path:
        from mmgen.artifacts import register_model
        from mmgen.workspace import Workspace

        hasher = self.clean_hasher()
        ws = self.root / "hash-start"
        shutil.copytree(hasher["folder"], ws / "models" / "h32")
        manifest = json.loads((ws / "models" / "h32" / "manifest.json").read_text())
        register_model(Workspace.resolve(ws, self.pg.url(ws) if self.pg else None), "hasher", "h32", ws / "models" / "h32", manifest["checksum"], manifest)
        return ws

    def clean_hash_index(self) -> dict[str, Any]:
        def build() -> dict[str, Any]:
            ws = self.hash_start(self.root / "clean-hash")
            _, seconds = self.run_ok(self.index_argv(ws, "--encoder", self.encoder_a, "--hash", "h32"), "clean-hash")
            return {"ws": ws, "seconds": seconds, "vectors": read_index(ws).by_key(), "codes": read_codes(ws)}

        return self._ref("index --hash", build)

    def clean_reembed(self) -> dict[str, Any]:
        def build() -> dict[str, Any]:
            self.clean_index()
            ws = self.root / "clean-reembed"
            self.copy_ws(self.root / "indexed-a", ws)
            _, seconds = self.run_ok(self.index_argv(ws, "--reembed", "--encoder", self.encoder_b), "clean-reembed")
            return {"ws": ws, "seconds": seconds, "vectors": read_index(ws).by_key()}

        return self._ref("index --reembed", build)

    def clean_train(self) -> dict[str, Any]:
        def build() -> dict[str, Any]:
            ws = self.root / "clean-train"
            _, seconds = self.run_ok(self.train_encoder_argv(ws), "clean-train")
            manifest = json.loads((ws / "models" / "enc" / "manifest.json").read_text())
            return {"ws": ws, "seconds": seconds, "checksum": manifest["checksum"]}

        return self._ref("train encoder", build)

    def train_encoder_argv(self, ws: Path) -> list[str]:
        tower = self.root / "tower.json"
        if not tower.exists():
            tower.write_text(json.dumps(TOWER), encoding="utf-8")
        args = [str(tower) if a == "TOWER" else a for a in TRAIN_ENCODER]
        return ["train", "encoder", str(self.manifest), "--name", "enc", *self.ws_args(ws), *args]

    # -- the five commands ----------------------------------------------------------------
    def command(self, name: str) -> Command:
        """The command `name` (one of COMMANDS), its clean reference run done."""
        if name not in self._commands:
            self._commands[name] = self._make(name)
        return self._commands[name]

    def _make(self, name: str) -> Command:
        a, b = self.encoder_a, self.encoder_b
        fresh = lambda scratch: scratch / "ws"
        copy_indexed = lambda scratch: self.copy_ws(self.root / "indexed-a", scratch / "ws")
        if name == "index":
            ref = self.clean_index()
            return Command(name, fresh, lambda ws: self.index_argv(ws, "--encoder", a),
                           lambda ws, proc: self.verify_index(ws, ref["vectors"]), ref["seconds"], ITEMS)  # fmt: skip
        if name == "index --hash":
            ref = self.clean_hash_index()
            return Command(name, self.hash_start, lambda ws: self.index_argv(ws, "--encoder", a, "--hash", "h32"),
                           lambda ws, proc: self.verify_index(ws, ref["vectors"], ref["codes"]), ref["seconds"],
                           ITEMS)  # fmt: skip
        if name == "index --reembed":
            ref = self.clean_reembed()
            return Command(name, copy_indexed, lambda ws: self.index_argv(ws, "--reembed", "--encoder", b),
                           lambda ws, proc: self.verify_index(ws, ref["vectors"]), ref["seconds"], ITEMS)  # fmt: skip
        if name == "train encoder":
            ref = self.clean_train()
            return Command(name, fresh, lambda ws: [*self.train_encoder_argv(ws), "--resume", "auto"],
                           lambda ws, proc: self.verify_encoder(ws, proc, ref["checksum"]), ref["seconds"],
                           MODELS)  # fmt: skip
        if name == "train hasher":
            ref = self.clean_hasher()
            return Command(name, copy_indexed, lambda ws: ["train", "hasher", *self.ws_args(ws), *TRAIN_HASHER],
                           lambda ws, proc: self.verify_hasher(ws, ref["checksum"]), ref["seconds"],
                           MODELS)  # fmt: skip
        raise KeyError(f"unknown command {name!r}; known: {', '.join(COMMANDS)}")

    # -- verification ---------------------------------------------------------------------
    def check(self, ws: Path) -> dict[str, Any]:
        """`mmgen check --json`: ok, and the codes of what it noted."""
        proc, seconds = self.launcher.run(["check", *self.ws_args(ws), "--json"], self.root, "check")
        self.timings["check (each)"] = round(seconds, 2)
        try:
            data = json.loads(proc.stdout())
        except ValueError:
            return {"check_ok": False, "check_problems": [f"rc {proc.rc}: {proc.stderr()[-500:]}"]}
        problems = [f"{p['severity']}:{p['code']}" for p in data.get("problems", [])]
        ok = bool(data.get("ok")) and proc.rc == 0 and all(p.startswith("info:") for p in problems)
        return {"check_ok": ok, "check_problems": problems}

    def search(self, ws: Path, *extra: str) -> dict[str, Any]:
        """`mmgen search QUERY --json`: answers with hits that are committed items."""
        proc, seconds = self.launcher.run(["search", QUERY, *self.ws_args(ws), "-k", "5", "--json", *extra],
                                          self.root, "search")  # fmt: skip
        self.timings["search (each)"] = round(seconds, 2)
        if proc.rc != 0:
            return {"search_ok": False, "search_error": proc.stderr()[-500:]}
        hits = json.loads(proc.stdout())["hits"]
        con = connect(ws)
        try:
            items = dict(con.execute("SELECT id, key FROM items").fetchall())
        finally:
            con.close()
        ok = len(hits) == 5 and all(items.get(h["id"]) == h["key"] for h in hits)
        return {"search_ok": ok, **({} if ok else {"search_error": f"hits {hits}"})}

    def verify_index(self, ws: Path, reference: dict[tuple[str, str], np.ndarray],
                     ref_codes: dict[tuple[str, str], bytes] | None = None) -> dict[str, Any]:  # fmt: skip
        """Items lost / duplicated, vectors against the clean run's, `mmgen check`, a search."""
        state = read_index(ws)
        keys = self.keys
        have = [key for _, _, key in state.items]
        pairs = [(iid, m) for m, _, iid in state.rows]
        slots = [(m, rid) for m, rid, _ in state.rows]
        key_of = {iid: key for iid, _, key in state.items}
        present = {(key_of.get(iid), m) for m, _, iid in state.rows}
        lost = len(set(keys) - set(have)) + sum((k, m) not in present for k in keys for m in ("image", "text"))
        duplicates = (len(have) - len(set(have))) + (len(pairs) - len(set(pairs))) + (len(slots) - len(set(slots)))
        vectors = state.by_key()
        diffs = [float(np.abs(vectors[k] - reference[k]).max()) for k in reference if k in vectors]
        out: dict[str, Any] = {
            "lost": lost,
            "duplicates": duplicates,
            "stray_items": len(set(have) - set(keys)),
            "max_vector_diff": max(diffs) if diffs else None,
            "vectors_compared": len(diffs),
        }
        if ref_codes is not None:
            codes = read_codes(ws)
            out["codes_differing"] = sum(codes.get(k) != c for k, c in ref_codes.items())
        out.update(self.check(ws))
        out.update(self.search(ws))
        if ref_codes is not None and out["search_ok"]:
            codes_search = self.search(ws, "--mode", "codes")
            out["search_ok"] = codes_search["search_ok"]
            out.update({k: v for k, v in codes_search.items() if k != "search_ok"})
        out["ok"] = (lost == 0 and duplicates == 0 and out["stray_items"] == 0 and len(diffs) == len(reference)
                     and out["max_vector_diff"] is not None and out["max_vector_diff"] <= TOLERANCE
                     and out.get("codes_differing", 0) == 0 and out["check_ok"] and out["search_ok"])  # fmt: skip
        return out

    def _models(self, ws: Path, kind: str, name: str) -> int:
        con = connect(ws)
        try:
            found = con.execute("SELECT count(*) FROM models WHERE kind = ? AND name = ?", (kind, name)).fetchone()
            return int(found[0])
        finally:
            con.close()

    def verify_encoder(self, ws: Path, proc: Proc, clean_checksum: str) -> dict[str, Any]:
        """The rerun completed; the model loads with its manifest's checksum and encodes; one models row."""
        out: dict[str, Any] = {"completed": "completed: mmgen:enc" in proc.stdout()}
        with _IN_PROCESS:
            loads = self._load_encoder(ws, clean_checksum, out)
        rows = self._models(ws, "encoder", "enc")
        out.update({"lost": 0 if loads and rows else 1, "duplicates": max(0, rows - 1), "loads": loads})
        out.update(self.check(ws))
        out["ok"] = out["completed"] and loads and rows == 1 and out["check_ok"]
        return out

    def _load_encoder(self, ws: Path, clean_checksum: str, out: dict[str, Any]) -> bool:
        from mmgen.encoders import clear_encoder_cache, load_encoder

        try:
            manifest = json.loads((ws / "models" / "enc" / "manifest.json").read_text())
            clear_encoder_cache()
            encoder = load_encoder("mmgen:enc", device="cpu", models_dir=ws / "models")
            vec = encoder.encode_text([QUERY])
            out["same_as_clean"] = manifest["checksum"] == clean_checksum
            return encoder.checksum() == manifest["checksum"] and abs(float(np.linalg.norm(vec[0])) - 1) < 1e-4
        except Exception as exc:  # noqa: BLE001 - any failure to load is the finding
            out["load_error"] = repr(exc)
            return False
        finally:
            clear_encoder_cache()

    def verify_hasher(self, ws: Path, clean_checksum: str) -> dict[str, Any]:
        """The hasher loads with its manifest's checksum; one models row; the index still answers."""
        from mmgen.hashing.model import load_hasher

        out: dict[str, Any] = {}
        try:
            with _IN_PROCESS:
                hasher = load_hasher("h32", ws / "models")
            codes = hasher.encode(read_vectors(ws / "default" / "text.f32")[:4], "text")
            loads = codes.shape == (4, 4) and codes.dtype == np.uint8
            out["same_as_clean"] = hasher.checksum == clean_checksum
        except Exception as exc:  # noqa: BLE001 - any failure to load is the finding
            loads, out["load_error"] = False, repr(exc)
        rows = self._models(ws, "hasher", "h32")
        out.update({"lost": 0 if loads and rows else 1, "duplicates": max(0, rows - 1), "loads": loads})
        out.update(self.check(ws))
        out["ok"] = loads and rows == 1 and out["check_ok"]
        return out

    # -- kills ----------------------------------------------------------------------------
    def calibrate(self, name: str, jobs: int = JOBS) -> float:
        """With `jobs` > 1, time `jobs` uninterrupted runs side by side, as the kill cycles then run, and widen
        the kill window to the slowest of them and the clean run: runs side by side are up to twice as slow
        as a lone clean run, and a window fitted to that would put most kills before the work begins."""
        cmd = self.command(name)
        if not cmd.calibrated and jobs <= 1 and self.pg:
            # On PostgreSQL the clean reference run is slower than later ones (measured: train encoder 17 s
            # against 2-5 s), which put most kills after the command had exited: fit the window to a second run.
            scratch = self.root / "calibrate" / re.sub(r"[^A-Za-z0-9]+", "_", name)
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir(parents=True)
            _, seconds = self.run_ok(cmd.argv(cmd.prepare(scratch)), "calibrate")
            self.windows[name] = {"clean_s": round(cmd.expected_s, 2), "second_run_s": round(seconds, 2)}
            cmd.expected_s, cmd.calibrated = min(cmd.expected_s, seconds), True
        if cmd.calibrated or jobs <= 1:  # one at a time, the cycles' runs are timed like the clean one
            return cmd.expected_s

        def one(i: int) -> float:
            scratch = self.root / "calibrate" / f"{re.sub(r'[^A-Za-z0-9]+', '_', name)}-{i}"
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir(parents=True)
            _, seconds = self.run_ok(cmd.argv(cmd.prepare(scratch)), "calibrate")
            shutil.rmtree(scratch, ignore_errors=True)
            return seconds

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            times = list(pool.map(one, range(max(1, jobs))))
        self.windows[name] = {"clean_s": round(cmd.expected_s, 2), "side_by_side_s": [round(t, 2) for t in times]}
        cmd.expected_s, cmd.calibrated = max(cmd.expected_s, *times), True
        return cmd.expected_s

    def kill_cycles(self, name: str, seeds: range, jobs: int = JOBS) -> list[dict[str, Any]]:
        """`kill_cycle` for each seed, `jobs` at a time (each command runs on one thread, so two fit two cores)."""
        self.calibrate(name, jobs)  # the clean reference too, once, before any thread needs it
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            return list(pool.map(lambda seed: self.kill_cycle(name, seed), seeds))

    def kill_cycle(self, name: str, seed: int) -> dict[str, Any]:
        """Start `name`, SIGKILL it after a seeded delay, run it again to completion, verify; one record."""
        cmd = self.command(name)
        delay = random.Random(f"{name}:{seed}").uniform(MIN_DELAY_S, max(MIN_DELAY_S, cmd.expected_s))
        return self._cycle(cmd, str(seed), {"seed": seed, "delay_s": round(delay, 3)}, delay=delay)

    def point_cycle(self, name: str, point: str) -> dict[str, Any]:
        """Start `name` with a kill point (it SIGKILLs itself there), run it again to completion, verify."""
        tag = re.sub(r"[^A-Za-z0-9]+", "_", point)
        return self._cycle(self.command(name), tag, {"seed": None, "kill_point": point}, kill_at=point)

    def _cycle(self, cmd: Command, label: str, record: dict[str, Any], delay: float | None = None,
               kill_at: str | None = None) -> dict[str, Any]:  # fmt: skip
        scratch = self.root / "kills" / f"{re.sub(r'[^A-Za-z0-9]+', '_', cmd.name)}-{label}"
        if scratch.exists():
            shutil.rmtree(scratch)
        scratch.mkdir(parents=True)
        ws = cmd.prepare(scratch)
        before = snapshot(ws)
        tag = re.sub(r"[^A-Za-z0-9]+", "", cmd.name)
        proc = self.launcher.start(cmd.argv(ws), self.root, f"kill-{tag}-{label}", kill_at=kill_at)
        try:
            if delay is not None and proc.wait_until(proc.started + delay) is None:
                proc.kill()
            proc.wait()
        finally:
            proc.kill()
        killed = proc.rc == -signal.SIGKILL
        at_kill = snapshot(ws)
        shown = progress_shown(proc.stderr())
        landed = "after" if not killed else ("during" if at_kill != before or (shown and shown[0] > 0) else "before")
        record = {"command": cmd.name, "counted": cmd.unit, **record, "landed": landed, "exit_at_kill": proc.rc,
                  "detail": self._detail(cmd.name, ws, at_kill, shown)}  # fmt: skip
        rerun, seconds = self.launcher.run(cmd.argv(ws), self.root, f"rerun-{tag}-{label}")
        record.update({"rerun_rc": rerun.rc, "rerun_s": round(seconds, 2)})
        if rerun.rc != 0:
            record.update({"ok": False, "lost": None, "duplicates": None, "rerun_error": rerun.stderr()[-3000:]})
        else:
            started = time.monotonic()
            record.update(cmd.verify(ws, rerun))
            record["verify_s"] = round(time.monotonic() - started, 2)
        record["cycle_s"] = round(time.monotonic() - proc.started, 2)
        record["workspace"] = str(ws)
        (self.point_records if kill_at else self.records).append(record)
        if record["ok"]:
            shutil.rmtree(scratch, ignore_errors=True)  # a failing one is kept for inspection
        return record

    def _detail(self, name: str, ws: Path, at_kill: dict[str, Any], shown: tuple[int, int] | None) -> str:
        parts = []
        if name.startswith("index") and has_store(ws):
            try:
                state = read_index(ws)
                rows = {m: sum(r[0] == m for r in state.rows) for m in ("image", "text")}
                written = {m: len(v) for m, v in state.vectors.items()}
                parts.append(f"rows committed {rows}, vectors in files {written}, items {len(state.items)}")
            except (*db_errors(), OSError, AssertionError, struct.error) as exc:
                parts.append(f"unreadable at the kill: {exc}")
        if shown:
            parts.append(f"progress shown {shown[0]}/{shown[1]}")
        parts.append(f"{len(at_kill['files'])} files")
        return "; ".join(parts)


def read_codes(ws: Path) -> dict[tuple[str, str], bytes]:
    """(key, modality) -> the packed code the index's binary file holds for its live row."""
    from mmgen.index import IndexFolder

    state = read_index(ws)
    folder = IndexFolder.open(ws / "default")
    key_of = {iid: key for iid, _, key in state.items}
    out: dict[tuple[str, str], bytes] = {}
    for modality in ("image", "text"):
        codes = folder.codes(modality)
        if codes.slotted:
            table = codes.slot_codes()
            lookup = {int(i): table[int(i)].tobytes() for i in codes.ids()}
        else:
            ids, table = codes.codes()
            lookup = {int(i): t.tobytes() for i, t in zip(ids, table)}
        for m, rid, iid in state.rows:
            if m == modality and int(rid) in lookup:
                out[(key_of[iid], m)] = lookup[int(rid)]
    return out


def summarize_points(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per kill point: where it landed and what the verification found."""
    keep = ("landed", "ok", "lost", "duplicates", "max_vector_diff", "check_problems")
    return {f"{r['command']} @ {r['kill_point']}": {k: r.get(k) for k in keep} for r in records}


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per command: kills, where they landed, items lost, duplicates, failures."""

    def total(mine: list[dict[str, Any]], key: str) -> int | None:  # None: a rerun failed, nothing was counted
        return None if any(r[key] is None for r in mine) else sum(r[key] for r in mine)

    table: dict[str, Any] = {}
    for name in COMMANDS:
        mine = [r for r in records if r["command"] == name]
        if not mine:
            continue
        index, train = name.startswith("index"), name.startswith("train")
        table[name] = {
            "kills": len(mine),
            "landed": {where: sum(r["landed"] == where for r in mine) for where in ("before", "during", "after")},
            "lost": total(mine, "lost"),
            "duplicates": total(mine, "duplicates"),
            "counted": mine[0]["counted"],
            "failed": [r["seed"] for r in mine if not r["ok"]],
            "max_vector_diff": max((r.get("max_vector_diff") or 0.0 for r in mine), default=None) if index else None,
            "check_notes": sorted({p for r in mine for p in r.get("check_problems", [])}),
            "same_weights_as_clean": sum(bool(r.get("same_as_clean")) for r in mine) if train else None,
        }
    return table
