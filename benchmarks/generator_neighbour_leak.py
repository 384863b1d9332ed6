"""How much the skin-tone leak touched the generator's training neighbours.

    python benchmarks/generator_neighbour_leak.py --workspace WS [--k 4]

Before `mmgen.data.concepts` was the one definition of "own concept", the generator's training
neighbours left out an image's *group* only, so a skin-tone variant of the same emoji (another
group, the same concept) could be handed to the model as a neighbour of its own target. This
script counts, on the workspace's image index, the training rows whose k neighbours (text ->
image, as `training_neighbours` computes them) differ between the two rules, and how many of
the old neighbours were variants of the row's own concept. Only rows whose concept has several
groups can differ, so only those are searched (against every indexed image).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    """Print the counts."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument("--index", default=None)
    ap.add_argument("--k", type=int, default=4, help="neighbours per image (the generator's default)")
    args = ap.parse_args()

    from mmgen.generate.image_neighbours import load_indexed_images
    from mmgen.index.knn import exact_knn
    from mmgen.store.db import open_store
    from mmgen.workspace import Workspace

    ws = Workspace.resolve(args.workspace)
    with open_store(ws.db_url) as store:
        indexed = load_indexed_images(ws, store, args.index, with_text=True)
    groups = [g if g is not None else f"item:{int(i)}" for g, i in zip(indexed.groups, indexed.item_ids)]
    concepts = indexed.concepts
    group_code = {g: n for n, g in enumerate(dict.fromkeys(groups))}
    concept_code = {c: n for n, c in enumerate(dict.fromkeys(concepts))}
    g = np.array([group_code[x] for x in groups])
    c = np.array([concept_code[x] for x in concepts])
    groups_per_concept: dict[int, set[int]] = {}
    for gi, ci in zip(g, c):
        groups_per_concept.setdefault(int(ci), set()).add(int(gi))
    rows = np.flatnonzero(
        indexed.has_text & np.array([len(groups_per_concept[int(ci)]) > 1 for ci in c], dtype=bool)
    )
    usable = int(indexed.has_text.sum())
    print(f"# {args.workspace}: {usable} training rows (images with a caption), {len(rows)} of them in a concept "
          f"with several groups (skin-tone variants); k={args.k}")
    if len(rows) == 0:
        return
    text = indexed.text_vectors[rows]
    _, old = exact_knn(text, indexed.image_vectors, args.k, query_groups=g[rows], database_groups=g)
    _, new = exact_knn(text, indexed.image_vectors, args.k, query_groups=c[rows], database_groups=c)
    leaked = c[old] == c[rows][:, None]
    changed = (old != new).any(axis=1)
    print(f"rows whose neighbours change: {int(changed.sum())} ({100 * changed.sum() / usable:.2f}% of all training rows)")
    print(f"old neighbours that were variants of the row's own concept: {int(leaked.sum())} of {leaked.size} "
          f"({100 * leaked.mean():.1f}% of those rows' neighbours; rows with at least one: {int(leaked.any(axis=1).sum())})")


if __name__ == "__main__":
    main()
