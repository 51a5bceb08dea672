"""benchmarks/category_switch.py: the stay threshold that validation chooses, and what it does to acc@1."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark_support import benchmark_script


@pytest.fixture(scope="module")
def category_switch():
    with benchmark_script("category_switch") as module:
        yield module


def _calls(head_right, rule_right, margin):
    return {
        "head_right": np.array(head_right, dtype=bool),
        "rule_right": np.array(rule_right, dtype=bool),
        "margin": np.array(margin, dtype=float),
    }


def test_the_threshold_keeps_the_confident_switch_calls_that_pay(category_switch):
    # margins 9 and 5: the head right, the rule wrong; margin 3: the head wrong, the rule right; margin 0: agree
    calls = _calls([1, 1, 0, 1, 0], [0, 0, 1, 1, 0], [9.0, 5.0, 3.0, 0.0, 0.0])
    chosen = category_switch.stay_margin(calls)
    assert chosen["calls"] == 2 and chosen["gain_cases"] == 2 and chosen["threshold"] == pytest.approx(4.0)
    applied = category_switch.apply_threshold(calls, chosen["threshold"])
    assert applied["cat_acc@1"] == pytest.approx(4 / 5) and applied["rule_cat_acc@1"] == pytest.approx(2 / 5)
    assert (applied["wins"], applied["losses"], applied["switch_calls"]) == (2, 0, 2)
    bands = {tuple(band["margin"]): band for band in chosen["bands"]}
    assert bands[(8.0, np.inf)]["calls"] == 1 and bands[(2.0, 4.0)]["rule_right"] == 1


def test_a_head_whose_switch_calls_never_pay_is_left_to_the_rule(category_switch):
    calls = _calls([0, 0, 1], [1, 1, 1], [6.0, 2.0, 0.0])
    chosen = category_switch.stay_margin(calls)
    assert chosen["calls"] == 0 and chosen["threshold"] == float("inf")
    applied = category_switch.apply_threshold(calls, chosen["threshold"])
    assert applied["cat_acc@1"] == applied["rule_cat_acc@1"] == 1.0 and applied["sign_test_p"] == 1.0
    # every call paying keeps all of them: the threshold falls below the smallest margin
    paying = _calls([1, 1], [0, 0], [3.0, 1.0])
    assert category_switch.apply_threshold(paying, category_switch.stay_margin(paying)["threshold"])["wins"] == 2
