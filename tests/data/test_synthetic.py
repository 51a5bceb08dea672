import numpy as np
import pytest

from hiersrec.data.synthetic import SyntheticShopConfig, make_synthetic_shop
from hiersrec.errors import ConfigError


def test_shop_structure(tiny_shop):
    catalog = tiny_shop.catalog
    assert catalog.n_items == 37 and catalog.n_categories == 5
    # Items are contiguous by category and every category owns at least one item.
    assert (np.diff(catalog.item_category[1:]) >= 0).all()
    assert (catalog.category_sizes()[1:] >= 1).all()
    assert len(catalog.text) == 38 and catalog.text[0] == ""


def test_next_item_is_ring_successor_or_category_jump(tiny_shop):
    catalog = tiny_shop.catalog
    items = tiny_shop.train.items
    targets = tiny_shop.train.target_positions()
    current, following = items[targets - 1], items[targets]
    same = catalog.item_category[current] == catalog.item_category[following]
    first = np.searchsorted(catalog.item_category, catalog.item_category, side="left")  # first item per row
    size = catalog.category_sizes()[catalog.item_category]
    ring_next = first[current] + (current - first[current] + 1) % size[current]
    assert (following[same] == ring_next[same]).all()
    assert (following[~same] == first[following[~same]]).all()  # a jump lands on a category's first item
    assert 0.7 < same.mean() < 0.9  # stay_prob = 0.8


def test_seed_reproducibility_and_chronology():
    config = SyntheticShopConfig(n_items=60, n_categories=6, n_groups=2, n_sessions=200, seed=11)
    first, second = make_synthetic_shop(config), make_synthetic_shop(config)
    assert np.array_equal(first.train.items, second.train.items)
    assert first.train.n_sessions == 180 and first.test.n_sessions == 20
    assert first.train.timestamps.max() < first.test.timestamps.min()
    assert first.train.lengths.min() >= 2


def test_invalid_config():
    with pytest.raises(ConfigError, match="n_items"):
        SyntheticShopConfig(n_items=3, n_categories=5)


def _repeat_share(sessions):
    repeats = total = 0
    for i in range(sessions.n_sessions):
        seen = set()
        for j, item in enumerate(sessions.items[sessions.offsets[i] : sessions.offsets[i + 1]].tolist()):
            if j:
                total += 1
                repeats += item in seen
            seen.add(item)
    return repeats / total


def test_a_repeat_heavy_shop_has_long_sessions_whose_targets_often_repeat_a_click():
    # issue 12: the case kNN does well (long sessions, about half of the targets repeat an earlier click).
    from hiersrec.data.synthetic import SyntheticShopConfig, make_synthetic_shop

    shape = {"n_sessions": 1500, "mean_length": 30.0, "max_length": 100, "seed": 4}
    plain = make_synthetic_shop(SyntheticShopConfig(**shape))
    heavy = make_synthetic_shop(SyntheticShopConfig(**shape, repeat_prob=0.2))
    assert heavy.train.lengths.mean() > 20
    assert _repeat_share(heavy.test) > 0.45 > _repeat_share(plain.test) - 0.1
    assert _repeat_share(heavy.test) > _repeat_share(plain.test) + 0.1
