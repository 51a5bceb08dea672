"""Run configuration: strict TOML (``[data]``, ``[model]``, ``[train]``) -> frozen dataclasses.

``[model]`` names any registered model (``name = "hiersrec"``, the default, or ``"vstan"``...) and sets its
hyperparameters: a neural model's config dataclass (`HierSRecConfig`), or a fitted model's constructor
arguments (`FittedModelConfig`). Defaults live in frozen dataclasses: `HierSRecConfig` next to its model, the
models' constructors, and here `TrainConfig` and `DataConfig` (readers of a run directory need them, and must
not load the training loop for it). A file and ``--set section.key=value`` overrides only change them. Unknown
keys, wrong types and inconsistent values raise `ConfigError` (with a close-match suggestion for typos) before
anything is trained or fitted.

Example:
    >>> cfg = load_config(overrides=["train.lr=3e-4", "model.d_model=32"])
    >>> cfg.train.lr, cfg.model.d_model
    (0.0003, 32)
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
import types
import typing
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from hiersrec.bounds import check_bounds
from hiersrec.errors import ConfigError
from hiersrec.models import check_params, is_neural, model_class, model_name_of, parameter_types, train_defaults
from hiersrec.models.category_feed import EXACT_LOSS_FEEDS
from hiersrec.models.gru4rec import GRU4RecConfig
from hiersrec.models.hiersrec import HierSRecConfig
from hiersrec.models.item_loss import EXACT_LOSSES, ITEM_LOSSES, ItemLossName, check_label_smoothing

PRESET_DIR = Path(__file__).resolve().parent / "presets"  # shipped with the package (package data)


Schedule = Literal["cosine", "linear", "constant"]

_TRAIN_DEVICE = re.compile(r"auto|cpu|cuda(:\d{1,3})?")
_TRAIN_BOUNDS = {
    "epochs": (1, 100_000),
    "batch_targets": (1, 1 << 24),
    "lr": (0.0, 10.0),
    "weight_decay": (0.0, 10.0),
    "beta2": (0.0, 1.0),
    "warmup_steps": (0, 1 << 31),
    "min_lr_ratio": (0.0, 1.0),
    "grad_clip": (0.0, 1e6),
    "patience": (0, 100_000),
    "valid_k": (1, 10_000),
    "seed": (0, (1 << 63) - 1),
    "threads": (0, 1024),
    "eval_batch_size": (1, 1 << 24),
    "negatives": (1, 1 << 24),
    "gbce_t": (0.0, 1.0),
    "label_smoothing": (0.0, 1.0),
}


@dataclass(frozen=True)
class TrainConfig:
    """How to train (defaults: the diginetica preset's; a model's `train_defaults` replace some of them)."""

    epochs: int = 20  # maximum number of passes over the training sessions
    batch_targets: int = 2048  # training targets (predicted clicks) per optimiser step
    lr: float = 2e-3  # peak learning rate
    weight_decay: float = 0.05  # AdamW decay on weight matrices (never on embeddings, norms, biases)
    beta2: float = 0.98  # AdamW second-moment decay
    warmup_steps: int = 200  # linear warm-up steps
    schedule: Schedule = "cosine"  # decay after warm-up: cosine, linear or constant
    min_lr_ratio: float = 0.02  # final learning rate / peak
    grad_clip: float = 1.0  # max global gradient norm (0 = no clipping)
    patience: int = 3  # epochs without a better validation metric before stopping
    valid_k: int = 20  # cutoff of the early-stopping metric MRR@k
    seed: int = 42  # data order, initialisation and dropout
    threads: int = 0  # torch CPU threads (0 = torch's default)
    device: str = "auto"  # "auto" (CUDA when present), "cpu", "cuda", "cuda:1"...
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 autocast for training (validation is always fp32)
    eval_batch_size: int = 1024  # validation prefixes scored at once
    show_progress: bool = True  # progress bar on stderr
    loss: ItemLossName = "auto"  # next-item loss: auto, full, chunked (exact), sampled or gbce (models.item_loss)
    negatives: int = 1024  # sampled, gbce: uniform negatives drawn per batch, shared by its targets
    gbce_t: float = 0.75  # gbce: calibration t in [0, 1] (0: plain BCE; gSASRec's default 0.75)
    label_smoothing: float = 0.0  # exact losses: share eps of each target spread evenly over all items

    def __post_init__(self) -> None:
        check_bounds(self, "train", _TRAIN_BOUNDS)
        if not self.lr > 0 or not self.beta2 < 1:
            raise ConfigError(f"train.lr must be > 0 and train.beta2 in [0, 1), got {self.lr} and {self.beta2}")
        if not _TRAIN_DEVICE.fullmatch(self.device):
            raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.schedule not in ("cosine", "linear", "constant") or self.precision not in ("fp32", "bf16"):
            raise ConfigError("train.schedule must be cosine, linear or constant; train.precision fp32 or bf16")
        if self.loss not in ITEM_LOSSES:
            raise ConfigError(f"train.loss must be one of {', '.join(ITEM_LOSSES)}, not {self.loss!r}")
        check_label_smoothing(self.loss, self.label_smoothing)


@dataclass(frozen=True)
class DataConfig:
    """Which data and how to split off the validation sessions."""

    path: str = ""  # dataset: prepared folder, SR-GNN folder or "synthetic" (the CLI's --data wins)
    valid_fraction: float = 0.1  # chronological tail of train used for early stopping (if the source has none)
    text_cache_dir: str = ""  # where frozen text embeddings are cached ("" = no cache)

    def __post_init__(self) -> None:
        if not 0.0 < self.valid_fraction < 1.0:
            raise ConfigError(f"data.valid_fraction must be in (0, 1), got {self.valid_fraction}")


@dataclass(frozen=True)
class FittedModelConfig:
    """The ``[model]`` table of a fitted (non-neural) model: its registry name and constructor arguments."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if is_neural(self.name):
            raise ConfigError(f"model {self.name!r} is configured by {model_class(self.name).config_class.__name__}")


_FUSION_RULES = ("probability", "logit")  # hiersrec.models.fusion.FUSION_RULES (not imported: no torch here)


@dataclass(frozen=True)
class FusionConfig:
    """The ``[fusion]`` table: a fitted partner whose scores join a neural model's (`hiersrec.models.fusion`).

    Without a fixed ``weight``, training tries every rule of ``rules`` with each weight of its grid on the
    validation tail and writes the chosen ``rule`` and ``weight`` into the run's ``config.json``. With
    ``alternatives``, every one of them is tried the same way beside ``partner`` (with its default
    hyperparameters) and the best by validation MRR@k becomes the run's ``partner``: shops differ in which
    session-neighbour model complements a neural one, and validation decides it per shop.
    """

    partner: str = ""  # a registered fitted model ("vstan", "sr"...); "" = no fusion
    partner_params: dict[str, Any] = field(default_factory=dict)  # its hyperparameters (the rest: defaults)
    alternatives: tuple[str, ...] = ()  # more partners tried on validation, at their defaults (ignored without partner)
    rules: tuple[str, ...] = _FUSION_RULES  # rules searched: "probability" (mixture), "logit" (additive)
    probability_weights: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # partner share
    logit_weights: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0, 6.0, 8.0, 12.0, 16.0)  # logits per unit of evidence
    rule: str = "probability"  # the rule of a fixed weight
    weight: float | None = None  # a fixed weight (no search); a finished run records the chosen one here

    def __post_init__(self) -> None:
        if not self.partner:  # no fusion (`--set fusion.partner=` switches a preset's off, alternatives too)
            object.__setattr__(self, "alternatives", ())
            return
        _check_partner(self.partner, "fusion.partner")
        for name in self.alternatives:
            _check_partner(name, "fusion.alternatives")
        check_params(self.partner, self.partner_params)
        if len(set(self.alternatives) | {self.partner}) != len(self.alternatives) + 1:
            raise ConfigError(f"fusion.alternatives {list(self.alternatives)} repeat a partner or fusion.partner")
        for rule in (*self.rules, self.rule):
            if rule not in _FUSION_RULES:
                raise ConfigError(f"fusion rule {rule!r} is unknown; choose among {list(_FUSION_RULES)}")
        if not self.rules:
            raise ConfigError("fusion.rules is empty; list at least one rule")
        weights = {"probability": self.probability_weights, "logit": self.logit_weights}
        for rule in self.rules:
            if not weights[rule]:
                raise ConfigError(f"fusion.{rule}_weights is empty; list at least one weight")
            for weight in weights[rule]:
                _check_fusion_weight(rule, weight, f"fusion.{rule}_weights")
        if self.weight is not None:
            _check_fusion_weight(self.rule, self.weight, "fusion.weight")

    @property
    def enabled(self) -> bool:
        """True when a partner is configured."""
        return bool(self.partner)


def _check_partner(name: str, where: str) -> None:
    # A partner must be a fitted model that scores items (not a neural one, not a category-only one).
    if is_neural(name):
        raise ConfigError(f"{where}: a partner is a fitted model (vstan, sr...), not the neural {name!r}")
    if not hasattr(model_class(name), "score"):
        raise ConfigError(f"{where}: {name!r} predicts categories only and scores no items; choose vstan, sr...")


def _check_fusion_weight(rule: str, weight: float, where: str) -> None:
    high = 1.0 if rule == "probability" else 1e6
    if not 0.0 <= weight <= high:
        raise ConfigError(f"{where}: weight {weight} out of range [0, {high:g}] for rule {rule!r}")


ModelConfig = Any  # a registered neural model's config dataclass (HierSRecConfig...), or a FittedModelConfig


@dataclass(frozen=True)
class RunConfig:
    """Everything a run is configured by (written to the run directory as ``config.json``).

    ``train`` applies to neural models only; a fitted model ignores it.
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=HierSRecConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)

    def __post_init__(self) -> None:
        if self.fusion.enabled and isinstance(self.model, FittedModelConfig):
            raise ConfigError(f"[fusion] joins a partner to a neural model; {self.model.name!r} is a fitted model")
        check_item_loss(self.model, self.train.loss, self.train.label_smoothing)

    @property
    def model_name(self) -> str:
        """Registry name of the configured model."""
        return _configured_model_name(self.model)

    @property
    def model_params(self) -> dict[str, Any]:
        """The model's hyperparameters as plain data."""
        return dict(self.model.params) if isinstance(self.model, FittedModelConfig) else asdict(self.model)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready nested dictionary (``model.name`` included)."""
        return {
            "data": asdict(self.data),
            "model": {"name": self.model_name, **self.model_params},
            "train": asdict(self.train),
            "fusion": asdict(self.fusion),
        }


def check_item_loss(model: ModelConfig, loss: str, label_smoothing: float = 0.0) -> None:
    """Refuse a ``train.loss`` that cannot train ``model``, saying what to use instead.

    Args:
        model: a neural model's config (a fitted model's is never trained, so any loss passes).
        loss: the ``train.loss`` of the run.
        label_smoothing: its ``train.label_smoothing``.

    Raises:
        ConfigError: a sampled loss for a HierSRec category feed that needs the softmax over every item of a
            category (`EXACT_LOSS_FEEDS`), label smoothing for those feeds (their softmax is not over every item
            alike), or any loss but "auto" for GRU4Rec's BPR-max (a sampled loss of its own).
    """
    if isinstance(model, HierSRecConfig) and model.category_feed in EXACT_LOSS_FEEDS and label_smoothing:
        raise ConfigError(
            f"train.label_smoothing spreads each target over every item alike, but model.category_feed = "
            f"{model.category_feed!r} scores within categories or with per-category offsets; use the 'concat', "
            "'expected' or 'none' feed, or train.label_smoothing = 0"
        )
    if isinstance(model, HierSRecConfig) and model.category_feed in EXACT_LOSS_FEEDS and loss not in EXACT_LOSSES:
        raise ConfigError(
            f"train.loss = {loss!r} scores a sample of the items, but model.category_feed = "
            f"{model.category_feed!r} needs every item's score (a softmax within the target's category or with "
            f"per-category offsets); use train.loss = 'auto', 'full' or 'chunked', or the 'concat', 'expected' "
            "or 'none' feed"
        )
    if isinstance(model, GRU4RecConfig) and model.loss == "bpr-max" and label_smoothing:
        raise ConfigError(
            "train.label_smoothing has no effect on model.loss = 'bpr-max', GRU4Rec's own sampled loss: set "
            "model.loss = 'cross-entropy' to smooth its labels, or train.label_smoothing = 0"
        )
    if isinstance(model, GRU4RecConfig) and model.loss == "bpr-max" and loss != "auto":
        raise ConfigError(
            f"train.loss = {loss!r} has no effect on model.loss = 'bpr-max', GRU4Rec's own sampled loss: keep "
            "train.loss = 'auto', or set model.loss = 'cross-entropy' to train with train.loss"
        )


# [model] has no class of its own: its name picks the registered model whose fields it holds (`_model_config`).
SECTIONS: dict[str, type | None] = {"data": DataConfig, "model": None, "train": TrainConfig, "fusion": FusionConfig}
DEFAULT_MODEL = "hiersrec"


def load_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    preset: str | None = None,
    model: str | None = None,
) -> RunConfig:
    """Read a TOML run file (or a preset, a run's ``config.json``, or the defaults) and apply overrides.

    Args:
        path: a TOML file with ``[data]``, ``[model]``, ``[train]`` tables (all optional), or the
            ``config.json`` of a run directory (to continue or repeat that run).
        overrides: ``"train.lr=3e-4"``-style assignments, parsed with the field's type.
        preset: name of a preset shipped in ``hiersrec/presets/`` (``"diginetica_hiersrec"``).
        model: the registered model to configure (default: the file's ``model.name``, else ``"hiersrec"``);
            a file that configures another model is an error.

    Raises:
        ConfigError: unreadable file, unknown section or key, wrong type, inconsistent values.
    """
    if path is not None and preset is not None:
        raise ConfigError("give a config file or a preset, not both")
    if preset is not None:
        path = preset_path(preset)
    raw: dict[str, Any] = {}
    if path is not None and Path(path).suffix == ".json":
        raw = _read_json(Path(path))
    elif path is not None:
        raw = _read_toml(Path(path))
    if model is not None:
        configured = raw.get("model", {}).get("name", DEFAULT_MODEL) if isinstance(raw.get("model"), dict) else None
        if path is not None and configured != model:
            raise ConfigError(f"{path} configures model {configured!r}, not {model!r}; drop --model or the file")
        raw.setdefault("model", {})["name"] = model
    for assignment in overrides:
        section, key, value = parse_assignment(assignment, "SECTION.KEY=VALUE, e.g. train.lr=3e-4")
        table = raw.setdefault(section, {})
        if section == "fusion" and key.startswith("partner_params."):  # fusion.partner_params.k=100
            table, key = table.setdefault("partner_params", {}), key.removeprefix("partner_params.")
        table[key] = value
    return config_from_dict(raw, source=str(path) if path else "defaults")


def config_from_dict(raw: dict[str, Any], source: str = "config") -> RunConfig:
    """Strictly build a `RunConfig` from nested plain data (TOML tables or a saved ``config.json``).

    Raises:
        ConfigError: naming ``source`` and the key: not a table, unknown keys, wrong types, values out of range.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected tables of settings, got {type(raw).__name__}")
    try:
        return _config_from_tables(raw, source)
    except ConfigError as error:
        message = str(error)
        raise ConfigError(message if message.startswith(source) else f"{source}: {message}") from None


def _config_from_tables(raw: dict[str, Any], source: str) -> RunConfig:
    _check_keys(raw, SECTIONS, source, what="section")
    sections = {}
    for name, cls in SECTIONS.items():
        if not isinstance(raw.get(name, {}), dict):
            raise ConfigError(f"{source}: [{name}] must be a table, got {raw[name]!r}")
        values = dict(raw.get(name, {}))
        if name == "model":
            sections[name] = _model_config(values, source)
            continue
        if name == "fusion":
            sections[name] = _fusion_config(values, source)
            continue
        if name == "train":  # the configured model's own training defaults, under what the file sets
            values = {**train_defaults(_configured_model_name(sections["model"])), **values}
        hints = typing.get_type_hints(cls)
        _check_keys(values, hints, source, what=f"key in [{name}]")
        typed = {key: _coerce(value, hints[key], f"{source}: {name}.{key}") for key, value in values.items()}
        sections[name] = cls(**typed)
    return RunConfig(**sections)


def _configured_model_name(model: ModelConfig) -> str:
    return model.name if isinstance(model, FittedModelConfig) else model_name_of(type(model))


def _model_config(values: dict[str, Any], source: str) -> ModelConfig:
    # [model] of any registered model: its name picks the class, whose hyperparameters are checked strictly.
    model_name = values.pop("name", DEFAULT_MODEL)
    if not isinstance(model_name, str):
        raise ConfigError(f"{source}: model.name must be a string, got {model_name!r}")
    try:
        cls = model_class(model_name)
    except ConfigError as error:
        raise ConfigError(f"{source}: model.name: {error}") from None
    hints = parameter_types(model_name)
    _check_keys(values, hints, source, what=f"key in [model] of {model_name!r}")
    typed = {key: _coerce(value, hints[key], f"{source}: model.{key}") for key, value in values.items()}
    if is_neural(model_name):
        return cls.config_class(**typed)
    return FittedModelConfig(name=model_name, params=typed)


def _fusion_config(values: dict[str, Any], source: str) -> FusionConfig:
    # [fusion]: its own keys typed as usual; partner_params typed by the partner's constructor.
    params = values.pop("partner_params", {})
    if not isinstance(params, dict):
        raise ConfigError(f"{source}: fusion.partner_params must be a table, got {params!r}")
    hints = {key: hint for key, hint in typing.get_type_hints(FusionConfig).items() if key != "partner_params"}
    _check_keys(values, {**hints, "partner_params": None}, source, what="key in [fusion]")
    typed = {key: _coerce(value, hints[key], f"{source}: fusion.{key}") for key, value in values.items()}
    partner = typed.get("partner", "")
    if partner and params:
        try:
            partner_hints = parameter_types(partner)
        except ConfigError as error:
            raise ConfigError(f"{source}: fusion.partner: {error}") from None
        check_params(partner, params)
        params = {k: _coerce(v, partner_hints[k], f"{source}: fusion.partner_params.{k}") for k, v in params.items()}
    try:
        return FusionConfig(**typed, partner_params=params)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None


def preset_path(name: str) -> Path:
    """The file of preset ``name`` in the package's ``presets/`` folder."""
    path = PRESET_DIR / f"{name.removesuffix('.toml')}.toml"
    if not path.is_file():
        available = sorted(p.stem for p in PRESET_DIR.glob("*.toml"))
        hint = difflib.get_close_matches(name, available, n=1)
        raise ConfigError(
            f"no preset {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else "") + f" Presets: {available}"
        )
    return path


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as error:
        raise ConfigError(f"{path}: config file not found") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from error
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start}); TOML files are UTF-8") from error
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read ({error.strerror})") from error


def _read_json(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise ConfigError(f"{path}: config file not found") from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path}: not a readable JSON config ({error})") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a JSON config is an object of tables, got {type(raw).__name__}")
    return raw


def parse_assignment(assignment: str, expected: str) -> tuple[str, str, str]:
    """Split a ``--set`` option ``"PREFIX.KEY=VALUE"`` into its three parts (the value stays text).

    Args:
        assignment: the option's text.
        expected: the form to show in the error, e.g. ``"SECTION.KEY=VALUE, e.g. train.lr=3e-4"``.

    Raises:
        ConfigError: no ``=`` or no ``.`` before it.
    """
    key, sep, value = assignment.partition("=")
    prefix, dot, name = key.strip().partition(".")
    if not sep or not dot or not prefix or not name:
        raise ConfigError(f"--set {assignment!r}: expected {expected}")
    return prefix, name.strip(), value.strip()


def _check_keys(values: dict[str, Any], known: typing.Mapping[str, Any], source: str, what: str) -> None:
    for key in values:
        if key not in known:
            hint = difflib.get_close_matches(key, list(known), n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else f"; known: {sorted(known)}"
            raise ConfigError(f"{source}: unknown {what} {key!r}{suggestion}")


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """``value`` (TOML value, JSON value or override string) converted to ``annotation``, or ConfigError."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        text = value if isinstance(value, str) else None
        if text not in args:
            raise ConfigError(f"{where} must be one of {list(args)}, got {value!r}")
        return text
    if origin in (tuple, Sequence) or annotation is tuple:
        items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return tuple(_coerce(item, args[0], where) for item in items)
    if origin is types.UnionType:
        others = [arg for arg in args if arg is not type(None)]
        assert len(others) == 1 and len(args) == 2, f"{where}: only `X | None` unions are supported"
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
            return None
        return _coerce(value, others[0], where)
    if annotation is bool:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if annotation in (int, float):
        if isinstance(value, str):
            try:
                value = annotation(value)
            except ValueError as error:
                raise ConfigError(
                    f"{where} must be a{'n int' if annotation is int else ' float'}, got {value!r}"
                ) from error
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (annotation is int and isinstance(value, float))
        ):
            raise ConfigError(f"{where} must be {annotation.__name__}, got {value!r}")
        return annotation(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    raise AssertionError(f"{where}: unsupported config type {annotation}")
