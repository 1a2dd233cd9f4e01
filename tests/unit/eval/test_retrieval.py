"""Retrieval metrics (recall@k, mAP) on a hand-computed example."""

import math

import pytest
import torch

from ssl_core.eval.retrieval import retrieval_metrics

# Bank (2-d, label):  b0 (1, 0) 0 | b1 (0, 1) 1 | b2 (-1, 0) 0 | b3 (0, -1) 2 | b4 (1, 1) 1
BANK = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [1.0, 1.0]])
BANK_Y = torch.tensor([0, 1, 0, 2, 1])
# Queries (label):  q0 (1, 0) 0 | q1 (0, 1) 2 | q2 (2, 0) 2 (not unit: normalised away)
#
# q0 cosines b0..b4 = 1, 0, -1, 0, .707 -> ranking b0 b4 b1 b3 b2 (b1/b3 tie: bank order)
#    labels 0 1 1 2 0, relevant (0) at ranks 1, 5: AP = (1/1 + 2/5) / 2 = 0.7
# q1 cosines = 0, 1, 0, -1, .707 -> ranking b1 b4 b0 b2 b3 (b0/b2 tie: bank order)
#    labels 1 1 0 0 2, relevant (2) at rank 5: AP = (1/5) / 1 = 0.2
# q2 ranking as q0: labels 0 1 1 2 0, relevant (2) at rank 4 (rank 3 if the tie were broken
#    the other way): AP = 1/4 = 0.25
# hit in top 1: q0 only -> recall@1 = 1/3; top 3: q0 only (q2's b3 is 4th) -> recall@3 = 1/3;
# top 5: all -> recall@5 = 1; mAP = (0.7 + 0.2 + 0.25) / 3 = 1.15 / 3 = 23/60
QUERY = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
QUERY_Y = torch.tensor([0, 2, 2])


def test_hand_computed_example():
    m = retrieval_metrics(QUERY, QUERY_Y, BANK, BANK_Y, ks=(1, 3, 5))
    assert set(m) == {"recall@1", "recall@3", "recall@5", "mAP", "queries_without_relevant"}
    assert m["recall@1"] == 1 / 3
    assert m["recall@3"] == 1 / 3
    assert m["recall@5"] == 1.0
    assert m["mAP"] == pytest.approx(23 / 60, abs=1e-12)
    assert m["queries_without_relevant"] == 0.0


def test_query_without_relevant_item_is_skipped_in_map():
    # q3 (-1, -1) with label 7: no bank item has it; a miss for every recall@k, skipped in mAP
    q = torch.cat([QUERY, torch.tensor([[-1.0, -1.0]])])
    qy = torch.cat([QUERY_Y, torch.tensor([7])])
    m = retrieval_metrics(q, qy, BANK, BANK_Y, ks=(1, 5, 10), batch_size=2)
    assert m["recall@1"] == 1 / 4
    assert m["recall@5"] == 3 / 4
    assert m["recall@10"] == 3 / 4  # k beyond the bank = the whole bank
    assert m["mAP"] == pytest.approx(23 / 60, abs=1e-12)
    assert m["queries_without_relevant"] == 1.0
    only = retrieval_metrics(q[3:], qy[3:], BANK, BANK_Y)
    assert math.isnan(only["mAP"]) and only["recall@1"] == 0.0
    assert only["queries_without_relevant"] == 1.0


def test_batching_does_not_change_results():
    g = torch.Generator().manual_seed(0)
    q, b = torch.randn(37, 8, generator=g), torch.randn(50, 8, generator=g)
    qy, by = torch.randint(0, 5, (37,), generator=g), torch.randint(0, 5, (50,), generator=g)
    full = retrieval_metrics(q, qy, b, by, ks=(1, 5, 20))
    for bs in (1, 7):
        part = retrieval_metrics(q, qy, b, by, ks=(1, 5, 20), batch_size=bs)
        assert part.keys() == full.keys()
        for k, v in full.items():
            assert part[k] == pytest.approx(v, abs=1e-12)
    assert 0.0 < full["mAP"] < 1.0 and full["recall@1"] <= full["recall@5"] <= full["recall@20"]


def test_perfect_ranking_and_bad_arguments():
    b = torch.eye(3)
    m = retrieval_metrics(b * 3, torch.arange(3), b, torch.arange(3), ks=(1,))
    assert m["recall@1"] == 1.0 and m["mAP"] == 1.0
    with pytest.raises(ValueError):
        retrieval_metrics(b, torch.arange(3), b[:0], torch.arange(0))
    with pytest.raises(ValueError):
        retrieval_metrics(b, torch.arange(3), b, torch.arange(3), ks=(0,))
