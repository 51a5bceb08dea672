"""``hiersrec train``: train or fit any registered model into a run directory (presets, TOML, typed overrides).

A neural model (HierSRec) is trained with early stopping on the validation split; a fitted model (VSTAN,
the kNN family, rules, popularity) is fitted on all training sessions. Either can first be searched with
``--tune-trials N`` trials on the validation split: random search (fitted models, the default) or
``--search optuna`` (every model; resumable). The run directory is then evaluated, recommended from and
served the same way whatever the model.

A neural model trains in several processes with ``--nproc N`` (this machine) or under ``torchrun``
(several machines): data-parallel, rank 0 writing the run directory (`hiersrec.train.distributed`).
"""

from __future__ import annotations

import enum
import json
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from hiersrec.config import load_config, parse_assignment, preset_path
from hiersrec.data.ingest import open_dataset
from hiersrec.errors import ConfigError
from hiersrec.models import MODELS, is_neural
from hiersrec.train import distributed
from hiersrec.train.loop import resolve_device
from hiersrec.train.run import TrainingData, fit_run, fuse_run, refit_run


class SearchMethod(enum.StrEnum):
    """How ``--tune-trials`` searches hyperparameters."""

    random = "random"  # fitted models, no extra dependency (hiersrec.tuning)
    optuna = "optuna"  # every model: TPE, pruning, a study that resumes (hiersrec.search)


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
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help=f"Model to train or fit (default: the config's model.name, else hiersrec): {', '.join(MODELS)}.",
        ),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override, e.g. train.lr=3e-4, model.d_model=128 or model.k=200; repeatable."),
    ] = None,
    tune_trials: Annotated[
        int,
        typer.Option(
            min=0,
            help="Hyperparameter-search trials on the validation split before the final fit or training, "
            "the configured run being trial 0; values the config or --set gives are held fixed.",
        ),
    ] = 0,
    search: Annotated[
        SearchMethod,
        typer.Option(
            case_sensitive=False,
            help="Search of --tune-trials: 'random' (fitted models only) or 'optuna' (every model: seeded TPE, "
            "neural trials pruned by epoch; needs pip install 'hiersrec\\[search]'). An interrupted optuna search "
            "continues when the same command is run again (its study is --out/study.db).",
        ),
    ] = SearchMethod.random,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue an interrupted run in --out (with its saved configuration), with any --nproc.",
        ),
    ] = False,
    nproc: Annotated[
        int,
        typer.Option(
            min=1,
            help="Train a neural model in N data-parallel processes on this machine (torchrun --standalone; "
            "gloo on CPU, one GPU each with NCCL). Each step takes one batch of train.batch_targets per process.",
        ),
    ] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Train or fit a model on DATA's training sessions; selection on its validation split (never test)."""
    if search is SearchMethod.optuna and not tune_trials:
        raise ConfigError("--search optuna needs a budget: add --tune-trials N")
    if search is SearchMethod.optuna and resume:
        raise ConfigError("an optuna search continues when its command is run again, without --resume")
    if resume and config is None and preset is None:
        config = out / "config.json"  # continue the run with the configuration it was started with
    # All configuration errors come before any data is read.
    run_config = load_config(config, overrides or [], preset=preset, model=model)
    source = data or run_config.data.path
    if not source:
        raise ConfigError("no dataset: pass --data (a prepared folder, an SR-GNN folder or 'synthetic')")
    if as_json and run_config.train.show_progress:
        run_config = load_config(config, [*(overrides or []), "train.show_progress=false"], preset=preset, model=model)
    if tune_trials and search is SearchMethod.random and is_neural(run_config.model_name):
        raise ConfigError(
            f"random search is for fitted models; search the neural {run_config.model_name!r} with --search optuna"
        )
    launched = distributed.launched_world_size()
    if nproc > 1 and launched > 1:
        raise ConfigError("--nproc starts torchrun itself; under torchrun give --nproc_per_node to torchrun instead")
    distributed.check_data_parallel(is_neural(run_config.model_name), bool(tune_trials), max(nproc, launched))
    if nproc > 1:  # the same command in N processes; each finds its rank in the environment torchrun sets
        if not any(arg == "--nproc" or arg.startswith("--nproc=") for arg in sys.argv[1:]):
            # Called as a function (main(argv)): this process's command line is not the one to start again.
            raise ConfigError("--nproc starts this process's command line again: run it from a shell, or use torchrun")
        raise typer.Exit(distributed.launch_local(nproc, _without_option(sys.argv[1:], "--nproc")))
    with distributed.process_group(resolve_device(run_config.train.device)) as world:
        training_data = TrainingData.from_prepared(open_dataset(source), run_config.data.valid_fraction)
        artifact, _ = fit_run(
            run_config,
            training_data,
            out,
            resume=resume,
            tune_trials=tune_trials,
            search=search.value,
            fixed=_configured_keys(config, preset, overrides or []),
            show_progress=not as_json,
        )
    if not world.is_main:  # rank 0 reports the run
        return
    summary = {
        "run": str(out),
        "model": run_config.model_name,
        "dataset": training_data.name,
        "validation_split": training_data.validation,
        **artifact.metrics,
    }
    if as_json:
        typer.echo(json.dumps(summary))
        return
    valid = artifact.metrics.get("valid") or {}
    metrics = "  ".join(f"{name}={100 * value:.2f}" for name, value in valid.items())
    tuned = f"{search.value} search over {len(artifact.metrics['tuning']['trials'])} trials" if tune_trials else ""
    if is_neural(run_config.model_name):
        epochs = f"best epoch {artifact.metrics['best_epoch']} of {artifact.metrics['epochs_run']}"
        typer.echo(f"{out}: {run_config.model_name}, {tuned + ', ' if tuned else ''}{epochs}; validation {metrics}")
    else:
        tuned = f"{tuned} (validation {metrics}), " if tuned else ""
        typer.echo(f"{out}: {run_config.model_name} {tuned}fitted on all training sessions")
    typer.echo(f"evaluate on test once with: hiersrec evaluate {out} --data {source}")


def _without_option(args: Sequence[str], name: str) -> list[str]:
    """``args`` without the option ``name`` and its value (``NAME VALUE`` or ``NAME=VALUE``)."""
    kept, skip_value = [], False
    for arg in args:
        if skip_value:
            skip_value = False
        elif arg == name:
            skip_value = True
        elif not arg.startswith(f"{name}="):
            kept.append(arg)
    return kept


def _configured_keys(config: Path | None, preset: str | None, overrides: Sequence[str]) -> set[str]:
    """``section.key`` of every value the run file, preset or ``--set`` gives: a search holds these fixed."""
    keys = {".".join(parse_assignment(assignment, "SECTION.KEY=VALUE")[:2]) for assignment in overrides}
    path = preset_path(preset) if preset is not None else config
    if path is not None:  # load_config has read and checked it already
        text = path.read_text()
        tables = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        keys |= {f"{section}.{key}" for section, table in tables.items() if isinstance(table, dict) for key in table}
    return keys


def fuse(
    run: Annotated[Path, typer.Argument(help="A finished neural run directory (HierSRec, SASRec...).")],
    out: Annotated[Path, typer.Option("--out", help="Run directory to create for the fused model.")],
    data: Annotated[str, typer.Option(help="The dataset the run was trained on (its validation split is reused).")],
    partner: Annotated[
        str | None, typer.Option(help="Fitted partner model (default: the --preset's \\[fusion] partner).")
    ] = None,
    preset: Annotated[
        str | None, typer.Option(help="Take the \\[fusion] table of this shipped preset, e.g. diginetica_hiersrec.")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override, e.g. fusion.partner_params.k=500, fusion.alternatives=sr,stan or fusion.rules=probability.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Fuse a trained neural run with a fitted partner (e.g. VSTAN), partner and weight chosen on validation only."""
    settings = [*(overrides or []), *([f"fusion.partner={partner}"] if partner else [])]
    fusion = load_config(preset=preset, overrides=settings).fusion if preset else load_config(overrides=settings).fusion
    if not fusion.enabled:
        raise ConfigError("no fusion partner: pass --partner (e.g. vstan) or a --preset with a [fusion] table")
    run_config = load_config(run / "config.json")
    training_data = TrainingData.from_prepared(open_dataset(data), run_config.data.valid_fraction)
    artifact, metrics = fuse_run(run, training_data, fusion, out)
    chosen = artifact.config.fusion
    if as_json:
        typer.echo(json.dumps({"run": str(out), "fused_from": str(run), **metrics}))
        return
    valid = "  ".join(f"{name}={100 * value:.2f}" for name, value in metrics["valid"].items())
    typer.echo(f"{out}: {run} + {chosen.partner}, rule {chosen.rule}, weight {chosen.weight:g}; validation {valid}")
    typer.echo(f"evaluate on test once with: hiersrec evaluate {out} --data {data}")


def refit(
    run: Annotated[Path, typer.Argument(help="A finished neural run (fused or not) whose validation chose an epoch.")],
    out: Annotated[Path, typer.Option("--out", help="Run directory to create for the refitted model.")],
    data: Annotated[str, typer.Option(help="The dataset the run was trained on.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Retrain a validated run on all training sessions (validation tail included) for its selected epochs."""
    artifact, result = refit_run(run, open_dataset(data), out)
    if as_json:
        typer.echo(json.dumps({"run": str(out), "refit_of": str(run), "epochs": len(result.history)}))
        return
    typer.echo(f"{out}: {run} refitted on all training sessions for {len(result.history)} epochs")
    typer.echo(f"evaluate on test once with: hiersrec evaluate {out} --data {data}")
