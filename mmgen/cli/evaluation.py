"""`mmgen eval`: retrieval, captions, generation and hashing evaluations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mmgen.cli.common import (
    DbOpt,
    DeviceOpt,
    JsonOpt,
    WorkspaceOpt,
    _errors,
    _print_json,
    _workspace,
    eval_app,
)


# ---- eval ----------------------------------------------------------------------------------
@eval_app.command("retrieval")
def eval_retrieval(
    manifest: Annotated[Path, typer.Argument(help="JSONL/CSV manifest: images and texts, relevance by `group`.")],
    encoder: Annotated[
        str, typer.Option("--encoder", "-e", help="Encoder name (mmgen:NAME resolves in the workspace).")
    ],
    workspace: WorkspaceOpt = None,
    mode: Annotated[
        str,
        typer.Option("--mode", help="text->image by vector (default) | keyword (BM25 over image metadata) | hybrid."),
    ] = "vector",
    fusion: Annotated[str, typer.Option("--fusion", help="--mode hybrid: rrf | convex.")] = "rrf",
    alpha: Annotated[float, typer.Option("--alpha", help="--fusion convex: weight of the vector score.")] = 0.5,
    keyword_weight: Annotated[
        float, typer.Option("--keyword-weight", help="--fusion rrf: the keyword list's weight (vector: 1).")
    ] = 4.0,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Recall@1/5/10 image->text and text->image over a manifest (CLIP_benchmark's definition).

    --mode keyword / hybrid rank text->image by BM25 over each image's metadata strings (tags, keywords,
    categories; never its caption, title or name) alone or fused with the vectors; image->text stays vector."""
    with _errors():
        from mmgen.eval.retrieval import evaluate_manifest
        from mmgen.hybrid import Retrieval

        how = Retrieval(mode, fusion, alpha, keyword_weight=keyword_weight).check()
        ws = _workspace(workspace, None)
        report = evaluate_manifest(manifest, encoder, device=device, progress=not as_json, models_dir=ws.models_dir,
                                   retrieval=how)  # fmt: skip
        if as_json:
            _print_json(report.to_json())
            return
        typer.echo(f"{manifest} with {report.encoder}: {report.n_images} images, {report.n_texts} texts; "
                   f"text->image by {mode}" + (f" ({fusion})" if mode == "hybrid" else ""))  # fmt: skip
        typer.echo(f"{'direction':15s} {'R@1':>7s} {'R@5':>7s} {'R@10':>7s}")
        for label, scores in (("image->text", report.image_to_text), ("text->image", report.text_to_image)):
            typer.echo(f"{label:15s} " + " ".join(f"{100 * scores[k]:6.1f}%" for k in ("R@1", "R@5", "R@10")))
        if report.skipped:
            typer.echo(f"skipped {len(report.skipped)} records:")
            for key, reason in report.skipped[:20]:
                typer.echo(f"  {key}: {reason}")


@eval_app.command("captions")
def eval_captions_cmd(
    manifest: Annotated[Path, typer.Argument(help="JSONL/CSV manifest of captioned images (text = reference).")],
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    index: Annotated[Optional[str], typer.Option("--index", help="Index to retrieve from [default: default].")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="The retrieval-augmented captioner.")] = "captioner",
    baseline: Annotated[
        str, typer.Option("--baseline", help="The captioner run without retrieved captions (b).")
    ] = "captioner-noret",
    k: Annotated[
        Optional[int], typer.Option("-k", "--k", min=1, help="Retrieved captions [default: the captioner's k].")
    ] = None,
    decode: Annotated[str, typer.Option("--decode", help="greedy | beam")] = "beam",
    beams: Annotated[int, typer.Option("--beams", min=1)] = 3,
    show: Annotated[int, typer.Option("--show", min=0, help="Print N example captions beside the true ones.")] = 0,
    limit: Annotated[
        Optional[int], typer.Option("--limit", min=1, help="Evaluate N records spread over the manifest (demos).")
    ] = None,
    exclude: Annotated[
        str,
        typer.Option(
            "--exclude",
            help="What retrieval leaves out per query: item (its own item and identical images) | concept (its "
            "whole concept, all styles).",
        ),
    ] = "concept",
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """BLEU-4, CIDEr and exact match per style: (a) retrieval only, (b) decoder alone, (c) retrieval-augmented."""
    with _errors():
        from mmgen.eval.captions import METHODS, CaptionEvalSettings, evaluate_captions

        settings = CaptionEvalSettings(
            model=model, baseline=baseline, index=index, k=k, decode=decode, beams=beams, device=device,
            exclude=exclude, show=show, limit=limit, progress=not as_json,
        )  # fmt: skip
        report = evaluate_captions(manifest, _workspace(workspace, db), settings)
        if as_json:
            _print_json(report.to_json())
            return
        typer.echo(
            f"{manifest}: {report.n_images} images; index {report.index!r} ({report.encoder}), k={report.k}, "
            f"decode {report.decode}; retrieval leaves out each query's {report.exclude}; "
            f"(b) = {report.baseline} ({report.baseline_mode})"
        )
        typer.echo(f"{'split':16s} {'method':34s} {'BLEU-4':>7s} {'CIDEr':>7s} {'exact':>7s} {'n':>5s}")
        for split, methods in report.splits.items():
            for method, s in methods.items():
                typer.echo(
                    f"{split:16s} {METHODS[method]:34s} {s['bleu4']:7.3f} {s['cider']:7.3f} "
                    f"{100 * s['exact']:6.1f}% {s['n']:5d}"
                )
        for ex in report.examples:
            typer.echo(f"\n{ex['key']}  true: {ex['truth']}")
            typer.echo(f"  retrieved: {' | '.join(ex['retrieved'])}")
            for method in ("retrieval", "decoder", "ra_decoder"):
                typer.echo(f"  {METHODS[method].strip():34s} {ex[method]}")
        if report.skipped:
            typer.echo(f"skipped {len(report.skipped)} records:")
            for key, reason in report.skipped[:20]:
                typer.echo(f"  {key}: {reason}")


@eval_app.command("generation")
def eval_generation_cmd(
    prompts: Annotated[
        list[Path],
        typer.Argument(help="Prompt sets: JSONL/CSV manifests (one prompt per group = its text; its images = reference)."),
    ],
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    index: Annotated[Optional[str], typer.Option("--index", help="Index to retrieve from (default: the generator's).")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="The retrieval-augmented generator (c).")] = "generator",
    baseline: Annotated[
        str, typer.Option("--baseline", help="The generator trained with --no-retrieval (b).")
    ] = "generator-noretrieval",
    sample: Annotated[
        int, typer.Option("--sample", help="Seeded sample of this many concepts per set (0: all).")
    ] = 200,
    where: Annotated[
        Optional[list[str]],
        typer.Option(
            "--where",
            help="Keep records matching KEY=VALUE, KEY!=VALUE or KEY>=N / <= / > / < (repeatable: a repeated KEY= "
            "means any of, different keys all hold; keys: meta keys, group; exact, case-sensitive).",
        ),
    ] = None,
    per_prompt: Annotated[int, typer.Option("--per-prompt", help="Pictures per prompt and generator.")] = 1,
    steps: Annotated[int, typer.Option("--steps", help="DDIM sampling steps.")] = 30,
    guidance: Annotated[float, typer.Option("--guidance", help="Classifier-free guidance scale.")] = 3.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the samples, the noise and the R-precision draws.")] = 0,
    sheet: Annotated[
        Optional[Path], typer.Option("--sheet", help="Write a sheet: real | retrieval | (b) | (c) per prompt.")
    ] = None,
    init_strength: Annotated[
        Optional[list[str]],
        typer.Option(
            "--init-strength",
            help="Score (c) at these init strengths in (0, 1] (repeatable or 1.0,0.7); below 1 a picture starts "
            "from the nearest image outside its concept, noised to that time [default: 1.0].",
        ),
    ] = None,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Prompt similarity, R-precision, Frechet distance and memorisation: (a) retrieval only, (b) generator, (c) RA generator."""
    with _errors():
        from mmgen.eval.generation import evaluate_generation, parse_strengths, ra_method
        from mmgen.store.filters import parse_where

        strengths = parse_strengths(init_strength or ["1.0"])
        report = evaluate_generation(
            _workspace(workspace, db), prompts, model=model, baseline=baseline, index=index,
            sample=sample or None, where=parse_where(where or []), samples_per_prompt=per_prompt, steps=steps, guidance=guidance,
            seed=seed, device=device, sheet=sheet, progress=not as_json, init_strengths=strengths,
        )  # fmt: skip
        if as_json:
            _print_json(report.to_json())
            return
        s = report.settings
        typer.echo(
            f"index {s['index']!r} ({s['encoder']}); (c) {report.models['ra-generator']['name']}, "
            f"(b) {report.models['generator']['name']}; k={s['k']}, {s['steps']} steps, guidance {s['guidance']:g}"
        )
        labels = {
            "retrieval": "(a) retrieval only",
            "generator": "(b) generator, no retrieval",
            "ra-generator": "(c) retrieval-augmented",
            "real": "real pictures (reference)",
            **{ra_method(x): f"(c) RA, neighbour init {x:g}" for x in strengths if x < 1.0},
        }
        typer.echo(
            f"{'prompt set':22s} {'method':30s} {'sim':>6s} {'R-prec':>7s} {'FD':>7s} {'NN-dist':>8s} "
            f"{'copies':>7s} {'n':>5s}"
        )
        for rep in report.sets:
            for key, m in rep.methods.items():
                typer.echo(
                    f"{rep.name:22s} {labels[key]:30s} {m.similarity:6.3f} {100 * m.r_precision:6.1f}% "
                    f"{m.fd:7.3f} {m.nn_distance:8.3f} {100 * m.near_copies:6.1f}% {m.n:5d}"
                )
        typer.echo(f"{report.seconds / 60:.1f} min" + (f"; sheet: {report.sheet}" if report.sheet else ""))


@eval_app.command("hashing")
def eval_hashing_cmd(
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    index: Annotated[Optional[str], typer.Option("--index", help="Index [default: default].")] = None,
    hasher: Annotated[
        Optional[list[str]],
        typer.Option(
            "--hasher",
            help="Hasher name (repeatable): an autoencoder, or a saved baseline measured as saved "
            "[default: the autoencoders trained on the index].",
        ),
    ] = None,
    bits: Annotated[
        Optional[str], typer.Option("--bits", help="Comma-separated code widths to evaluate, e.g. 32,64,128,256.")
    ] = None,
    methods: Annotated[
        str, typer.Option("--methods", help="Comma-separated: autoencoder, lsh, itq, pca.")
    ] = "autoencoder,lsh,itq,pca",
    rerank: Annotated[int, typer.Option("--rerank", min=10, help="Short list re-ranked exactly.")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Recall@10 vs exact search and group mAP@100 of binary codes (autoencoder vs FAISS LSH / ITQ / PCA-sign)."""
    with _errors():
        from mmgen.errors import ConfigError
        from mmgen.eval.hashing import evaluate_hashing

        try:
            widths = [int(b) for b in bits.split(",")] if bits else None
        except ValueError:
            raise ConfigError(f"--bits takes comma-separated integers, not {bits!r}") from None
        report = evaluate_hashing(
            _workspace(workspace, db), index=index, hashers=hasher, bits=widths,
            methods=[m.strip() for m in methods.split(",") if m.strip()], rerank=rerank,
            progress=None if as_json else (lambda msg: typer.echo(f"  evaluating {msg}", err=True)),
        )  # fmt: skip
        if as_json:
            _print_json(report.to_json())
        else:
            typer.echo(report.table())
