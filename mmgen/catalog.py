"""The index catalog: the lifecycle of an index by name, between the SQL store and its folder.

- `pick_index_name` / `open_or_create_index`: find (or create) an index's SQL row and folder;
- `live_row_ids` / `sql_row_state`: what SQL says the index holds (the truth; FAISS files are caches);
- `catch_up` / `catch_up_codes` / `sync_index`: bring a FAISS file (or a binary-codes file) in line
  with SQL after a run that was killed before its save, and save it when the folder's lock is free;
- `open_index_hasher`: attach a hasher to an index, or load the one it records;
- `load_vectors`: the one reader of an index's live rows, their items and their vectors.

The indexer (ingest) and the searcher (reads) both go through here; neither imports the other.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, text

from mmgen.errors import ConfigError, ManifestMismatchError, VectorIndexError
from mmgen.index import IndexFolder, Preset, SyncReport, resolve_preset
from mmgen.index.rows import DEFAULT_INDEX, live_row_ids, pick_index_name, sql_row_state  # noqa: F401  (re-exported)
from mmgen.store.models import IndexRecord, IndexRow

if TYPE_CHECKING:
    from mmgen.encoders.base import Encoder
    from mmgen.hashing.model import Hasher
    from mmgen.store.db import Store
    from mmgen.workspace import Workspace

log = logging.getLogger(__name__)


def open_or_create_index(
    ws: Workspace,
    store: Store,
    name: str,
    encoder: Encoder,
    preset_name: str | None,
    reembed: bool = False,
    shards: int | None = None,
) -> tuple[int, IndexFolder]:
    """The SQL row id and folder of an index, created on first use.

    `shards` splits its FAISS files (None: 1 for a new index, unchanged for an existing one;
    changing it rebuilds them from the vector files at the next sync).

    An index built with another encoder is refused, unless `reembed`: then its rows and files are
    dropped and it is rebuilt with `encoder` (items stay in the store; only vectors are redone).
    """
    from mmgen.store.db import mask_url

    checksum = encoder.checksum()
    root = ws.index_dir(name)
    with store.session(write=True) as s:
        _serialise_index(s, name)
        rec = s.scalar(select(IndexRecord).where(IndexRecord.name == name))
        if rec is not None and (reembed or rec.encoder_checksum != checksum):
            if not reembed:
                raise ManifestMismatchError(
                    f"index {name!r} was built with encoder {rec.encoder}, not {encoder.name}; "
                    f"use --encoder {rec.encoder}, another --name, or --reembed to rebuild it with the new encoder"
                )
            preset_name = preset_name or rec.params.get("preset", {}).get("name")
            shards = shards if shards is not None else _folder_shards(root)
            # Files first, then SQL: a run killed in between leaves an index record with no rows
            # and no folder, which the branch below recreates.
            _discard_folder(root)
            s.execute(delete(IndexRow).where(IndexRow.index_id == rec.id))
            s.delete(rec)
            s.commit()
            _serialise_index(s, name)
            rec = None
        if rec is not None and not (root / "manifest.json").exists():
            has_rows = s.scalar(select(func.count(IndexRow.id)).where(IndexRow.index_id == rec.id))
            if has_rows:
                raise ManifestMismatchError(
                    f"the files of index {name!r} are missing from {root}; rebuild it with --reembed"
                )
            s.delete(rec)
            s.commit()
            _serialise_index(s, name)
            rec = None
        if rec is None:
            preset = resolve_preset(preset_name, ws.root)
            if (root / "manifest.json").exists() and not _holds_vectors(root):
                # A manifest without vectors or SQL row: a run killed between creating the folder and
                # committing its row (this transaction, below). Nothing was ever stored in it: start again.
                _discard_folder(root)
            if (root / "manifest.json").exists():
                raise ManifestMismatchError(
                    f"{root} holds index files that the store {mask_url(store.url)} does not know; "
                    "remove the folder or point --db at the store that built it"
                )
            shards = 1 if shards is None else shards
            folder = IndexFolder.create(
                root,
                name=name,
                encoder=encoder.name,
                encoder_checksum=checksum,
                dim=encoder.dim,
                preset=preset,
                shards=shards,
            )
            rec = IndexRecord(
                name=name,
                encoder=encoder.name,
                encoder_checksum=checksum,
                dim=encoder.dim,
                factory=preset.factory,
                params={"preset": preset.to_json()},
            )
            s.add(rec)
            s.commit()
            return rec.id, folder
        folder = IndexFolder.open(root)
        folder.check(encoder=encoder.name, encoder_checksum=checksum, dim=encoder.dim)
        if preset_name is not None:
            preset = resolve_preset(preset_name, ws.root)
            if preset.factory != folder.preset.factory:
                folder.set_preset(preset)
                rec.factory = preset.factory
                rec.params = {**rec.params, "preset": preset.to_json()}
                s.commit()
        if shards is not None:
            folder.set_shards(shards)
        return rec.id, folder


def _serialise_index(s: Any, name: str) -> None:
    """On PostgreSQL, hold a transaction-scoped advisory lock on the index name until the next commit, so two
    processes creating the same index at once run one after the other (SQLite's BEGIN IMMEDIATE does that)."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"mmgen-index:{name}"})


def _discard_folder(root: Path) -> None:
    """Remove an index folder's files (vectors, FAISS, manifest); the folder itself stays."""
    if not root.is_dir():
        return
    for path in root.iterdir():
        if path.is_file() and (path.suffix in (".f32", ".maxnorm", ".faiss", ".ivfdata", ".tmp") or path.name == "manifest.json"):
            path.unlink()


def _folder_shards(root: Path) -> int | None:
    """The shard count an index folder's manifest records (None: no readable manifest)."""
    try:
        return IndexFolder.open(root).shards
    except VectorIndexError:
        return None


def _holds_vectors(root: Path) -> bool:
    """Whether an index folder's vector files hold any row."""
    from mmgen.index.vectors import HEADER

    return any(path.stat().st_size > HEADER.size for path in root.glob("*.f32"))


def sync_index(store: Store, index_id: int, folder: IndexFolder, hasher: Hasher | None = None) -> dict[str, str]:
    """Bring every FAISS file of the index (and its binary codes, given the hasher) in line with SQL and save it."""
    notes = {}
    for modality in ("image", "text"):
        live = live_row_ids(store, index_id, modality)
        if len(live) == 0 and modality not in folder.modalities():
            continue
        rep = folder.sync(modality, live)
        folder.save(modality)
        notes[modality] = _sync_note(rep)
        if hasher is not None:
            rep = folder.sync_codes(modality, live, hasher.encode, hasher.checksum)
            folder.save_codes(modality)
            notes[f"{modality} codes"] = _sync_note(rep)
    return notes


def _sync_note(rep: SyncReport) -> str:
    return f"+{rep.added} -{rep.removed}" + (" (rebuilt)" if rep.rebuilt else "") + (f" {rep.reason}" if rep.reason else "")


def open_index_hasher(
    ws: Workspace, store: Store, index_id: int, folder: IndexFolder, name: str | None, preset_name: str | None
) -> Hasher | None:
    """The hasher whose codes the index keeps: `name` (recorded in the index from now on), else the recorded one.

    A `name` that is no saved model but reads like `lsh-64`, `itq-128` or `pca-32` (method-bits)
    is that FAISS baseline, fitted now on the index's vectors (held-out groups excluded, as
    `mmgen train hasher --method` does), saved under `name` and registered. Refuses a hasher
    trained on another encoder's embeddings, and a recorded hasher that was retrained since its
    codes were built (its codes would not match; re-run with --hash NAME).
    """
    from mmgen.hashing.model import hasher_folder, load_hasher
    from mmgen.hashing.saved import baseline_spec

    info = folder.hash
    if name is None:
        if preset_name is not None:
            raise ConfigError("--hash-preset configures the binary codes of --hash HASHER; give --hash too")
        if info is None:
            return None
        hasher = load_hasher(info["name"], ws.models_dir)
        if hasher.checksum != info["checksum"]:
            raise ManifestMismatchError(
                f"hasher {info['name']!r} was retrained since index {folder.manifest['name']!r} encoded its codes "
                f"(checksum {info['checksum'][:12]}, now {hasher.checksum[:12]}); re-encode them with "
                f"`mmgen index SOURCE --name {folder.manifest['name']} --hash {info['name']}`"
            )
        return hasher
    spec = baseline_spec(name)
    if spec is not None and not (hasher_folder(name, ws.models_dir) / "manifest.json").is_file():
        from mmgen.hashing.data import load_index_vectors
        from mmgen.hashing.saved import train_baseline

        index_name = folder.manifest["name"]
        if not any(sql_row_state(store, index_id, m)[0] for m in ("image", "text")):
            raise VectorIndexError(
                f"index {index_name!r} has no vectors yet to fit {name} on; index first "
                f"(`mmgen index SOURCE --name {index_name}`), then add codes "
                f"(`mmgen index SOURCE --name {index_name} --hash {name}`)"
            )
        hasher, _ = train_baseline(ws, load_index_vectors(ws, store, index_name), spec[0], spec[1], name)
    else:
        hasher = load_hasher(name, ws.models_dir)
    hasher.check_index(
        index=folder.manifest["name"],
        encoder=folder.manifest["encoder"],
        encoder_checksum=folder.manifest["encoder_checksum"],
        dim=folder.dim,
    )
    if preset_name is None and info is not None:
        preset = Preset.from_json(info["preset"])
    else:
        preset = resolve_preset(preset_name, ws.root, binary=True)
    folder.set_hash(name=name, checksum=hasher.checksum, bits=hasher.bits, preset=preset)
    with store.session(write=True) as s:
        rec = s.get(IndexRecord, index_id)
        if rec is not None:
            hash_info = {"name": name, "checksum": hasher.checksum, "bits": hasher.bits, "preset": preset.to_json()}
            rec.params = {**rec.params, "hash": hash_info}
            s.commit()
    return hasher


def catch_up(store: Store, index_id: int, folder: IndexFolder, modality: str) -> None:
    """Make the float FAISS file of one modality match SQL (killed run, lost or corrupt file); saved if unlocked."""
    live_fp = sql_row_state(store, index_id, modality)
    # The manifest's row state alone would trust a deleted or unreadable file (it loads as an empty index).
    if live_fp == folder.row_state(modality) and folder.faiss(modality).count == live_fp[0]:
        return
    report = folder.sync(modality, live_row_ids(store, index_id, modality))
    log.info("index %s %s: FAISS caught up with SQL (%s)", folder.manifest.get("name"), modality, _sync_note(report))
    with folder.lock(wait=False) as got:
        if got:
            folder.save(modality)


def catch_up_codes(store: Store, index_id: int, folder: IndexFolder, modality: str, hasher: Hasher) -> None:
    """Make the binary codes of one modality match SQL and the hasher (killed run, lost file); saved if unlocked."""
    live_fp = sql_row_state(store, index_id, modality)
    if live_fp == folder.codes_row_state(modality) and folder.codes(modality).count == live_fp[0]:
        return
    live = live_row_ids(store, index_id, modality)
    report = folder.sync_codes(modality, live, hasher.encode, hasher.checksum)
    name = folder.manifest.get("name")
    log.info("index %s %s: codes caught up with SQL (%s)", name, modality, _sync_note(report))
    with folder.lock(wait=False) as got:
        if got:
            folder.save_codes(modality)
