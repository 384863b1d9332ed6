"""`mmgen index`, `search`, `caption`, `generate`, `db` and `info`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mmgen.cli.common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    DataDirOpt,
    DbOpt,
    DeviceOpt,
    EngineOpt,
    FromOpt,
    JsonOpt,
    MergeOndiskOpt,
    QuietOpt,
    RayAddressOpt,
    ShardsOpt,
    UntrustedOpt,
    WorkspaceOpt,
    _errors,
    _print_json,
    _workspace,
    app,
    db_app,
)


# ---- index ---------------------------------------------------------------------------------
@app.command("index")
def index_cmd(
    source: Annotated[
        str,
        typer.Argument(
            help="emoji | openmoji | openmoji-color | openmoji-black | twemoji | openclipart | a folder of images "
            "(+ same-name .txt captions) | a .jsonl/.csv manifest | outputs (this workspace's generated images, "
            "as synthetic items)."
        ),
    ],
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    name: Annotated[str, typer.Option("--name", "-n", help="Index name inside the workspace.")] = "default",
    encoder: Annotated[
        Optional[str],
        typer.Option(
            "--encoder",
            "-e",
            help="st:NAME_OR_PATH | openclip:ARCH/TAG_OR_CHECKPOINT | mmgen:NAME. Default: the index's encoder, "
            "or st:all-MiniLM-L6-v2 for a new index.",
        ),
    ] = None,
    preset: Annotated[
        Optional[str],
        typer.Option("--preset", help="FAISS preset (see `mmgen info`) or a factory string; changing it rebuilds."),
    ] = None,
    prune: Annotated[bool, typer.Option("--prune", help="Remove items whose source files are gone.")] = False,
    skip_duplicates: Annotated[
        bool,
        typer.Option("--skip-duplicates", help="Refuse a new item whose image bytes an item of the index already has."),
    ] = False,
    reembed: Annotated[
        bool,
        typer.Option(
            "--reembed",
            help="Drop all vectors of the index and rebuild it with --encoder (then index its other sources again).",
        ),
    ] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Items per batch (and per commit).")] = 128,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Decode threads, or Ray actors (--engine ray).")] = 2,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    hash_name: Annotated[
        Optional[str],
        typer.Option(
            "--hash",
            help="Also keep the binary codes of this hasher (`mmgen train hasher`) in a FAISS binary index; "
            "recorded, so later runs keep the codes in step. A NAME that is no saved hasher but reads METHOD-BITS "
            "(lsh-64, itq-128, pca-32) fits that FAISS baseline on the index's vectors now, saves it as NAME and "
            "attaches it (the index must hold vectors already).",
        ),
    ] = None,
    hash_preset: Annotated[
        Optional[str],
        typer.Option("--hash-preset", help="Binary index preset: binary-flat (default), binary-hnsw32, binary-ivf1024."),
    ] = None,
    untrusted: UntrustedOpt = False,
    shards: ShardsOpt = None,
    merge_ondisk: MergeOndiskOpt = False,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Embed a corpus into an index: incremental (only new or changed items) and resumable."""
    with _errors():
        from mmgen.engines import run_index
        from mmgen.indexer import IndexOptions

        ws = _workspace(workspace, db)
        opts = IndexOptions(
            name=name,
            encoder=encoder,
            preset=preset,
            prune=prune,
            reembed=reembed,
            batch_size=batch_size,
            workers=workers,
            progress=not quiet and not as_json,
            device=device,
            hash=hash_name,
            hash_preset=hash_preset,
            skip_duplicates=skip_duplicates,
            untrusted=untrusted,
            shards=shards,
            merge_ondisk=merge_ondisk,
        )
        report = run_index(source, ws, opts, data_dir, engine=engine, ray_address=ray_address)
        if as_json:
            _print_json(report.to_json())
        else:
            _print_index_report(report, ws.root)
        if report.interrupted:
            raise typer.Exit(EXIT_INTERRUPTED)


def _print_index_report(report: Any, root: Path) -> None:
    echo = typer.echo
    echo(
        f"index {report.index!r} ({report.encoder}) in {root}: added {report.added}, updated {report.updated}, "
        f"unchanged {report.unchanged}, removed {report.removed}, failed {report.failed_count}"
        + (f", skipped {report.skipped}" if report.skipped else "")
    )
    if report.missing:
        echo(f"  {report.missing} items are no longer in the source; re-run with --prune to remove them")
    for reason, n in report.skipped_reasons.items():
        echo(f"  skipped {n}: {reason}")
    for key, of in report.duplicates[:20]:
        echo(f"    {key}: same bytes as {of}")
    if report.failed:
        shown = report.failed[:20]
        echo(f"  failures ({report.failed_count}):")
        for key, reason in shown:
            echo(f"    {key}: {reason}")
        if report.failed_count > len(shown):
            echo(f"    ... and {report.failed_count - len(shown)} more (use --json for all)")
    totals = ", ".join(f"{m} {n}" for m, n in report.totals.items())
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in report.timings.items())
    echo(f"  vectors in index: {totals or 'none'}; time: {stages}" + (f"; {report.sync['shards']}" if "shards" in report.sync else ""))
    if report.hasher:
        echo(f"  codes of hasher {report.hasher}: " + ", ".join(f"{m} {n}" for m, n in report.codes.items()))
    if report.interrupted:
        echo("  interrupted: everything committed so far is kept; run the same command again to finish")


# ---- search --------------------------------------------------------------------------------
@app.command("search")
def search_cmd(
    query: Annotated[Optional[str], typer.Argument(help="Query text (or use --image).")] = None,
    image: Annotated[Optional[Path], typer.Option("--image", "-i", help="Query image file.")] = None,
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    index: Annotated[Optional[str], typer.Option("--index", help="Index name [default: default].")] = None,
    to: Annotated[
        Optional[str], typer.Option("--to", help="image or text [default: image when the index has images].")
    ] = None,
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="Number of hits.")] = 10,
    where: Annotated[
        Optional[list[str]],
        typer.Option(
            "--where",
            help="Filter KEY=VALUE, KEY!=VALUE or KEY>=N / <= / > / < (repeatable: a repeated KEY= means any of, "
            "different keys all hold; keys: meta keys, corpus, group, modality; exact, case-sensitive).",
        ),
    ] = None,
    encoder: Annotated[
        Optional[str], typer.Option("--encoder", help="Must match the index's encoder [default: the index's].")
    ] = None,
    mode: Annotated[
        Optional[str],
        typer.Option(
            "--mode",
            help="float (exact, default) | codes (Hamming ranking of the index's binary codes) | rerank "
            "(Hamming short list, re-scored exactly from the memory-mapped vectors).",
        ),
    ] = None,
    rerank: Annotated[
        Optional[int],
        typer.Option(
            "--rerank",
            min=1,
            help="Vectors re-scored exactly by --mode rerank [default: 100]; implies --mode rerank. On binary-flat "
            "codes of an autoencoder they are the best C of a 10xC Hamming list under asymmetric scoring "
            "(of a baseline: the Hamming top C).",
        ),
    ] = None,
    keyword: Annotated[
        bool, typer.Option("--keyword", help="Keyword search only (BM25 over text, key, tags and metadata).")
    ] = False,
    hybrid: Annotated[
        bool, typer.Option("--hybrid", help="Fuse the vector and keyword rankings (see --fusion).")
    ] = False,
    fusion: Annotated[
        str, typer.Option("--fusion", help="--hybrid: rrf (reciprocal rank, k=60) | convex (--alpha).")
    ] = "rrf",
    alpha: Annotated[
        float, typer.Option("--alpha", help="--fusion convex: weight of the vector score (keyword: 1 - alpha).")
    ] = 0.5,
    keyword_weight: Annotated[
        float, typer.Option("--keyword-weight", help="--fusion rrf: the keyword list's weight (vector: 1).")
    ] = 4.0,
    depth: Annotated[
        Optional[int], typer.Option("--depth", help="--hybrid: candidates per side [default: max(100, 4k)].")
    ] = None,
    keyword_syntax: Annotated[
        str,
        typer.Option("--keyword-syntax", help="plain (any of the words; default) | fts (the backend's own syntax)."),
    ] = "plain",
    group: Annotated[
        bool, typer.Option("--group", help="Fold hits of one concept group into one result listing its members.")
    ] = False,
    dedup: Annotated[
        Optional[float],
        typer.Option("--dedup", help="Drop a hit whose cosine to a better-ranked one is >= this (e.g. 0.95)."),
    ] = None,
    with_synthetic: Annotated[
        bool, typer.Option("--with-synthetic", help="Also return generated items (`mmgen index outputs`).")
    ] = False,
    parent: FromOpt = None,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Search an index: text->text, text->image, image->text, image->image; vector, keyword or hybrid."""
    with _errors():
        from mmgen.errors import ConfigError
        from mmgen.hybrid import Retrieval
        from mmgen.search import Searcher
        from mmgen.store.db import open_store
        from mmgen.store.filters import parse_where

        if keyword and hybrid:
            raise ConfigError("give --keyword or --hybrid, not both")
        how = Retrieval("keyword" if keyword else "hybrid" if hybrid else "vector", fusion, alpha, depth,
                        keyword_syntax, keyword_weight).check()  # fmt: skip
        ws = _workspace(workspace, db)
        filters = parse_where(where or [])
        store = open_store(ws.db_url)
        try:
            if parent is not None:
                from mmgen.records import require_prompt

                require_prompt(store, parent)
            searcher = Searcher(ws, store, index, encoder=encoder, device=device, background_records=False)
            result = searcher.search(
                text=query, image=image, to=to, k=k, where=filters,
                mode=mode or ("rerank" if rerank is not None else "float"), rerank=rerank,
                retrieval=how, group=group, dedup=dedup, with_synthetic=with_synthetic,
            )  # fmt: skip
            _link(store, [result.prompt_id], parent)
        finally:
            store.close()
        if as_json:
            _print_json(result.to_json())
            return
        q = result.query
        typer.echo(
            f"{q['text'] if q['text'] is not None else q['image']} -> {q['to']} ({len(result.hits)} hits, {result.latency_ms:.0f} ms)"
        )
        for rank, hit in enumerate(result.hits, 1):
            where_from = f"{hit.corpus}:{hit.key}"
            shown = hit.text if hit.text is not None else ""
            line = f"{rank:3d}  {hit.score:.3f}  {hit.modality:5s}  {shown[:60]:60s}  {where_from}"
            if hit.parts is not None:
                ranks = [f"{side} #{p['rank']}" if (p := hit.parts[side]) else f"{side} -" for side in ("vector", "keyword")]
                line += f"  ({', '.join(ranks)})"
            typer.echo(line)
            if hit.members is not None and len(hit.members) > 1:
                kinds = [str(m.get("style") or m["corpus"]) for m in hit.members]
                typer.echo(f"       {len(kinds)} in group {hit.group}: {', '.join(kinds[:8])}{' ...' if len(kinds) > 8 else ''}")


def _link(store: Any, prompt_ids: list[int | None], parent: int | None) -> None:
    """Record `--from PARENT` on the prompts a command just recorded."""
    if parent is None:
        return
    from mmgen.records import link

    for prompt_id in prompt_ids:
        if prompt_id is not None:
            link(store, prompt_id, parent)


# ---- caption -------------------------------------------------------------------------------
@app.command("caption")
def caption_cmd(
    images: Annotated[list[Path], typer.Argument(help="Image files to caption.")],
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    index: Annotated[Optional[str], typer.Option("--index", help="Index to retrieve from [default: default].")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Captioner in WORKSPACE/models.")] = "captioner",
    k: Annotated[
        Optional[int], typer.Option("-k", "--k", min=1, help="Retrieved captions [default: the captioner's k].")
    ] = None,
    decode: Annotated[str, typer.Option("--decode", help="greedy | beam | sample")] = "beam",
    beams: Annotated[int, typer.Option("--beams", min=1, help="Beam width (--decode beam).")] = 3,
    temperature: Annotated[float, typer.Option("--temperature", help="Softmax temperature (--decode sample).")] = 1.0,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of --decode sample.")] = None,
    parent: FromOpt = None,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Caption images, grounded on the k nearest captions of the workspace (all recorded in SQL).

    --json prints one JSON object per image and line (JSON Lines): {"image", "caption", "retrieved":
    [{"id", "text", "score"}], "model", "latency_ms", "prompt_id"}, or {"image", "error"}.
    """
    with _errors():
        from mmgen.generate.caption import CaptionSettings, caption_images

        settings = CaptionSettings(
            model=model, index=index, k=k, decode=decode, beams=beams, temperature=temperature, seed=seed, device=device
        )
        from mmgen.store.db import open_store

        ws = _workspace(workspace, db)
        if parent is not None:
            from mmgen.records import require_prompt

            with open_store(ws.db_url) as store:
                require_prompt(store, parent)
        results = caption_images(ws, images, settings)
        if parent is not None:
            with open_store(ws.db_url) as store:
                _link(store, [r.prompt_id for r in results], parent)
    for result in results:
        if as_json:
            typer.echo(json.dumps(result.to_json(), ensure_ascii=False))
        if result.error is not None:
            typer.secho(f"error: {result.image}: {result.error}", fg=typer.colors.RED, err=True)
        elif not as_json:
            typer.echo(f"{result.image}: {result.caption}  ({result.latency_ms:.0f} ms, {result.model})")
            for rank, hit in enumerate(result.retrieved, 1):
                typer.echo(f"  {rank}. {hit.score:.3f}  {hit.text}")
    failed = sum(r.error is not None for r in results)
    if failed:
        typer.secho(f"{failed} of {len(results)} images could not be captioned", fg=typer.colors.RED, err=True)
        raise typer.Exit(EXIT_ERROR)


# ---- generate ------------------------------------------------------------------------------
@app.command("generate")
def generate_cmd(
    texts: Annotated[Optional[list[str]], typer.Argument(help="Prompt text(s); or --prompts FILE.")] = None,
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    prompts: Annotated[
        Optional[Path], typer.Option("--prompts", help="Text file, one prompt per line (# comments).")
    ] = None,
    n: Annotated[int, typer.Option("--n", help="Pictures per prompt.")] = 4,
    seed: Annotated[Optional[int], typer.Option("--seed", help="0..2**32-1 (default: random, printed).")] = None,
    k: Annotated[
        Optional[int], typer.Option("-k", "--k", help="Retrieved images (default: the generator's k).")
    ] = None,
    steps: Annotated[int, typer.Option("--steps", help="DDIM sampling steps.")] = 30,
    guidance: Annotated[float, typer.Option("--guidance", help="Classifier-free guidance scale (1: none).")] = 3.0,
    init_strength: Annotated[
        float,
        typer.Option(
            "--init-strength",
            help="In (0, 1]: start sample i from retrieved image i mod k noised to this time (1: pure noise).",
        ),
    ] = 1.0,
    model: Annotated[str, typer.Option("--model", "-m", help="Generator in WORKSPACE/models.")] = "generator",
    index: Annotated[
        Optional[str], typer.Option("--index", help="Index to retrieve from (default: the generator's).")
    ] = None,
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Folder for the PNGs (default: WORKSPACE/outputs).")
    ] = None,
    sheet: Annotated[
        Optional[Path], typer.Option("--sheet", help="Also write a labelled grid, prompts x samples (PNG).")
    ] = None,
    parent: FromOpt = None,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Generate pictures from text, conditioned on the k nearest indexed images (all recorded in SQL).

    --json prints {"generations": [{"prompt", "prompt_id", "seed", "model", "files", "similarity",
    "retrieved": [{"rank", "item_id", "score", "uri", "text", "group"}], "latency_ms", "params",
    "init_ranks"}], "sheet"}; init_ranks: per picture, the retrieved rank it started from (empty at strength 1).
    """
    with _errors():
        import secrets

        from mmgen.errors import ConfigError
        from mmgen.generate.diffusion import check_strength
        from mmgen.generate.image import ImageGenerator, check_seed, read_prompts
        from mmgen.store.db import open_store

        wanted = list(texts or []) + (read_prompts(prompts) if prompts is not None else [])
        if not wanted:
            raise ConfigError("give a prompt text (or --prompts FILE)")
        seed = secrets.randbits(32) if seed is None else check_seed(seed)
        init_strength = check_strength(init_strength)
        ws = _workspace(workspace, db)
        with open_store(ws.db_url) as store:
            if parent is not None:
                from mmgen.records import require_prompt

                require_prompt(store, parent)
            generator = ImageGenerator(ws, store, model, index, device)
            results = [
                generator.generate_and_record(
                    text, n=n, seed=seed, k=k, steps=steps, guidance=guidance, out_dir=out, init_strength=init_strength
                )
                for text in wanted
            ]
            _link(store, [r.prompt_id for r in results], parent)
        sheet_path = None
        if sheet is not None:
            from mmgen.generate.sheet import SheetRow, save_sheet

            rows = [
                SheetRow(r.prompt, r.images, [nb.uri for nb in r.neighbours], note=f"seed {r.seed}") for r in results
            ]
            title = f"{model}: {steps} DDIM steps, guidance {guidance:g}"
            if init_strength < 1.0:
                title += f", started from retrieved images at strength {init_strength:g}"
            sheet_path = save_sheet(rows, sheet, title=title)
        if as_json:
            _print_json({"generations": [r.to_json() for r in results], "sheet": str(sheet_path) if sheet_path else None})
            return
        for r in results:
            typer.echo(f"{r.prompt!r} (seed {r.seed}, {r.latency_ms / 1000:.1f} s, {r.model}, prompt {r.prompt_id})")
            for path, sim in zip(r.files, r.similarity):
                typer.echo(f"  {path}  similarity {sim:.3f}")
            if r.neighbours:
                typer.echo("  retrieved: " + " | ".join(f"{nb.text} ({nb.score:.2f})" for nb in r.neighbours))
        if sheet_path:
            typer.echo(f"sheet: {sheet_path}")


# ---- db ------------------------------------------------------------------------------------
@db_app.command("upgrade")
def db_upgrade(workspace: WorkspaceOpt = None, db: DbOpt = None, revision: str = "head") -> None:
    """Apply the Alembic migrations (also done automatically when a workspace is opened)."""
    with _errors():
        from mmgen.store.db import current_revision, upgrade

        ws = _workspace(workspace, db)
        if ws.db_url.startswith("sqlite"):
            ws.root.mkdir(parents=True, exist_ok=True)
        upgrade(ws.db_url, revision)
        typer.echo(f"store at revision {current_revision(ws.db_url)}")


@db_app.command("current")
def db_current(workspace: WorkspaceOpt = None, db: DbOpt = None) -> None:
    """Print the store's schema revision."""
    with _errors():
        from mmgen.store.db import current_revision

        typer.echo(current_revision(_workspace(workspace, db).db_url) or "(empty store)")


# ---- info ----------------------------------------------------------------------------------
@app.command("info")
def info_cmd(workspace: WorkspaceOpt = None, db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Show the workspace: indexes, item counts, encoders; and the available presets."""
    with _errors():
        from mmgen.info import workspace_info

        info = workspace_info(_workspace(workspace, db))
        if as_json:
            _print_json(info)
            return
        typer.echo(f"workspace: {info['workspace']}\nstore: {info['store']}")
        typer.echo(f"corpora: {', '.join(f'{c} ({n})' for c, n in info['corpora'].items()) or 'none'}")
        for corpus, licence in info["licences"].items():
            typer.echo(f"  {corpus}: {licence}")
        for ix in info["indexes"]:
            counts = ", ".join(f"{m} {n}" for m, n in ix["vectors"].items()) or "empty"
            typer.echo(f"index {ix['name']}: {ix['encoder']} dim {ix['dim']} {ix['factory']}: {counts}")
            if ix.get("hash"):
                h = ix["hash"]
                codes = ", ".join(f"{m} {n}" for m, n in h["codes"].items()) or "not built yet"
                typer.echo(f"  codes: hasher {h['hasher']} ({h['bits']} bits, {h['preset']}): {codes}")
        if info["models"]:
            typer.echo("models: " + ", ".join(f"{m['name']} ({m['kind']})" for m in info["models"]))
        typer.echo("presets:")
        for name, desc in info["presets"].items():
            typer.echo(f"  {name:14s} {desc}")
