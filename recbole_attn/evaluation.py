"""Per-user ranking metrics on a full-sort evaluation set.

RecBole's evaluator only returns metrics averaged over users. Significance tests (see
:mod:`recbole_attn.compare`) and NDCG@N curves (see :mod:`recbole_attn.plot`) need each
user's value. :func:`per_user_metrics` scores every item for every evaluated row exactly like
``Trainer._full_sort_batch_eval`` (item 0 and the user's history masked with ``-inf``,
``torch.topk`` for the ranking) and applies the formulas of ``recbole.evaluator.metrics``
row by row, so the mean of each array equals RecBole's result (which RecBole rounds to
``metric_decimal_place`` decimals, 4 by default).
"""

import numpy as np
import torch

from recbole_attn.errors import ConfigError

METRICS = ("recall", "mrr", "ndcg", "hit")


@torch.no_grad()
def full_sort_hits(model, eval_data, max_k):
    """Rank all items for every row of a ``FullSortEvalDataLoader``.

    Returns:
        tuple: ``(user_ids [U], pos_index [U, max_k] bool, pos_len [U])``: whether the item at
        rank ``r`` (0-based) is a positive item of the row, and how many positives the row has.
    """
    dataset = eval_data._dataset
    uid_field = dataset.uid_field
    n_items = dataset.item_num
    if not 1 <= max_k < n_items:
        raise ConfigError(f"cut-off {max_k} must be between 1 and the number of items ({n_items - 1})")
    model.eval()
    device = next(model.parameters()).device
    user_ids, hits, lengths = [], [], []
    for interaction, history_index, positive_u, positive_i in eval_data:
        scores = model.full_sort_predict(interaction.to(device)).view(-1, n_items)
        # as RecBole's trainer: padding item and already-seen items can never be recommended
        scores[:, 0] = -np.inf
        if history_index is not None:
            scores[history_index] = -np.inf
        _, topk_idx = torch.topk(scores, max_k, dim=-1)
        pos_matrix = torch.zeros_like(scores, dtype=torch.int)
        pos_matrix[positive_u, positive_i] = 1
        lengths.append(pos_matrix.sum(dim=1).cpu())
        hits.append(torch.gather(pos_matrix, dim=1, index=topk_idx).bool().cpu())
        user_ids.append(interaction[uid_field].cpu())
    return torch.cat(user_ids).numpy(), torch.cat(hits).numpy(), torch.cat(lengths).numpy()


def metric_arrays(pos_index, pos_len):
    """Per-row metric values at every cut-off ``k = 1..max_k`` (RecBole's formulas).

    Returns:
        dict: ``{"recall"|"mrr"|"ndcg"|"hit": array [U, max_k]}``, column ``k-1`` is ``@k``.
    """
    pos_index = pos_index.astype(bool)
    n_rows, max_k = pos_index.shape
    pos_len = pos_len.astype(float)
    ranks = np.arange(1, max_k + 1)
    cum_hits = np.cumsum(pos_index, axis=1)

    hit = (cum_hits > 0).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = cum_hits / pos_len[:, None]

    # MRR@k: reciprocal rank of the first positive, if it is within the first k
    first = pos_index.argmax(axis=1)
    found = pos_index[np.arange(n_rows), first]
    mrr = np.where((ranks[None, :] > first[:, None]) & found[:, None], 1.0 / (first[:, None] + 1), 0.0)

    # NDCG@k: DCG over the top k divided by the ideal DCG of min(#positives, k) positives
    gain = 1.0 / np.log2(ranks + 1)
    dcg = np.cumsum(np.where(pos_index, gain[None, :], 0.0), axis=1)
    ideal = np.cumsum(gain)
    ideal_len = np.minimum(pos_len.astype(int)[:, None], ranks[None, :])
    idcg = ideal[np.maximum(ideal_len, 1) - 1]
    ndcg = dcg / idcg
    return {"recall": recall, "mrr": mrr, "ndcg": ndcg, "hit": hit}


def parse_metric(name):
    """``"NDCG@10"`` -> ``("ndcg", 10)``."""
    metric, _, k = name.lower().partition("@")
    if metric not in METRICS or not k.isdigit() or int(k) < 1:
        raise ConfigError(f"unknown metric [{name}]; use one of {', '.join(METRICS)} with @K, e.g. NDCG@10")
    return metric, int(k)


def per_user_metrics(model, eval_data, metrics=("ndcg@10",)):
    """Each evaluated user's value of each metric on a full-sort dataloader.

    Args:
        model: a trained RecBole sequential model (uses ``full_sort_predict``).
        eval_data: RecBole's ``FullSortEvalDataLoader`` (``valid_data`` or ``test_data``).
        metrics: names such as ``"NDCG@10"``, ``"Recall@5"``, ``"MRR@10"``, ``"Hit@10"``.

    Returns:
        dict: ``{"user_id": array [U]}`` plus one float array ``[U]`` per metric (lower-case
        names, e.g. ``"ndcg@10"``), rows sorted by user id.
    """
    parsed = {name.lower(): parse_metric(name) for name in metrics}
    max_k = max(k for _, k in parsed.values())
    user_ids, pos_index, pos_len = full_sort_hits(model, eval_data, max_k)
    values = metric_arrays(pos_index, pos_len)
    order = np.argsort(user_ids, kind="stable")
    result = {"user_id": user_ids[order]}
    for name, (metric, k) in parsed.items():
        result[name] = values[metric][order, k - 1]
    return result


def mean_curve(model, eval_data, metric="ndcg", max_k=50):
    """The mean of ``metric@k`` over users for ``k = 1..max_k`` (e.g. an NDCG@N curve)."""
    if metric not in METRICS:
        raise ConfigError(f"unknown metric [{metric}]; use one of {', '.join(METRICS)}")
    _, pos_index, pos_len = full_sort_hits(model, eval_data, max_k)
    return metric_arrays(pos_index, pos_len)[metric].mean(axis=0)
