"""The baseline tuner: random search scored on the validation tail of the training sessions only."""

from __future__ import annotations

import numpy as np
import pytest

import hiersrec.tuning as tuning
from hiersrec.errors import ConfigError
from hiersrec.models import default_params
from hiersrec.tuning import tune_baseline


def test_tuning_finds_the_rule_length_that_fits_a_first_order_chain(tiny_shop):
    # tiny_shop's next click depends on the last click only: one-step rules beat rules spread over 30 clicks
    result = tune_baseline(
        "sr", tiny_shop.train, tiny_shop.catalog, n_trials=3, space={"steps": (30, 1), "weighting": ("same",)}
    )
    assert result.best_params == {**default_params("sr"), "steps": 1, "weighting": "same"}
    assert result.best_score == max(row["metric"] for row in result.trials)
    # Trial 0: the defaults, with the value the space fixes (weighting) put in.
    assert [row["params"] for row in result.trials][0] == {**default_params("sr"), "weighting": "same"}
    assert len(result.trials) == 3 and result.metric == "mrr@20"


def test_trials_fit_on_the_head_and_score_on_the_tail(tiny_shop, monkeypatch):
    seen = []
    real_evaluate = tuning.evaluate

    def spy(model, sessions, catalog, **kwargs):
        seen.append((model.transitions_.sum(), sessions))
        return real_evaluate(model, sessions, catalog, **kwargs)

    monkeypatch.setattr(tuning, "evaluate", spy)
    result = tune_baseline("markov", tiny_shop.train, tiny_shop.catalog, valid_fraction=0.2)
    head, tail = tiny_shop.train.split_tail(0.2)
    ((transitions, scored),) = seen
    np.testing.assert_array_equal(scored.items, tail.items)
    assert transitions == head.n_clicks - head.n_sessions  # fitted on the head's consecutive pairs only
    assert (result.n_fit_sessions, result.n_valid_sessions) == (head.n_sessions, tail.n_sessions)


def test_max_valid_sessions_keeps_the_earliest_held_out_sessions(tiny_shop):
    result = tune_baseline("pop", tiny_shop.train, tiny_shop.catalog, valid_fraction=0.2, max_valid_sessions=25)
    assert result.n_valid_sessions == 25


def test_draws_are_distinct_seeded_and_within_the_space(tiny_shop):
    space = {"k": (10, 20, 50, 100), "sample_size": (100, 500, None), "similarity": ("cosine", "jaccard")}
    draws = tuning._draw_configurations(space, default_params("sknn"), 10, np.random.default_rng(4))
    again = tuning._draw_configurations(space, default_params("sknn"), 10, np.random.default_rng(4))
    other = tuning._draw_configurations(space, default_params("sknn"), 10, np.random.default_rng(5))
    assert draws == again and draws != other
    assert draws[0] == default_params("sknn") and len(draws) == 10
    keys = [tuple(d.values()) for d in draws]
    assert len(set(keys)) == len(keys)
    assert all(d["k"] in space["k"] and d["similarity"] in space["similarity"] for d in draws[1:])


def test_a_small_grid_is_searched_whole():
    space = {"steps": (1, 2), "weighting": ("same", "div")}
    draws = tuning._draw_configurations(space, default_params("sr"), 50, np.random.default_rng(0))
    assert len(draws) == 5  # the defaults, then the 4 grid points


def test_category_baseline_is_scored_on_category_accuracy(tiny_shop):
    result = tune_baseline("last_category", tiny_shop.train, tiny_shop.catalog, metric="cat_acc@1")
    assert len(result.trials) == 1 and 0.7 < result.best_score < 0.9


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metric": "precision@20"}, "unknown metric"),
        ({"n_trials": 0}, "n_trials"),
        ({"space": {"kk": (1, 2)}}, "Did you mean 'k'"),
    ],
)
def test_bad_settings_are_config_errors(tiny_shop, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        tune_baseline("sknn", tiny_shop.train, tiny_shop.catalog, **kwargs)


def test_a_metric_the_model_does_not_report_is_a_config_error(tiny_shop):
    with pytest.raises(ConfigError, match="does not report"):
        tune_baseline("last_category", tiny_shop.train, tiny_shop.catalog, metric="mrr@20")


def test_a_sources_own_validation_split_is_tuned_on_its_last_item_cases(tiny_shop, monkeypatch, tmp_path):
    # issue 9: leave-one-out sources were tuned on every prefix of the last 10% of training sessions while
    # training selected on the source's last-item validation cases. Both now use the source's cases.
    import dataclasses

    from hiersrec.cli import main
    from hiersrec.data.storage import save_prepared

    seen = []
    real_evaluate = tuning.evaluate

    def spy(model, sessions, catalog, **kwargs):
        seen.append((sessions.n_sessions, kwargs.get("protocol")))
        return real_evaluate(model, sessions, catalog, **kwargs)

    monkeypatch.setattr(tuning, "evaluate", spy)
    loo = dataclasses.replace(tiny_shop, valid=tiny_shop.test)  # a source that gives its own validation split
    directory = save_prepared(loo, tmp_path / "data")
    with pytest.raises(SystemExit) as exited:
        main(["evaluate", "--data", str(directory), "-m", "sr", "--tune-trials", "2", "--k", "20", "--json"])
    assert exited.value.code == 0
    assert seen[:2] == [(tiny_shop.test.n_sessions, "last_item")] * 2  # both trials, on the source's cases
