"""`mmgen train`: the encoder, captioner, generator and hasher trainers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mmgen.cli.common import (
    EXIT_INTERRUPTED,
    DataDirOpt,
    DbOpt,
    DeviceOpt,
    JsonOpt,
    MinutesOpt,
    MlflowOpt,
    QuietOpt,
    ResumeOpt,
    StepsOpt,
    WorkspaceOpt,
    _check_tracking,
    _errors,
    _print_json,
    _track,
    _tracked_line,
    _workspace,
    train_app,
)


# ---- train ---------------------------------------------------------------------------------
@train_app.command("encoder")
def train_encoder_cmd(
    sources: Annotated[
        list[str], typer.Argument(help="Corpora, folders or manifests to train on (as for `mmgen index`).")
    ],
    name: Annotated[
        str, typer.Option("--name", "-n", help="Model name: saved in WORKSPACE/models/NAME, used as mmgen:NAME.")
    ],
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    tower: Annotated[
        str,
        typer.Option(
            "--tower", help="Image tower: mmgen-convnet-s | mmgen-convnet-m | mmgen-vit-tiny | openclip:ARCH."
        ),
    ] = "mmgen-convnet-s",
    init: Annotated[
        Optional[str], typer.Option("--init", help="Start the image tower from openclip:ARCH/TAG_OR_CHECKPOINT.")
    ] = None,
    minutes: MinutesOpt = None,
    epochs: Annotated[
        Optional[float], typer.Option("--epochs", help="Passes over the concepts (instead of --minutes).")
    ] = None,
    steps: StepsOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=2, help="Distinct concepts per batch.")] = 256,
    lr: Annotated[float, typer.Option("--lr")] = 6e-3,
    image_size: Annotated[int, typer.Option("--image-size", min=16)] = 64,
    unlock_text_layers: Annotated[
        int, typer.Option("--unlock-text-layers", min=0, help="Train the top N MiniLM layers (0: locked).")
    ] = 0,
    augment: Annotated[str, typer.Option("--augment", help="style | strong | none")] = "style",
    sampling: Annotated[
        str,
        typer.Option(
            "--sampling", help="Batch units: concept (each once per epoch) | image (weighted by their images)."
        ),
    ] = "image",
    icon_weight: Annotated[
        float,
        typer.Option(
            "--icon-weight", min=0, help="Draw weight of an icon concept's image (Iconify icon sets); 0 leaves them out."
        ),
    ] = 0.2,
    caption_names: Annotated[
        bool,
        typer.Option("--caption-names/--no-caption-names", help="Emoji Unicode and short names as extra captions."),
    ] = False,
    hard_negatives: Annotated[
        float,
        typer.Option(
            "--hard-negatives", min=0, max=0.99,
            help="Share of each batch made of neighbourhoods of nearby concepts (by caption embedding); 0: none.",
        ),
    ] = 0.0,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    resume: ResumeOpt = "auto",
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
    mlflow: MlflowOpt = None,
) -> None:
    """Train a joint image-text encoder: a locked MiniLM text tower and a trainable image tower (LiT-style)."""
    with _errors():
        _check_tracking(mlflow)
        from mmgen.train.encoder import TrainConfig, train_encoder

        ws = _workspace(workspace, db)
        cfg = TrainConfig(
            name=name,
            image_tower=tower,
            init=init,
            image_size=image_size,
            batch_size=batch_size,
            lr=lr,
            minutes=minutes,
            epochs=epochs,
            steps=steps,
            seed=seed,
            unlocked_text_layers=unlock_text_layers,
            augment=augment,
            sampling=sampling,
            icon_weight=icon_weight,
            caption_names=caption_names,
            hard_negatives=hard_negatives,
            resume=resume,
            device=device,
            progress=not quiet and not as_json,
            data_dir=str(data_dir) if data_dir else None,
        )
        result = train_encoder(sources, ws, cfg)
        tracked = _track(mlflow, "encoder", result)
        data = result.report
        if as_json:
            _print_json({**result.manifest, "status": result.status, "path": str(result.path), "data": data.to_json(),
                         "mlflow": tracked})  # fmt: skip
        else:
            loss = "n/a" if result.final_loss is None else f"{result.final_loss:.4f}"
            typer.echo(
                f"{result.status}: mmgen:{result.name} after {result.steps} steps, {result.samples_seen} samples, "
                f"{result.train_seconds / 60:.1f} min ({result.samples_per_second:.0f} samples/s), final loss {loss}"
            )
            typer.echo(f"  trained on {data.used} of {data.records} records ({data.units} concepts)")
            if data.skipped:
                typer.echo(
                    f"  skipped {data.skipped}: no image {data.skipped_no_image}, no text {data.skipped_no_text}, "
                    f"unreadable {data.record_errors + data.corrupt_images}, duplicate images {data.duplicate_images}"
                )
                for message in data.errors[:10]:
                    typer.echo(f"    {message}")
            if result.path:
                typer.echo(f"  saved in {result.path}")
            _tracked_line(tracked)
        if result.status != "completed":
            raise typer.Exit(EXIT_INTERRUPTED)


@train_app.command("captioner")
def train_captioner_cmd(
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    index: Annotated[Optional[str], typer.Option("--index", help="Index to train on [default: default].")] = None,
    name: Annotated[
        Optional[str],
        typer.Option("--name", "-n", help="Saved as WORKSPACE/models/NAME [default: captioner, or captioner-noret]."),
    ] = None,
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="Retrieved captions per image.")] = 4,
    no_retrieval: Annotated[
        bool, typer.Option("--no-retrieval", help="Train the image-only baseline decoder (no prompt, no copy head).")
    ] = False,
    epochs: Annotated[
        Optional[float], typer.Option("--epochs", help="Passes over the indexed images [default: 5].")
    ] = None,
    steps: StepsOpt = None,
    minutes: MinutesOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 64,
    lr: Annotated[float, typer.Option("--lr")] = 1e-3,
    prompt_dropout: Annotated[
        float,
        typer.Option("--prompt-dropout", min=0.0, max=0.99, help="Chance an example is trained without captions."),
    ] = 0.25,
    own_concept_p: Annotated[
        float,
        typer.Option(
            "--own-concept-p",
            min=0.0,
            max=1.0,
            help="Share of items (seeded) whose neighbours leave out only the item and identical images, so their "
            "concept's other styles may be retrieved; the rest leave out their whole concept.",
        ),
    ] = 0.5,
    exclude: Annotated[
        Optional[list[Path]],
        typer.Option(
            "--exclude",
            exists=True,
            dir_okay=False,
            help="Manifest (JSONL) whose concepts are left out of training, e.g. a held-out split; repeatable.",
        ),
    ] = None,
    image_noise: Annotated[
        float,
        typer.Option(
            "--image-noise",
            min=0.0,
            help="Max std of Gaussian noise on image embeddings (per example, uniform in [0, max]); neighbours are "
            "retrieved from the noisy vector, as for an unseen image.",
        ),
    ] = 0.0,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
    mlflow: MlflowOpt = None,
) -> None:
    """Train the retrieval-augmented caption decoder on the workspace's indexed images and captions."""
    with _errors():
        _check_tracking(mlflow)
        from mmgen.train.captioner import CaptionerConfig, train_captioner

        cfg = CaptionerConfig(
            name=name or ("captioner-noret" if no_retrieval else "captioner"),
            index=index,
            k=k,
            retrieval=not no_retrieval,
            epochs=epochs,
            steps=steps,
            minutes=minutes,
            batch_size=batch_size,
            lr=lr,
            prompt_dropout=prompt_dropout,
            own_concept_p=own_concept_p,
            exclude=tuple(str(p) for p in exclude or ()),
            image_noise=image_noise,
            seed=seed,
            device=device,
            progress=not quiet and not as_json,
        )
        result = train_captioner(_workspace(workspace, db), cfg)
        tracked = _track(mlflow, "captioner", result)
        if as_json:
            _print_json({**result.manifest, "path": str(result.path), "model_id": result.model_id, "mlflow": tracked})
            return
        loss = "n/a" if result.final_loss is None else f"{result.final_loss:.3f}"
        typer.echo(
            f"captioner {result.name}: {result.steps} steps ({result.epochs:g} epochs over {result.examples} images), "
            f"{result.train_seconds / 60:.1f} min, final loss {loss}"
            + (" (stopped by --minutes)" if result.stopped_by_time else "")
            + (f"; {result.manifest['excluded_items']} items of excluded concepts left out" if result.manifest.get("excluded_items") else "")
        )
        typer.echo(f"  saved in {result.path} (models row {result.model_id})")
        _tracked_line(tracked)


@train_app.command("generator")
def train_generator_cmd(
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    index: Annotated[Optional[str], typer.Option("--index", help="Index to train on (default: default).")] = None,
    name: Annotated[
        Optional[str],
        typer.Option(
            "--name", "-n", help="Saved as WORKSPACE/models/NAME (default: generator, or generator-noretrieval)."
        ),
    ] = None,
    no_retrieval: Annotated[
        bool, typer.Option("--no-retrieval", help="Train the text-only baseline (same data, network and budget).")
    ] = False,
    k: Annotated[int, typer.Option("-k", "--k", help="Retrieved images per training picture.")] = 4,
    preset: Annotated[
        str, typer.Option("--preset", help="auto (gpu on CUDA, else cpu) | cpu | gpu | tiny: network and budget.")
    ] = "auto",
    steps: StepsOpt = None,
    minutes: MinutesOpt = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="(default: the preset's)")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="(default: the preset's)")] = None,
    image_size: Annotated[int, typer.Option("--image-size", help="Side of the generated pictures.")] = 64,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    resume: ResumeOpt = "auto",
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
    mlflow: MlflowOpt = None,
) -> None:
    """Train the diffusion image generator on the workspace's indexed images and captions."""
    with _errors():
        _check_tracking(mlflow)
        from mmgen.train.generator import GeneratorConfig, train_generator

        cfg = GeneratorConfig(
            name=name,
            index=index,
            retrieval=not no_retrieval,
            neighbours=k,
            preset=preset,
            steps=steps,
            minutes=minutes,
            batch_size=batch_size,
            lr=lr,
            image_size=image_size,
            seed=seed,
            resume=resume,
            device=device,
            progress=not quiet and not as_json,
        )
        result = train_generator(_workspace(workspace, db), cfg)
        tracked = _track(mlflow, "generator", result)
        if as_json:
            _print_json(
                {**result.manifest, "status": result.status, "path": str(result.path) if result.path else None,
                 "model_id": result.model_id, "steps": result.steps, "mlflow": tracked}
            )  # fmt: skip
        else:
            loss = "n/a" if result.final_loss is None else f"{result.final_loss:.4f}"
            typer.echo(
                f"{result.status}: generator {result.name} at step {result.steps} of {result.total_steps} "
                f"({result.images} images, {result.train_seconds / 60:.1f} min), final loss {loss}"
            )
            if any(result.skipped.values()):
                typer.echo(f"  skipped images: {result.skipped}")
            if result.path:
                typer.echo(f"  saved in {result.path} (models row {result.model_id})")
            _tracked_line(tracked)
            if result.status != "completed":
                typer.echo("  the state is saved: run again with --resume to continue")
        if result.status == "interrupted":
            raise typer.Exit(EXIT_INTERRUPTED)


@train_app.command("hasher")
def train_hasher_cmd(
    workspace: WorkspaceOpt = None,
    db: DbOpt = None,
    bits: Annotated[int, typer.Option("--bits", help="Code width: 32, 64, 128 or 256.")] = 64,
    index: Annotated[Optional[str], typer.Option("--index", help="Index whose vectors it learns (default: default).")] = None,
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="autoencoder (trained), or a FAISS baseline fitted in one call: lsh, itq or pca "
            "(ITQ, PCA: bits <= dim).",
        ),
    ] = "autoencoder",
    name: Annotated[
        Optional[str],
        typer.Option("--name", "-n", help="Saved in WORKSPACE/models/NAME [default: INDEX-BITSb, INDEX-METHOD-BITSb]."),
    ] = None,
    steps: StepsOpt = None,
    minutes: MinutesOpt = None,
    hidden: Annotated[int, typer.Option("--hidden", min=0, help="Hidden width of the MLPs (0: linear).")] = 512,
    lr: Annotated[float, typer.Option("--lr")] = 1e-3,
    temperature: Annotated[
        float, typer.Option("--temperature", help="Of the target softmax over embedding cosines (lower: sharper).")
    ] = 0.03,
    holdout: Annotated[
        float, typer.Option("--holdout", help="Fraction of groups held out as `eval hashing` queries.")
    ] = 0.1,
    holdout_seed: Annotated[int, typer.Option("--holdout-seed", help="Seed of the held-out groups.")] = 0,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
    mlflow: MlflowOpt = None,
) -> None:
    """Train a semantic-hashing autoencoder on an index's image and text vectors (one code space for both), or fit a
    FAISS baseline (--method lsh|itq|pca) on them; either is then attached with `mmgen index SOURCE --hash NAME`."""
    with _errors():
        _check_tracking(mlflow)
        from mmgen.train.hasher import HasherConfig, train_hasher

        cfg = HasherConfig(
            bits=bits, index=index, name=name, method=method, steps=steps, minutes=minutes, hidden=hidden, lr=lr,
            temperature=temperature, holdout_fraction=holdout, holdout_seed=holdout_seed, seed=seed, device=device,
            progress=not quiet and not as_json,
        )  # fmt: skip
        result = train_hasher(_workspace(workspace, db), cfg)
        tracked = _track(mlflow, "hasher", result)
        if as_json:
            manifest = {k: v for k, v in result.manifest.items() if k != "holdout"}
            holdout_info = {k: v for k, v in result.manifest["holdout"].items() if k != "groups"}
            _print_json({**manifest, "holdout": {**holdout_info, "groups": len(result.manifest["holdout"]["groups"])},
                         "path": str(result.path), "model_id": result.model_id, "mlflow": tracked})  # fmt: skip
            return
        m = result.manifest
        if result.final_loss is None:  # a baseline: one FAISS train call
            typer.echo(
                f"hasher {m['name']}: {m['method'].upper()} {m['bits']} bits on index {m['index']!r} ({m['encoder']}), "
                f"fitted in {result.train_seconds:.2f} s"
            )
        else:
            typer.echo(
                f"hasher {m['name']}: {m['bits']} bits on index {m['index']!r} ({m['encoder']}), {result.steps} steps "
                f"in {result.train_seconds / 60:.1f} min, final loss {result.final_loss:.4f}"
                + (" (stopped by --minutes)" if result.stopped_by_time else "")
            )
        typer.echo(
            f"  trained on {', '.join(f'{n} {mod}s' for mod, n in m['training_vectors'].items())}; "
            f"held out {len(m['holdout']['groups'])} groups for `mmgen eval hashing`"
        )
        typer.echo(f"  saved in {result.path} (models row {result.model_id}); use it: mmgen index SOURCE --hash {m['name']}")
        _tracked_line(tracked)
