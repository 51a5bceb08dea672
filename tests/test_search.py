"""The Optuna search: trial 0 is the configured run, validation only, resumable, pruned, and wired into train."""

from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np
import pytest

import hiersrec.search as search
from hiersrec.cli import ExitStatus, main
from hiersrec.config import load_config
from hiersrec.data.storage import save_prepared
from hiersrec.errors import ConfigError
from hiersrec.models import MODELS, default_params, is_neural
from hiersrec.search import FloatRange, model_search_space, search_hyperparameters
from hiersrec.train.run import TrainingData, fit_run

optuna = pytest.importorskip("optuna")  # the 'search' extra

SR = load_config(model="sr", overrides=["model.weighting=div"])  # steps and pruning searched
NEURAL = [
    "model.d_model=16", "model.n_heads=2", "model.d_ff=24", "model.max_len=7", "train.epochs=4",
    "train.patience=10", "train.batch_targets=128", "train.warmup_steps=5", "train.device=cpu",
    "train.show_progress=false",
]  # fmt: skip


@pytest.fixture(scope="module")
def data(tiny_shop):
    return TrainingData.from_prepared(tiny_shop)


def _search_sr(data, path, n_trials, **kwargs):
    return search_hyperparameters(SR, data.train, data.valid, data.catalog, storage=path, n_trials=n_trials, **kwargs)


def test_every_neural_model_has_a_space_that_holds_its_defaults():
    neural = [name for name in MODELS if is_neural(name)]
    assert sorted(search.NEURAL_SEARCH_SPACES) == sorted(neural)
    for name in neural:
        train_defaults = dataclasses.asdict(load_config(model=name).train)  # the model's own training defaults
        space = model_search_space(name)
        assert "train.lr" in space and len(space) <= 6, name  # a few meaningful knobs
        for key, domain in space.items():
            section, _, field = key.partition(".")
            default = (default_params(name) if section == "model" else train_defaults)[field]
            if isinstance(domain, FloatRange):
                assert domain.low <= default <= domain.high, key
            else:
                assert default in domain, key
    assert "model.category_loss_weight" in model_search_space("hiersrec")
    assert model_search_space("sr") == {f"model.{k}": tuple(v) for k, v in MODELS["sr"].SEARCH_SPACE.items()}


def test_a_models_own_training_default_is_searched_not_held():
    # GRU4Rec's default learning rate is its own, not TrainConfig's, yet no user set it: the search varies it.
    config = load_config(model="gru4rec")
    assert "train.lr" in search._searched_domains(config, (), model_search_space("gru4rec"))
    configured = load_config(model="gru4rec", overrides=["train.lr=3e-3"])
    assert "train.lr" not in search._searched_domains(configured, (), model_search_space("gru4rec"))


def test_trial_zero_is_the_configured_run_and_the_best_is_never_worse(data, tmp_path):
    result = _search_sr(data, tmp_path / "study.db", 5)
    first = result.trials[0]
    assert first["params"] == {"model.steps": 10, "model.pruning": 20}  # the defaults; weighting is held fixed
    assert all("model.weighting" not in row["params"] for row in result.trials)
    assert [row["state"] for row in result.trials] == ["complete"] * 5
    assert result.best_score == max(row["value"] for row in result.trials) >= first["value"]
    assert result.best_config.model_params == {**default_params("sr"), "weighting": "div", **{
        key.removeprefix("model."): value for key, value in result.best_params.items()
    }}  # fmt: skip
    assert result.metric == "mrr@20" and result.best_metrics["mrr@20"] == result.best_score


def test_trials_see_only_the_training_and_validation_sessions(tiny_shop, tmp_path, monkeypatch):
    seen = []
    real = search.score_baseline

    def spy(name, params, head, tail, catalog, **kwargs):
        seen.append((head, tail))
        return real(name, params, head, tail, catalog, **kwargs)

    monkeypatch.setattr(search, "score_baseline", spy)
    fit_run(SR, TrainingData.from_prepared(tiny_shop), tmp_path / "run", tune_trials=2, search="optuna")
    head, tail = tiny_shop.validation_split(0.1)
    assert len(seen) == 2
    for fitted_on, scored_on in seen:
        np.testing.assert_array_equal(fitted_on.items, head.items)
        np.testing.assert_array_equal(scored_on.items, tail.items)


def test_an_interrupted_search_resumes_to_the_uninterrupted_result(data, tmp_path, monkeypatch):
    uninterrupted = _search_sr(data, tmp_path / "whole.db", 7)
    fits = []
    real = search.score_baseline

    def killed_at_fifth_fit(*args, **kwargs):
        fits.append(args[1])
        if len(fits) == 5:
            raise KeyboardInterrupt  # as a kill in the middle of a trial
        return real(*args, **kwargs)

    monkeypatch.setattr(search, "score_baseline", killed_at_fifth_fit)
    path = tmp_path / "resumed.db"
    assert len(_search_sr(data, path, 3).trials) == 3  # a smaller budget first: the same study grows
    with pytest.raises(KeyboardInterrupt):
        _search_sr(data, path, 7)
    monkeypatch.setattr(search, "score_baseline", real)
    resumed = _search_sr(data, path, 7)
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in resumed.trials]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in uninterrupted.trials]
    assert (resumed.best_params, resumed.best_score) == (uninterrupted.best_params, uninterrupted.best_score)
    states = [trial.state for trial in optuna.load_study(study_name="search", storage=f"sqlite:///{path}").trials]
    assert states.count(optuna.trial.TrialState.FAIL) == 1  # the killed trial, run again after it
    assert _search_sr(data, path, 7).trials == resumed.trials  # finished: nothing more is run


def test_a_study_of_another_configuration_is_refused(data, tmp_path):
    _search_sr(data, tmp_path / "study.db", 1)
    other = load_config(model="sr", overrides=["model.weighting=same"])
    with pytest.raises(ConfigError, match="another configuration"):
        search_hyperparameters(other, data.train, data.valid, data.catalog, storage=tmp_path / "study.db", n_trials=2)


def test_a_small_grid_is_not_searched_twice(data, tmp_path):
    result = _search_sr(data, tmp_path / "study.db", 10, space={"model.steps": (1, 10)})
    assert len(result.trials) == 2  # the budget stops at the grid's size
    fitted = [row for row in result.trials if "repeat_of" not in row]
    assert len({row["params"]["model.steps"] for row in fitted}) == len(fitted)  # a repeat reuses its score


def test_pruning_stops_a_hopeless_neural_trial_early(data, tmp_path):
    config = load_config(model="sasrec", overrides=NEURAL)
    path = tmp_path / "study.db"
    options = {
        "storage": path,
        "space": {"train.lr": FloatRange(1e-9, 1e-2, log=True)},
        "pruner": optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=1),
    }
    search_hyperparameters(config, data.train, data.valid, data.catalog, n_trials=1, **options)
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{path}")
    study.enqueue_trial({"train.lr": 1e-9})  # a learning rate that cannot learn in four epochs
    result = search_hyperparameters(config, data.train, data.valid, data.catalog, n_trials=2, **options)
    defaults, hopeless = result.trials
    own = {"train.lr": config.train.lr}  # trial 0: SASRec's own default learning rate
    assert defaults["params"] == own and defaults["state"] == "complete" and defaults["epochs"] == 4
    assert hopeless["state"] == "pruned" and hopeless["epochs"] < 4 and hopeless["value"] < defaults["value"]
    assert result.best_params == own


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exited:
        main(args)
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


@pytest.fixture(scope="module")
def prepared(tiny_shop, tmp_path_factory):
    return save_prepared(tiny_shop, tmp_path_factory.mktemp("data") / "tiny")


def test_cli_searches_a_fitted_model_and_continues_an_interrupted_search(prepared, tmp_path, capsys):
    out = tmp_path / "run"
    command = ["train", "-m", "sr", "--data", str(prepared), "--out", str(out), "--search", "optuna"]
    code, stdout, err = run_cli([*command, "--tune-trials", "3", "--set", "model.steps=1", "--json"], capsys)
    assert code == 0, err
    summary = json.loads(stdout)
    tuning = summary["tuning"]
    assert tuning["search"] == "optuna" and [row["trial"] for row in tuning["trials"]] == [0, 1, 2]
    assert all("model.steps" not in row["params"] for row in tuning["trials"])  # --set holds it fixed
    saved = json.loads((out / "config.json").read_text())["model"]
    assert saved == {"name": "sr", **tuning["best_config"]["model"]} and saved["steps"] == 1
    assert summary["valid"] == tuning["best_metrics"]
    # Interrupted before the final fit: the same command finishes from the study, without new trials.
    for path in out.iterdir():
        if path.name not in ("study.db", "config.json"):
            path.unlink()
    code, stdout, err = run_cli([*command, "--tune-trials", "3", "--set", "model.steps=1", "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["tuning"]["trials"] == tuning["trials"]
    code, _, err = run_cli([*command[:-2], "--set", "model.steps=1"], capsys)  # without the search
    assert code == ExitStatus.CONFIG_ERROR and "--search optuna" in err


def test_cli_searches_a_neural_model(prepared, tmp_path, capsys):
    out = tmp_path / "run"
    settings = [item for setting in NEURAL for item in ("--set", setting.replace("epochs=4", "epochs=2"))]
    args = ["train", "-m", "sasrec", "--data", str(prepared), "--out", str(out), *settings]
    code, stdout, err = run_cli([*args, "--search", "optuna", "--tune-trials", "2", "--json"], capsys)
    assert code == 0, err
    summary = json.loads(stdout)
    trials = summary["tuning"]["trials"]
    assert len(trials) == 2 and trials[0]["params"] == {
        "train.lr": load_config(model="sasrec").train.lr,
        "train.weight_decay": 0.05,
        "model.dropout": 0.2,
    }
    best = max((row for row in trials if row["state"] == "complete"), key=lambda row: row["value"])
    # The best configuration is trained again into the run directory: the same seed gives the same weights.
    assert summary["valid"]["mrr@20"] == pytest.approx(best["value"])
    assert json.loads((out / "config.json").read_text())["train"]["lr"] == best["params"]["train.lr"]
    code, _, err = run_cli(["evaluate", str(out), "--data", str(prepared), "--k", "20", "--json"], capsys)
    assert code == 0, err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-m", "sasrec", "--tune-trials", "2"], "--search optuna"),
        (["-m", "sr", "--search", "optuna"], "--tune-trials N"),
        (["-m", "sr", "--search", "optuna", "--tune-trials", "2", "--resume"], "without --resume"),
    ],
)
def test_cli_search_errors(prepared, tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    code, _, err = run_cli(["train", "--data", str(prepared), "--out", str(out), *extra], capsys)
    assert code == ExitStatus.CONFIG_ERROR and message in err
    assert not (out / "study.db").exists()


def test_a_missing_optuna_names_the_extra(data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'hiersrec\[search\]'"):
        _search_sr(data, tmp_path / "study.db", 2)
