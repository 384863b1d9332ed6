"""`POST /api/caption` and `POST /api/generate`: the workspace's captioner and generator, loaded once per
(model, index) and reused, recorded in the store exactly as `mmgen caption` and `mmgen generate` record.

Generated PNGs are written to the workspace's `outputs/` folder (a request cannot choose the folder) and
served back by output id from `GET /api/outputs/{id}`, which reads only files the store recorded there.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmgen.serve.app import HTTPError, decode_base64_image, link_parent, parent_of, verify_raster

if TYPE_CHECKING:
    from mmgen.store.db import Store
    from mmgen.workspace import Workspace

MAX_PICTURES = 8  # per /api/generate request: sampling is the slow part (seconds per picture on CPU)
MAX_SAMPLING_STEPS = 100
DECODES = ("greedy", "beam", "sample")


class Makers:
    """Captioners and generators of one workspace, each opened on first use and kept."""

    def __init__(self, ws: Workspace, store: Store, device: str, max_upload_bytes: int) -> None:
        self.ws = ws
        self.store = store
        self.device = device
        self.max_upload_bytes = max_upload_bytes
        self._open: dict[tuple[str, str, str], Any] = {}
        self._locks: dict[tuple[str, str, str], threading.Lock] = {}
        self._lock = threading.Lock()

    def _get(self, kind: str, model: str, index: str | None, build: Any) -> tuple[Any, threading.Lock]:
        key = (kind, model, index or "")
        with self._lock:
            if key not in self._open:  # a missing or mismatched model raises MmgenError: a 400 with its message
                self._open[key] = build()
                self._locks[key] = threading.Lock()
            return self._open[key], self._locks[key]

    # ---- caption -----------------------------------------------------------------------
    def caption(self, body: dict[str, Any], user: str) -> dict[str, Any]:
        """Caption a base64 image: `{"image", "model"?, "index"?, "k"?, "decode"?, "beams"?, "seed"?}` ->
        the `mmgen caption --json` line, with the retrieved captions it was grounded on."""
        from mmgen.generate.caption import DEFAULT_CAPTIONER, CaptionService, CaptionSettings

        if not isinstance(body.get("image"), str) or not body["image"]:
            raise HTTPError(400, "give image: a base64 PNG/JPEG/WebP")
        data = decode_base64_image(body["image"], self.max_upload_bytes)
        verify_raster(data)
        model = _name(body.get("model") or DEFAULT_CAPTIONER, "model")
        index = _name(body["index"], "index") if body.get("index") else None
        decode = str(body.get("decode") or "beam")
        if decode not in DECODES:
            raise HTTPError(400, f"decode must be one of {', '.join(DECODES)}, not {decode!r}")
        k = _bounded(body.get("k"), "k", 1, 64)
        beams = _bounded(body.get("beams", 3), "beams", 1, 16)
        seed = _bounded(body.get("seed"), "seed", 0, 2**32 - 1)
        parent = parent_of(self.store, body)
        settings = CaptionSettings(model=model, index=index, decode=decode, beams=beams, device=self.device)
        service, lock = self._get("caption", model, index, lambda: CaptionService(self.ws, self.store, settings))
        with lock, tempfile.NamedTemporaryFile(suffix=".upload") as tmp:
            tmp.write(data)
            tmp.flush()
            untrusted_check(tmp.name)  # uploads come from elsewhere: size, pixel and time limits first
            service.configure(decode, beams, k, seed)  # per-request decoding, on the loaded-once service
            result = service.caption(tmp.name, user=user, shown="upload")
        if result.error is not None:
            raise HTTPError(400, f"the uploaded image cannot be decoded: {result.error}")
        link_parent(self.store, result.prompt_id, parent)
        return result.to_json()

    # ---- generate ----------------------------------------------------------------------
    def generate(self, body: dict[str, Any], user: str) -> dict[str, Any]:
        """Generate from text: `{"text", "n"?, "seed"?, "k"?, "steps"?, "guidance"?, "init_strength"?, "model"?,
        "index"?}` -> the `mmgen generate --json` generation, with `urls` of its PNGs."""
        import secrets

        from mmgen.generate.diffusion import check_strength
        from mmgen.generate.image import DEFAULT_GUIDANCE, DEFAULT_STEPS, ImageGenerator, check_prompt
        from mmgen.generate.image_model import DEFAULT_GENERATOR

        text = body.get("text")
        if not isinstance(text, str):
            raise HTTPError(400, "give text: the prompt to generate from")
        text = check_prompt(text)
        model = _name(body.get("model") or DEFAULT_GENERATOR, "model")
        index = _name(body["index"], "index") if body.get("index") else None
        n = _bounded(body.get("n", 4), "n", 1, MAX_PICTURES)
        steps = _bounded(body.get("steps", DEFAULT_STEPS), "steps", 1, MAX_SAMPLING_STEPS)
        k = _bounded(body.get("k"), "k", 1, 64)
        seed = _bounded(body.get("seed"), "seed", 0, 2**32 - 1)
        seed = secrets.randbits(32) if seed is None else seed
        try:
            guidance = float(body.get("guidance", DEFAULT_GUIDANCE))
            strength = check_strength(float(body.get("init_strength", 1.0)))
        except (TypeError, ValueError):
            raise HTTPError(400, "guidance and init_strength must be numbers") from None
        if not 0.0 <= guidance <= 20.0:
            raise HTTPError(400, "guidance must be in 0..20")
        parent = parent_of(self.store, body)
        generator, lock = self._get(
            "generate", model, index, lambda: ImageGenerator(self.ws, self.store, model, index, self.device)
        )
        with lock:
            result = generator.generate_and_record(
                text, n=n, seed=seed, k=k, steps=steps, guidance=guidance, init_strength=strength, user=user
            )  # fmt: skip
        link_parent(self.store, result.prompt_id, parent)
        out = result.to_json()
        out["output_ids"] = self.output_ids(int(result.prompt_id or 0))
        out["urls"] = [f"/api/outputs/{i}" for i in out["output_ids"]]
        out.pop("files")  # server paths: the urls are what a client can open
        return out

    def output_ids(self, prompt_id: int) -> list[int]:
        from sqlalchemy import select

        from mmgen.store.models import Output

        with self.store.session() as s:
            ids = s.scalars(select(Output.id).where(Output.prompt_id == prompt_id).order_by(Output.id))
            return [int(i) for i in ids]

    def output_png(self, output_id: int) -> bytes:
        """The PNG of a generated output; only files the store recorded inside the workspace's outputs folder."""
        from mmgen.store.models import Output

        with self.store.session() as s:
            row = s.get(Output, output_id)
            uri = row.file_uri if row is not None else None
        if not uri:
            raise HTTPError(404, f"no generated picture {output_id}")
        path = Path(uri).resolve()
        if not path.is_relative_to(self.ws.outputs_dir.resolve()) or path.suffix.lower() != ".png":
            raise HTTPError(404, f"output {output_id} is not a picture this server wrote")
        try:
            return path.read_bytes()
        except OSError as exc:
            raise HTTPError(404, f"output {output_id} is gone: {exc.strerror}") from exc


def _bounded(value: Any, name: str, low: int, high: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise HTTPError(400, f"{name} must be an integer")
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise HTTPError(400, f"{name} must be an integer") from None
    if not low <= out <= high:
        raise HTTPError(400, f"{name} must be in {low}..{high}")
    return out


def _name(value: Any, what: str) -> str:
    """A model or index name: a plain folder name, never a path."""
    name = str(value)
    if not name or "/" in name or "\\" in name or name.startswith(".") or len(name) > 100:
        raise HTTPError(400, f"{what} must be a plain name, not {name!r}")
    return name


def untrusted_check(path: str) -> None:
    """HTTPError 400 unless the upload decodes within the untrusted limits (`mmgen.data.untrusted`)."""
    from mmgen.data.images import load_image
    from mmgen.errors import MmgenError

    try:
        load_image(path, untrusted=True)
    except MmgenError as exc:
        raise HTTPError(400, f"the uploaded image cannot be decoded: {exc}") from exc
