"""Train the joint encoder under both fixed protocols and print held-out retrieval tables.

    python benchmarks/bench_encoder.py --workspace build/bench-encoder [--minutes 30 | --steps N]
        [--protocols loso product product-dev] [--tower mmgen-convnet-s] [--lr 2e-3] [--sampling concept]
        [--augment style] [--icon-weight W] [--caption-names] [--seed 0] [--name-suffix S]

For each protocol (see `mmgen data protocol`): write its manifests, train `mmgen:bench-PROTOCOL`
on `train.jsonl` only, then evaluate Recall@1/5/10 in both directions on every held-out
manifest of the protocol. `product-dev` is the product protocol's development split (train on
`dev/train.jsonl`, evaluate the development concepts against the pool): tune there, never on the
test manifests. Prints training time and samples/s beside the tables. Nothing is
evaluated on training data: the protocols share no concept (group) between train and eval.
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

from mmgen.eval.protocols import write_protocol  # noqa: E402
from mmgen.eval.retrieval import evaluate_manifest  # noqa: E402
from mmgen.train.encoder import TrainConfig, train_encoder  # noqa: E402
from mmgen.workspace import Workspace  # noqa: E402

EVALS = {
    "loso": ["twemoji", "twemoji-flags"],
    "product": ["heldout-vs-pool", "heldout-concepts", "heldout-flags", "openclipart-heldout", "icons-heldout"],
    "product-dev": ["dev/heldout-vs-pool"],
}
TRAIN_MANIFEST = {"loso": "train.jsonl", "product": "train.jsonl", "product-dev": "dev/train.jsonl"}


def main() -> None:
    """Run the protocols and print their tables."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", type=Path, default=Path("build/bench-encoder"))
    ap.add_argument("--protocols", nargs="+", default=["loso", "product"], choices=sorted(EVALS))
    ap.add_argument("--data-dir", type=Path, default=None, help="where the corpora were fetched [$MMGEN_DATA]")
    ap.add_argument("--minutes", type=float, default=30.0, help="training budget per model")
    ap.add_argument("--steps", type=int, default=None, help="optimiser steps per model instead of --minutes")
    ap.add_argument("--tower", default=TrainConfig.image_tower)
    ap.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    ap.add_argument("--lr", type=float, default=TrainConfig.lr)
    ap.add_argument("--sampling", default=TrainConfig.sampling, choices=["concept", "image"])
    ap.add_argument("--augment", default=TrainConfig.augment)
    ap.add_argument("--icon-weight", type=float, default=TrainConfig.icon_weight)
    ap.add_argument("--caption-names", action="store_true", default=TrainConfig.caption_names)
    ap.add_argument("--name-suffix", default="", help="appended to the model names (several settings, one workspace)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    ap.add_argument("--resume", action="store_true", help="continue an interrupted run (Ctrl-C saves its state)")
    args = ap.parse_args()

    ws = Workspace.resolve(args.workspace)
    print(f"# mmgen encoder benchmark: {' '.join(sys.argv)}")
    budget = f"{args.steps} steps" if args.steps else f"{args.minutes} min"
    print(f"# machine: {platform.machine()}, {os.cpu_count()} cores; tower {args.tower}, {budget} per model, "
          f"lr {args.lr}, sampling {args.sampling}, augment {args.augment}, icon weight {args.icon_weight}, "
          f"caption names {args.caption_names}")
    results: dict[str, dict] = {}
    for protocol in args.protocols:
        base = protocol.removesuffix("-dev")
        folder = ws.root / "protocols" / base
        if not (folder / "protocol.json").is_file():
            write_protocol(base, folder, args.data_dir, seed=args.seed)  # type: ignore[arg-type]
        paths = {p.relative_to(folder).as_posix().removesuffix(".jsonl"): p for p in folder.rglob("*.jsonl")}
        cfg = TrainConfig(
            name=f"bench-{protocol}{args.name_suffix}",
            image_tower=args.tower,
            batch_size=args.batch_size,
            lr=args.lr,
            sampling=args.sampling,
            augment=args.augment,
            icon_weight=args.icon_weight,
            caption_names=args.caption_names,
            minutes=None if args.steps else args.minutes,
            steps=args.steps,
            seed=args.seed,
            resume="auto" if args.resume else "never",
            data_dir=str(args.data_dir) if args.data_dir else None,
            progress=sys.stderr.isatty(),
        )
        started = time.perf_counter()
        train_manifest = folder / TRAIN_MANIFEST[protocol]
        trained = train_encoder([str(train_manifest)], ws, cfg)
        wall = time.perf_counter() - started
        if trained.status != "completed":
            sys.exit(f"{protocol}: training {trained.status} at step {trained.steps}; rerun with --resume to continue")
        print(f"\n## {protocol}: trained mmgen:{cfg.name} on {train_manifest.relative_to(folder)}")
        print(f"steps {trained.steps}, samples {trained.samples_seen}, training loop {trained.train_seconds / 60:.1f} min "
              f"({trained.samples_per_second:.0f} samples/s), wall incl. decoding and text caching {wall / 60:.1f} min, "
              f"final loss {trained.final_loss:.3f}")
        print(f"{'eval manifest':22s} {'images':>6s} {'texts':>6s} | {'i->t R@1':>8s} {'R@5':>6s} {'R@10':>6s} | "
              f"{'t->i R@1':>8s} {'R@5':>6s} {'R@10':>6s}")
        rows = {}
        for label in EVALS[protocol]:
            if label not in paths:
                continue  # icons-heldout exists only when the Iconify sets were fetched
            rep = evaluate_manifest(paths[label], f"mmgen:{cfg.name}", progress=False, models_dir=ws.models_dir)
            i2t, t2i = rep.image_to_text, rep.text_to_image
            print(f"{label:22s} {rep.n_images:6d} {rep.n_texts:6d} | {100 * i2t['R@1']:7.1f}% {100 * i2t['R@5']:5.1f}% "
                  f"{100 * i2t['R@10']:5.1f}% | {100 * t2i['R@1']:7.1f}% {100 * t2i['R@5']:5.1f}% {100 * t2i['R@10']:5.1f}%")
            rows[label] = rep.to_json()
        results[protocol] = {
            "steps": trained.steps,
            "train_seconds": trained.train_seconds,
            "samples_per_second": trained.samples_per_second,
            "wall_seconds": wall,
            "evals": rows,
        }
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
