"""Run configuration: strict TOML, typed overrides, clear errors before anything is trained."""

from __future__ import annotations

import pytest

from hiersrec.config import PRESET_DIR, RunConfig, config_from_dict, load_config
from hiersrec.errors import ConfigError
from hiersrec.models.hiersrec import HierSRecConfig


def write(tmp_path, text: str):
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def test_defaults_come_from_the_dataclasses():
    config = load_config()
    assert config == RunConfig()
    assert config.model.d_model == HierSRecConfig().d_model


def test_file_values_and_typed_overrides(tmp_path):
    path = write(
        tmp_path,
        """
        [model]
        name = "hiersrec"
        d_model = 32
        numeric_features = ["price"]
        [train]
        lr = 1e-3
        """,
    )
    config = load_config(
        path,
        [
            "train.lr=3e-4",
            "train.epochs=7",
            "model.use_category_input=false",
            "model.category_feed=factorised",
            "model.categorical_features=group,brand",
            "train.precision=bf16",
            "data.valid_fraction=0.2",
        ],
    )
    assert config.train.lr == 3e-4 and isinstance(config.train.lr, float)
    assert config.train.epochs == 7 and isinstance(config.train.epochs, int)
    assert config.model.d_model == 32 and config.model.use_category_input is False
    assert config.model.category_feed == "factorised" and config.train.precision == "bf16"
    assert config.model.categorical_features == ("group", "brand") and config.model.numeric_features == ("price",)
    assert config.data.valid_fraction == 0.2


def test_an_integer_is_accepted_for_a_float_field():
    assert load_config(overrides=["train.lr=1"]).train.lr == 1.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.lerning_rate=1"], "unknown key in \\[train\\] 'lerning_rate'"),
        (["train.lrr=1"], "did you mean 'lr'\\?"),
        (["modle.d_model=8"], "unknown section 'modle'; did you mean 'model'\\?"),
        (["train.epochs=2.5"], "train.epochs must be an int, got '2.5'"),
        (["model.use_text=yes"], "unknown key"),
        (["model.use_category_input=yes"], "model.use_category_input must be true or false"),
        (["model.output_embedding=tied"], "must be one of \\['encoder', 'ids', 'separate'\\]"),
        (["model.category_feed=sideways"], "category_feed must be one of .*'prior'.*got 'sideways'"),
        (["train.precision=fp16"], "must be one of \\['fp32', 'bf16'\\]"),
        (["model.d_model=30", "model.n_heads=4"], "divisible"),
        (["train.lr=-1"], "train.lr must be"),
        (["data.valid_fraction=1.5"], "valid_fraction"),
        (["train.lr"], "expected SECTION.KEY=VALUE"),
        # issue 9: unbounded sizes allocated terabytes, NaN passed range checks, a bad device was a traceback
        (["model.max_len=1000000000000"], "model.max_len must be between 1 and 10000"),
        (["model.d_model=99999999"], "model.d_model must be between"),
        (["train.batch_targets=0"], "train.batch_targets must be between"),
        (["train.threads=100000"], "train.threads must be between 0 and 1024"),
        (["train.weight_decay=nan"], "train.weight_decay must be between"),
        (["model.category_loss_weight=nan"], "model.category_loss_weight must be between"),
        (["model.dropout=inf"], "model.dropout must be between"),
        (["train.device=gpu0"], "train.device must be auto, cpu, cuda or cuda:N"),
        (["data.valid_fraction=nan"], "valid_fraction"),
        (["model.name=vstan", "model.k=0"], None),
    ],
)
def test_bad_values_fail_with_a_clear_message(overrides, message):
    if message is None:  # a fitted model's values are checked when it fits, with the model's own message
        from hiersrec.models import make_model

        config = load_config(overrides=overrides)
        with pytest.raises(ConfigError, match="k must be an int from 1"):
            make_model(config.model_name, config.model_params).fit(None, None)
        return
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=overrides)


def test_wrong_types_in_the_file_name_the_file_and_key(tmp_path):
    path = write(tmp_path, '[train]\nepochs = "ten"\n')
    with pytest.raises(ConfigError, match=r"run.toml: train.epochs must be an int, got 'ten'"):
        load_config(path)


def test_unknown_model_name_and_broken_toml(tmp_path):
    with pytest.raises(ConfigError, match="model.name: unknown model 'sasrecc'.*Did you mean 'sasrec'"):
        load_config(write(tmp_path, '[model]\nname = "sasrecc"\n'))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[train\nlr = 1\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")


def test_unknown_preset_suggests_a_close_name():
    with pytest.raises(ConfigError, match="did you mean 'diginetica_hiersrec'"):
        load_config(preset="diginetika_hiersrec")


@pytest.mark.parametrize("preset", sorted(p.stem for p in PRESET_DIR.glob("*.toml")))
def test_every_preset_is_valid(preset):
    config = load_config(preset=preset, overrides=["train.epochs=1"])
    assert config.train.epochs == 1


def test_presets_exist_for_the_benchmark_datasets():
    names = {p.stem for p in PRESET_DIR.glob("*.toml")}
    assert {"diginetica_hiersrec", "yoochoose1_64_hiersrec", "synthetic_hiersrec"} <= names


def test_resolved_config_round_trips_through_json_data():
    config = load_config(preset="synthetic_hiersrec", overrides=["model.d_model=48"])
    assert config_from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"model = 3\n", "\\[model\\] must be a table, got 3"),  # issue 9: was a traceback
        (b"[train]\nepochs = 2 # \xff\xfe\n", "not UTF-8|not valid TOML"),
    ],
)
def test_malformed_files_fail_with_a_clear_message(tmp_path, content, message):
    path = tmp_path / "run.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_a_models_training_defaults_apply_under_what_the_file_sets():
    from hiersrec.config import TrainConfig
    from hiersrec.models import train_defaults

    own = train_defaults("gru4rec")["lr"]
    assert own != TrainConfig().lr
    assert load_config(model="gru4rec").train.lr == own
    assert load_config(model="gru4rec", overrides=["train.lr=1e-3"]).train.lr == 1e-3  # an override wins
    assert load_config(model="hiersrec").train.lr == TrainConfig().lr  # a model without its own keeps the shared
    assert train_defaults("vstan") == {}
    saved = load_config(model="gru4rec", overrides=["train.lr=1e-3"]).to_dict()  # a run's config.json
    assert config_from_dict(saved).train.lr == 1e-3  # keeps the value it trained with
