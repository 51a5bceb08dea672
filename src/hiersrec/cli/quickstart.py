"""``hiersrec quickstart``: the main job end to end on the embedded synthetic shop.

prepare (synthetic shop -> prepared folder) -> fit the baselines -> train HierSRec (validation = tail of
train) -> evaluate everything once on the test split by full ranking -> print the table and write JSON.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Annotated

import typer

from hiersrec.config import load_config
from hiersrec.data.storage import load_prepared, save_prepared
from hiersrec.data.synthetic import SyntheticShopConfig, make_synthetic_shop
from hiersrec.eval.protocol import EvalReport, evaluate, format_table
from hiersrec.models import BASELINES, make_baseline
from hiersrec.provenance import provenance
from hiersrec.train.run import TrainingData, fit_run

logger = logging.getLogger(__name__)

QUICKSTART_KS = (10, 20)


def quickstart(
    out: Annotated[Path, typer.Option(help="Folder for the prepared data, the HierSRec run and results.json.")] = Path(
        "runs/quickstart"
    ),
    sessions: Annotated[int, typer.Option(help="Sessions in the synthetic shop.")] = SyntheticShopConfig.n_sessions,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="HierSRec config override, e.g. train.epochs=5; repeatable.")
    ] = None,
) -> None:
    """Prepare the synthetic shop, fit the baselines and HierSRec, evaluate on test and print the table."""
    typer.echo(f"[1/4] preparing the synthetic shop into {out / 'data'}", err=True)
    data_dir = save_prepared(make_synthetic_shop(SyntheticShopConfig(n_sessions=sessions)), out / "data")
    dataset = load_prepared(data_dir)
    reports: dict[str, EvalReport] = {}

    typer.echo(f"[2/4] fitting and evaluating {len(BASELINES)} baselines (default hyperparameters)", err=True)
    for name in BASELINES:
        started = time.perf_counter()
        baseline = make_baseline(name).fit(dataset.train, dataset.catalog)
        fit_seconds = time.perf_counter() - started
        reports[name] = evaluate(baseline, dataset.test, dataset.catalog, ks=QUICKSTART_KS)
        reports[name].extra["fit_seconds"] = fit_seconds

    typer.echo("[3/4] training HierSRec (early stopping on the validation tail of train)", err=True)
    config = load_config(preset="synthetic_hiersrec", overrides=overrides or [])
    started = time.perf_counter()
    artifact, _ = fit_run(config, TrainingData.from_prepared(dataset), out / "hiersrec")
    fit_seconds = time.perf_counter() - started

    typer.echo("[4/4] evaluating HierSRec on the test split", err=True)
    report = evaluate(artifact.model, dataset.test, dataset.catalog, ks=QUICKSTART_KS, max_len=config.model.max_len)
    report.extra["fit_seconds"] = fit_seconds
    reports["hiersrec"] = report

    results = {name: r.to_dict() for name, r in reports.items()}
    meta = {"dataset": dataset.name, "fingerprint": dataset.provenance.get("fingerprint"), **provenance()}
    (out / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    typer.echo(format_table(reports))
    typer.echo(f"results: {out / 'results.json'}; HierSRec run: {out / 'hiersrec'}")
