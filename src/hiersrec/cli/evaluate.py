"""``hiersrec evaluate``: full-ranking evaluation of baselines or a trained run on a dataset's test split."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from hiersrec.artifact import Artifact, check_compatible, load_artifact
from hiersrec.cli.outputs import checked_output
from hiersrec.config import parse_assignment
from hiersrec.data.ingest import open_dataset
from hiersrec.data.prepared import PreparedDataset
from hiersrec.data.sessions import SessionData
from hiersrec.errors import ConfigError
from hiersrec.eval.metrics import TIE_POLICIES
from hiersrec.eval.protocol import DEFAULT_KS, PROTOCOLS, EvalReport, format_table
from hiersrec.eval.protocol import evaluate as run_evaluation
from hiersrec.files import write_json_atomic
from hiersrec.models.base import candidate_support
from hiersrec.provenance import provenance
from hiersrec.recommend import DEFAULT_MAX_LEN
from hiersrec.retrieval.category import CandidateBudget
from hiersrec.retrieval.evaluate import evaluate_candidates, format_candidate_table
from hiersrec.train.run import sessions_digest
from hiersrec.tuning import tune_and_fit

logger = logging.getLogger(__name__)

MAX_CUTOFF = 10_000  # a cutoff past any sensible list length is a typo


def evaluate(
    run: Annotated[
        Path | None, typer.Argument(help="A run directory of any model (omit to fit baselines here with --model).")
    ] = None,
    data: Annotated[str, typer.Option(help="Prepared dataset dir, SR-GNN TSV folder, or 'synthetic'.")] = "synthetic",
    model: Annotated[
        list[str] | None, typer.Option("--model", "-m", help="Baseline to fit and evaluate; repeat the flag.")
    ] = None,
    params: Annotated[
        list[str] | None, typer.Option("--set", help="Baseline hyperparameter, e.g. sknn.k=200; repeatable.")
    ] = None,
    tune_trials: Annotated[
        int, typer.Option(help="Random-search trials per baseline on the validation split (0 = defaults).")
    ] = 0,
    k: Annotated[list[int] | None, typer.Option("--k", help="Cutoffs; repeat the flag (default 5, 10, 20).")] = None,
    protocol: Annotated[
        str, typer.Option(help=f"One of {sorted(PROTOCOLS)}, or 'auto' (last_item for leave-one-out data).")
    ] = "auto",
    ties: Annotated[str, typer.Option(help="Tie policy: pessimistic, optimistic or mean.")] = "pessimistic",
    split: Annotated[str, typer.Option(help="'test', or 'valid' (the model-selection split).")] = "test",
    batch_size: Annotated[int, typer.Option(min=1, max=1_000_000, help="Cases scored at once.")] = 512,
    candidates: Annotated[
        list[str] | None,
        typer.Option(
            "--candidates",
            help="With RUN: also rank within category candidates at this budget ('4%', '0.04', '4%:probability', "
            "'category:5'; the session's own items join them unless ':categories-only' ends the budget); "
            "repeatable. Reports candidate recall, HR/MRR@k against full ranking and latency.",
        ),
    ] = None,
    output: Annotated[Path | None, typer.Option(help="Also write the JSON results to this file.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Evaluate baselines (--model) or a trained RUN on DATA by full ranking of every test case."""
    if (run is None) == (not model):
        raise ConfigError("give either a trained RUN directory or at least one --model baseline, not both")
    if candidates and run is None:
        raise ConfigError("--candidates needs a RUN directory of a model with a category head (HierSRec)")
    # Every option is checked before the data is read and the evaluation runs.
    if ties not in TIE_POLICIES:
        raise ConfigError(f"--ties {ties!r}: use one of {', '.join(TIE_POLICIES)}")
    if any(not 1 <= cutoff <= MAX_CUTOFF for cutoff in k or ()):
        raise ConfigError(f"--k: cutoffs must be between 1 and {MAX_CUTOFF}, got {sorted(k)}")
    for budget in candidates or ():
        CandidateBudget.parse(budget)
    output = checked_output(output, "--output")
    dataset = open_dataset(data)
    protocol = dataset.default_protocol if protocol == "auto" else protocol
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; use one of {sorted(PROTOCOLS)} or 'auto'")
    ks = tuple(k or DEFAULT_KS)
    fit_sessions, sessions = _split(dataset, split)
    options = {"ks": ks, "protocol": protocol, "ties": ties, "batch_size": batch_size, "show_progress": not as_json}
    reports: dict[str, EvalReport] = {}
    if run is not None and candidates:
        _evaluate_candidates(run, dataset, sessions, candidates, options, output, as_json)
        return
    if run is not None:
        seen_before = fit_sessions if split == "valid" else None
        reports[run.name] = _evaluate_run(run, dataset, seen_before, sessions, options)
    else:
        overrides = _parse_params(params or [], model)
        for name in model:
            reports[name] = _evaluate_baseline(
                name, overrides.get(name, {}), tune_trials, dataset, fit_sessions, sessions, options
            )
    shared = {
        "dataset": dataset.name,
        "split": split,
        "fingerprint": dataset.provenance.get("fingerprint"),
        **provenance(),
    }
    for report in reports.values():
        report.extra.update(shared)
    payload = {name: report.to_dict() for name, report in reports.items()}
    if output is not None:
        write_json_atomic(output, payload)
    if as_json:
        typer.echo(json.dumps(next(iter(payload.values())) if len(payload) == 1 else payload))
    else:
        typer.echo(format_table(reports))


def validation_seen_by(artifact: Artifact, fit_sessions: SessionData) -> str | None:
    """Why ``artifact`` has seen the validation tail that follows ``fit_sessions``, or None if it has not.

    A fused run's partner is fitted on every training session once the fusion is chosen, and a refit (or a
    fitted model trained by ``hiersrec train --model``) learns from the validation tail too: scoring either on
    that tail measures what it was fitted to.
    """
    if artifact.config.fusion.enabled:
        partner = artifact.config.fusion.partner
        return f"fuses a {partner} partner fitted on all training sessions, the validation tail included"
    trained_on = artifact.meta.get("train_sessions_sha256")
    if trained_on is not None and trained_on != sessions_digest(fit_sessions):
        return (
            "was trained on other sessions than those before this validation tail (a refit, a model fitted on "
            "all training sessions, or another data.valid_fraction)"
        )
    return None


def _split(dataset: PreparedDataset, split: str):
    if split == "test":
        return dataset.train, dataset.test
    if split == "valid":
        return dataset.validation_split()
    raise ConfigError(f"unknown split {split!r}; use 'test' or 'valid'")


def _load_checked_run(run: Path, dataset: PreparedDataset) -> Artifact:
    artifact = load_artifact(run)
    check_compatible(artifact, dataset, run)
    return artifact


def _evaluate_run(run: Path, dataset: PreparedDataset, fit_sessions, sessions, options: dict[str, Any]) -> EvalReport:
    """Evaluate ``run`` on ``sessions``; ``fit_sessions`` (validation only) are the sessions before that tail."""
    artifact = _load_checked_run(run, dataset)
    if fit_sessions is not None:
        seen = validation_seen_by(artifact, fit_sessions)
        if seen is not None:
            raise ConfigError(
                f"--split valid: {run} {seen}, so its validation figures would be inflated; the figures it was "
                f"selected by are in {run / 'metrics.json'} (evaluate the run it came from for new ones)"
            )
    max_len = artifact.max_len or DEFAULT_MAX_LEN
    report = run_evaluation(artifact.model, sessions, dataset.catalog, max_len=max_len, **options)
    report.extra["validation_split"] = artifact.meta.get("validation_split")
    return report


def _evaluate_candidates(run, dataset, sessions, budgets, options, output, as_json) -> None:
    artifact = _load_checked_run(run, dataset)
    reason = candidate_support(artifact.model)
    if reason is not None:
        raise ConfigError(f"--candidates: {run} cannot rank candidates: {reason}")
    report = evaluate_candidates(
        artifact.model,
        sessions,
        dataset.catalog,
        budgets=budgets,
        k=max(options["ks"]),
        protocol=options["protocol"],
        ties=options["ties"],
        batch_size=options["batch_size"],
        max_len=artifact.max_len or DEFAULT_MAX_LEN,
        show_progress=options["show_progress"],
    )
    payload = {**report.to_dict(), "extra": {"dataset": dataset.name, **provenance()}}
    if output is not None:
        write_json_atomic(output, payload)
    typer.echo(json.dumps(payload) if as_json else format_candidate_table(report))


def _evaluate_baseline(name, params, tune_trials, dataset, fit_sessions, sessions, options) -> EvalReport:
    # Tuning sees only the sessions the model is fitted on and splits off their validation tail itself, unless
    # the source gives its own validation split (leave-one-out): then its last-item cases, as training selects.
    own_valid = dataset.valid if sessions is dataset.test else None
    fitted = tune_and_fit(
        name,
        params,
        fit_sessions,
        dataset.catalog,
        tune_trials=tune_trials,
        valid=own_valid,
        protocol=dataset.default_protocol if own_valid is not None else "all_prefixes",
        show_progress=options["show_progress"],
    )
    report = run_evaluation(fitted.model, sessions, dataset.catalog, **options)
    report.extra["fit_seconds"] = fitted.fit_seconds
    if fitted.tuning is not None:
        report.extra["tuning"] = fitted.tuning.to_dict()
    return report


def _parse_params(assignments: list[str], models: list[str]) -> dict[str, dict[str, Any]]:
    parsed: dict[str, dict[str, Any]] = {}
    for assignment in assignments:
        name, field, raw = parse_assignment(assignment, "MODEL.PARAM=VALUE, e.g. sknn.k=200")
        if name not in models:
            raise ConfigError(f"--set {assignment!r}: {name!r} is not among the --model options {models}")
        parsed.setdefault(name, {})[field] = _parse_value(raw)
    return parsed


def _parse_value(raw: str) -> Any:
    # Numbers and booleans as such; anything else stays a string (the model validates its own types).
    lowered = raw.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            continue
    return raw
