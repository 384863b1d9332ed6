"""`mmgen generate`: text -> embedding -> k nearest indexed images -> diffusion sampling -> PNGs + SQL provenance.

One `ImageGenerator` holds what a workspace needs to draw: the trained generator, the index's
encoder and its image vectors. Sampling is deterministic per seed (same seed, prompt and settings:
the same PNG bytes on the same machine): the starting noise of sample i is the i-th draw of a CPU
generator seeded with the seed, so it does not depend on how many samples are asked for.

With an init strength below 1, sample i starts from retrieved neighbour i mod k noised to that
time (SDEdit), so the neighbours shape the picture itself, not only its conditioning.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmgen.errors import ConfigError
from mmgen.generate.image_model import DEFAULT_GENERATOR
from mmgen.store.repo import login_user

if TYPE_CHECKING:
    import torch

    from mmgen.encoders.base import Encoder
    from mmgen.generate.image_model import GeneratorModel
    from mmgen.generate.image_neighbours import IndexedImages
    from mmgen.store.db import Store
    from mmgen.workspace import Workspace

SEED_MAX = 2**32 - 1
MAX_SAMPLES = 64
MAX_NEIGHBOURS = 64
DEFAULT_STEPS = 30
DEFAULT_GUIDANCE = 3.0
SAMPLE_BATCH = 16  # samples denoised together (twice that with guidance)


@dataclass
class Neighbour:
    """One retrieved image a generation was conditioned on."""

    rank: int
    item_id: int
    score: float
    uri: str
    text: str | None
    group: str | None

    def to_json(self) -> dict[str, Any]:
        """Stable `--json` form."""
        return {
            "rank": self.rank,
            "item_id": self.item_id,
            "score": round(float(self.score), 6),
            "uri": self.uri,
            "text": self.text,
            "group": self.group,
        }


@dataclass
class Generation:
    """The pictures made for one prompt, with what they were grounded on."""

    prompt: str
    seed: int
    model: str
    images: list[np.ndarray]  # (S, S, 3) uint8 each
    neighbours: list[Neighbour]
    similarity: list[float]  # each picture's cosine to the prompt under the index's encoder
    latency_ms: float
    params: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    prompt_id: int | None = None
    init_ranks: list[int] = field(default_factory=list)  # per picture, the neighbour rank it started from

    def to_json(self) -> dict[str, Any]:
        """The stable `--json` form of one prompt's result."""
        return {
            "prompt": self.prompt,
            "prompt_id": self.prompt_id,
            "seed": self.seed,
            "model": self.model,
            "files": [str(p) for p in self.files],
            "similarity": [round(float(s), 6) for s in self.similarity],
            "retrieved": [n.to_json() for n in self.neighbours],
            "latency_ms": round(self.latency_ms, 1),
            "params": self.params,
            "init_ranks": self.init_ranks,
        }


def check_seed(seed: int) -> int:
    """A seed in [0, 2**32 - 1], else ConfigError."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= SEED_MAX:
        raise ConfigError(f"seed must be an integer in [0, {SEED_MAX}], not {seed!r}")
    return int(seed)


def check_prompt(text: str) -> str:
    """The prompt stripped; ConfigError when it is empty."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("empty prompt: give the text of the picture to generate")
    return text.strip()


def seeded_noise(seed: int, n: int, image_size: int) -> torch.Tensor:
    """Starting noise of n samples: sample i is the i-th draw of a CPU generator seeded with `seed`."""
    import torch

    gen = torch.Generator().manual_seed(check_seed(seed))
    return torch.cat([torch.randn((1, 3, image_size, image_size), generator=gen) for _ in range(n)])


def sample_images(
    model: GeneratorModel,
    text: np.ndarray,
    neighbours: np.ndarray | None,
    noise: torch.Tensor,
    steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    batch: int = SAMPLE_BATCH,
    init: np.ndarray | None = None,
    init_strength: float = 1.0,
) -> np.ndarray:
    """Denoise `noise` (m, 3, S, S) conditioned on text (m, d) and neighbour (m, k, d) embeddings -> uint8 (m, S, S, 3).

    With `init_strength` < 1, sampling starts from the uint8 pictures `init` (m, S, S, 3) noised
    to that time (see `ddim_sample`); strength 1 is pure noise and ignores `init`.
    """
    import torch

    from mmgen.generate.diffusion import check_strength, ddim_sample, from_uint8, guided, to_uint8
    from mmgen.generate.unet import Conditions

    if steps < 1 or steps > 1000:
        raise ConfigError(f"steps must be in 1..1000, not {steps}")
    if not np.isfinite(guidance) or guidance < 0:
        raise ConfigError(f"guidance must be >= 0, not {guidance}")
    if model.retrieval and neighbours is None:
        raise ConfigError(f"generator {model.name!r} is conditioned on retrieved images; give neighbours")
    init_strength = check_strength(init_strength)
    if init_strength == 1.0:
        init = None
    else:
        want = (len(noise), noise.shape[2], noise.shape[3], noise.shape[1])
        got = None if init is None else (np.asarray(init).shape, np.asarray(init).dtype)
        if got != (want, np.dtype(np.uint8)):
            raise ConfigError(f"init strength {init_strength:g} starts from pictures: give uint8 {want}, not {got}")
    device = next(model.net.parameters()).device
    out = []
    for start in range(0, len(noise), batch):
        stop = start + batch
        t_vec = torch.from_numpy(np.ascontiguousarray(text[start:stop], dtype=np.float32)).to(device)
        n_vec = None
        if model.retrieval and neighbours is not None:
            n_vec = torch.from_numpy(np.ascontiguousarray(neighbours[start:stop], dtype=np.float32)).to(device)

        def predict(
            z: torch.Tensor, t: torch.Tensor, keep: torch.Tensor, t_vec: torch.Tensor = t_vec, n_vec: Any = n_vec
        ) -> torch.Tensor:
            reps = z.shape[0] // t_vec.shape[0]
            cond = Conditions(
                text=t_vec.repeat(reps, 1),
                neighbours=None if n_vec is None else n_vec.repeat(reps, 1, 1),
                keep_text=keep,
                keep_neighbours=keep,
            )
            return model.net(z, t, cond)

        x_init = None if init is None else from_uint8(torch.from_numpy(np.ascontiguousarray(init[start:stop])))
        with torch.inference_mode():
            x = ddim_sample(
                guided(predict, guidance, model.prediction), noise[start:stop].to(device), steps, x_init, init_strength
            )
        out.append(to_uint8(x).numpy())
    return np.concatenate(out)


class ImageGenerator:
    """A workspace ready to generate: generator, encoder, index image vectors, store."""

    def __init__(
        self,
        ws: Workspace,
        store: Store,
        model: str = DEFAULT_GENERATOR,
        index: str | None = None,
        device: str = "auto",
    ) -> None:
        from mmgen.devices import torch_device
        from mmgen.encoders.base import configure_torch_threads
        from mmgen.encoders.factory import load_encoder
        from mmgen.errors import ManifestMismatchError
        from mmgen.generate.image_model import load_generator
        from mmgen.generate.image_neighbours import load_indexed_images, require_index

        configure_torch_threads()
        self.ws = ws
        self.store = store
        self.device = torch_device(device)
        require_index(store)  # the first thing a fresh workspace lacks: say so before asking for a generator
        self.model: GeneratorModel = load_generator(ws.models_dir, model, self.device)
        self.images: IndexedImages = load_indexed_images(ws, store, index or self.model.manifest.get("index"))
        self.model.check_encoder(self.images.encoder, self.images.encoder_checksum)
        self.encoder: Encoder = load_encoder(self.images.encoder, device=device, models_dir=ws.models_dir)
        if self.encoder.checksum() != self.images.encoder_checksum:
            raise ManifestMismatchError(
                f"encoder {self.images.encoder} changed since index {self.images.index!r} was built; re-index it"
            )
        self._model_id: int | None = None

    def retrieve(self, text_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows (m, k) and scores of the k indexed images nearest to each text vector."""
        from mmgen.index.knn import exact_knn

        if not 1 <= k <= min(MAX_NEIGHBOURS, len(self.images)):
            raise ConfigError(f"k must be in 1..{min(MAX_NEIGHBOURS, len(self.images))}, not {k}")
        scores, rows = exact_knn(text_vectors, self.images.image_vectors, k)
        return rows, scores

    def pictures(self, rows: Sequence[int]) -> np.ndarray:
        """Indexed images at `rows` as the generator saw them in training: uint8 (m, S, S, 3)."""
        from mmgen.data.preprocess import decode_one

        size, crop = self.model.image_size, str(self.model.manifest.get("crop", "content"))
        return np.stack([decode_one(self.images.uris[int(r)], size, crop) for r in rows])

    def generate(
        self,
        prompt: str,
        n: int = 4,
        seed: int | None = None,
        k: int | None = None,
        steps: int = DEFAULT_STEPS,
        guidance: float = DEFAULT_GUIDANCE,
        init_strength: float = 1.0,
    ) -> Generation:
        """Make n pictures for one prompt (nothing written or recorded; see `generate_and_record`).

        `init_strength` < 1 starts picture i from retrieved neighbour i mod k noised to that time.
        """
        from mmgen.generate.diffusion import check_strength

        prompt = check_prompt(prompt)
        if not 1 <= n <= MAX_SAMPLES:
            raise ConfigError(f"n must be in 1..{MAX_SAMPLES}, not {n}")
        init_strength = check_strength(init_strength)
        if init_strength < 1.0 and not self.model.retrieval:
            raise ConfigError(
                f"generator {self.model.name!r} draws without retrieval, so there are no neighbours to start from; "
                "use init strength 1 or a retrieval-augmented generator"
            )
        seed = secrets.randbits(32) if seed is None else check_seed(seed)
        started = time.perf_counter()
        text_vec = self.encoder.encode_text([prompt])
        neighbours: list[Neighbour] = []
        neighbour_vecs = None
        k_used = 0
        rows = np.empty((1, 0), dtype=np.int64)
        if self.model.retrieval:
            k_used = self.model.neighbours if k is None else int(k)
            rows, scores = self.retrieve(text_vec, k_used)
            neighbour_vecs = np.repeat(self.images.image_vectors[rows[0]][None], n, axis=0)
            neighbours = [
                Neighbour(
                    rank=rank,
                    item_id=int(self.images.item_ids[r]),
                    score=float(s),
                    uri=self.images.uris[r],
                    text=self.images.texts[r],
                    group=self.images.groups[r],
                )
                for rank, (r, s) in enumerate(zip(rows[0], scores[0]), start=1)
            ]
        noise = seeded_noise(seed, n, self.model.image_size)
        init = None
        init_ranks: list[int] = []
        if init_strength < 1.0:
            init_ranks = [i % k_used + 1 for i in range(n)]
            init = self.pictures([int(rows[0][r - 1]) for r in init_ranks])
        pixels = sample_images(
            self.model, np.repeat(text_vec, n, axis=0), neighbour_vecs, noise, steps, guidance,
            init=init, init_strength=init_strength,
        )  # fmt: skip
        latency = (time.perf_counter() - started) * 1000
        images = list(pixels)
        similarity = (self.embed_images(images) @ text_vec[0]).tolist()
        params = {
            "n": n,
            "seed": seed,
            "k": k_used,
            "steps": steps,
            "guidance": guidance,
            "init_strength": init_strength,
            "model": self.model.name,
            "model_checksum": self.model.checksum,
            "index": self.images.index,
            "encoder": self.images.encoder,
            "image_size": self.model.image_size,
        }
        return Generation(
            prompt, seed, self.model.name, images, neighbours, similarity, latency, params, init_ranks=init_ranks
        )

    def embed_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Embed uint8 pictures with the index's encoder (as it embeds indexed images)."""
        from PIL import Image

        return self.encoder.encode_image([Image.fromarray(np.asarray(im), "RGB") for im in images])

    def generate_and_record(
        self,
        prompt: str,
        n: int = 4,
        seed: int | None = None,
        k: int | None = None,
        steps: int = DEFAULT_STEPS,
        guidance: float = DEFAULT_GUIDANCE,
        out_dir: Path | None = None,
        init_strength: float = 1.0,
        user: str | None = None,
    ) -> Generation:
        """Generate, write PNGs (workspace `outputs/` or `out_dir`), record prompt, retrievals and outputs in SQL
        (`user`: who asked, default the OS user)."""
        result = self.generate(prompt, n, seed, k, steps, guidance, init_strength)
        self.record(result, out_dir, user)
        return result

    def record(self, result: Generation, out_dir: Path | None = None, user: str | None = None) -> None:
        """Write a generation's PNGs and its SQL rows in one transaction (files are removed if SQL fails)."""
        from PIL import Image

        from mmgen.store.models import Output, Prompt, Retrieval

        folder = (out_dir or self.ws.outputs_dir).expanduser().resolve()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create output folder {folder}: {exc}") from exc
        model_id = self.model_id()
        written: list[Path] = []
        with self.store.session() as s:
            prompt = Prompt(kind="generate", text=result.prompt, params=dict(result.params), user=user or login_user())
            prompt.retrievals = [
                Retrieval(rank=nb.rank, item_id=nb.item_id, score=nb.score, modality="image")
                for nb in result.neighbours
            ]
            s.add(prompt)
            s.flush()
            try:
                for i, pixels in enumerate(result.images):
                    path = folder / f"{prompt.id}-{_slug(result.prompt)}-{i}.png"
                    Image.fromarray(pixels, "RGB").save(path, format="PNG")
                    written.append(path)
                    scores = {"seed": result.seed, "sample": i, "prompt_similarity": result.similarity[i]}
                    if result.init_ranks:
                        scores["init_rank"] = result.init_ranks[i]  # the Retrieval rank it started from
                    s.add(
                        Output(
                            prompt_id=prompt.id,
                            file_uri=str(path),
                            model_id=model_id,
                            scores=scores,
                            latency_ms=result.latency_ms,
                        )
                    )
                s.commit()
            except BaseException:
                s.rollback()
                for path in written:
                    path.unlink(missing_ok=True)
                raise
            result.prompt_id = int(prompt.id)
        result.files = written

    def model_id(self) -> int:
        """The generator's `models` row (registered here if the folder was copied in from elsewhere)."""
        if self._model_id is None:
            from mmgen.artifacts import register_model

            manifest = self.model.manifest
            params = {k: v for k, v in manifest.items() if k != "loss_curve"}
            self._model_id = register_model(
                self.ws, "generator", self.model.name, self.model.path, str(manifest["checksum"]), params
            )
        return self._model_id


def _slug(text: str, limit: int = 40) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.casefold()).strip("-")
    return slug[:limit].rstrip("-") or "prompt"



def read_prompts(path: Path) -> list[str]:
    """One prompt per non-empty line of a UTF-8 text file (`#` starts a comment line)."""
    from mmgen.errors import DataError

    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read prompts from {path}: {exc}") from exc
    prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise DataError(f"{path} holds no prompts (one per line)")
    return prompts
