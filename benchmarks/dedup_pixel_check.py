"""Would a pixel check after the cosine lift dedup's precision? Development data only.

    python benchmarks/dedup_pixel_check.py [--work build/dedup-dev] [--bench-json build/logs/dedup_dev.json]
        [--threshold 0.95] [--analysis structure|diff] [--variants "32:1.0,0.9:content ..."] [--sides 16,32,64]

Reads a set that `benchmarks/dedup_bench.py --seed 1 --work build/dedup-dev --json build/logs/dedup_dev.json`
built and indexed (its pictures, its mmgen workspace, its entries) and takes the pairs with cosine >=
threshold. For each pair it scores the two pictures:
- `structure` (default): `mmgen.dedup_pixels.structure_score` of their signatures, for each
  SIDE:SCALES:MAPS variant (grey and/or chroma maps, best over crop scales and mirroring);
- `diff`: the mean absolute RGB difference (on white, box-resized to SIDE x SIDE, the smaller of
  as-is and mirrored).
It prints, per variant and per bound on the score, the pairs kept, precision and recall of duplicate
pairs, and the false positives by kind. Run on the development set (seed 1) only: the test set
(seed 0) stays for `dedup_bench.py`'s reported figures.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BOUNDS = (0.01, 0.03, 0.05, 0.1, 0.15, 1.0)
STRUCTURE_BOUNDS = (-1.0, 0.5, 0.7, 0.8, 0.85, 0.88, 0.9, 0.92, 0.94, 0.96, 0.98)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("build/dedup-dev"))
    ap.add_argument("--bench-json", type=Path, default=Path("build/logs/dedup_dev.json"))
    ap.add_argument("--threshold", type=float, default=0.95)
    ap.add_argument("--analysis", choices=("structure", "diff"), default="structure")
    ap.add_argument("--sides", default="16,32,64", help="diff: thumbnail sides")
    ap.add_argument("--variants", default="16:1.0,0.9:grey+chroma 24:1.0,0.9:grey+chroma 32:1.0,0.9:grey+chroma",
                    help="structure: SIDE:SCALES:MAPS signatures to compare (mmgen.dedup_pixels.signature)")
    args = ap.parse_args()

    from mmgen.compat import ensure_torchvision

    ensure_torchvision()
    from PIL import Image

    from mmgen.dedup import range_pairs
    from mmgen.index.rows import load_vectors
    from mmgen.store.db import open_store
    from mmgen.workspace import Workspace

    entries = json.loads(args.bench_json.read_text(encoding="utf-8"))["entries"]
    position = {e["name"]: i for i, e in enumerate(entries)}
    truth = sum(1 for a in range(len(entries)) for b in range(a + 1, len(entries))
                if entries[a]["family"] >= 0 and entries[a]["family"] == entries[b]["family"])  # fmt: skip
    ws = Workspace.resolve(args.work / "mmgen-ws")
    with open_store(ws.db_url) as store:
        loaded = load_vectors(ws, store, modalities=("image",))
    rows = loaded.modalities["image"]
    vectors = np.ascontiguousarray(rows.vectors, dtype=np.float32)
    at = [position[Path(loaded.items[int(i)].uri or "").name] for i in rows.item_ids]
    pairs = [(at[a], at[b]) for lo, hi in range_pairs(vectors, args.threshold) for a, b in zip(lo.tolist(), hi.tolist())]
    print(f"# {len(pairs)} pairs at cosine >= {args.threshold}; {truth} duplicate pairs in the set")

    sources = sum(1 for e in entries if e["kind"] == "source")

    def kind_of(a: int, b: int) -> tuple[bool, str]:
        ea, eb = entries[a], entries[b]
        dup = ea["family"] >= 0 and ea["family"] == eb["family"]
        if dup:  # source against copy: the copy's transform; two copies: "copies"
            kinds = {ea["kind"], eb["kind"]} - {"source"}
            return True, kinds.pop() if len(kinds) == 1 else "copies"
        return False, "fp other style" if ea["concept"] == eb["concept"] else "fp unrelated"

    def table(title: str, scored: list[tuple[float, bool, str]], bounds: tuple[float, ...], keep_above: bool) -> None:
        print(f"\n## {title}: | bound | kept | precision | recall | false positives | recall source-copy by transform |")
        for bound in bounds:
            kept = [s for s in scored if (s[0] >= bound if keep_above else s[0] <= bound)]
            tp = sum(s[1] for s in kept)
            fps = dict(collections.Counter(s[2] for s in kept if not s[1]))
            per = collections.Counter(s[2] for s in kept if s[1] and s[2] != "copies")
            per_s = " ".join(f"{t} {n / max(1, sources):.2f}" for t, n in sorted(per.items()))
            print(f"| {bound} | {len(kept)} | {tp / max(1, len(kept)):.3f} | {tp / max(1, truth):.3f} | {fps} | {per_s} |")

    def picture(i: int) -> Image.Image:
        with Image.open(args.work / "images" / entries[i]["name"]) as im:
            rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")

    if args.analysis == "diff":
        for side in (int(s) for s in args.sides.split(",")):
            cache: dict[int, np.ndarray] = {}

            def pixels(i: int, side: int = side, cache: dict[int, np.ndarray] = cache) -> np.ndarray:
                if i not in cache:
                    cache[i] = np.asarray(picture(i).resize((side, side), Image.BOX), dtype=np.float32) / 255
                return cache[i]

            scored = []
            for a, b in pairs:
                pa, pb = pixels(a), pixels(b)
                diff = min(float(np.abs(pa - pb).mean()), float(np.abs(pa - pb[:, ::-1]).mean()))
                scored.append((diff, *kind_of(a, b)))
            table(f"{side} px, mean absolute RGB difference at most", scored, BOUNDS, keep_above=False)
        return

    from mmgen.data.images import load_image
    from mmgen.dedup_pixels import DECODE_SIDE, signature, structure_score

    variants = [v.split(":") for v in args.variants.split()]
    for side_s, scales_s, channels_s in variants:
        side, scales, channels = int(side_s), tuple(float(x) for x in scales_s.split(",")), channels_s.split("+")
        signatures = {}
        for i in sorted({i for pair in pairs for i in pair}):
            # decoded as `mmgen dedup` decodes it
            signatures[i] = signature(load_image(args.work / "images" / entries[i]["name"], DECODE_SIDE), side, scales, channels)
        scored = [(structure_score(signatures[a], signatures[b], side), *kind_of(a, b)) for a, b in pairs]
        table(f"structure {side} px, scales {scales}, maps {channels_s}: score at least", scored,
              STRUCTURE_BOUNDS, keep_above=True)  # fmt: skip


if __name__ == "__main__":
    main()
