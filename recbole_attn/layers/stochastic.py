"""Stochastic (Gaussian) layers of STOSA (Fan et al., "Sequential Recommendation via
Stochastic Self-Attention", WWW'22), following the official code ``zfan20/STOSA``.

Every item, position and hidden state is a diagonal Gaussian ``N(mu, diag(var))``; ``var`` is
kept positive with ``ELU(x) + 1``. Distances are squared 2-Wasserstein distances, which for
diagonal covariances are ``||mu_1 - mu_2||^2 + ||sqrt(var_1) - sqrt(var_2)||^2``
(:func:`wasserstein_distance` for matching rows, :func:`wasserstein_pairwise` for all pairs).

Hidden states travel as a pair ``(mean, cov)`` of ``[B, L, d]`` tensors.

* :class:`StochasticEmbedding`: the sequence input, ``x_mu = ELU(Dropout(LN(E_mu[i] + P_mu[t])))``
  and ``x_var = ELU(Dropout(LN(E_var[i] + P_var[t]))) + 1`` with one LayerNorm shared by both
  (official ``seqmodels.py``), and the raw item Gaussians ``(E_mu[i], ELU(E_var[i]) + 1)`` that
  targets and candidates use.
* :class:`WassersteinScorer`: attention scores ``A_ij = -W2^2(q_i, k_j) / sqrt(d_head)``, a
  scorer like those of :mod:`recbole_attn.layers.attention`, so the shared AWRSR refiner
  (:mod:`recbole_attn.layers.refinement`) refines them exactly as it refines SASRec's.
* :class:`WassersteinSelfAttention`: the attention sublayer; mean values are combined with the
  weights, covariance values with the element-wise squared weights.
* :class:`StochasticFeedForward`, :class:`STOSABlock`, :class:`STOSAStack`: the rest of the
  official ``DistSAEncoder``, with its mean-path bug behind an explicit flag.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from recbole_attn.layers.attention import AttentionSublayer, masked_softmax, merge_heads, split_heads
from recbole_attn.layers.encoder import TransformerStack

VAR_EPS = 1e-24  # variances are clamped to this before sqrt (as the official code)

__all__ = [
    "positive", "wasserstein_distance", "wasserstein_pairwise", "StochasticEmbedding", "WassersteinScorer",
    "WassersteinSelfAttention", "StochasticFeedForward", "STOSABlock", "STOSAStack",
]


def positive(x):
    """``ELU(x) + 1``: the covariance parameterisation (always > 0)."""
    return F.elu(x) + 1


def wasserstein_distance(mu_1, var_1, mu_2, var_2):
    """Squared 2-Wasserstein distance between diagonal Gaussians, row by row (broadcasting
    over the leading axes): ``[..., d] -> [...]``. For all pairs of rows use
    :func:`wasserstein_pairwise`."""
    mean_part = (mu_1 - mu_2).pow(2).sum(-1)
    cov_part = (var_1.clamp_min(VAR_EPS).sqrt() - var_2.clamp_min(VAR_EPS).sqrt()).pow(2).sum(-1)
    return mean_part + cov_part


def wasserstein_pairwise(mu_q, var_q, mu_k, var_k):
    """Squared 2-Wasserstein distance between every row of ``(mu_q, var_q)`` (``[..., Lq, d]``)
    and every row of ``(mu_k, var_k)`` (``[..., Lk, d]``): ``[..., Lq, Lk]``.

    With matmuls, as the official ``wasserstein_distance_matmul``:
    ``|mu_q|^2 + |mu_k|^2 - 2 mu_q.mu_k + sum(var_q) + sum(var_k) - 2 sqrt(var_q).sqrt(var_k)``,
    clamped at 0 against rounding. One batched product serves attention (all query/key pairs)
    and full-sort ranking (all sequences x all items); its backward is about 10-70x faster on
    CPU than ``torch.cdist``'s at head sizes 8-16.
    """
    var_q, var_k = var_q.clamp_min(VAR_EPS), var_k.clamp_min(VAR_EPS)
    q = torch.cat([mu_q, var_q.sqrt()], dim=-1)
    k = torch.cat([mu_k, var_k.sqrt()], dim=-1)
    q_norm = (mu_q.pow(2) + var_q).sum(-1, keepdim=True)  # [..., Lq, 1]
    k_norm = (mu_k.pow(2) + var_k).sum(-1).unsqueeze(-2)  # [..., 1, Lk]
    return (q_norm + k_norm - 2 * torch.matmul(q, k.transpose(-1, -2))).clamp_min(0.0)


class StochasticEmbedding(nn.Module):
    """Mean and covariance tables for items (padding id 0) and absolute positions."""

    def __init__(self, n_items, max_seq_length, hidden_size, hidden_dropout_prob, layer_norm_eps):
        super().__init__()
        self.item_mean = nn.Embedding(n_items, hidden_size, padding_idx=0)
        self.item_cov = nn.Embedding(n_items, hidden_size, padding_idx=0)
        self.position_mean = nn.Embedding(max_seq_length, hidden_size)
        self.position_cov = nn.Embedding(max_seq_length, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)  # shared by both paths (official)
        self.dropout = nn.Dropout(hidden_dropout_prob)

    def forward(self, item_seq, positions):
        """Sequence input ``(mean, cov)``, each ``[B, L, d]``; ``positions`` are absolute slots ``[L]``."""
        mean = self.item_mean(item_seq) + self.position_mean(positions).unsqueeze(0)
        cov = self.item_cov(item_seq) + self.position_cov(positions).unsqueeze(0)
        # official: ELU without +1 on the mean, ELU + 1 on the covariance
        mean = F.elu(self.dropout(self.LayerNorm(mean)))
        cov = positive(self.dropout(self.LayerNorm(cov)))
        return mean, cov

    def items(self, items=None):
        """Item Gaussians ``(E_mu[i], ELU(E_var[i]) + 1)`` (no position, no LayerNorm, as the
        official loss and scoring); all items (row 0 = padding included) when ``items`` is None."""
        if items is None:
            return self.item_mean.weight, positive(self.item_cov.weight)
        return self.item_mean(items), positive(self.item_cov(items))


class WassersteinScorer(nn.Module):
    """Scores ``A = -W2^2(N(mu_Q_i, var_Q_i), N(mu_K_j, var_K_j)) / sqrt(d_head)`` per head
    (official ``modules.py`` ``DistSelfAttention``), ``[B, H, L, L]``.

    ``hidden`` is the pair ``(mean, cov)``; ``mu = mean W + b``, ``var = ELU(cov W + b) + 1``.
    """

    def __init__(self, n_heads, hidden_size):
        super().__init__()
        self.n_heads = n_heads
        self.head_size = hidden_size // n_heads
        self.mean_query = nn.Linear(hidden_size, hidden_size)
        self.cov_query = nn.Linear(hidden_size, hidden_size)
        self.mean_key = nn.Linear(hidden_size, hidden_size)
        self.cov_key = nn.Linear(hidden_size, hidden_size)

    def forward(self, hidden, positions):
        mean, cov = hidden
        mu_q = split_heads(self.mean_query(mean), self.n_heads)
        mu_k = split_heads(self.mean_key(mean), self.n_heads)
        var_q = split_heads(positive(self.cov_query(cov)), self.n_heads)
        var_k = split_heads(positive(self.cov_key(cov)), self.n_heads)
        return -wasserstein_pairwise(mu_q, var_q, mu_k, var_k) / math.sqrt(self.head_size)

    def normalize(self, scores, mask):
        # masked_fill with the dtype's lowest value: exact however large the distances
        # (the official additive -2^32+1 is not), and fully masked rows give zeros, not NaN
        return masked_softmax(scores, mask)


class WassersteinSelfAttention(AttentionSublayer):
    """STOSA's attention sublayer with an optional AWRSR refiner between scores and weights.

    ``O_mu = P mu_V`` and ``O_var = (P * P) var_V`` (official ``modules.py:257``: the squared
    weights after attention dropout; for M_value, whose weights can be negative, the element-wise
    square keeps the covariance positive). Then ``LN(Dropout(O W_O + b) + x)`` per path, with one
    LayerNorm shared by the mean and covariance outputs (official).

    ``keep_attention`` / ``last_attention`` and the ``scorer``/``refiner`` attributes are those of
    :class:`recbole_attn.layers.attention.SelfAttention`, for the plotting tools.
    """

    def __init__(self, scorer, n_heads, hidden_size, hidden_dropout_prob, attn_dropout_prob,
                 layer_norm_eps, refiner=None):
        super().__init__()
        self.n_heads = n_heads
        self.scorer = scorer
        self.mean_value = nn.Linear(hidden_size, hidden_size)
        self.cov_value = nn.Linear(hidden_size, hidden_size)
        self.attn_dropout = nn.Dropout(attn_dropout_prob)
        self.mean_dense = nn.Linear(hidden_size, hidden_size)
        self.cov_dense = nn.Linear(hidden_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.out_dropout = nn.Dropout(hidden_dropout_prob)
        self.refiner = refiner
        self.keep_attention = False  # set True to keep the last weights (for plots)
        self.last_attention = None

    def forward(self, hidden, mask, positions):
        mean, cov = hidden
        _, weights = self.attention_weights(hidden, mask, positions)
        weights = self.attn_dropout(weights)
        mu_v = split_heads(self.mean_value(mean), self.n_heads)
        var_v = split_heads(positive(self.cov_value(cov)), self.n_heads)
        mean_ctx = merge_heads(torch.matmul(weights, mu_v))
        cov_ctx = merge_heads(torch.matmul(weights * weights, var_v))
        mean_out = self.LayerNorm(self.out_dropout(self.mean_dense(mean_ctx)) + mean)
        cov_out = self.LayerNorm(self.out_dropout(self.cov_dense(cov_ctx)) + cov)
        return mean_out, cov_out


class StochasticFeedForward(nn.Module):
    """Official ``DistIntermediate``: ``LN(Dropout(W2 ELU(W1 z + b1) + b2) + z)``; the activation
    is ELU whatever ``hidden_act`` says (as the official code)."""

    def __init__(self, hidden_size, inner_size, hidden_dropout_prob, layer_norm_eps):
        super().__init__()
        self.dense_1 = nn.Linear(hidden_size, inner_size)
        self.dense_2 = nn.Linear(inner_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(hidden_dropout_prob)

    def forward(self, x):
        return self.LayerNorm(self.dropout(self.dense_2(F.elu(self.dense_1(x)))) + x)


class STOSABlock(nn.Module):
    """Official ``DistLayer``: attention, then ``y_mu = FFN_mu(h_mu)``, ``y_var = ELU(FFN_var(h_var)) + 1``."""

    def __init__(self, attention, hidden_size, inner_size, hidden_dropout_prob, layer_norm_eps):
        super().__init__()
        self.multi_head_attention = attention
        self.mean_feed_forward = StochasticFeedForward(hidden_size, inner_size, hidden_dropout_prob, layer_norm_eps)
        self.cov_feed_forward = StochasticFeedForward(hidden_size, inner_size, hidden_dropout_prob, layer_norm_eps)

    def forward(self, hidden, mask, positions):
        mean, cov = self.multi_head_attention(hidden, mask, positions)
        return self.mean_feed_forward(mean), positive(self.cov_feed_forward(cov))


class STOSAStack(TransformerStack):
    """``n_layers`` deep copies of one :class:`STOSABlock` (refinement matrices drawn anew per copy).

    ``mean_passthrough_bug=True`` reproduces the official ``DistSAEncoder.forward``
    (``modules.py:461`` assigns the layer's mean output to a misspelt variable): every layer
    then receives the *embedding* mean, and the stack returns it unchanged, so the mean path's
    value, output and feed-forward weights get no gradient; only the covariance path is
    contextual. ``False`` (default) is the model of the paper: each layer's mean output feeds
    the next layer.
    """

    def __init__(self, block, n_layers, mean_passthrough_bug=False):
        super().__init__(block, n_layers)
        self.mean_passthrough_bug = bool(mean_passthrough_bug)

    def forward(self, hidden, mask, positions):
        mean, cov = hidden
        for layer in self.layer:
            layer_mean, cov = layer((mean, cov), mask, positions)
            if not self.mean_passthrough_bug:
                mean = layer_mean
        return mean, cov
