"""Caption metrics and `mmgen eval captions`: three ways to caption held-out images, scored in one run.

- (a) retrieval only: of the k retrieved captions, the one with the highest consensus with the
  others (mean cosine of its text embedding to theirs; Devlin et al. 2015's kNN consensus
  re-ranking, with embeddings instead of BLEU), beside the plain top-1 for reference;
- (b) the decoder without retrieved captions (an image-only decoder trained with the same budget);
- (c) the retrieval-augmented decoder.
Metrics: BLEU-4 and CIDEr(-D) from `pycocoevalcap`, on captions tokenised by `caption_tokens`
(lowercase, accents and punctuation stripped; no Java PTBTokenizer), and exact match of the
concept name after the same normalisation.

What retrieval leaves out for each query is `exclude`:
- `concept` (the default): every caption of the query's concept (skin-tone variants folded into
  their base). Held-out concepts are not indexed in a train-split workspace anyway: this is a
  guard, and it scores the unseen-concept case even when the queries are indexed.
- `item`: only the query's own item and items with the same image (content sha256, or path), as
  `mmgen caption` does. Its concept's other styles may then be retrieved: the everyday case of a
  new collection of things the index already knows.
"""

from __future__ import annotations

import contextlib
import io
import re
import time
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmgen.errors import ConfigError, DataError, ImageLoadError, MissingDependencyError

if TYPE_CHECKING:
    from mmgen.workspace import Workspace

METHODS = {
    "retrieval": "(a) retrieval, kNN consensus",
    "retrieval_top1": "    retrieval, top-1 (reference)",
    "decoder": "(b) decoder, no retrieval",
    "ra_decoder": "(c) retrieval-augmented decoder",
}
ALL = "all"
ENCODE_BATCH = 64
SEARCH_CHUNK = 256  # queries per FAISS search + SQL join (keeps the IN (...) lists short)
_NON_WORD = re.compile(r"[^0-9a-z]+")


def caption_tokens(text: str) -> list[str]:
    """Lowercase words with accents and punctuation removed: the tokeniser every metric here uses."""
    folded = unicodedata.normalize("NFKD", text.casefold())
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    return _NON_WORD.sub(" ", folded).split()


def normalize_caption(text: str) -> str:
    """A caption as the space-joined `caption_tokens`: what exact match compares."""
    return " ".join(caption_tokens(text))


def _scorers() -> tuple[Any, Any]:
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
    except ImportError as exc:
        raise MissingDependencyError("caption metrics need pycocoevalcap: pip install pycocoevalcap") from exc
    return Bleu(4), Cider()


def score_captions(references: Mapping[str, list[str]], hypotheses: Mapping[str, str]) -> dict[str, float]:
    """BLEU-4, CIDEr and exact match of one hypothesis per key against its references (corpus-level)."""
    if set(references) != set(hypotheses):
        raise ConfigError("references and hypotheses must have the same keys")
    if not references:
        raise DataError("no captions to score")
    if any(not refs for refs in references.values()):
        raise DataError("every image needs at least one reference caption")
    bleu, cider = _scorers()
    gts = {k: [normalize_caption(r) for r in refs] for k, refs in references.items()}
    res = {k: [normalize_caption(h)] for k, h in hypotheses.items()}
    with contextlib.redirect_stdout(io.StringIO()):  # the BLEU scorer prints its n-gram counts
        bleu_scores, _ = bleu.compute_score(gts, res, verbose=0)
    cider_score, _ = cider.compute_score(gts, res)
    exact = sum(res[k][0] in gts[k] for k in gts) / len(gts)
    return {"bleu4": float(bleu_scores[3]), "cider": float(cider_score), "exact": float(exact), "n": len(gts)}


@dataclass
class CaptionEvalSettings:
    """Settings of `mmgen eval captions`."""

    model: str = "captioner"
    baseline: str = "captioner-noret"
    index: str | None = None
    k: int | None = None  # None: the k the retrieval-augmented captioner was trained with
    decode: str = "beam"
    beams: int = 3
    rerank: bool = True  # both decoders: the encoder picks among the final beam (see Captioner.generate)
    device: str = "auto"
    exclude: str = "concept"  # what retrieval leaves out per query: "item" (itself, identical images) or "concept"
    show: int = 0  # examples kept in the report (spread over the manifest)
    limit: int | None = None  # evaluate only this many records, spread evenly over the manifest (demos)
    progress: bool = True


@dataclass
class CaptionEvalReport:
    """Scores per split and method, with the settings and what was left out."""

    manifest: str
    index: str
    encoder: str
    model: str
    baseline: str
    baseline_mode: str
    k: int
    decode: str
    exclude: str
    n_images: int
    splits: dict[str, dict[str, dict[str, float]]]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The stable `--json` form."""
        return {
            "manifest": self.manifest,
            "index": self.index,
            "encoder": self.encoder,
            "model": self.model,
            "baseline": self.baseline,
            "baseline_mode": self.baseline_mode,
            "k": self.k,
            "decode": self.decode,
            "exclude": self.exclude,
            "n_images": self.n_images,
            "splits": self.splits,
            "skipped": len(self.skipped),
            "skipped_reasons": [f"{key}: {reason}" for key, reason in self.skipped[:50]],
            "examples": self.examples,
            "timings_s": {k: round(v, 2) for k, v in self.timings.items()},
        }


@dataclass
class _Query:
    key: str
    image: str
    text: str
    group: str
    split: str


def evaluate_captions(manifest: str | Path, ws: Workspace, settings: CaptionEvalSettings) -> CaptionEvalReport:
    """Caption every image of a manifest three ways and score each against the record's text, per style."""
    from mmgen.data.records import read_records
    from mmgen.generate.caption import indexed_items, load_captioner, retrieve
    from mmgen.generate.caption_retrieval import EXCLUDE_ITEM, check_exclude_mode, consensus_order
    from mmgen.generate.decoding import DecodeOptions
    from mmgen.search import Searcher
    from mmgen.store.db import open_store

    opts = DecodeOptions(settings.decode, settings.beams)
    opts.check()
    check_exclude_mode(settings.exclude)
    _scorers()  # a missing pycocoevalcap fails before any model loads
    skipped: list[tuple[str, str]] = []
    queries = _spread(_queries(read_records(manifest), skipped), settings.limit)
    timings: dict[str, float] = {}
    store = open_store(ws.db_url)
    try:
        searcher = Searcher(ws, store, settings.index, device=settings.device)
        checksum = searcher.encoder.checksum()
        ra = load_captioner(ws, store, settings.model, checksum, settings.device)
        if not ra.uses_retrieval:
            raise ConfigError(f"captioner {settings.model!r} is image-only; --model names the retrieval-augmented one")
        base = load_captioner(ws, store, settings.baseline, checksum, settings.device)
        k = settings.k if settings.k is not None else ra.k
        if k < 1:
            raise ConfigError("k must be at least 1")

        started = time.perf_counter()
        vectors, queries = _encode(queries, searcher, skipped, settings.progress)
        timings["encode"] = time.perf_counter() - started
        if not queries:
            raise DataError(f"no image of {manifest} could be read")

        started = time.perf_counter()
        retrieved = []
        for s in range(0, len(queries), SEARCH_CHUNK):
            chunk, chunk_vectors = queries[s : s + SEARCH_CHUNK], vectors[s : s + SEARCH_CHUNK]
            if settings.exclude == EXCLUDE_ITEM:
                own = indexed_items(store, searcher.index_id, [Path(q.image) for q in chunk])
                retrieved += retrieve(searcher, chunk_vectors, k, exclude_items=[sorted(o) for o in own])
            else:
                retrieved += retrieve(searcher, chunk_vectors, k, exclude_groups=[[q.group] for q in chunk])
        texts = [[r.text for r in row] for row in retrieved]
        distinct = sorted({t for row in texts for t in row})
        embedded = dict(zip(distinct, searcher.encoder.encode_text(distinct))) if distinct else {}
        consensus = [row[int(consensus_order(np.stack([embedded[t] for t in row]))[0])] if row else "" for row in texts]
        top1 = [row[0] if row else "" for row in texts]
        timings["retrieve"] = time.perf_counter() - started

        started = time.perf_counter()
        rerank = searcher.encoder if settings.rerank else None
        plain = base.generate(vectors, None, opts, seed=0, rerank=rerank)
        timings["decoder"] = time.perf_counter() - started
        started = time.perf_counter()
        augmented = ra.generate(vectors, texts, opts, seed=0, rerank=rerank)
        timings["ra_decoder"] = time.perf_counter() - started
    finally:
        store.close()

    outputs = {"retrieval": consensus, "retrieval_top1": top1, "decoder": plain, "ra_decoder": augmented}
    splits = _score_splits(queries, outputs)
    return CaptionEvalReport(
        manifest=str(manifest),
        index=searcher.name,
        encoder=searcher.encoder.name,
        model=ra.name,
        baseline=base.name,
        baseline_mode="image-only decoder" if not base.uses_retrieval else "retrieval-augmented decoder, empty prompt",
        k=k,
        decode=f"{opts.method}"
        + (f" ({opts.beams} beams{', re-ranked by the encoder' if settings.rerank else ''})" if opts.method == "beam" else ""),
        exclude=settings.exclude,
        n_images=len(queries),
        splits=splits,
        skipped=skipped,
        examples=_examples(queries, texts, outputs, settings.show),
        timings=timings,
    )


def _queries(records: Any, skipped: list[tuple[str, str]]) -> list[_Query]:
    from mmgen.data.concepts import concept_of

    out = []
    for r in records:
        if r.error is not None:
            skipped.append((r.key, r.error))
        elif not r.image:
            skipped.append((r.key, "no image"))
        elif r.text is None or not r.text.strip():
            skipped.append((r.key, "no reference text"))
        else:
            style = r.meta.get("style") if isinstance(r.meta, dict) else None
            concept = concept_of(r) if r.group is not None else r.key  # skin-tone variants: their base concept
            out.append(_Query(r.key, str(r.image), r.text, concept, str(style) if style else ALL))
    return out


def _spread(items: list[Any], n: int | None) -> list[Any]:
    """At most n items, evenly spaced (deterministic), in their order."""
    if n is None or n >= len(items):
        return items
    if n < 1:
        raise ConfigError("limit must be at least 1")
    return [items[i] for i in np.unique(np.linspace(0, len(items) - 1, num=n).round().astype(int))]


def _encode(
    queries: list[_Query], searcher: Any, skipped: list[tuple[str, str]], progress: bool
) -> tuple[np.ndarray, list[_Query]]:
    """Image vectors of the queries whose image decodes (the rest are skipped with their reason)."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    from mmgen.data.images import load_image
    from mmgen.devices import cpu_threads

    def load(q: _Query) -> Any:
        try:
            return load_image(q.image)
        except ImageLoadError as exc:
            return exc

    kept: list[_Query] = []
    parts: list[np.ndarray] = []
    with ThreadPoolExecutor(max_workers=cpu_threads()) as pool, tqdm(
        total=len(queries), desc="encode images", unit="img", disable=not progress, leave=False
    ) as bar:
        for start in range(0, len(queries), ENCODE_BATCH):
            chunk = queries[start : start + ENCODE_BATCH]
            pictures = []
            for q, picture in zip(chunk, pool.map(load, chunk)):
                if isinstance(picture, ImageLoadError):
                    skipped.append((q.key, f"image: {picture}"))
                    continue
                kept.append(q)
                pictures.append(picture)
            if pictures:
                parts.append(searcher.encoder.encode_image(pictures))
            bar.update(len(chunk))
    dim = searcher.encoder.dim
    return (np.concatenate(parts) if parts else np.zeros((0, dim), dtype=np.float32)), kept


def _score_splits(queries: list[_Query], outputs: dict[str, list[str]]) -> dict[str, dict[str, dict[str, float]]]:
    names = sorted({q.split for q in queries})
    if len(names) > 1:
        names.append(ALL)
    splits: dict[str, dict[str, dict[str, float]]] = {}
    for name in names:
        rows = [i for i, q in enumerate(queries) if name in (ALL, q.split)]
        refs = {str(i): [queries[i].text] for i in rows}
        splits[name] = {
            method: score_captions(refs, {str(i): hyps[i] for i in rows}) for method, hyps in outputs.items()
        }
    return splits


def _examples(
    queries: list[_Query], retrieved: list[list[str]], outputs: dict[str, list[str]], show: int
) -> list[dict[str, Any]]:
    if show <= 0:
        return []
    picks = _spread(list(range(len(queries))), show)
    return [
        {
            "key": queries[i].key,
            "image": queries[i].image,
            "truth": queries[i].text,
            "retrieved": retrieved[i],
            **{method: hyps[i] for method, hyps in outputs.items()},
        }
        for i in picks
    ]
