"""Balance metrics on hand-computed examples."""

import math

import numpy as np
import pytest

from ssl_core.curation import metrics as M


def test_coverage_and_counts():
    labels = np.array([0, 0, 1, 3])
    assert M.label_counts(labels, 5).tolist() == [2, 1, 0, 1, 0]
    assert M.covered(labels, 5) == 3
    assert M.coverage(labels, 5) == pytest.approx(0.6)
    with pytest.raises(ValueError):
        M.coverage(labels, 3)  # label 3 out of range


def test_largest_share():
    assert M.largest_share(np.array([0, 0, 0, 1])) == pytest.approx(0.75)
    assert M.largest_share(np.array([], dtype=int)) == 0.0


def test_gini_hand_computed():
    # counts (1, 3): sum|ci-cj| over ordered pairs = 4; 2 n^2 mean = 2*4*2 = 16 -> 0.25
    assert M.gini(np.array([0, 1, 1, 1])) == pytest.approx(0.25)
    assert M.gini(np.array([0, 1, 2, 3])) == pytest.approx(0.0)
    # all mass in one of 4 classes: (n-1)/n = 0.75
    assert M.gini(np.array([2, 2, 2]), n_components=4) == pytest.approx(0.75)


def test_entropy_hand_computed():
    assert M.entropy(np.array([0, 1, 2, 3])) == pytest.approx(math.log(4))
    assert M.entropy(np.array([0, 1, 2, 3]), normalised=True) == pytest.approx(1.0)
    # p = (1/2, 1/4, 1/4): H = 1.5 log 2
    assert M.entropy(np.array([0, 0, 1, 2])) == pytest.approx(1.5 * math.log(2))
    # an empty 4th class lowers the normalised entropy
    assert M.entropy(np.array([0, 1, 2]), 4, normalised=True) == pytest.approx(
        math.log(3) / math.log(4)
    )


def test_max_min_ratio():
    assert M.max_min_ratio(np.array([0, 0, 0, 0, 1, 1])) == pytest.approx(2.0)
    assert M.max_min_ratio(np.array([0, 1]), n_components=3) == math.inf


def test_summary_keys():
    s = M.summary(np.array([0, 1, 1]), 2)
    assert s["covered"] == 2 and s["n"] == 3
    assert s["largest_share"] == pytest.approx(2 / 3)


def test_top_share():
    labels = np.repeat(np.arange(12), np.arange(12, 0, -1))  # counts 12, 11, ..., 1
    assert M.top_share(labels, 10) == pytest.approx((78 - 3) / 78)
    assert M.top_share(labels, 1) == pytest.approx(M.largest_share(labels))
    assert M.top_share(np.array([], dtype=np.int64)) == 0.0
    assert M.summary(labels, 12)["top10_share"] == pytest.approx(75 / 78)
