"""``hiersrec train``: train HierSRec from a preset or a TOML file, with typed overrides, into a run directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from hiersrec.config import load_config
from hiersrec.data.ingest import open_dataset
from hiersrec.errors import ConfigError


def train(
    out: Annotated[Path, typer.Option("--out", help="Run directory to create (or to continue with --resume).")],
    data: Annotated[
        str | None,
        typer.Option(help="Prepared dataset dir, SR-GNN TSV folder, or 'synthetic' (default: the config's data.path)."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="A TOML run file with the tables data, model and train.")
    ] = None,
    preset: Annotated[
        str | None, typer.Option(help="A shipped preset, e.g. diginetica_hiersrec (instead of --config).")
    ] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Override, e.g. train.lr=3e-4 or model.d_model=128; repeatable.")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted run in --out (with its saved configuration).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Train HierSRec on DATA's train split; early stopping on its validation split (never the test split)."""
    from hiersrec.train.run import TrainingData, fit_run

    if resume and config is None and preset is None:
        config = out / "config.json"  # continue the run with the configuration it was started with
    run_config = load_config(config, overrides or [], preset=preset)  # all config errors before any data is read
    source = data or run_config.data.path
    if not source:
        raise ConfigError("no dataset: pass --data (a prepared folder, an SR-GNN folder or 'synthetic')")
    if as_json and run_config.train.show_progress:
        run_config = load_config(config, [*(overrides or []), "train.show_progress=false"], preset=preset)
    training_data = TrainingData.from_prepared(open_dataset(source), run_config.data.valid_fraction)
    artifact, result = fit_run(run_config, training_data, out, resume=resume)
    summary = {
        "run": str(out),
        "dataset": training_data.name,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "validation_split": training_data.validation,
        "valid": result.best_metrics,
        "mean_epoch_seconds": artifact.metrics["mean_epoch_seconds"],
    }
    if as_json:
        typer.echo(json.dumps(summary))
        return
    metrics = "  ".join(f"{name}={100 * value:.2f}" for name, value in result.best_metrics.items())
    typer.echo(f"{out}: best epoch {result.best_epoch} of {len(result.history)}; validation {metrics}")
    typer.echo(f"evaluate on test once with: hiersrec evaluate {out} --data {source}")
