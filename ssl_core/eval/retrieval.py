"""Instance-level retrieval metrics on frozen features (query → bank).

DINOv2 (Oquab et al. 2023, instance recognition) evaluates frozen features on retrieval by ranking
the database by cosine similarity to each query and reporting mAP; recall@k is the usual
companion metric. Here "relevant" means "same label".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def retrieval_metrics(
    query: Tensor,
    query_y: Tensor,
    bank: Tensor,
    bank_y: Tensor,
    ks: Sequence[int] = (1, 5),
    batch_size: int = 1024,
) -> dict[str, float]:
    """Recall@k and mAP of ranking the bank by cosine similarity to each query.

    Features are L2-normalised; each query's bank ranking is a stable sort by descending
    similarity (ties keep bank order). Work is batched over queries, so memory is
    O(batch_size * N_bank).

    Args:
        query: Query features (Nq, D). query_y: Query labels (Nq,).
        bank: Bank features (Nb, D). bank_y: Bank labels (Nb,).
        ks: Cut-offs for recall@k (k > Nb means the whole bank).
        batch_size: Queries per similarity block.

    Returns:
        ``recall@{k}`` for each k: fraction of *all* queries with at least one same-label item
        in their top k (a query without any relevant item counts as a miss); ``mAP``: mean over
        the queries that have a relevant item of the average precision of the full ranking
        (NaN if none has); ``queries_without_relevant``: how many queries were skipped in mAP.
    """
    if len(query) == 0 or len(bank) == 0 or not ks or min(ks) < 1:
        raise ValueError("need non-empty query and bank features and ks >= 1")
    if query.shape[1] != bank.shape[1] or len(query) != len(query_y) or len(bank) != len(bank_y):
        raise ValueError("feature dimensions or label counts do not match")
    bank = F.normalize(bank.float(), dim=1)
    bank_y = bank_y.to(bank.device)
    hits = dict.fromkeys(ks, 0)
    ap_sum, n_with, n_without = 0.0, 0, 0
    ranks = torch.arange(1, len(bank) + 1, device=bank.device, dtype=torch.float64)
    for s in range(0, len(query), batch_size):
        q = F.normalize(query[s : s + batch_size].to(bank.device).float(), dim=1)
        order = torch.sort(q @ bank.T, dim=1, descending=True, stable=True).indices  # (B, Nb)
        rel = bank_y[order] == query_y[s : s + batch_size].to(bank.device).unsqueeze(1)
        for k in ks:
            hits[k] += int(rel[:, :k].any(dim=1).sum())
        relf = rel.double()
        n_rel = relf.sum(dim=1)  # (B,)
        ap = (relf.cumsum(dim=1) / ranks * relf).sum(dim=1)  # sum of precision@hit ranks
        has = n_rel > 0
        ap_sum += float((ap[has] / n_rel[has]).sum())
        n_with += int(has.sum())
        n_without += int((~has).sum())
    out = {f"recall@{k}": hits[k] / len(query) for k in ks}
    out["mAP"] = ap_sum / n_with if n_with else float("nan")
    out["queries_without_relevant"] = float(n_without)
    return out
