"""Score fusion (issue 12): a neural model joined with a fitted partner, the weight chosen on validation only."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from hiersrec.artifact import load_artifact
from hiersrec.config import FusionConfig, RunConfig, TrainConfig, load_config
from hiersrec.data.batching import left_pad, make_batch
from hiersrec.errors import ArtifactError, ConfigError
from hiersrec.models import make_model
from hiersrec.models.fusion import FusedModel, fuse_scores
from hiersrec.models.hiersrec import HierSRecConfig
from hiersrec.train.fusion import fusion_grid
from hiersrec.train.run import TrainingData, fit_run, fuse_run

TINY = HierSRecConfig(d_model=16, n_heads=2, d_ff=24, max_len=7, d_category=6, d_feed=5)
TRAIN = TrainConfig(epochs=1, batch_targets=256, warmup_steps=2, show_progress=False, device="cpu", seed=5)


def _order(scores: torch.Tensor) -> torch.Tensor:
    return torch.argsort(scores, dim=1, descending=True, stable=True)


@pytest.mark.parametrize("rule", ["probability", "logit"])
def test_weight_zero_ranks_exactly_as_the_neural_model(rule):
    neural = torch.randn(4, 30)
    neural[:, 0] = float("-inf")
    partner = torch.rand(4, 30) * (torch.rand(4, 30) > 0.5)
    fused = fuse_scores(neural, partner, rule, 0.0)
    assert torch.equal(_order(fused[:, 1:]), _order(neural[:, 1:]))
    if rule == "probability":  # in log space, exactly the neural log-probabilities
        torch.testing.assert_close(fused[:, 1:], torch.log_softmax(neural, dim=1)[:, 1:])


def test_full_probability_weight_ranks_the_partners_items_first_by_their_evidence():
    neural = torch.tensor([[float("-inf"), 5.0, 4.0, 3.0, 2.0]])
    partner = torch.tensor([[float("-inf"), 0.0, 0.0, 1.0, 3.0]])
    fused = fuse_scores(neural, partner, "probability", 0.999)
    assert _order(fused)[0, :2].tolist() == [4, 3]
    # The logit rule adds evidence scaled to [0, 1] per row: a weight of 2.5 moves item 4 (2 + 2.5) above item 1.
    logit = fuse_scores(neural, partner, "logit", 2.5)
    assert logit[0, 4] == pytest.approx(4.5) and logit[0, 3] == pytest.approx(3.0 + 2.5 / 3)
    assert torch.isneginf(fused[:, 0]).all() and torch.isneginf(logit[:, 0]).all()


@pytest.mark.parametrize("weight", [0.05, 0.4, 0.9, 1.0])
def test_probability_rule_is_the_log_of_the_mixture_on_every_item(weight):
    # The rule touches only the items the partner scores; everywhere it must equal the dense mixture.
    generator = torch.Generator().manual_seed(3)
    neural = torch.randn(5, 40, generator=generator) * 4
    neural[:, 0] = float("-inf")
    partner = torch.rand(5, 40, generator=generator) * (torch.rand(5, 40, generator=generator) < 0.2)
    partner[0, 1:4] = float("-inf")  # partners mark unscored items -inf or 0
    partner[1] = 0.0  # a row the partner cannot score
    evidence = partner.nan_to_num(neginf=0.0).clamp(min=0.0)
    share = evidence / evidence.sum(dim=1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny)
    mixture = (1 - weight) * torch.softmax(neural, dim=1) + weight * share
    fused = fuse_scores(neural, partner, "probability", weight)
    torch.testing.assert_close(fused[:, 1:].exp(), mixture[:, 1:], rtol=1e-5, atol=1e-7)
    assert torch.isneginf(fused[:, 0]).all()


def test_a_row_without_partner_evidence_keeps_the_neural_ranking():
    neural = torch.randn(1, 12)
    neural[:, 0] = float("-inf")
    fused = fuse_scores(neural, torch.full((1, 12), float("-inf")), "probability", 0.4)
    assert torch.equal(_order(fused[:, 1:]), _order(neural[:, 1:]))


def test_the_fusion_configuration_is_checked_before_anything_runs():
    with pytest.raises(ConfigError, match="fitted model"):
        FusionConfig(partner="sasrec")
    with pytest.raises(ConfigError, match="no parameter"):
        FusionConfig(partner="vstan", partner_params={"kk": 3})
    with pytest.raises(ConfigError, match="out of range"):
        FusionConfig(partner="vstan", probability_weights=(0.5, 1.5))
    with pytest.raises(ConfigError, match="unknown"):
        FusionConfig(partner="vstan", rules=("mean",))
    with pytest.raises(ConfigError, match="fitted model"):
        load_config(model="vstan", overrides=["fusion.partner=sr"])
    with pytest.raises(ConfigError, match="fusion.alternatives.*fitted model"):
        FusionConfig(partner="vstan", alternatives=("gru4rec",))
    with pytest.raises(ConfigError, match="scores no items"):
        FusionConfig(partner="last_category")
    with pytest.raises(ConfigError, match="repeat"):
        FusionConfig(partner="vstan", alternatives=("sr", "vstan"))
    # an empty partner switches fusion off, alternatives included (`--set fusion.partner=` on a preset)
    assert not FusionConfig(alternatives=("sr",)).enabled and FusionConfig(alternatives=("sr",)).alternatives == ()
    switched_off = load_config(preset="diginetica_hiersrec", overrides=["fusion.partner="]).fusion
    assert not switched_off.enabled and switched_off.alternatives == ()
    assert load_config(preset="diginetica_hiersrec").fusion.alternatives == ("sr", "textknn")
    with pytest.raises(ConfigError, match="srr"):
        load_config(overrides=["fusion.partner=vstan", "fusion.alternatives=sr,srr"])
    assert load_config(overrides=["fusion.partner=vstan", "fusion.alternatives=sr,stan"]).fusion.alternatives == (
        "sr",
        "stan",
    )
    config = load_config(overrides=["fusion.partner=vstan", "fusion.partner_params.k=50", "fusion.rules=logit"])
    assert config.fusion.partner_params == {"k": 50} and fusion_grid(config.fusion)[0] == ("logit", 0.0)
    assert fusion_grid(dataclasses.replace(config.fusion, rule="probability", weight=0.2)) == [("probability", 0.2)]


@pytest.fixture(scope="module")
def neural_run(tiny_shop, tmp_path_factory):
    directory = tmp_path_factory.mktemp("neural")
    fit_run(RunConfig(model=TINY, train=TRAIN), TrainingData.from_prepared(tiny_shop), directory)
    return directory


def test_fusing_a_trained_run_chooses_on_validation_and_saves_a_run_that_scores_identically(
    tiny_shop, neural_run, tmp_path
):
    data = TrainingData.from_prepared(tiny_shop)
    fusion = FusionConfig(partner="sr", rules=("probability",), probability_weights=(0.0, 0.5, 0.9))
    artifact, metrics = fuse_run(neural_run, data, fusion, tmp_path / "fused")
    trials = metrics["fusion"]["trials"]
    assert [t["weight"] for t in trials] == [0.0, 0.5, 0.9]
    best = max(trials, key=lambda t: t["metrics"]["mrr@20"])
    assert (artifact.config.fusion.weight, metrics["valid"]["mrr@20"]) == (best["weight"], best["metrics"]["mrr@20"])
    # weight 0 on validation is the neural model's own validation figure (the same cases, the same ranking)
    assert trials[0]["metrics"]["mrr@20"] == pytest.approx(metrics["neural_valid"]["mrr@20"], abs=1e-6)
    loaded = load_artifact(tmp_path / "fused")
    assert isinstance(loaded.model, FusedModel) and loaded.config.fusion.weight == best["weight"]
    test = tiny_shop.test
    sessions = [test.items[test.offsets[i] : test.offsets[i + 1]][:-1] for i in range(10) if test.lengths[i] > 1]
    batch = make_batch(*left_pad(sessions, 7), tiny_shop.catalog)
    assert torch.equal(loaded.model.score(batch), artifact.model.score(batch))
    saved = json.loads((tmp_path / "fused" / "config.json").read_text())
    assert saved["fusion"]["partner"] == "sr" and saved["fusion"]["weight"] == best["weight"]


def test_the_partner_is_chosen_among_the_alternatives_on_validation_and_recorded(tiny_shop, neural_run, tmp_path):
    data = TrainingData.from_prepared(tiny_shop)
    grid = {"rules": ("probability", "logit"), "probability_weights": (0.0, 0.6), "logit_weights": (4.0,)}
    fusion = FusionConfig(partner="vstan", partner_params={"k": 50}, alternatives=("sr", "spop"), **grid)
    artifact, metrics = fuse_run(neural_run, data, fusion, tmp_path / "fused")
    trials = metrics["fusion"]["trials"]
    assert [(t["partner"], t["rule"], t["weight"]) for t in trials] == [
        (name, rule, weight) for name in ("vstan", "sr", "spop") for rule, weight in fusion_grid(fusion)
    ]
    # weight 0 is the neural ranking whoever the partner is
    assert len({t["metrics"]["mrr@20"] for t in trials if t["weight"] == 0.0}) == 1
    best = max(trials, key=lambda t: t["metrics"]["mrr@20"])  # max keeps the first of equals, as the search does
    chosen = artifact.config.fusion
    assert (chosen.partner, chosen.rule, chosen.weight) == (best["partner"], best["rule"], best["weight"])
    assert chosen.alternatives == () and metrics["fusion"]["partner"] == best["partner"]
    assert chosen.partner_params == ({"k": 50} if best["partner"] == "vstan" else {})
    assert metrics["valid"]["mrr@20"] == best["metrics"]["mrr@20"]
    # each partner's figures are those of fusing it alone: the shared pass changes nothing
    for name, params in (("sr", {}), ("vstan", {"k": 50})):
        alone = FusionConfig(partner=name, partner_params=params, **grid)
        _, alone_metrics = fuse_run(neural_run, data, alone, tmp_path / f"alone-{name}")
        assert [t["metrics"] for t in alone_metrics["fusion"]["trials"]] == [
            t["metrics"] for t in trials if t["partner"] == name
        ]
    loaded = load_artifact(tmp_path / "fused")
    assert type(loaded.model.partner) is type(artifact.model.partner)


def test_a_fused_model_of_weight_zero_is_the_plain_model(tiny_shop, neural_run):
    neural = load_artifact(neural_run).model
    partner = make_model("vstan").fit(tiny_shop.train, tiny_shop.catalog)
    test = tiny_shop.test
    sessions = [test.items[test.offsets[i] : test.offsets[i + 1]][:-1] for i in range(10) if test.lengths[i] > 1]
    batch = make_batch(*left_pad(sessions, 7), tiny_shop.catalog)
    for rule in ("probability", "logit"):
        fused = FusedModel(neural, partner, rule, 0.0).score(batch)
        assert torch.equal(_order(fused[:, 1:]), _order(neural.score(batch)[:, 1:]))


def test_fusion_refuses_other_data_a_fused_run_and_a_busy_target(tiny_shop, neural_run, tmp_path):
    data = TrainingData.from_prepared(tiny_shop)
    fusion = FusionConfig(partner="sr", rules=("logit",), logit_weights=(1.0,))
    other = TrainingData.from_prepared(tiny_shop, valid_fraction=0.2)
    with pytest.raises(ArtifactError, match="validation sessions"):
        fuse_run(neural_run, other, fusion, tmp_path / "a")
    fuse_run(neural_run, data, fusion, tmp_path / "b")
    with pytest.raises(ArtifactError, match="not empty"):
        fuse_run(neural_run, data, fusion, tmp_path / "b")
    with pytest.raises(ArtifactError, match="fused run"):
        fuse_run(tmp_path / "b", data, fusion, tmp_path / "c")
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    config["fusion"]["weight"] = None
    (tmp_path / "b" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="no chosen weight"):
        load_artifact(tmp_path / "b")


def test_the_fuse_command_writes_a_run_that_evaluate_reads(tiny_shop, neural_run, tmp_path):
    from typer.testing import CliRunner

    from hiersrec.cli import app
    from hiersrec.data.storage import save_prepared

    tiny_shop_dir = save_prepared(tiny_shop, tmp_path / "data")
    runner = CliRunner()
    out = tmp_path / "fused"
    args = ["fuse", str(neural_run), "--out", str(out), "--data", str(tiny_shop_dir), "--partner", "sr"]
    result = runner.invoke(app, [*args, "--set", "fusion.rules=logit", "--set", "fusion.logit_weights=0,3", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert [t["weight"] for t in summary["fusion"]["trials"]] == [0.0, 3.0]
    evaluated = runner.invoke(app, ["evaluate", str(out), "--data", str(tiny_shop_dir), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert np.isfinite(json.loads(evaluated.output.strip().splitlines()[-1])["metrics"]["mrr@20"])
    no_partner = runner.invoke(app, ["fuse", str(neural_run), "--out", str(tmp_path / "x"), "--data", "synthetic"])
    assert isinstance(no_partner.exception, ConfigError) and "no fusion partner" in str(no_partner.exception)


@pytest.mark.parametrize("rule, weight", [("probability", 0.0), ("probability", 0.35), ("logit", 0.0), ("logit", 3.0)])
def test_the_search_ranks_are_the_fused_models_ranks(rule, weight):
    from hiersrec.eval.metrics import target_ranks
    from hiersrec.train.fusion import FusedRanker

    generator = torch.Generator().manual_seed(7)
    neural = torch.randn(64, 500, generator=generator) * 3
    neural[:, 0] = float("-inf")
    partner = torch.rand(64, 500, generator=generator) * (torch.rand(64, 500, generator=generator) > 0.9)
    partner[:, 0] = float("-inf")
    partner[:3] = float("-inf")  # rows where the partner has nothing to say
    targets = torch.randint(1, 500, (64,), generator=generator)
    targets[10:30] = partner[10:30, 1:].argmax(dim=1) + 1  # targets the partner scores
    expected = target_ranks(fuse_scores(neural, partner, rule, weight), targets)
    ranks = FusedRanker(neural, partner, targets).ranks(rule, weight)
    assert torch.equal(ranks, expected)
    # Every rank is at least 1 even for a batch width where vector and scalar code paths round differently.
    wide = torch.randn(37, 4099, generator=generator)
    wide[:, 0] = float("-inf")
    evidence = torch.rand(37, 4099, generator=generator) * (torch.rand(37, 4099, generator=generator) > 0.7)
    wide_targets = evidence[:, 1:].argmax(dim=1) + 1
    assert (FusedRanker(wide, evidence, wide_targets).ranks(rule, weight) >= 1).all()


def test_a_refit_trains_on_all_sessions_for_the_selected_epochs_and_keeps_the_fusion(tiny_shop, tmp_path):
    from hiersrec.train.run import refit_run, sessions_digest

    data = TrainingData.from_prepared(tiny_shop)
    config = RunConfig(
        model=TINY,
        train=dataclasses.replace(TRAIN, epochs=3, patience=1),
        fusion=FusionConfig(partner="sr", alternatives=("vstan",), rules=("logit",), logit_weights=(0.0, 2.0)),
    )
    validated, result = fit_run(config, data, tmp_path / "validated")
    refitted, refit_result = refit_run(tmp_path / "validated", tiny_shop, tmp_path / "refit")
    assert len(refit_result.history) == result.best_epoch
    assert refitted.meta["train_sessions_sha256"] == sessions_digest(tiny_shop.train)  # the tail included
    assert refitted.config.fusion == validated.config.fusion  # the partner, rule and weight chosen on validation
    assert validated.config.fusion.alternatives == () and validated.config.fusion.weight is not None
    loaded = load_artifact(tmp_path / "refit")
    assert loaded.metrics["refit_of"] == str(tmp_path / "validated") and isinstance(loaded.model, FusedModel)
    with pytest.raises(ArtifactError, match="not empty"):
        refit_run(tmp_path / "validated", tiny_shop, tmp_path / "refit")


def test_an_alternative_that_needs_item_text_is_skipped_where_there_is_none(tiny_shop, neural_run, tmp_path):
    data = TrainingData.from_prepared(tiny_shop)
    no_text = dataclasses.replace(data, catalog=dataclasses.replace(data.catalog, text=None))
    grid = {"rules": ("logit",), "logit_weights": (0.0, 2.0)}
    _, metrics = fuse_run(neural_run, no_text, FusionConfig(partner="sr", alternatives=("textknn",), **grid),
                          tmp_path / "skipped")  # fmt: skip
    assert {t["partner"] for t in metrics["fusion"]["trials"]} == {"sr"}
    reason = "textknn scores items by their text, and this catalogue has none"
    assert metrics["fusion"]["skipped"] == {"textknn": reason}
    _, alone = fuse_run(neural_run, no_text, FusionConfig(partner="sr", **grid), tmp_path / "alone")
    assert alone["fusion"]["trials"] == metrics["fusion"]["trials"] and alone["fusion"]["skipped"] == {}
    # where the shop has text, the same configuration tries it
    _, with_text = fuse_run(neural_run, data, FusionConfig(partner="sr", alternatives=("textknn",), **grid),
                            tmp_path / "text")  # fmt: skip
    assert {t["partner"] for t in with_text["fusion"]["trials"]} == {"sr", "textknn"}
    # the configured partner itself is not skipped: its own error explains the configuration
    with pytest.raises(ConfigError, match="has none"):
        fuse_run(neural_run, no_text, FusionConfig(partner="textknn", **grid), tmp_path / "refused")
