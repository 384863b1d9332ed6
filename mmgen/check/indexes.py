"""The checks of one index: SQL rows <-> vector files <-> FAISS ids and codes, and the items behind them."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import and_, exists, select
from sqlalchemy.orm import aliased

from mmgen.check.models import check_encoder
from mmgen.check.report import ERROR, EXAMPLES, INFO, WARNING, Action, CheckOptions, CheckReport, Problem
from mmgen.errors import MmgenError, VectorIndexError
from mmgen.index import MODALITIES, IndexFolder
from mmgen.index.folder import CODES_SUFFIX
from mmgen.store.models import Corpus, IndexRecord, IndexRow, Item

if TYPE_CHECKING:
    from mmgen.hashing.base import BaseHasher
    from mmgen.store.db import Store
    from mmgen.workspace import Workspace

CHUNK = 65_536  # vectors read at a time
# FAISS factory parts whose stored vectors are lossy (their sample cannot be compared exactly).
_LOSSY = ("PQ", "SQ", "LSH", "PCA", "RQ", "LSQ", "ITQ", "RaBitQ")


def check_index(ws: Workspace, store: Store, rec: IndexRecord, report: CheckReport, opts: CheckOptions) -> None:
    """Check one index (its folder, encoder, rows, vectors, FAISS files and codes) into `report`."""
    name = rec.name
    summary: dict[str, Any] = {"encoder": rec.encoder, "modalities": {}}
    report.indexes[name] = summary
    rebuild = f"`mmgen index SOURCE --name {name} --reembed` re-embeds it"
    try:
        folder = IndexFolder.open(ws.index_dir(name))
    except VectorIndexError as exc:
        report.add(Problem("index-folder-missing", ERROR, str(exc), "its vectors are gone; search refuses the index",
                           rebuild, index=name))  # fmt: skip
        return
    if folder.manifest.get("encoder_checksum") != rec.encoder_checksum or folder.dim != rec.dim:
        report.add(Problem("index-folder-mismatch", ERROR, f"the folder {folder.root} holds another encoder's or "
                           "dimension's vectors than the store records", "search refuses the index", rebuild,
                           index=name))  # fmt: skip
        return
    check_encoder(ws, rec, report)
    with folder.lock(wait=False) as got:
        if not got:
            report.add(Problem("index-busy", INFO, "an indexer holds the index's lock", "its caches may be mid-update",
                               "check again when it is done", index=name))  # fmt: skip
    hasher = _check_hasher(ws, folder, report) if folder.hash else None
    summary["hasher"] = folder.hash["name"] if folder.hash else None
    for modality in MODALITIES:
        with store.session() as s:
            rows = s.execute(select(IndexRow.row_id, IndexRow.item_id).where(
                IndexRow.index_id == rec.id, IndexRow.modality == modality)).all()  # fmt: skip
        live = np.sort(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))
        if not len(live) and modality not in folder.modalities():
            continue
        where = {"index": name, "modality": modality}
        usable, stored = _check_vectors(store, rec.id, folder, modality, live, report, opts)
        faiss_count = _check_faiss(folder, modality, live, usable, report, opts)
        summary["modalities"][modality] = {"rows": len(live), "vectors": stored, "faiss": faiss_count}
        if hasher is not None:
            summary["modalities"][modality]["codes"] = _check_codes(folder, modality, live, usable, hasher, report, opts)
        _check_missing_rows(store, rec.id, modality, len(live), where, report)


def _check_vectors(store: Store, index_id: int, folder: IndexFolder, modality: str, live: np.ndarray,
                   report: CheckReport, opts: CheckOptions) -> tuple[np.ndarray, int | None]:  # fmt: skip
    """(rows whose slots hold finite unit-norm vectors, vectors in the file); the other rows are reported."""
    where = {"index": folder.manifest["name"], "modality": modality}
    reembed = "`mmgen check --repair --prune` deletes these rows; the next `mmgen index SOURCE` re-embeds their items"
    try:
        vectors = folder.vectors(modality)
    except VectorIndexError as exc:
        report.add(Problem("vectors-unreadable", ERROR, str(exc), "every vector of this modality is lost",
                           f"`mmgen index SOURCE --name {where['index']} --reembed`", **where))  # fmt: skip
        return np.empty(0, dtype=np.int64), None
    n = len(vectors)
    past = live[live >= n]
    if len(past):
        report.add(Problem("rows-past-vectors", ERROR, f"{len(past)} index rows point past the end of {vectors.path.name} "
                           f"({n} vectors)", "the vector file lost rows SQL relies on: those items cannot be searched",
                           reembed, count=len(past), examples=_keys(store, index_id, modality, past), **where,
                           action=Action("drop-rows", where["index"], modality, prune=True,
                                         ids=tuple(int(i) for i in past))))  # fmt: skip
    inside = live[live < n]
    bad = [np.empty(0, dtype=np.int64)]
    for start in range(0, len(inside), CHUNK):
        part = inside[start : start + CHUNK]
        rows = vectors.get(part)
        finite = np.isfinite(rows).all(axis=1)
        norms = np.linalg.norm(np.where(finite[:, None], rows, 0.0), axis=1)
        bad.append(part[~finite | (np.abs(norms - 1.0) > opts.norm_tolerance)])
    broken = np.concatenate(bad)
    if len(broken):
        report.add(Problem("vectors-corrupt", ERROR, f"{len(broken)} live vectors are not finite unit-norm rows",
                           "the vector file was damaged: those items score wrongly or not at all", reembed,
                           count=len(broken), examples=_keys(store, index_id, modality, broken), **where,
                           action=Action("drop-rows", where["index"], modality, prune=True,
                                         ids=tuple(int(i) for i in broken))))  # fmt: skip
    top = int(live.max()) if len(live) else -1
    if n > top + 1:
        report.add(Problem("vectors-past-rows", INFO, f"{n - top - 1} vectors past the last committed row ({top}) of "
                           f"{vectors.path.name}", "leftovers of a run killed between writing vectors and committing "
                           "them; never read", "nothing to do: the next run appends after them", count=n - top - 1,
                           **where))  # fmt: skip
    return np.setdiff1d(inside, broken, assume_unique=True), n


def _check_faiss(folder: IndexFolder, modality: str, live: np.ndarray, usable: np.ndarray, report: CheckReport,
                 opts: CheckOptions) -> int | None:  # fmt: skip
    """Compare the FAISS cache (its file, or each shard) with SQL's live rows; returns how many vectors it holds.

    None: no file or shard could be read. A shard holds the rows `row_id % shards`; the rows of a
    missing or unreadable shard are reported once, as that shard's problem.
    """
    from mmgen.index.faiss_index import FaissIndex

    name = folder.manifest["name"]
    where = {"index": name, "modality": modality}
    files = folder.faiss_files(modality)
    n = len(files)
    shown = files[0].name if n == 1 else f"the {n} shards of {modality}.faiss"
    rebuild = f"derivable: `mmgen check --repair` rebuilds {shown} from {modality}.f32"
    fresh = Action("faiss", name, modality, fresh=True)
    loaded: list[tuple[int, FaissIndex]] = []
    placed: dict[int, FaissIndex] = {}  # the shards that hold only their own rows: sampled below
    for s, path in enumerate(files):
        mine = live[live % n == s]
        if not path.exists():
            if len(mine):
                report.add(Problem("faiss-missing", ERROR, f"{path.name} is missing ({len(mine)} live rows in SQL)",
                                   f"searches of {modality}s find nothing" + (" in its rows" if n > 1 else "")
                                   + " until it is rebuilt", rebuild, **where, action=fresh))  # fmt: skip
            continue
        try:
            index = FaissIndex.load(path, folder.dim, folder.preset)
        except VectorIndexError as exc:
            report.add(Problem("faiss-corrupt", ERROR, str(exc), f"searches of {modality}s fail or find nothing until "
                               "it is rebuilt", rebuild, **where, action=fresh))  # fmt: skip
            continue
        held = index.ids()
        if n > 1 and (held % n != s).any():
            report.add(Problem("faiss-corrupt", ERROR, f"{path.name} holds {int((held % n != s).sum())} rows of other "
                               "shards", f"searches of {modality}s may return rows twice", rebuild, **where,
                               action=fresh))  # fmt: skip
        else:
            placed[s] = index
        loaded.append((s, index))
    if not loaded:
        return None
    ids = np.sort(np.concatenate([index.ids() for _, index in loaded]))
    checked = np.isin(live % n, [s for s, _ in loaded])
    expected = live[checked]
    extra, missing = np.setdiff1d(ids, expected), np.setdiff1d(expected, ids)
    if len(extra) or len(missing):
        report.add(Problem("faiss-stale", WARNING, f"{shown} holds {len(ids)} ids, SQL {len(expected)} live rows: "
                           f"{len(missing)} missing from it, {len(extra)} no longer live", "a run or a change that "
                           "did not save the cache; searches catch it up when they open the index", rebuild,
                           count=len(extra) + len(missing), examples=[str(i) for i in [*missing, *extra][:EXAMPLES]],
                           **where, action=Action("faiss", name, modality)))  # fmt: skip
    count = sum(index.count for _, index in loaded)
    sample = _sample(np.intersect1d(usable, ids[np.isin(ids % n, list(placed))]), opts.sample)
    factory = folder.preset.factory
    fp16 = factory == "SQfp16"  # flat-fp16: each value is the file's within fp16 rounding (2^-11 relative)
    if len(sample) and (fp16 or not any(part in factory for part in _LOSSY)):
        try:
            held = np.stack([placed[int(i) % n].index.reconstruct(int(i)) for i in sample])
        except RuntimeError:  # an index type that cannot reconstruct (IVF without a direct map)
            return count
        rtol = 2.0**-10 if fp16 else 1e-5
        wrong = sample[~np.isclose(held, folder.vectors(modality).get(sample), atol=1e-5, rtol=rtol).all(axis=1)]
        if len(wrong):
            report.add(Problem("faiss-wrong-vectors", ERROR, f"{len(wrong)} of {len(sample)} sampled vectors in "
                               f"{shown} differ from {modality}.f32", "the cache was damaged: searches rank by "
                               "wrong vectors", rebuild, count=len(wrong), examples=[str(i) for i in wrong[:EXAMPLES]],
                               **where, action=fresh))  # fmt: skip
    return count


def _check_hasher(ws: Workspace, folder: IndexFolder, report: CheckReport) -> BaseHasher | None:
    """The hasher the index's codes were built with, when it loads unchanged (else the problem is reported)."""
    from mmgen.hashing.model import load_hasher

    info, name = folder.hash or {}, folder.manifest["name"]
    try:
        hasher = load_hasher(info["name"], ws.models_dir)
    except (MmgenError, KeyError) as exc:
        report.add(Problem("codes-hasher-unloadable", ERROR, f"hasher {info.get('name')!r} does not load: {exc}",
                           "the index's codes can be neither searched nor checked nor rebuilt", "restore the "
                           f"hasher's files, or attach another: `mmgen index SOURCE --name {name} --hash HASHER`",
                           index=name, model=info.get("name")))  # fmt: skip
        return None
    if hasher.checksum != info["checksum"] or hasher.bits != int(info["bits"]):
        report.add(Problem("codes-hasher-changed", WARNING, f"hasher {hasher.name!r} is now {hasher.bits}-bit, checksum "
                           f"{hasher.checksum[:12]}; the codes were built by {info['bits']}-bit {info['checksum'][:12]}",
                           "it was retrained since: code searches refuse the index", "derivable: `mmgen check "
                           f"--repair` re-encodes the codes (as `mmgen index SOURCE --name {name} --hash {hasher.name}`)",
                           index=name, model=hasher.name, action=Action("reencode", name)))  # fmt: skip
        return None
    return hasher


def _check_codes(folder: IndexFolder, modality: str, live: np.ndarray, usable: np.ndarray, hasher: BaseHasher,
                 report: CheckReport, opts: CheckOptions) -> int | None:  # fmt: skip
    """Compare the binary codes with SQL's live rows and the hasher; returns how many codes it holds."""
    from mmgen.index.binary import BinaryIndex
    from mmgen.index.presets import Preset

    info, name = folder.hash or {}, folder.manifest["name"]
    where = {"index": name, "modality": modality, "model": hasher.name}
    path = folder.root / f"{modality}{CODES_SUFFIX}"
    rebuild = f"derivable: `mmgen check --repair` re-encodes {path.name} from {modality}.f32 with hasher {hasher.name}"
    fresh = Action("codes", name, modality, fresh=True)
    if not path.exists():
        if len(live):
            report.add(Problem("codes-missing", ERROR, f"{path.name} is missing ({len(live)} live rows in SQL)",
                               f"code searches of {modality}s find nothing until it is rebuilt", rebuild, **where,
                               action=fresh))  # fmt: skip
        return None
    try:
        codes = BinaryIndex.load(path, int(info["bits"]), Preset.from_json(info["preset"]))
    except VectorIndexError as exc:
        report.add(Problem("codes-corrupt", ERROR, str(exc), f"code searches of {modality}s fail until it is rebuilt",
                           rebuild, **where, action=fresh))  # fmt: skip
        return None
    built_with = info.get("modalities", {}).get(modality, {}).get("checksum", info["checksum"])
    ids = np.sort(codes.ids())
    extra, missing = np.setdiff1d(ids, live), np.setdiff1d(live, ids)
    if built_with != info["checksum"] or len(extra) or len(missing):
        report.add(Problem("codes-stale", WARNING, f"{path.name} holds {len(ids)} codes, SQL {len(live)} live rows: "
                           f"{len(missing)} missing, {len(extra)} no longer live" + ("; built by another version of the "
                           "hasher" if built_with != info["checksum"] else ""), "a run that did not save the codes; "
                           "code searches catch them up when they open the index", rebuild,
                           count=len(extra) + len(missing), **where,
                           action=Action("codes", name, modality, fresh=built_with != info["checksum"])))  # fmt: skip
    sample = _sample(np.intersect1d(usable, ids), opts.sample)
    if len(sample) and codes.is_flat:
        if codes.slotted:
            held = codes.slot_codes()[sample]
        else:
            have, table = codes.codes()
            order = np.argsort(have)
            held = table[order][np.searchsorted(have[order], sample)]
        wrong = sample[(held != hasher.encode(folder.vectors(modality).get(sample), modality)).any(axis=1)]
        if len(wrong):
            report.add(Problem("codes-wrong", ERROR, f"{len(wrong)} of {len(sample)} sampled codes differ from the "
                               f"hasher's codes of their vectors", "the codes file was damaged: code searches rank "
                               "wrongly", rebuild, count=len(wrong), examples=[str(i) for i in wrong[:EXAMPLES]],
                               **where, action=fresh))  # fmt: skip
    return codes.count


def _check_missing_rows(store: Store, index_id: int, modality: str, live: int, where: dict[str, str],
                        report: CheckReport) -> None:  # fmt: skip
    """Items in the index whose content has this modality but which have no row of it."""
    if not live:  # the encoder does not embed this modality
        return
    other = aliased(IndexRow)
    with store.session() as s:
        keys = list(s.scalars(
            select(Item.key).join(IndexRow, and_(IndexRow.item_id == Item.id, IndexRow.index_id == index_id))
            .where(Item.modality.in_([modality, "image+text"]),
                   ~exists().where(other.item_id == Item.id, other.index_id == index_id, other.modality == modality))
            .distinct().order_by(Item.key)))  # fmt: skip
    if keys:
        report.add(Problem("row-missing", WARNING, f"{len(keys)} items of the index have a {modality} but no "
                           f"{modality} vector", f"a run failed on their {modality} (bad input), or their index row "
                           f"was lost: searches of {modality}s never return them", f"`mmgen index SOURCE --name "
                           f"{where['index']}` embeds them again, or reports why it cannot", count=len(keys),
                           examples=keys[:EXAMPLES], **where))  # fmt: skip


def check_unindexed_items(store: Store, report: CheckReport) -> None:
    with store.session() as s:
        rows = s.execute(select(Item.id, Corpus.name, Item.key).join(Corpus, Corpus.id == Item.corpus_id)
                         .where(~exists().where(IndexRow.item_id == Item.id)).order_by(Item.id)).all()  # fmt: skip
    if rows:
        report.add(Problem("item-unindexed", WARNING, f"{len(rows)} items have no vector in any index",
                           "no search returns them (an interrupted --reembed, or rows deleted)",
                           "`mmgen index CORPUS` embeds them again; `mmgen check --repair --prune` deletes them",
                           count=len(rows), examples=[f"{c}:{k}" for _, c, k in rows[:EXAMPLES]],
                           action=Action("drop-items", prune=True, ids=tuple(int(r[0]) for r in rows))))  # fmt: skip


def check_stray_folders(ws: Workspace, known: set[str], report: CheckReport) -> None:
    if not ws.root.is_dir():
        return
    for path in sorted(ws.root.glob("*/manifest.json")):
        try:
            kind = json.loads(path.read_text(encoding="utf-8")).get("type")
        except (OSError, ValueError, AttributeError):
            continue
        if kind == "mmgen.float-index" and path.parent.name not in known:
            report.add(Problem("index-folder-unknown", WARNING, f"{path.parent} holds an index the store does not know",
                               "it was built with another store; `mmgen index --name` refuses to reuse the name",
                               "point --db at the store that built it, or remove the folder", index=path.parent.name))

def _keys(store: Store, index_id: int, modality: str, row_ids: np.ndarray) -> list[str]:
    """Item keys of a few row ids (for examples)."""
    wanted = [int(i) for i in row_ids[:EXAMPLES]]
    with store.session() as s:
        return list(s.scalars(select(Item.key).join(IndexRow, IndexRow.item_id == Item.id).where(
            IndexRow.index_id == index_id, IndexRow.modality == modality, IndexRow.row_id.in_(wanted))))  # fmt: skip


def _sample(ids: np.ndarray, size: int) -> np.ndarray:
    if len(ids) <= size:
        return ids
    return np.sort(np.random.default_rng(0).choice(ids, size, replace=False))

