"""Text-to-image evaluation: prompt similarity, R-precision, Frechet distance, memorisation.

A prompt set is a manifest (JSONL/CSV, the project's format): records with `text`, `image` and
`group`. Each group (concept) gives one prompt, its first record's text; the images of the
group's records are the real reference pictures. Several manifests are several prompt sets
(e.g. the product protocol's held-out concepts and a seeded sample of its training concepts),
each scored for every method in one run:

- `retrieval`: the nearest indexed image to the prompt (top-1 text->image), at the generator's size;
- `generator`: the generator without retrieval conditioning (the baseline);
- `ra-generator`: the retrieval-augmented generator, sampling from pure noise (init strength 1);
- `ra-generator@S`: the same generator, each picture started from a retrieved neighbour image noised
  to time S (SDEdit; see `mmgen.generate.diffusion.ddim_sample`), one method per init strength
  asked for. That neighbour is the nearest indexed image to the prompt outside the prompt's own
  concept (no item of its group, no copy of one of its reference pictures), so a seen concept's
  target picture never becomes its starting point. The conditioning neighbours are the same as for
  `ra-generator`, and so is the starting noise: the strengths are a paired comparison;
- `real`: one real reference picture per concept (the ceiling of similarity and R-precision).

Metrics, all in the image space of the index's joint encoder:
- similarity: mean cosine between each picture and its prompt;
- R-precision: the fraction of pictures whose own prompt scores highest among 100 candidate texts
  (itself and 99 other prompts of the set, seeded; ties count against);
- FD: Frechet distance between the pictures' embeddings and the real pictures' embeddings;
- NN distance: 1 - cosine to the nearest indexed (training) image, mean and the share below 0.05
  (near copies): the memorisation check.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmgen.errors import ConfigError, DataError
from mmgen.store.filters import Filters, as_filters

if TYPE_CHECKING:
    from mmgen.generate.image import ImageGenerator
    from mmgen.workspace import Workspace

METHODS = ("retrieval", "generator", "ra-generator", "real")  # with the default init strength 1 only
R_PRECISION_CANDIDATES = 100
NEAR_COPY_DISTANCE = 0.05
SHEET_ROWS_PER_SET = 8


@dataclass
class PromptSet:
    """One prompt per concept, and the real pictures of every concept."""

    name: str
    source: str
    groups: list[str]
    prompts: list[str]
    references: list[list[str]]  # image paths per concept
    skipped: int = 0  # records without text, image or group, or unreadable


@dataclass
class MethodScores:
    """The four metrics of one method on one prompt set."""

    similarity: float
    r_precision: float
    fd: float
    nn_distance: float
    near_copies: float
    n: int

    def to_json(self) -> dict[str, Any]:
        """Rounded JSON form."""
        return {
            "similarity": round(self.similarity, 4),
            "r_precision": round(self.r_precision, 4),
            "fd": round(self.fd, 4),
            "nn_distance": round(self.nn_distance, 4),
            "near_copies": round(self.near_copies, 4),
            "n": self.n,
        }


@dataclass
class SetReport:
    """All methods on one prompt set."""

    name: str
    source: str
    prompts: int
    references: int
    candidates: int
    methods: dict[str, MethodScores]
    skipped: int = 0

    def to_json(self) -> dict[str, Any]:
        """Stable JSON form."""
        return {
            "name": self.name,
            "manifest": self.source,
            "prompts": self.prompts,
            "reference_images": self.references,
            "r_precision_candidates": self.candidates,
            "skipped_records": self.skipped,
            "methods": {k: v.to_json() for k, v in self.methods.items()},
        }


@dataclass
class GenerationReport:
    """The `mmgen eval generation` result."""

    sets: list[SetReport]
    settings: dict[str, Any]
    models: dict[str, Any]
    seconds: float
    sheet: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The stable `--json` form."""
        return {
            "sets": [s.to_json() for s in self.sets],
            "settings": self.settings,
            "models": self.models,
            "seconds": round(self.seconds, 1),
            "sheet": self.sheet,
            "notes": self.notes,
        }


# ---- metrics (pure functions over embeddings) ----------------------------------------------
def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two sets of embeddings (rows).

    ||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2)); the trace of the square root
    comes from the eigenvalues of S_a^(1/2) S_b S_a^(1/2) (symmetric, so numpy's `eigh` suffices
    and rank-deficient covariances from fewer samples than dimensions stay well defined).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ConfigError(f"embeddings of shapes {a.shape} and {b.shape} cannot be compared")
    if len(a) < 2 or len(b) < 2:
        raise DataError("the Frechet distance needs at least 2 embeddings on each side")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    middle = root_a @ cov_b @ root_a
    trace_root = float(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum())
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


def r_precision(
    image_emb: np.ndarray, text_emb: np.ndarray, prompt_of: np.ndarray, seed: int, candidates: int = R_PRECISION_CANDIDATES
) -> float:
    """Share of pictures whose own prompt scores strictly highest among itself and `candidates - 1` seeded others."""
    m = len(text_emb)
    if m < 2:
        raise DataError("R-precision needs at least 2 prompts")
    c = min(candidates, m)
    hits = 0
    for i, p in enumerate(prompt_of):
        rng = np.random.default_rng([seed, int(p), i])
        others = rng.choice(np.delete(np.arange(m), p), c - 1, replace=False)
        scores = text_emb[others] @ image_emb[i]
        hits += int(float(text_emb[p] @ image_emb[i]) > scores.max())
    return hits / len(prompt_of)


def nearest_distance(emb: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """1 - cosine to the nearest row of `pool`, per row of `emb` (rows L2-normalised)."""
    from mmgen.index.knn import exact_knn

    scores, _ = exact_knn(emb, pool, 1)
    return (1.0 - scores[:, 0]).astype(np.float32)


def score_method(
    image_emb: np.ndarray,
    prompt_of: np.ndarray,
    text_emb: np.ndarray,
    reference_emb: np.ndarray,
    training_emb: np.ndarray,
    seed: int,
) -> MethodScores:
    """All metrics for pictures `image_emb` made for prompts `prompt_of` (indices into `text_emb`)."""
    similarity = float(np.mean(np.sum(image_emb * text_emb[prompt_of], axis=1)))
    dist = nearest_distance(image_emb, training_emb)
    return MethodScores(
        similarity=similarity,
        r_precision=r_precision(image_emb, text_emb, prompt_of, seed),
        fd=frechet_distance(image_emb, reference_emb),
        nn_distance=float(dist.mean()),
        near_copies=float((dist < NEAR_COPY_DISTANCE).mean()),
        n=len(image_emb),
    )


# ---- prompt sets ---------------------------------------------------------------------------
def parse_strengths(values: Sequence[str | float]) -> list[float]:
    """Init strengths from floats or comma lists ("1.0,0.7"), each in (0, 1], in order, repeats dropped."""
    from mmgen.generate.diffusion import check_strength

    out: list[float] = []
    for value in values:
        for part in str(value).split(",") if isinstance(value, str) else [value]:
            try:
                strength = float(part)
            except ValueError:
                raise ConfigError(f"--init-strength takes numbers in (0, 1], e.g. 1.0,0.7, not {part!r}") from None
            strength = check_strength(strength)
            if strength not in out:
                out.append(strength)
    if not out:
        raise ConfigError("give at least one init strength, e.g. 1.0")
    return out


def ra_method(strength: float) -> str:
    """The method name of the retrieval-augmented generator at an init strength ("ra-generator" at 1)."""
    return "ra-generator" if strength == 1.0 else f"ra-generator@{strength:g}"


def load_prompt_set(
    path: Path, sample: int | None = None, seed: int = 0, where: Filters | Mapping[str, Any] | None = None
) -> PromptSet:
    """Prompts (one per group) and reference images from a manifest; `sample` draws that many groups, seeded.

    `where` keeps only records that match it (the `--where` grammar of `mmgen.store.filters`: meta keys,
    and `group`), e.g. `parse_where(["base=true"])` or {"base": ["true"]}.
    Records with `meta.role` "candidate" (pool-only records of retrieval manifests) are not prompts.
    """
    from mmgen.data.records import read_records

    texts: dict[str, str] = {}
    refs: dict[str, list[str]] = {}
    skipped = 0
    filters = as_filters(where)
    for rec in read_records(path):
        meta = rec.meta if isinstance(rec.meta, dict) else {}
        if filters and not filters.matches(rec):
            continue
        if rec.error or not rec.image or not (rec.text or "").strip() or meta.get("role") == "candidate":
            skipped += 1
            continue
        group = rec.group if rec.group is not None else rec.key
        texts.setdefault(group, rec.text.strip())  # type: ignore[union-attr]
        refs.setdefault(group, []).append(rec.image)
    groups = sorted(texts)
    if len(groups) < 2:
        raise DataError(f"{path}: fewer than 2 concepts with a text and an image (after filters)")
    if sample is not None and sample < len(groups):
        if sample < 2:
            raise ConfigError(f"sample must be at least 2 prompts, not {sample}")
        picked = np.random.default_rng(seed).choice(len(groups), sample, replace=False)
        groups = [groups[i] for i in picked]  # in draw order: the first rows of a sheet are a random subset too
    return PromptSet(
        name=Path(path).stem,
        source=str(path),
        groups=groups,
        prompts=[texts[g] for g in groups],
        references=[refs[g] for g in groups],
        skipped=skipped,
    )


# ---- the evaluation ------------------------------------------------------------------------
def evaluate_generation(
    ws: Workspace,
    manifests: Sequence[Path],
    *,
    model: str,
    baseline: str,
    index: str | None = None,
    sample: int | None = 200,
    where: Filters | Mapping[str, Any] | None = None,
    samples_per_prompt: int = 1,
    steps: int = 30,
    guidance: float = 3.0,
    seed: int = 0,
    device: str = "auto",
    sheet: Path | None = None,
    progress: bool = True,
    init_strengths: Sequence[float] = (1.0,),
) -> GenerationReport:
    """Score retrieval-only, the baseline generator and the retrieval-augmented generator on each prompt set.

    The retrieval-augmented generator is scored once per init strength (1: pure noise, as trained).
    """
    from mmgen.generate.image import ImageGenerator
    from mmgen.generate.image_model import load_generator
    from mmgen.store.db import open_store

    if not manifests:
        raise ConfigError("give at least one prompt manifest")
    if samples_per_prompt < 1:
        raise ConfigError(f"samples per prompt must be >= 1, not {samples_per_prompt}")
    strengths = parse_strengths(init_strengths)
    filters = as_filters(where)
    started = time.perf_counter()
    prompt_sets = [load_prompt_set(Path(p), sample, seed, filters) for p in manifests]
    with open_store(ws.db_url) as store:
        ra = ImageGenerator(ws, store, model, index, device)
        if not ra.model.retrieval:
            raise ConfigError(f"--model {model!r} is a generator without retrieval; name the retrieval-augmented one")
        base = load_generator(ws.models_dir, baseline, ra.device)
        if base.retrieval:
            raise ConfigError(f"--baseline {baseline!r} uses retrieval; name a generator trained with --no-retrieval")
        base.check_encoder(ra.images.encoder, ra.images.encoder_checksum)
        reports = []
        sheet_rows: list[Any] = []
        for ps in prompt_sets:
            report, rows = _evaluate_set(ra, base, ps, samples_per_prompt, steps, guidance, seed, strengths, progress)
            reports.append(report)
            sheet_rows += rows
    sheet_path = None
    if sheet is not None:
        from mmgen.generate.sheet import save_sheet

        title = "columns: real | (a) retrieval only | (b) generator, no retrieval | (c) retrieval-augmented"
        header = "real, (a), (b), " + ", ".join("(c)" if s == 1.0 else f"(c) init {s:g}" for s in strengths)
        if strengths != [1.0]:
            title += ", at init strength " + " | ".join(f"{s:g}" for s in strengths)
        sheet_path = str(save_sheet(sheet_rows, sheet, scale=2, title=title, header=header))
    settings = {
        "index": ra.images.index,
        "encoder": ra.images.encoder,
        "sample": sample,
        "where": filters.to_json(lists=True),
        "samples_per_prompt": samples_per_prompt,
        "steps": steps,
        "guidance": guidance,
        "init_strengths": strengths,
        "k": ra.model.neighbours,
        "seed": seed,
        "r_precision_candidates": R_PRECISION_CANDIDATES,
    }
    models = {
        "ra-generator": {"name": ra.model.name, "checksum": ra.model.checksum, "steps": ra.model.manifest.get("steps")},
        "generator": {"name": base.name, "checksum": base.checksum, "steps": base.manifest.get("steps")},
    }
    return GenerationReport(reports, settings, models, time.perf_counter() - started, sheet_path)


def _evaluate_set(
    ra: ImageGenerator,
    base: Any,
    ps: PromptSet,
    per_prompt: int,
    steps: int,
    guidance: float,
    seed: int,
    strengths: Sequence[float],
    progress: bool,
) -> tuple[SetReport, list[Any]]:
    from mmgen.data.images import load_image
    from mmgen.generate.sheet import SheetRow
    from mmgen.data.preprocess import decode_one

    m = len(ps.prompts)
    enc = ra.encoder
    text_emb = enc.encode_text(ps.prompts)
    ref_paths = [p for refs in ps.references for p in refs]
    ref_emb = enc.encode_image([load_image(p) for p in ref_paths])
    training = ra.images.image_vectors
    prompt_of = np.repeat(np.arange(m), per_prompt)
    size = ra.model.image_size
    crop = str(ra.model.manifest.get("crop", "content"))
    k = max(1, ra.model.neighbours)

    rows, _ = ra.retrieve(text_emb, k)
    retrieved = list(ra.pictures(rows[:, 0]))
    noise = _paired_noise(seed, m, per_prompt, size)
    neighbours = ra.images.image_vectors[rows[prompt_of]]
    init = None
    if any(s < 1.0 for s in strengths):
        # sample j of a prompt starts from its (j mod k)-th nearest image outside its own concept
        init_rows = init_neighbours(ra, ps, text_emb, k)
        init = ra.pictures(init_rows[prompt_of, np.tile(np.arange(per_prompt), m) % k])
    bar = _bar((1 + len(strengths)) * len(prompt_of), f"generating {ps.name}", progress)
    base_pixels = _sample(base, text_emb[prompt_of], None, noise, steps, guidance, bar)
    ra_pixels = {
        s: _sample(ra.model, text_emb[prompt_of], neighbours, noise, steps, guidance, bar, init, s) for s in strengths
    }
    bar.close()
    real = [decode_one(refs[0], size, crop) for refs in ps.references]

    scored: list[tuple[str, Any, np.ndarray]] = [
        ("retrieval", retrieved, np.arange(m)),
        ("generator", list(base_pixels), prompt_of),
        *((ra_method(s), list(px), prompt_of) for s, px in ra_pixels.items()),
        ("real", real, np.arange(m)),
    ]
    methods = {
        name: score_method(ra.embed_images(pixels), owners, text_emb, ref_emb, training, seed)
        for name, pixels, owners in scored
    }
    report = SetReport(ps.name, ps.source, m, len(ref_paths), min(R_PRECISION_CANDIDATES, m), methods, ps.skipped)
    sheet_rows = [
        SheetRow(
            label=ps.prompts[i],
            samples=[real[i], retrieved[i], *(px[i * per_prompt] for px in (base_pixels, *ra_pixels.values()))],
            neighbours=[ra.images.uris[r] for r in rows[i]],
            note=ps.name,
        )
        for i in range(min(SHEET_ROWS_PER_SET, m))
    ]
    return report, sheet_rows


def init_neighbours(ra: ImageGenerator, ps: PromptSet, text_emb: np.ndarray, k: int) -> np.ndarray:
    """Rows (m, k) of the indexed images nearest each prompt outside its concept, to start sampling from.

    Outside its concept means no item of the prompt's group (the exclusion training neighbours
    use) and no item whose file is one of the prompt's reference pictures (the same picture indexed
    under another group, or ungrouped): otherwise a seen concept would start from its target.
    """
    from mmgen.index.knn import exact_knn

    codes: dict[str, int] = {}
    query_groups = np.asarray([codes.setdefault(g, len(codes)) for g in ps.groups], dtype=np.int64)
    # an ungrouped item is a group of its own: a negative code no prompt has
    candidate_groups = np.asarray(
        [codes.setdefault(g, len(codes)) if g is not None else -1 - i for i, g in enumerate(ra.images.groups)],
        dtype=np.int64,
    )
    rows_of_uri: dict[str, list[int]] = {}
    for row, uri in enumerate(ra.images.uris):
        rows_of_uri.setdefault(uri, []).append(row)
    copies = [
        {r for ref in refs for r in rows_of_uri.get(ref, ()) if candidate_groups[r] != query_groups[i]}
        for i, refs in enumerate(ps.references)
    ]
    # ask for enough extra neighbours that dropping a prompt's copies still leaves k
    wanted = min(k + max(len(c) for c in copies), len(ra.images))
    _, found = exact_knn(
        text_emb, ra.images.image_vectors, wanted, query_groups=query_groups, database_groups=candidate_groups
    )
    out = np.empty((len(found), k), dtype=np.int64)
    for i, row in enumerate(found):
        kept = [int(r) for r in row if int(r) not in copies[i]][:k]
        if len(kept) < k:
            raise DataError(f"prompt {ps.prompts[i]!r}: fewer than {k} indexed images outside its concept; lower k")
        out[i] = kept
    return out


def _paired_noise(seed: int, m: int, per_prompt: int, size: int) -> Any:
    """Starting noise per prompt, the same for both generators (a paired comparison)."""
    import torch

    from mmgen.generate.image import seeded_noise

    states = [int(np.random.SeedSequence([seed, i]).generate_state(1)[0]) for i in range(m)]
    return torch.cat([seeded_noise(s, per_prompt, size) for s in states])


def _sample(
    model: Any,
    text: np.ndarray,
    neighbours: np.ndarray | None,
    noise: Any,
    steps: int,
    guidance: float,
    bar: Any,
    init: np.ndarray | None = None,
    init_strength: float = 1.0,
) -> np.ndarray:
    from mmgen.generate.image import SAMPLE_BATCH, sample_images

    out = []
    for start in range(0, len(noise), SAMPLE_BATCH):
        stop = start + SAMPLE_BATCH
        nb = neighbours[start:stop] if neighbours is not None else None
        first = init[start:stop] if init is not None else None
        out.append(
            sample_images(model, text[start:stop], nb, noise[start:stop], steps, guidance,
                          init=first, init_strength=init_strength)
        )  # fmt: skip
        bar.update(len(out[-1]))
    return np.concatenate(out)


def _bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, leave=False, dynamic_ncols=True)
