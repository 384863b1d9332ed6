"""Caption benchmark: train-split workspace, both captioners, held-out evaluation, one table.

    python benchmarks/bench_captions.py --workspace /tmp/cap/ws \
        --protocol indexes/protocols/product --encoder mmgen:/work/main/indexes/models/product \
        [--epochs 6 | --steps N] [--minutes M] [--k 4] [--decode beam --beams 3] [--retrain] [--json out.json]
        [--evals heldout-concepts.jsonl,openclipart-heldout.jsonl] [--exclude concept|item]

A new style of known concepts (train without Twemoji, caption Twemoji, retrieve from everything else):

    python benchmarks/bench_captions.py --workspace build/cap-loso --protocol indexes/protocols/loso \
        --encoder mmgen:/path/to/models/loso --evals twemoji.jsonl --exclude item

1. Index the protocol's `train.jsonl` into the workspace (incremental: unchanged items are skipped).
2. Train `captioner` (retrieval-augmented) and `captioner-noret` (image-only, same epochs) unless
   they exist (or with --retrain).
3. Evaluate both with `evaluate_captions` on `heldout-concepts.jsonl` (per style) and
   `openclipart-heldout.jsonl` (or `--evals`): (a) retrieval only (kNN consensus), (b) the image-only decoder,
   (c) the retrieval-augmented decoder, and print a Markdown table.
Held-out concepts are never indexed nor trained on (the protocol shares no group between train
and eval). `--exclude concept` (the default) also leaves the query's own group out of retrieval;
`--exclude item` leaves out only the query's item and identical images.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmgen.eval.captions import METHODS, CaptionEvalSettings, evaluate_captions
from mmgen.train.captioner import CaptionerConfig, train_captioner
from mmgen.workspace import Workspace

EVALS = ("heldout-concepts.jsonl", "openclipart-heldout.jsonl")


def main() -> None:
    """Build, train, evaluate, print."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", type=Path, default=Path("build/bench-captions"))
    ap.add_argument("--protocol", type=Path, default=Path("indexes/protocols/product"))
    ap.add_argument("--encoder", default="mmgen:product", help="joint encoder for a new index")
    ap.add_argument("--epochs", type=float, default=None, help="passes per captioner [default: the trainer's]")
    ap.add_argument("--steps", type=int, default=None, help="optimiser steps per captioner (instead of --epochs)")
    ap.add_argument("--minutes", type=float, default=None, help="wall-clock cap per captioner")
    ap.add_argument("--evals", default=",".join(EVALS), help="comma-separated manifests in --protocol")
    ap.add_argument("--exclude", default="concept", choices=["concept", "item"], help="what retrieval leaves out")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--decode", default="beam", choices=["greedy", "beam"])
    ap.add_argument("--beams", type=int, default=3)
    ap.add_argument("--retrain", action="store_true", help="train the captioners even when they exist")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()

    ws = Workspace.resolve(args.workspace)
    print(f"# mmgen caption benchmark: {' '.join(sys.argv)}")
    print(f"# machine: {platform.machine()}, {os.cpu_count()} cores, MMGEN_THREADS={os.environ.get('MMGEN_THREADS')}")
    # Always run the (incremental) indexer: an interrupted first run leaves a partial index behind.
    from mmgen.indexer import IndexOptions, index_sources

    started = time.perf_counter()
    report = index_sources(str(args.protocol / "train.jsonl"), ws, IndexOptions(encoder=args.encoder))
    print(f"# indexed {report.totals} in {time.perf_counter() - started:.0f} s")
    training: dict[str, dict] = {}
    for name, retrieval in (("captioner", True), ("captioner-noret", False)):
        manifest = ws.models_dir / name / "manifest.json"
        if args.retrain or not manifest.is_file():
            cfg = CaptionerConfig(
                name=name, k=args.k, retrieval=retrieval, epochs=args.epochs, steps=args.steps,
                minutes=args.minutes, seed=args.seed,
            )
            train_captioner(ws, cfg)
        info = json.loads(manifest.read_text(encoding="utf-8"))
        keys = ("steps", "epochs", "train_seconds", "final_loss", "k", "stopped_by_time")
        training[name] = {k: info[k] for k in keys}
        print(
            f"# {name}: {info['steps']} steps, {info['epochs']} epochs, {info['train_seconds'] / 60:.1f} min "
            f"(under shared CPU load), final loss {info['final_loss']:.3f}"
        )

    results: dict[str, dict] = {}
    settings = CaptionEvalSettings(
        decode=args.decode, beams=args.beams, exclude=args.exclude, show=6, progress=False
    )
    for manifest in [m for m in args.evals.split(",") if m]:
        started = time.perf_counter()
        report = evaluate_captions(args.protocol / manifest, ws, settings)
        results[manifest] = report.to_json()
        print(f"# {manifest}: {report.n_images} images in {time.perf_counter() - started:.0f} s, k={report.k}, "
              f"decode {report.decode}, exclude {report.exclude}, skipped {len(report.skipped)}")

    print("\n| split | method | BLEU-4 | CIDEr | exact name |")
    print("|---|---|---:|---:|---:|")
    for manifest, report in results.items():
        for split, methods in report["splits"].items():
            label = f"{Path(manifest).stem} / {split}" if split != "all" else f"{Path(manifest).stem} (all)"
            for method, s in methods.items():
                print(
                    f"| {label} (n={s['n']}) | {METHODS[method].strip()} | {s['bleu4']:.3f} | {s['cider']:.3f} "
                    f"| {100 * s['exact']:.1f}% |"
                )
    for manifest, report in results.items():
        print(f"\n## examples from {manifest}")
        for ex in report["examples"]:
            print(f"- true: {ex['truth']!r}; (a) {ex['retrieval']!r}; (b) {ex['decoder']!r}; (c) {ex['ra_decoder']!r}")
    if args.json:
        args.json.write_text(json.dumps({"training": training, "results": results}, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
