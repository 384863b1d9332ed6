"""`mmgen caption`: encode an image, retrieve the k nearest captions, generate, record it all in SQL.

Each caption writes a `caption` prompt (the image's path, the settings), one retrieval row per
caption it was grounded on (rank, item, score) and an output row (the caption, the captioner's
model id, latency), so every generated caption can be traced to the records behind it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select

from mmgen.artifacts import read_model_manifest, write_json_atomic
from mmgen.errors import ConfigError, ImageLoadError, ManifestMismatchError, ModelLoadError
from mmgen.generate.caption_retrieval import Retrieved, distinct_captions, fetch_size
from mmgen.store.repo import login_user

if TYPE_CHECKING:
    from mmgen.encoders.base import Encoder
    from mmgen.generate.caption_words import Lexicon
    from mmgen.generate.decoder import CaptionDecoder
    from mmgen.generate.decoding import DecodeOptions
    from mmgen.generate.tokenizer import CaptionTokenizer, OutputVocab
    from mmgen.search import Searcher
    from mmgen.store.db import Store
    from mmgen.workspace import Workspace

DEFAULT_CAPTIONER = "captioner"
MANIFEST_TYPE = "mmgen.captioner"
MANIFEST_FORMAT = 1
WEIGHTS = "decoder.safetensors"
VOCAB = "vocab.json"
LEXICON = "lexicon.json"
MANIFEST = "manifest.json"
BATCH = 64


@dataclass
class Captioner:
    """A loaded caption decoder with its tokenizer, output vocabulary and manifest."""

    name: str
    model: CaptionDecoder
    tokenizer: CaptionTokenizer
    vocab: OutputVocab
    lexicon: Lexicon  # whole words the decoder may write (prompted captions' words are added per batch)
    manifest: dict[str, Any]
    model_id: int | None = None

    @property
    def k(self) -> int:
        """Retrieved captions it was trained with (0: an image-only decoder)."""
        return int(self.manifest.get("k", 0))

    @property
    def uses_retrieval(self) -> bool:
        """Whether the decoder reads retrieved captions."""
        return bool(self.manifest.get("retrieval"))

    def generate(
        self,
        images: np.ndarray,
        retrieved: Sequence[Sequence[str]] | None,
        opts: DecodeOptions,
        seed: int | None = None,
        rerank: Encoder | None = None,
    ) -> list[str]:
        """Captions for image vectors `(n, d)`, each prompted with its retrieved caption texts (best first).

        With `rerank` (the workspace's joint encoder) and beam search, the final beam's captions are
        re-ranked by the cosine between their text embedding and the image vector: the decoder proposes,
        the encoder, whose text side embeds any new wording, picks.
        """
        import torch

        from mmgen.generate.decoder import make_batch
        from mmgen.generate.decoding import generate_candidates

        cfg = self.model.cfg
        device = next(self.model.parameters()).device
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        out: list[str] = []
        for start in range(0, len(images), BATCH):
            chunk = images[start : start + BATCH]
            prompts = None
            if self.uses_retrieval and retrieved is not None:
                prompts = [
                    [self.tokenizer.encode(t, cfg.max_prompt_caption) for t in texts]
                    for texts in retrieved[start : start + BATCH]
                ]
            lexicon = self.lexicon
            if prompts:
                lexicon = lexicon.copy().add(t for row in prompts for t in row)
            batch = make_batch(self.vocab, chunk, prompts, None, cfg).to(device)
            candidates = [
                list(dict.fromkeys(self.tokenizer.decode(ids) for ids in row))
                for row in generate_candidates(self.model, batch, opts, generator, lexicon)
            ]
            out += _rerank(candidates, chunk, rerank) if rerank is not None else [c[0] for c in candidates]
        return out


def _rerank(candidates: list[list[str]], images: np.ndarray, encoder: Encoder) -> list[str]:
    """Per image, the candidate whose text embedding is closest to the image vector (ties: the decoder's order)."""
    texts = sorted({t for row in candidates for t in row if t.strip()})
    if not texts:
        return [row[0] for row in candidates]
    vectors = dict(zip(texts, encoder.encode_text(texts)))
    out = []
    for row, image in zip(candidates, images):
        usable = [t for t in row if t in vectors]
        if not usable:
            out.append(row[0])
            continue
        scores = np.array([float(vectors[t] @ image) for t in usable])
        out.append(usable[int(np.argmax(scores))])
    return out


def load_captioner(
    ws: Workspace, store: Store, name: str, encoder_checksum: str, device: str = "auto"
) -> Captioner:
    """Load WORKSPACE/models/NAME; refuse one trained for another encoder, or with changed files."""
    import torch
    from safetensors.torch import load_file

    from mmgen.devices import torch_device
    from mmgen.encoders.base import sha256_files
    from mmgen.generate.caption_words import Lexicon
    from mmgen.generate.decoder import CaptionDecoder, DecoderConfig
    from mmgen.generate.tokenizer import CaptionTokenizer, OutputVocab
    from mmgen.versions import version_folder

    folder = version_folder(ws.models_dir, name)  # NAME, or NAME@N for a kept older version
    path = folder / MANIFEST
    missing = ""
    if not path.is_file():
        known = sorted(p.parent.name for p in ws.models_dir.glob(f"*/{MANIFEST}") if _is_captioner(p))
        hint = f"captioners here: {', '.join(known)}" if known else "train one with `mmgen train captioner`"
        missing = f"no captioner {name!r} in {ws.models_dir}; {hint}"
    manifest = read_model_manifest(path, MANIFEST_TYPE, MANIFEST_FORMAT, "captioner", missing)
    if manifest.get("encoder_checksum") != encoder_checksum:
        raise ManifestMismatchError(
            f"captioner {name!r} was trained on vectors of encoder {manifest.get('encoder')} "
            f"(checksum {str(manifest.get('encoder_checksum'))[:12]}); this workspace's index uses another encoder "
            f"(checksum {encoder_checksum[:12]}); train a captioner here with `mmgen train captioner`"
        )
    try:
        checksum = sha256_files(artifact_files(folder), root=folder)
    except OSError as exc:
        raise ModelLoadError(f"captioner {name!r}: missing file ({exc})") from exc
    if checksum != manifest.get("checksum"):
        raise ManifestMismatchError(f"captioner {name!r}: weights or vocabulary differ from its manifest's checksum")
    tokenizer = CaptionTokenizer.default()
    if tokenizer.checksum() != manifest.get("tokenizer_checksum"):
        raise ManifestMismatchError(
            f"captioner {name!r} was trained with another version of {manifest.get('tokenizer')}"
        )
    try:
        vocab = OutputVocab(json.loads((folder / VOCAB).read_text(encoding="utf-8")), tokenizer.vocab_size)
        words = json.loads((folder / LEXICON).read_text(encoding="utf-8"))
        lexicon = Lexicon.from_json(words, tokenizer.continuation_mask())
        cfg = DecoderConfig.from_json(manifest["decoder"])
        model = CaptionDecoder(cfg, vocab, torch.from_numpy(tokenizer.embeddings()))
        model.load_state_dict(load_file(str(folder / WEIGHTS)))
    except (OSError, ValueError, KeyError, RuntimeError, ConfigError) as exc:
        raise ModelLoadError(f"captioner {name!r} does not load: {exc}") from exc
    model.to(torch_device(device)).eval()
    return Captioner(name, model, tokenizer, vocab, lexicon, manifest, _model_id(store, name, checksum))


def _is_captioner(manifest_path: Path) -> bool:
    try:
        return json.loads(manifest_path.read_text(encoding="utf-8")).get("type") == MANIFEST_TYPE
    except (OSError, ValueError):
        return False


def save_captioner(model: Any, vocab: Any, lexicon: Any, manifest: dict[str, Any], out_dir: Path) -> str:
    """Write weights, output vocabulary, lexicon and manifest (with their checksum); returns the checksum."""
    from safetensors.torch import save_file

    from mmgen.durable import replacing
    from mmgen.encoders.base import sha256_files

    out_dir.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with replacing(out_dir / WEIGHTS, "the captioner's weights") as tmp:
        save_file(weights, str(tmp))
    with replacing(out_dir / VOCAB, "the captioner's vocabulary") as tmp:
        tmp.write_text(json.dumps([int(i) for i in vocab.ids]), encoding="utf-8")
    with replacing(out_dir / LEXICON, "the captioner's lexicon") as tmp:
        tmp.write_text(json.dumps(lexicon.to_json()), encoding="utf-8")
    checksum = sha256_files(artifact_files(out_dir), root=out_dir)
    write_json_atomic(out_dir / MANIFEST, {**manifest, "checksum": checksum})
    return checksum


def artifact_files(folder: Path) -> list[Path]:
    """The files a captioner's checksum covers."""
    return [folder / WEIGHTS, folder / VOCAB, folder / LEXICON]


def _model_id(store: Store, name: str, checksum: str) -> int | None:
    from mmgen.store.models import ModelRecord
    from mmgen.versions import split_version

    with store.session() as s:
        return s.scalar(
            select(ModelRecord.id).filter_by(kind="captioner", name=split_version(name)[0], version=checksum[:16])
        )


# ---- retrieval ---------------------------------------------------------------------------
def retrieve(
    searcher: Searcher,
    vectors: np.ndarray,
    k: int,
    exclude_groups: Sequence[Sequence[str]] | None = None,
    exclude_items: Sequence[Sequence[int]] | None = None,
) -> list[list[Retrieved]]:
    """k distinct captions per image vector, through the workspace's FAISS text index."""
    if k < 1:
        raise ConfigError("k must be at least 1")
    if "text" not in searcher.modalities():
        raise ConfigError(f"index {searcher.name!r} holds no captions (text vectors) to retrieve")
    _, hits = searcher.search_vectors(vectors, to="text", k=fetch_size(k))
    out = []
    for i, row in enumerate(hits):
        groups = exclude_groups[i] if exclude_groups is not None else ()
        items = exclude_items[i] if exclude_items is not None else ()
        out.append(distinct_captions(row, k, groups, items))
    return out


def indexed_items(store: Store, index_id: int, images: Sequence[Path]) -> list[set[int]]:
    """Per image file, the items of the index whose image is that file (same content sha256, or same path).

    What retrieval leaves out for an image that may already be indexed: its own item and every copy of it.
    """
    from mmgen.data.checksums import file_sha256
    from mmgen.store.models import IndexRow, Item

    if not images:
        return []
    shas = [file_sha256(image) for image in images]
    paths = [{str(image), str(image.resolve())} for image in images]
    with store.session() as s:
        by_content = s.execute(
            select(IndexRow.sha256, IndexRow.item_id).where(
                IndexRow.index_id == index_id, IndexRow.modality == "image", IndexRow.sha256.in_(set(shas))
            )
        ).all()
        by_path = s.execute(
            select(Item.uri, IndexRow.item_id)
            .join(Item, Item.id == IndexRow.item_id)
            .where(IndexRow.index_id == index_id, Item.uri.in_(set().union(*paths)))
        ).all()
    items_of_sha: dict[str, set[int]] = {}
    for sha, item_id in by_content:
        items_of_sha.setdefault(sha, set()).add(int(item_id))
    items_of_path: dict[str, set[int]] = {}
    for uri, item_id in by_path:
        items_of_path.setdefault(uri, set()).add(int(item_id))
    return [
        items_of_sha.get(sha, set()).union(*(items_of_path.get(p, set()) for p in names))
        for sha, names in zip(shas, paths)
    ]


# ---- the command ---------------------------------------------------------------------------
@dataclass
class CaptionSettings:
    """Settings of `mmgen caption`."""

    model: str = DEFAULT_CAPTIONER
    index: str | None = None
    k: int | None = None  # None: the k the captioner was trained with
    decode: str = "beam"
    beams: int = 3
    temperature: float = 1.0
    seed: int | None = None
    rerank: bool = True  # beam search: the encoder picks among the final beam's captions
    device: str = "auto"
    record: bool = True


@dataclass
class CaptionResult:
    """One image's caption, what it was grounded on, or the error that stopped it."""

    image: str
    caption: str | None = None
    retrieved: list[Retrieved] = field(default_factory=list)
    model: str = ""
    latency_ms: float = 0.0
    prompt_id: int | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The `--json` line: {"image", "caption", "retrieved": [{"id", "text", "score"}], "model", "latency_ms",
        "prompt_id"}, or {"image", "error"}."""
        if self.error is not None:
            return {"image": self.image, "error": self.error}
        return {
            "image": self.image,
            "caption": self.caption,
            "retrieved": [r.to_json() for r in self.retrieved],
            "model": self.model,
            "latency_ms": round(self.latency_ms, 3),
            "prompt_id": self.prompt_id,
        }


class CaptionService:
    """An opened workspace, searcher and captioner, reused across images."""

    def __init__(self, ws: Workspace, store: Store, settings: CaptionSettings) -> None:
        from mmgen.generate.decoding import DecodeOptions
        from mmgen.search import Searcher

        self.settings = settings
        self.opts = DecodeOptions(settings.decode, settings.beams, settings.temperature)
        self.opts.check()
        if settings.k is not None and settings.k < 1:
            raise ConfigError("k must be at least 1")
        self.store = store
        self.searcher = Searcher(ws, store, settings.index, device=settings.device)
        if "image" not in self.searcher.encoder.modalities:
            raise ConfigError(
                f"index {self.searcher.name!r} uses the text-only encoder {self.searcher.encoder.name}; "
                "captioning needs a joint image-text encoder (index with --encoder mmgen:... or openclip:...)"
            )
        self.captioner = load_captioner(ws, store, settings.model, self.searcher.encoder.checksum(), settings.device)
        self.k = settings.k if settings.k is not None else max(1, self.captioner.k)

    def configure(self, decode: str, beams: int, k: int | None, seed: int | None) -> None:
        """Change the decoding settings of the loaded service (the server's per-request options)."""
        from dataclasses import replace

        from mmgen.generate.decoding import DecodeOptions

        opts = DecodeOptions(decode, beams, self.settings.temperature)
        opts.check()
        if k is not None and k < 1:
            raise ConfigError("k must be at least 1")
        self.settings = replace(self.settings, decode=decode, beams=beams, k=k, seed=seed)
        self.opts = opts
        self.k = k if k is not None else max(1, self.captioner.k)

    def caption(self, image: str | Path, user: str | None = None, shown: str | None = None) -> CaptionResult:
        """Caption one image file; an unreadable image gives a result with `error` set (nothing recorded).

        `user` is recorded with the prompt (default: the OS user); `shown` names the image in the result and
        the record instead of its path (the server's uploads)."""
        from mmgen.data.images import load_image

        path = Path(image)
        if shown is None:
            shown = str(path.resolve()) if path.exists() else str(path)
        started = time.perf_counter()
        try:
            picture = load_image(path)
        except ImageLoadError as exc:
            return CaptionResult(image=shown, error=str(exc))
        vector = self.searcher.encoder.encode_image([picture])
        own: set[int] = set()
        retrieved: list[Retrieved] = []
        if self.captioner.uses_retrieval:  # an image-only decoder reads no captions: nothing to retrieve
            own = indexed_items(self.store, self.searcher.index_id, [path])[0]
            retrieved = retrieve(self.searcher, vector, self.k, exclude_items=[sorted(own)])[0]
        texts = [[r.text for r in retrieved]] if self.captioner.uses_retrieval else None
        encoder = self.searcher.encoder if self.settings.rerank else None
        caption = self.captioner.generate(vector, texts, self.opts, self.settings.seed, rerank=encoder)[0]
        result = CaptionResult(
            image=shown,
            caption=caption,
            retrieved=retrieved,
            model=self.captioner.name,
            latency_ms=(time.perf_counter() - started) * 1000,
        )
        if self.settings.record:
            result.prompt_id = self._record(result, own, user)
        return result

    def _record(self, result: CaptionResult, own: set[int], user: str | None = None) -> int:
        from mmgen.store.models import Output, Prompt, Retrieval

        params = {
            "k": self.k,
            "decode": self.opts.method,
            "beams": self.opts.beams,
            "temperature": self.opts.temperature,
            "seed": self.settings.seed,
            "rerank": self.settings.rerank and self.opts.method == "beam",
            "index": self.searcher.name,
            "encoder": self.searcher.encoder.name,
            "captioner": self.captioner.name,
            "excluded_items": sorted(own),
        }
        with self.store.session() as s:
            prompt = Prompt(kind="caption", image_uri=result.image, params=params, user=user or login_user())
            prompt.retrievals = [
                Retrieval(rank=rank, item_id=r.id, score=float(r.score), modality="text")
                for rank, r in enumerate(result.retrieved, start=1)
            ]
            prompt.outputs = [
                Output(
                    text=result.caption,
                    model_id=self.captioner.model_id,
                    latency_ms=result.latency_ms,
                    scores={
                        "retrieved": len(result.retrieved),
                        "captioner_checksum": self.captioner.manifest["checksum"],
                    },
                )
            ]
            s.add(prompt)
            s.commit()
            return int(prompt.id)


def caption_images(ws: Workspace, images: Sequence[str | Path], settings: CaptionSettings) -> list[CaptionResult]:
    """Caption image files; each unreadable one yields an error result, the others are still captioned."""
    from mmgen.store.db import open_store

    if not images:
        raise ConfigError("give at least one image")
    store = open_store(ws.db_url)
    try:
        service = CaptionService(ws, store, settings)
        results = []
        for image in images:
            try:
                results.append(service.caption(image))
            except ImageLoadError as exc:
                results.append(CaptionResult(image=str(image), error=str(exc)))
        return results
    finally:
        store.close()

