"""Image indexing side by side with clip-retrieval's `clip_inference`, same open_clip model, same images.

    python benchmarks/compare_image_peers.py [--images DIR] [--n 600] [--arch ViT-B-32] [--rounds 2]
        [--workers 2] [--peers build/peers] [--json out.json]

One run, on one folder of images (default: the first N Twemoji 64 px PNGs of `make data`):
1. Raw bounds, in this process: decode-only (mmgen's reader, `--workers` threads), encode-only (the
   model's forward on ready 224 px tensors, batches of 64) and preprocess-only (open_clip's transform
   of decoded images). The bound of an indexer is min(decode, encode) images/s.
2. Whole processes, alternated `--rounds` times, each from a fresh output folder: `mmgen index DIR`
   (into a fresh workspace: SQL rows, vector file, FAISS) against `clip_inference` (numpy embedding
   files + parquet metadata, `--num_prepro_workers` = `--workers`, batch 64, no JIT, no text).
   Both load the same local checkpoint: a seeded, randomly initialised open_clip model saved by this
   script (no pretrained weights can be fetched offline; speed does not depend on the weights).
   Reported: whole-process images/s, and mmgen's in-run images/s (its own stage timings) as a share
   of the bound.

clip-retrieval is installed by this script into its own environment (`PEERS/cliprt`, borrowing the
project's packages: `clip-retrieval`, `all-clip` and `clip-anytorch` with `--no-deps`, and the
light packages its modules import); the project's venv is untouched.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLIP_RETRIEVAL = "clip-retrieval==2.45.0"
DEFAULT_IMAGES = ROOT / "data" / "npm" / "node_modules" / "emoji-datasource-twitter" / "img" / "twitter" / "64"


def peer_env(peers: Path) -> Path:
    """clip-retrieval's environment (made once, `benchmarks/peer_env.py`)."""
    from peer_env import peer_python

    probe = "from mmgen.compat import ensure_torchvision; ensure_torchvision(); import clip_retrieval.clip_inference.main"
    light = ["fire<0.6", "braceexpand", "wandb", "flask", "flask_restful", "flask_cors<5", "prometheus-client", "h5py"]
    return peer_python(peers, "cliprt", probe, no_deps=[CLIP_RETRIEVAL, "all-clip==1.3.0", "clip-anytorch"],
                       with_deps=light)  # fmt: skip


def image_folder(source: Path, n: int, out: Path) -> list[Path]:
    """`out` holds links to the first n images of `source` (sorted names)."""
    files = sorted(p for p in source.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[:n]
    if len(files) < n:
        raise SystemExit(f"{source} holds {len(files)} images, fewer than --n {n}")
    out.mkdir(parents=True)
    for f in files:
        (out / f.name).symlink_to(f.resolve())
    return sorted(out.iterdir())


def save_checkpoint(arch: str, path: Path, seed: int = 0) -> None:
    """A seeded random-init open_clip model's state dict, loadable by both sides as ARCH/PATH."""
    from mmgen.compat import ensure_torchvision

    ensure_torchvision()
    import open_clip
    import torch

    torch.manual_seed(seed)
    torch.save(open_clip.create_model(arch).state_dict(), path)


def bounds(files: list[Path], arch: str, checkpoint: Path, workers: int) -> dict[str, float]:
    """Images/s of decode-only, preprocess-only and encode-only, each on its own."""
    from concurrent.futures import ThreadPoolExecutor

    from mmgen.compat import ensure_torchvision

    ensure_torchvision()
    import torch

    from mmgen.data.images import load_image
    from mmgen.encoders.factory import load_encoder

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        images = list(pool.map(lambda p: load_image(p, 256), files))
    decode = len(files) / (time.perf_counter() - t0)
    enc = load_encoder(f"openclip:{arch}/{checkpoint}", device="cpu")
    t0 = time.perf_counter()
    pixels = torch.stack([enc.preprocess(im) for im in images])
    preprocess = len(files) / (time.perf_counter() - t0)
    with torch.inference_mode():
        enc.model.encode_image(pixels[:8])  # warm-up
        t0 = time.perf_counter()
        for start in range(0, len(pixels), 64):
            enc.model.encode_image(pixels[start : start + 64])
        encode = len(files) / (time.perf_counter() - t0)
    return {"decode": decode, "preprocess": preprocess, "encode": encode}


def run_both(folder: Path, arch: str, checkpoint: Path, work: Path, cliprt: Path, rounds: int,
             workers: int) -> dict[str, list[dict[str, float]]]:  # fmt: skip
    """Whole-process runs of `mmgen index` and `clip_inference`, alternated; mmgen's in-run stage seconds too."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled"}
    mmgen = str(Path(sys.executable).with_name("mmgen"))
    code = ("from mmgen.compat import ensure_torchvision; ensure_torchvision(); import sys; "
            "from clip_retrieval.clip_inference.main import main; main(*sys.argv[1:3], input_format='files', "
            "enable_text=False, enable_image=True, enable_metadata=False, batch_size=64, "
            "num_prepro_workers=int(sys.argv[3]), clip_model=sys.argv[4], use_jit=False, use_mclip=False, "
            "write_batch_size=10**6, output_partition_count=1)")  # fmt: skip
    out: dict[str, list[dict[str, float]]] = {"mmgen index": [], "clip-retrieval clip_inference": []}
    for r in range(rounds):
        jobs = [
            ("mmgen index", [mmgen, "index", str(folder), "--workspace", str(work / f"ws{r}"), "--encoder",
                             f"openclip:{arch}/{checkpoint}", "--workers", str(workers), "--quiet", "--json"]),
            ("clip-retrieval clip_inference", [str(cliprt), "-c", code, str(folder), str(work / f"cr{r}"),
                                               str(workers), f"open_clip:{arch}/{checkpoint}"]),
        ]  # fmt: skip
        for name, cmd in jobs if r % 2 == 0 else reversed(jobs):
            t0 = time.perf_counter()
            done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
            row = {"seconds": time.perf_counter() - t0}
            if name == "mmgen index":
                report = json.loads(done.stdout[done.stdout.index("{"):])
                row["in_run_seconds"] = sum(report["timings_s"].values())
                row["items"] = report["added"]
            else:
                row["items"] = _clip_inference_count(work / f"cr{r}")
            out[name].append(row)
    return out


def _clip_inference_count(folder: Path) -> int:
    import numpy as np

    return sum(len(np.load(p, mmap_mode="r")) for p in (folder / "img_emb").glob("*.npy"))


def main() -> None:
    """Run the bounds and both indexers, print one table (and JSON with --json)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--arch", default="ViT-B-32")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--peers", type=Path, default=ROOT / "build" / "peers")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    print(f"# mmgen image peers benchmark: {' '.join(sys.argv)}")
    print(f"# machine: {platform.machine()}, {os.cpu_count()} cores, MMGEN_THREADS={os.environ.get('MMGEN_THREADS')}")
    cliprt = peer_env(args.peers)
    work = Path(tempfile.mkdtemp(prefix="image-peers-", dir=args.peers))
    try:
        files = image_folder(args.images, args.n, work / "images")
        checkpoint = work / f"{args.arch}.pt"
        save_checkpoint(args.arch, checkpoint)
        raw = bounds(files, args.arch, checkpoint, args.workers)
        runs = run_both(work / "images", args.arch, checkpoint, work, cliprt, args.rounds, args.workers)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    bound = min(raw["decode"], raw["encode"])
    print(f"# {args.n} images from {args.images}, open_clip {args.arch} (local checkpoint), {args.rounds} rounds")
    print("\n| measure | system | figure |")
    print("|---|---|---:|")
    for name in ("decode", "preprocess", "encode"):
        print(f"| raw bound | {name} only | {raw[name]:,.1f} images/s |")
    for name, rows in runs.items():
        secs = statistics.median(r["seconds"] for r in rows)
        items = rows[0]["items"]
        print(f"| index {args.n} images, whole process | {name} | {secs:.1f} s ({items / secs:,.1f} images/s) |")
    mm = runs["mmgen index"]
    in_run = args.n / statistics.median(r["in_run_seconds"] for r in mm)
    print(f"| mmgen in-run (its stage timings) | mmgen index | {in_run:,.1f} images/s "
          f"({100 * in_run / bound:.0f}% of min(decode, encode)) |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"bounds": raw, "runs": runs, "in_run_images_per_s": in_run}, indent=2))


if __name__ == "__main__":
    main()
