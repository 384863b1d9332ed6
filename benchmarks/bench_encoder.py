"""Train the joint encoder under both fixed protocols and print held-out retrieval tables.

    python benchmarks/bench_encoder.py --workspace build/bench-encoder [--minutes 30 | --steps N]
        [--protocols loso product] [--tower mmgen-convnet-s] [--lr 2e-3] [--sampling concept]
        [--augment style] [--seed 0]

For each protocol (see `mmgen data protocol`): write its manifests, train `mmgen:bench-PROTOCOL`
on `train.jsonl` only, then evaluate Recall@1/5/10 in both directions on every held-out
manifest of the protocol. Prints training time and samples/s beside the tables. Nothing is
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
    "product": ["heldout-vs-pool", "heldout-concepts", "heldout-flags", "openclipart-heldout"],
}


def main() -> None:
    """Run the protocols and print their tables."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", type=Path, default=Path("build/bench-encoder"))
    ap.add_argument("--protocols", nargs="+", default=["loso", "product"], choices=sorted(EVALS))
    ap.add_argument("--minutes", type=float, default=30.0, help="training budget per model")
    ap.add_argument("--steps", type=int, default=None, help="optimiser steps per model instead of --minutes")
    ap.add_argument("--tower", default=TrainConfig.image_tower)
    ap.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    ap.add_argument("--lr", type=float, default=TrainConfig.lr)
    ap.add_argument("--sampling", default=TrainConfig.sampling, choices=["concept", "image"])
    ap.add_argument("--augment", default=TrainConfig.augment)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    ap.add_argument("--resume", action="store_true", help="continue an interrupted run (Ctrl-C saves its state)")
    args = ap.parse_args()

    ws = Workspace.resolve(args.workspace)
    print(f"# mmgen encoder benchmark: {' '.join(sys.argv)}")
    budget = f"{args.steps} steps" if args.steps else f"{args.minutes} min"
    print(f"# machine: {platform.machine()}, {os.cpu_count()} cores; tower {args.tower}, {budget} per model, "
          f"lr {args.lr}, sampling {args.sampling}, augment {args.augment}")
    results: dict[str, dict] = {}
    for protocol in args.protocols:
        paths = write_protocol(protocol, ws.root / "protocols" / protocol, seed=args.seed)
        cfg = TrainConfig(
            name=f"bench-{protocol}",
            image_tower=args.tower,
            batch_size=args.batch_size,
            lr=args.lr,
            sampling=args.sampling,
            augment=args.augment,
            max_minutes=None if args.steps else args.minutes,
            steps=args.steps,
            seed=args.seed,
            resume="auto" if args.resume else "never",
            progress=sys.stderr.isatty(),
        )
        started = time.perf_counter()
        trained = train_encoder([str(paths["train.jsonl"])], ws, cfg)
        wall = time.perf_counter() - started
        if trained.status != "completed":
            sys.exit(f"{protocol}: training {trained.status} at step {trained.steps}; rerun with --resume to continue")
        print(f"\n## {protocol}: trained mmgen:{cfg.name} on {paths['train.jsonl'].name}")
        print(f"steps {trained.steps}, samples {trained.samples_seen}, training loop {trained.train_seconds / 60:.1f} min "
              f"({trained.samples_per_second:.0f} samples/s), wall incl. decoding and text caching {wall / 60:.1f} min, "
              f"final loss {trained.final_loss:.3f}")
        print(f"{'eval manifest':22s} {'images':>6s} {'texts':>6s} | {'i->t R@1':>8s} {'R@5':>6s} {'R@10':>6s} | "
              f"{'t->i R@1':>8s} {'R@5':>6s} {'R@10':>6s}")
        rows = {}
        for label in EVALS[protocol]:
            rep = evaluate_manifest(paths[f"{label}.jsonl"], f"mmgen:{cfg.name}", progress=False, models_dir=ws.models_dir)
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
