"""A synthetic shop with a known structure: the embedded default dataset and the test fixture generator.

The shop has a category tree (groups of leaf categories), items laid out in a ring inside each category
with Zipf popularity, titles built from a small per-group vocabulary, and sessions that walk the rings
and move between categories:

* with probability ``stay_prob`` the next click stays in the current category: the ring successor of the
  current item with probability ``ring_prob``, otherwise a popularity-drawn item of the category;
* otherwise it jumps to the category's successor (a fixed map, inside the same group with probability
  ``group_prob``) and clicks that category's first (most popular) item.

So the next category is predictable from the current one, and with ``ring_prob = 1`` the next item is one
of two known items: a sequence-aware model must reach HR@2 close to 1, while popularity cannot.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from hiersrec.data.catalog import ItemCatalog
from hiersrec.data.prepared import PreparedDataset
from hiersrec.data.sessions import SessionData
from hiersrec.data.vocab import Vocab
from hiersrec.errors import ConfigError

_WORDS = [
    "alpha",
    "bolt",
    "cable",
    "drill",
    "epoxy",
    "filter",
    "gauge",
    "hinge",
    "ink",
    "jack",
    "knob",
    "lamp",
    "mesh",
    "nut",
    "oil",
    "pump",
    "quartz",
    "rivet",
    "seal",
    "tape",
    "valve",
    "wire",
    "yarn",
    "zinc",
    "brass",
    "clamp",
    "dowel",
    "flange",
    "gasket",
    "hose",
    "lever",
    "motor",
    "nozzle",
    "plate",
    "rod",
    "screw",
    "spring",
    "tube",
    "washer",
    "bracket",
    "chisel",
    "file",
    "hammer",
    "level",
    "mallet",
    "pliers",
    "saw",
    "wrench",
]


@dataclass(frozen=True)
class SyntheticShopConfig:
    """Size and structure of the synthetic shop (defaults: the README's embedded dataset)."""

    n_items: int = 2000  # real items
    n_categories: int = 80  # leaf categories
    n_groups: int = 8  # top-level groups of the category tree
    n_sessions: int = 20000  # train + test sessions
    mean_length: float = 6.0  # mean session length (geometric, at least 2)
    max_length: int = 30  # longest session
    stay_prob: float = 0.8  # next click stays in the current category
    ring_prob: float = 0.7  # a stay click is the ring successor (else popularity-drawn)
    group_prob: float = 0.9  # a category's successor lies in its own group
    zipf_exponent: float = 1.1  # item popularity inside a category
    repeat_prob: float = 0.0  # a click repeats an earlier click of its session (uniformly chosen) instead
    test_fraction: float = 0.1  # most recent sessions kept for test
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_categories < self.n_groups or self.n_items < self.n_categories:
            raise ConfigError("need n_items >= n_categories >= n_groups")
        for name in ("stay_prob", "ring_prob", "group_prob", "test_fraction", "repeat_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1]")
        if not (self.mean_length >= 2 and self.max_length >= 2):  # written so that NaN fails too
            raise ConfigError("mean_length and max_length must be >= 2")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")


def make_synthetic_shop(config: SyntheticShopConfig | None = None) -> PreparedDataset:
    """Generate the shop and its sessions, split chronologically into train and test.

    Example:
        >>> data = make_synthetic_shop(SyntheticShopConfig(n_items=50, n_categories=5, n_groups=2,
        ...                                                n_sessions=100))
        >>> data.catalog.n_items, data.train.n_sessions + data.test.n_sessions
        (50, 100)
    """
    cfg = config or SyntheticShopConfig()
    rng = np.random.default_rng(cfg.seed)
    item_category, first_item, category_size = _category_layout(cfg, rng)
    group_of_category = np.sort(rng.integers(0, cfg.n_groups, cfg.n_categories))
    group_of_category[: cfg.n_groups] = np.arange(cfg.n_groups)  # every group non-empty
    group_of_category = np.sort(group_of_category)
    successor = _category_successors(group_of_category, cfg.group_prob, rng)
    rank_in_category = np.arange(1, cfg.n_items + 1) - first_item[item_category]  # 0-based ring position
    popularity = 1.0 / (rank_in_category + 1.0) ** cfg.zipf_exponent

    sessions = _walk_sessions(cfg, rng, item_category, first_item, category_size, successor, popularity)
    n_test = int(round(cfg.n_sessions * cfg.test_fraction))
    train = sessions.subset(np.arange(cfg.n_sessions - n_test))
    test = sessions.subset(np.arange(cfg.n_sessions - n_test, cfg.n_sessions))

    titles = _titles(cfg, rng, item_category, group_of_category)
    vocab = Vocab.from_raw(
        (f"i{i}" for i in range(1, cfg.n_items + 1)), (f"c{c}" for c in range(1, cfg.n_categories + 1))
    )
    catalog = ItemCatalog(
        item_category=np.concatenate([[0], item_category + 1]).astype(np.int64),
        n_categories=cfg.n_categories,
        categorical={"group": np.concatenate([[0], group_of_category[item_category] + 1]).astype(np.int64)},
        numeric={"price": np.concatenate([[np.nan], rng.lognormal(3.0, 1.0, cfg.n_items)]).astype(np.float32)},
        text=("", *titles),
    )
    return PreparedDataset(
        name="synthetic",
        train=train,
        test=test,
        vocab=vocab,
        catalog=catalog,
        options={"generator": asdict(cfg)},
        provenance={"source": "hiersrec.data.synthetic.make_synthetic_shop"},
    )


def _category_layout(cfg: SyntheticShopConfig, rng: np.random.Generator):
    # Category sizes vary (Dirichlet), each at least one item; items are contiguous per category.
    shares = rng.dirichlet(np.full(cfg.n_categories, 2.0))
    sizes = 1 + np.floor(shares * (cfg.n_items - cfg.n_categories)).astype(np.int64)
    sizes[: cfg.n_items - sizes.sum()] += 1
    first_item = np.concatenate([[0], np.cumsum(sizes)[:-1]])  # 0-based index of each category's first item
    item_category = np.repeat(np.arange(cfg.n_categories), sizes)
    return item_category, first_item, sizes


def _category_successors(group_of_category: np.ndarray, group_prob: float, rng: np.random.Generator):
    n_categories = group_of_category.size
    successor = np.empty(n_categories, dtype=np.int64)
    for c in range(n_categories):
        same_group = np.flatnonzero((group_of_category == group_of_category[c]) & (np.arange(n_categories) != c))
        if same_group.size and rng.random() < group_prob:
            successor[c] = rng.choice(same_group)
        else:
            successor[c] = rng.choice(np.delete(np.arange(n_categories), c))
    return successor


def _walk_sessions(cfg, rng, item_category, first_item, category_size, successor, popularity) -> SessionData:
    # Vectorised over sessions: one loop over click positions, none over rows.
    lengths = np.minimum(2 + rng.geometric(1.0 / (cfg.mean_length - 1.0), cfg.n_sessions) - 1, cfg.max_length)
    n_steps = int(lengths.max())
    category_weight = np.bincount(item_category, weights=popularity)
    start_category = rng.choice(cfg.n_categories, cfg.n_sessions, p=category_weight / category_weight.sum())
    clicks = np.zeros((cfg.n_sessions, n_steps), dtype=np.int64)  # 0-based item ids
    clicks[:, 0] = _popular_item(start_category, first_item, category_size, cfg.zipf_exponent, rng)
    for t in range(1, n_steps):
        current = clicks[:, t - 1]
        category = item_category[current]
        stay = rng.random(cfg.n_sessions) < cfg.stay_prob
        ring = rng.random(cfg.n_sessions) < cfg.ring_prob
        ring_next = first_item[category] + (current - first_item[category] + 1) % category_size[category]
        drawn = _popular_item(category, first_item, category_size, cfg.zipf_exponent, rng)
        jump = first_item[successor[category]]
        clicks[:, t] = np.where(stay, np.where(ring, ring_next, drawn), jump)
        if cfg.repeat_prob:  # drawn only then, so that shops without repeats stay as they were
            repeat = rng.random(cfg.n_sessions) < cfg.repeat_prob
            earlier = clicks[np.arange(cfg.n_sessions), rng.integers(0, t, cfg.n_sessions)]
            clicks[:, t] = np.where(repeat, earlier, clicks[:, t])
    keep = np.arange(n_steps)[None, :] < lengths[:, None]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    # Clicks 30 s apart, the next session starting a minute after the previous one ends: file order is time.
    session_start = 1_600_000_000 + np.concatenate([[0], np.cumsum(lengths * 30 + 60)[:-1]])
    within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
    timestamps = np.repeat(session_start, lengths) + within * 30
    return SessionData(offsets=offsets, items=clicks[keep] + 1, timestamps=timestamps.astype(np.int64))


def _popular_item(category, first_item, category_size, exponent, rng):
    # Zipf-like draw of a within-category rank: inverse-CDF of a truncated power law, vectorised.
    size = category_size[category].astype(np.float64)
    u = rng.random(category.size)
    if abs(exponent - 1.0) < 1e-9:
        rank = np.floor(np.exp(u * np.log(size + 1.0))) - 1.0
    else:
        a = 1.0 - exponent
        rank = np.floor((1.0 + u * ((size + 1.0) ** a - 1.0)) ** (1.0 / a)) - 1.0
    return first_item[category] + np.clip(rank, 0, size - 1).astype(np.int64)


def _titles(cfg, rng, item_category, group_of_category) -> list[str]:
    # Each group draws its words from its own slice of the vocabulary, so titles carry the category tree.
    words = np.array(_WORDS)
    per_group = np.array_split(rng.permutation(words.size), cfg.n_groups)
    category_words = [words[rng.choice(per_group[g], 2, replace=False)] for g in group_of_category]
    return [
        f"{category_words[c][0]} {category_words[c][1]} {words[rng.integers(words.size)]} model {i + 1}"
        for i, c in enumerate(item_category)
    ]
