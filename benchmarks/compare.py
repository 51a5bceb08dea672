"""Every model in one table: trained or fitted the same way, tested once, each against the best by paired tests.

For one dataset (a name from ``hiersrec_common.DATASETS`` or a prepared / SR-GNN folder):

* **neural models** (``--models``): each seed trains with the model's own defaults plus ``--set`` (every neural
  model) and ``--model-set NAME:key=value,...`` (one model); the checkpoint is chosen by validation MRR@k on
  the chronological tail of the training sessions (`hiersrec.train.run.fit_run`), the test split is read once
  afterwards;
* **fitted models** (``--models`` too): fitted once on all training sessions with the hyperparameters tuned on
  validation by ``benchmarks/baselines.py`` (``--baselines``, its JSON; a model missing there keeps its
  defaults and is marked so);
* ``--search-trials N``: instead, every trained or fitted model first runs the same Optuna search of N trials on
  the validation tail (`hiersrec.search`: seeded TPE, trial 0 = the configuration above, neural trials pruned
  by epoch, the study in the job's folder), then trains or fits its best configuration: one budget for all
  (not with ``--baselines`` for a model it tunes: its tuned values would leave nothing to search);
* **existing runs** (``--run NAME=DIR,DIR,...``, e.g. the shipped preset's seeds): evaluated as saved.

Each test evaluation ranks every test case's target against all items (the dataset's protocol, pessimistic
ties) and saves the per-case ranks (``test_ranks.npy`` in the job's folder). The reference is the model with
the best mean test MRR@20 (a reporting choice: nothing is selected by it), or each model named by
``--reference`` (e.g. a model and its ablation); every other model is compared with it seed by seed over the
same test cases (`hiersrec.eval.significance.compare`: paired bootstrap 99% intervals and a Wilcoxon
signed-rank test). Reported per model: mean +- std over seeds, the chosen epochs, training
seconds per epoch (mean over the epochs run; fitted models: the fit), the peak resident memory of the
process that trained it (every job runs in a fresh process, one after another) and the test evaluation seconds.

``--valid-only`` never reads the test split: the table holds each job's validation figures (the selected epoch's
HR / MRR / NDCG@20 on the validation tail; fitted models are then fitted on the head of the training sessions
and ranked on the whole tail the same way) and no paired tests. Use it for
choosing settings, then run the chosen ones without it.

Jobs are appended to ``<out>.jsonl`` as they finish; running the same command again with the same ``--out``
skips the finished jobs and continues an interrupted neural training from its checkpoint.

    python benchmarks/compare.py --dataset prepared/diginetica --models gru4rec,sasrec,core,vstan,stan \\
        --seeds 0,1,2 --set train.precision=bf16 --baselines benchmarks/results/baselines-diginetica.json \\
        --run hiersrec=runs/dgn-full,runs/dgn-seed1,runs/dgn-seed2   # saved runs: trained on that same folder
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import resource
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np

from hiersrec_common import DATASETS, REPO
from reporting import header_lines, paired_cells, resolve_stem, results_header, sibling, write_results

TABLE = ("hr@10", "hr@20", "mrr@10", "mrr@20", "ndcg@10", "ndcg@20")
CUTOFFS = (10, 20)
REFERENCE_METRIC = "mrr@20"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="diginetica", help=f"{sorted(DATASETS)} or a dataset folder")
    parser.add_argument("--models", default="", help="comma-separated registered models to train or fit")
    parser.add_argument("--seeds", default="0", help="seeds of every neural model (fitted models: one fit)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="override, every neural model")
    parser.add_argument(
        "--model-set", action="append", default=[], metavar="NAME:key=value,...", help="overrides of one model"
    )
    parser.add_argument("--baselines", type=Path, help="baselines.py JSON with the tuned fitted models")
    parser.add_argument(
        "--search-trials", type=int, default=0, help="Optuna trials per model on validation first (0: none)"
    )
    parser.add_argument("--run", action="append", default=[], metavar="NAME=DIR,DIR", help="evaluate saved runs")
    parser.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="MODEL",
        help="compare every other model with this one (repeatable; default: the best mean test MRR@20)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads of every job")
    parser.add_argument("--valid-only", action="store_true", help="never read test: a table of validation figures")
    parser.add_argument("--out", type=Path, help="output stem; an existing one's finished jobs are kept")
    parser.add_argument("--runs-dir", type=Path, default=REPO / "benchmarks" / "work" / "runs")
    return parser.parse_args(argv)


def model_overrides(entries: list[str]) -> dict[str, list[str]]:
    """``NAME:k=v,k=v`` entries as {name: ["k=v", ...]}."""
    table: dict[str, list[str]] = {}
    for entry in entries:
        name, sep, assignments = entry.partition(":")
        if not sep or not assignments:
            raise SystemExit(f"--model-set wants NAME:section.key=value,..., got {entry!r}")
        table.setdefault(name, []).extend(item for item in assignments.split(",") if item)
    return table


def tuned_parameters(path: Path | None) -> dict[str, dict[str, Any]]:
    """{model: its tuned constructor arguments} from a baselines.py JSON (empty without one)."""
    if path is None:
        return {}
    results = json.loads(path.read_text())["results"]
    return {row["model"]: {k: v for k, v in row["params"].items() if k != "name"} for row in results}


def plan_jobs(args: argparse.Namespace, dataset: str, stem: Path) -> list[dict[str, Any]]:
    """One job per neural (model, seed), per fitted model and per saved run directory."""
    from hiersrec.config import load_config
    from hiersrec.models import is_neural, model_class, search_space

    per_model, tuned = model_overrides(args.model_set), tuned_parameters(args.baselines)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    if args.search_trials < 0:
        raise SystemExit("--search-trials must be >= 0")
    common = {"dataset": dataset, "threads": args.threads, "search_trials": args.search_trials,
              "valid_only": args.valid_only}  # fmt: skip
    jobs = []
    for name in (n for n in args.models.split(",") if n):
        model_class(name)  # an unknown name fails here, before anything runs
        if is_neural(name):
            for seed in seeds:
                overrides = [
                    "train.show_progress=false",
                    *args.overrides,
                    *per_model.get(name, []),
                    f"train.seed={seed}",
                ]
                lr = load_config(model=name, overrides=overrides).train.lr  # the model's own default unless set
                jobs.append({**common, "kind": "train", "model": name, "seed": seed, "overrides": overrides, "lr": lr})
        else:
            params = tuned.get(name)
            if params is not None and args.search_trials > 0:
                # Values set by a configuration are fixed in a search: the tuned ones would leave nothing to search.
                raise SystemExit(
                    f"--search-trials with --baselines: {name}'s tuned values would fix every hyperparameter the "
                    "search tries; drop --baselines to search from the defaults, or --search-trials to use them"
                )
            overrides = [f"model.{k}={_text(v)}" for k, v in (params or {}).items()] + per_model.get(name, [])
            jobs.append({**common, "kind": "fit", "model": name, "seed": None, "overrides": overrides,
                         "tuned": params is not None or args.search_trials > 0 or not search_space(name)})  # fmt: skip
    for entry in args.run:
        name, sep, dirs = entry.partition("=")
        if not sep or not dirs:
            raise SystemExit(f"--run wants NAME=DIR,DIR,..., got {entry!r}")
        for index, run_dir in enumerate(d for d in dirs.split(",") if d):
            jobs.append({**common, "kind": "saved", "model": name, "seed": index, "source": str(Path(run_dir))})
    for job in jobs:
        label = job["model"] if job["seed"] is None else f"{job['model']}-seed{job['seed']}"
        job["work_dir"] = str(args.runs_dir / stem.name / label)
    return jobs


def run_isolated(work: list[tuple[str, Any]], worker: Callable[[Any], Any]) -> Iterator[Any]:
    """``worker(argument)`` for each ``(label, argument)`` of ``work``, in turn, each in a fresh process.

    A fresh process per job makes each peak memory figure that job's own. A process that dies without a result
    (a crash in native code, or killed for memory) stops the run with an error naming the job, instead of
    waiting for it forever; the results yielded before stay with the caller.
    """
    context = multiprocessing.get_context("spawn")
    for label, argument in work:
        with ProcessPoolExecutor(1, mp_context=context) as executor:
            try:
                result = executor.submit(worker, argument).result()
            except BrokenProcessPool:
                raise SystemExit(
                    f"{label}: its process died without a result (a crash in native code, or killed for memory); "
                    "the jobs finished before it are kept"
                ) from None
        yield result


def _job_label(job: dict[str, Any]) -> str:
    return job["model"] if job["seed"] is None else f"{job['model']} seed {job['seed']}"


def _text(value: Any) -> str:
    # The text of a --set value: strings as they are, numbers and booleans as TOML writes them.
    return value if isinstance(value, str) else json.dumps(value)


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Train, fit or load one model, then rank the test cases once (in a process of its own)."""
    import torch

    torch.set_num_threads(job["threads"])
    from hiersrec.artifact import load_artifact
    from hiersrec.config import load_config
    from hiersrec.data.ingest import open_dataset
    from hiersrec.eval.significance import case_ranks
    from hiersrec.search import STUDY
    from hiersrec.train.run import TrainingData, fit_run

    work = Path(job["work_dir"])
    record: dict[str, Any] = {key: job.get(key) for key in ("kind", "model", "seed", "search_trials", "lr")}
    started = time.perf_counter()
    if job["kind"] == "saved":
        artifact = load_artifact(job["source"])
        record.update(source=job["source"], valid=artifact.metrics.get("valid", {}))
    else:
        config = load_config(model=job["model"], overrides=job["overrides"])
        data = TrainingData.from_prepared(open_dataset(job["dataset"]), config.data.valid_fraction)
        # valid-only: a fitted model is fitted on the head and ranked on the whole tail, as a neural model selects.
        fit_on_head = job["valid_only"] and job["kind"] == "fit"
        if fit_on_head:
            data = dataclasses.replace(data, all_train=None)
        trials = job["search_trials"]
        if trials:  # an interrupted search continues from the study in its folder
            resume = (work / STUDY).is_file()
            artifact, _ = fit_run(config, data, work, tune_trials=trials, search="optuna")
            record["search"] = artifact.metrics.get("tuning")
        else:
            resume = job["kind"] == "train" and (work / "checkpoint.pt").is_file()
            if job["kind"] == "fit" and work.exists():
                shutil.rmtree(work)  # a fit is redone whole: it has no checkpoint to continue
            artifact, _ = fit_run(config, data, work, resume=resume)
        record.update(overrides=job["overrides"], valid=artifact.metrics.get("valid", {}), resumed=resume)
        if job["kind"] == "fit":
            record["tuned"] = job["tuned"]
        else:  # the validation figures of every epoch, to see whether the budget was enough
            lines = (work / "train_log.jsonl").read_text().splitlines()
            record["valid_history"] = [
                {k: v for k, v in json.loads(line).items() if k == "epoch" or k.startswith("valid_")} for line in lines
            ]
        if fit_on_head:
            ranks = case_ranks(artifact.model, data.valid, data.catalog, protocol=data.protocol, batch_size=1024)
            record["valid"] = metrics_from_ranks(ranks)
        del data
    record["peak_train_rss_gib"] = None if job["kind"] == "saved" else peak_rss_gib()
    record["train_wall_seconds"] = time.perf_counter() - started
    metrics = artifact.metrics
    record["best_epoch"], record["epochs_run"] = metrics.get("best_epoch"), metrics.get("epochs_run")
    record["epoch_seconds"] = metrics.get("mean_epoch_seconds", metrics.get("fit_seconds"))
    fusion = artifact.config.fusion
    record["fusion"] = (
        {"partner": fusion.partner, "rule": fusion.rule, "weight": fusion.weight} if fusion.enabled else None
    )
    if not job["valid_only"]:
        record.update(test_once(artifact, job["dataset"], work, job.get("source")))
    return record


def test_once(artifact: Any, dataset_spec: str, work: Path, source: str | None = None) -> dict[str, Any]:
    """Rank every test case once; save the ranks; the metrics follow from them."""
    from hiersrec.artifact import check_compatible
    from hiersrec.data.ingest import open_dataset
    from hiersrec.eval.significance import case_ranks

    dataset = open_dataset(dataset_spec)
    if source is not None:  # a saved run must come from this dataset (fingerprint and vocabulary)
        check_compatible(artifact, dataset, source)
    started = time.perf_counter()
    ranks = case_ranks(
        artifact.model, dataset.test, artifact.catalog, protocol=dataset.default_protocol,
        max_len=getattr(artifact.config.model, "max_len", 50), batch_size=1024,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    work.mkdir(parents=True, exist_ok=True)
    np.save(work / "test_ranks.npy", ranks)
    return {
        "test": metrics_from_ranks(ranks),
        "test_cases": int(ranks.size),
        "eval_seconds": seconds,
        "protocol": dataset.default_protocol,
        "ranks": str(work / "test_ranks.npy"),
    }


def metrics_from_ranks(ranks: np.ndarray) -> dict[str, float]:
    """HR, MRR and NDCG at the cutoffs, from full-ranking ranks (1 = first), as the evaluator sums them."""
    import torch

    from hiersrec.eval.metrics import MetricSums

    sums = MetricSums()
    sums.add_ranks(torch.from_numpy(np.asarray(ranks, dtype=np.float32)), CUTOFFS)
    return sums.means(int(np.size(ranks)))


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def summarise(records: list[dict[str, Any]], split: str = "test") -> dict[str, dict[str, Any]]:
    """Mean and std over seeds per model of the ``split`` metrics, with the mean cost figures."""
    summary: dict[str, dict[str, Any]] = {}
    for model in dict.fromkeys(r["model"] for r in records):
        runs = [r for r in records if r["model"] == model]
        keys = [k for k in TABLE if all(k in r.get(split, {}) for r in runs)]
        values = {k: np.array([r[split][k] for r in runs]) for k in keys}
        summary[model] = {
            "kind": runs[0]["kind"],
            "seeds": [r["seed"] for r in runs],
            "best_epochs": [r["best_epoch"] for r in runs],
            split: {
                k: {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0}
                for k, v in values.items()
            },  # fmt: skip
            "valid_mrr@20": _mean([r["valid"].get("mrr@20") for r in runs]),
            "epoch_seconds": _mean([r["epoch_seconds"] for r in runs]),
            "peak_train_rss_gib": _mean([r["peak_train_rss_gib"] for r in runs]),
            "eval_seconds": _mean([r.get("eval_seconds") for r in runs]),
            "tuned": runs[0].get("tuned"),
            "lr": runs[0].get("lr"),
        }
    return summary


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def paired_tests(records: list[dict[str, Any]], reference: str) -> dict[str, list[dict[str, Any]]]:
    """Every model against ``reference``: same seed where both have seeds, else every run of the other side."""
    from hiersrec.eval.significance import compare

    theirs = [r for r in records if r["model"] == reference]
    tests: dict[str, list[dict[str, Any]]] = {}
    for model in dict.fromkeys(r["model"] for r in records if r["model"] != reference):
        mine = [r for r in records if r["model"] == model]
        pairs = [(a, b) for a in mine for b in theirs if a["seed"] == b["seed"]]
        if not pairs:  # one side is a single fit: pair it with every run of the other
            pairs = [(a, b) for a in mine for b in theirs]
        tests[model] = []
        for a, b in pairs:
            comparison = compare(np.load(a["ranks"]), np.load(b["ranks"]))
            significant = (
                all(comparison[m]["ci"][1] < 0 for m in ("mrr@20", "hr@20")) and comparison["wilcoxon_p"] < 0.01
            )
            tests[model].append({"seed": a["seed"], "reference_seed": b["seed"], "worse": significant, **comparison})
    return tests


def markdown(
    summary: dict[str, dict[str, Any]],
    tests: dict[str, dict[str, list]],
    settings: dict,
    split: str = "test",
) -> str:
    """The settings, the table (metrics in %, mean +- std), then the paired tests per reference (test only).

    ``tests`` maps each reference to its `paired_tests`; the first reference is the table's "vs" column.
    """
    lines = header_lines(settings)
    reference = next(iter(tests), None)
    if split == "test":
        lines += ["", f"## test (each model tested once; reference: {reference}, {settings['reference rule']})", ""]
    else:
        lines += ["", "## validation (the test split was not read)", ""]
    keys = [k for k in TABLE if all(k in entry[split] for entry in summary.values())]
    lines.append(
        "| model | kind | seeds | lr | " + " | ".join(keys) + " | vs reference | epochs | s/epoch | peak GiB | eval s |"
    )
    lines.append("|---" * (len(keys) + 9) + "|")
    for name, entry in sorted(summary.items(), key=lambda item: -item[1][split][REFERENCE_METRIC]["mean"]):
        cells = [_percent(entry[split][k], len(entry["seeds"])) for k in keys]
        rows = tests[reference].get(name, []) if reference else []
        mark = (
            "-"
            if split != "test"
            else "reference"
            if name == reference
            else f"{sum(r['worse'] for r in rows)}/{len(rows)} worse"
        )
        kind = entry["kind"] + ("" if entry["tuned"] in (None, True) else ", untuned")
        lines.append(
            f"| {name} | {kind} | {len(entry['seeds'])} | {_cell([entry.get('lr')])} | "
            + " | ".join(cells)
            + f" | {mark} | "
            f"{_cell(entry['best_epochs'])} | {_number(entry['epoch_seconds'], 1)} | "
            f"{_number(entry['peak_train_rss_gib'], 2)} | {_number(entry['eval_seconds'], 1)} |"
        )
    if split != "test":
        return "\n".join(lines) + "\n"
    for reference, against in tests.items():
        lines += [
            "",
            f"## paired tests against {reference} (same test cases; 99% bootstrap intervals, Wilcoxon signed-rank)",
            "",
            "| model | seed | ref seed | MRR@20 diff | 99% CI | HR@20 diff | 99% CI | Wilcoxon p |",
            "|---|---:|---:|---:|---|---:|---|---:|",
        ]
        for name, rows in against.items():
            for row in rows:
                seeds = (_cell([row["seed"]]), _cell([row["reference_seed"]]))
                lines.append(f"| {name} | {seeds[0]} | {seeds[1]} | {paired_cells(row)} |")
    return "\n".join(lines) + "\n"


def _settings(entry: dict[str, Any]) -> tuple:
    # What makes two runs of a (model, seed) the same: its overrides, its learning rate (a model's default may
    # change), its search budget, the saved run it reads.
    return tuple(entry.get("overrides") or ()), entry.get("lr"), entry.get("search_trials", 0), entry.get("source")


def _percent(metric: dict[str, float], runs: int) -> str:
    # mean +- std over the runs in %; a single run has no spread to show.
    return f"{100 * metric['mean']:.2f}" + (f" ± {100 * metric['std']:.2f}" if runs > 1 else "")


def _cell(values: list[Any]) -> str:
    return "-" if all(v is None for v in values) else ",".join(str(v) for v in values)


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    dataset = str(DATASETS[args.dataset][0]) if args.dataset in DATASETS else args.dataset
    name = args.dataset if args.dataset in DATASETS else Path(args.dataset).name
    out = resolve_stem(args.out, "compare", name)
    jobs = plan_jobs(args, dataset, out)
    if not jobs:
        raise SystemExit("nothing to compare: give --models and/or --run")
    log_path = sibling(out, ".jsonl")
    done = [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.is_file() else []
    finished = {(r["model"], r["seed"]): r for r in done}
    for job in jobs:  # a finished job is kept only when it ran what this command asks for
        record = finished.get((job["model"], job["seed"]))
        if record is not None and _settings(record) != _settings(job):
            raise SystemExit(
                f"{log_path} holds {job['model']} seed {job['seed']} run with other settings "
                f"({_settings(record)} != {_settings(job)}); choose a new --out"
            )
    todo = [job for job in jobs if (job["model"], job["seed"]) not in finished]
    print(f"{len(jobs)} jobs, {len(jobs) - len(todo)} already in {log_path.name}", flush=True)
    records = [r for r in done if any((r["model"], r["seed"]) == (j["model"], j["seed"]) for j in jobs)]
    split = "valid" if args.valid_only else "test"
    with open(log_path, "a") as log:
        for record in run_isolated([(_job_label(job), job) for job in todo], run_job):
            records.append(record)
            log.write(json.dumps(record) + "\n")
            log.flush()
            figures = record.get(split, {})
            print(f"{_job_label(record)}: epoch {record['best_epoch']}/{record['epochs_run']} "
                  f"{split} HR@20 {100 * figures.get('hr@20', float('nan')):.2f} "
                  f"MRR@20 {100 * figures.get('mrr@20', float('nan')):.2f}", flush=True)  # fmt: skip
    summary = summarise(records, split)
    unknown = sorted(set(args.reference) - set(summary))
    if unknown:
        raise SystemExit(f"--reference {', '.join(unknown)}: not a model of this comparison ({sorted(summary)})")
    references = args.reference or [max(summary, key=lambda m: summary[m][split][REFERENCE_METRIC]["mean"])]
    tests = {} if args.valid_only else {ref: paired_tests(records, ref) for ref in references}
    settings = {
        "dataset": name,
        "neural overrides": args.overrides,
        "model overrides": args.model_set,
        "tuned fitted models": str(args.baselines) if args.baselines else "none (defaults)",
        "search trials per model": args.search_trials,
        "saved runs": args.run,
        "reference rule": "chosen by --reference" if args.reference else "the best mean test MRR@20",
        "protocol": "checkpoints and hyperparameters chosen on validation; "
        + ("the test split never read" if args.valid_only else "test read once per job")
        + "; full ranking, pessimistic ties",
    }
    body = markdown(summary, tests, settings, split)
    payload = {
        **settings,
        "reference": references[0],
        "summary": summary,
        "paired": tests.get(references[0], {}),
        "paired_by_reference": tests,
        "runs": records,
    }
    write_results(out, results_header(__file__, argv), payload, f"Every model on {name}", body)
    print(body)


if __name__ == "__main__":
    main()
