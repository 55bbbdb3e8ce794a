"""Attention layers with one swappable part: how the attention weights are computed.

:class:`SelfAttention` is RecBole's ``MultiHeadAttention`` (value projection, attention
dropout, output projection, dropout, residual LayerNorm) with the query-key product replaced
by a *scorer*. A scorer maps the hidden states to pre-softmax scores ``A`` of shape
``[B or 1, H, L, L]`` and normalises them into weights under the causal and padding mask.
An optional AWRSR refiner (:mod:`recbole_attn.layers.refinement`) turns ``A`` into the
refined weights ``B``.

Every sublayer's ``forward`` is RecBole's post-LN ``LayerNorm(mix(x) + x)``; ``mix`` (the
update alone) lets :mod:`recbole_attn.layers.encoder` build its other layouts.

Masks are boolean ``[B, 1, L, L]`` (True = query i may attend to key j), or the official code's
:class:`ContentMask` (``official_masks``). ``positions`` are the
absolute slots ``[L]`` of the batch columns in the ``MAX_ITEM_LIST_LENGTH`` layout, so that
parameters indexed by position (PARec's R, AWRSR's W) work for every batch width.
"""

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F


class ContentMask(NamedTuple):
    """The masks of the official TensorFlow SASRec and FPARec code (``modules.py``,
    ``apply_attention``), built per block from the states themselves (``official_masks``):

    * ``keys`` ``[B, 1, L, L]``: ``j <= i`` and key row j is not all zeros;
    * ``queries`` ``[B, 1, L, 1]``: query row i is not all zeros.

    Masked scores are *replaced* by one constant, so a row with no key left spreads its weight
    evenly over all ``L`` slots, future ones included; only query rows of zeros are zeroed."""
    keys: torch.Tensor
    queries: torch.Tensor


def content_mask(keys, queries):
    """:class:`ContentMask` of one block: ``keys`` and ``queries`` are ``[B, L, H]`` states."""
    width = keys.size(1)
    causal = torch.tril(torch.ones(width, width, dtype=torch.bool, device=keys.device))
    nonzero_keys = keys.abs().sum(-1) != 0
    nonzero_queries = queries.abs().sum(-1) != 0
    return ContentMask(nonzero_keys[:, None, None, :] & causal, nonzero_queries[:, None, :, None])


def masked_softmax(scores, mask):
    """Softmax over the last axis restricted to ``mask``; fully masked rows give all zeros.

    Masked entries get the dtype's lowest value (not an additive -10000), which stays exact
    for large scores (STOSA distances) and under float16. With a :class:`ContentMask`, the
    official code's semantics: a fully masked row is uniform, zero query rows get no weight.
    """
    if isinstance(mask, ContentMask):
        scores = scores.masked_fill(~mask.keys, torch.finfo(scores.dtype).min)
        return torch.softmax(scores, dim=-1) * mask.queries
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1) * mask


def split_heads(x, n_heads):
    """[B, L, H*D] -> [B, H, L, D]"""
    b, l, _ = x.shape
    return x.view(b, l, n_heads, -1).permute(0, 2, 1, 3)


def merge_heads(x):
    """[B, H, L, D] -> [B, L, H*D]"""
    b, h, l, d = x.shape
    return x.permute(0, 2, 1, 3).reshape(b, l, h * d)


class DotProductScorer(nn.Module):
    """SASRec: ``A = Q K^T / sqrt(d_head)`` (query and key registered first, as in RecBole)."""

    def __init__(self, n_heads, hidden_size):
        super().__init__()
        self.n_heads = n_heads
        self.head_size = hidden_size // n_heads
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)

    def forward(self, hidden, positions, keys=None):
        q = split_heads(self.query(hidden), self.n_heads)
        k = split_heads(self.key(hidden if keys is None else keys), self.n_heads)
        return torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_size)

    def normalize(self, scores, mask):
        return masked_softmax(scores, mask)


class PositionalScorer(nn.Module):
    """PARec / FPARec (FPARec paper §3.1): scores depend on positions only.

    ``attn_pattern``:
        * ``learned``: ``A = R / sqrt(d_head)`` with one learnable ``R`` (``[H, n, n]``, eq. 6), or
          ``R = R1 R2^T`` with ``R1, R2`` of shape ``[H, n, k]`` when ``rank=k`` is given (eq. 7);
        * ``average`` / ``linear`` / ``exponential``: the fixed patterns of appendix B
          (eqs. 12-15), ``a_ij = 1``, ``j``, ``e^{j-i}`` for ``j <= i``, as log-scores so the masked
          softmax normalises them over the *valid* keys (padding never takes weight). ``j`` is
          the 1-based absolute slot.

    Initialisation follows the official code: R ~ TruncNormal(0, 0.01); R1, R2 ~
    TruncNormal(0, 0.1 k^{-1/4}) so that entries of R1 R2^T also have std ~0.01.
    """

    def __init__(self, n_heads, hidden_size, max_seq_length, attn_pattern="learned", rank=None):
        super().__init__()
        self.n_heads = n_heads
        self.head_size = hidden_size // n_heads
        self.attn_pattern = attn_pattern
        self.rank = rank
        n = max_seq_length
        if attn_pattern == "learned":
            if rank is None:
                self.R = nn.Parameter(torch.empty(n_heads, n, n))
            else:
                self.R1 = nn.Parameter(torch.empty(n_heads, n, rank))
                self.R2 = nn.Parameter(torch.empty(n_heads, n, rank))
            self.reset_parameters()
        else:
            i = torch.arange(n, dtype=torch.float).unsqueeze(1)
            j = torch.arange(n, dtype=torch.float).unsqueeze(0)
            if attn_pattern == "average":
                log_a = torch.zeros(n, n)
            elif attn_pattern == "linear":
                log_a = torch.log(j + 1).expand(n, n).clone()
            elif attn_pattern == "exponential":
                log_a = (j - i).clone()
            else:
                raise ValueError(f"unknown attn_pattern [{attn_pattern}]")
            self.register_buffer("log_pattern", log_a.unsqueeze(0), persistent=False)

    def reset_parameters(self):
        if self.attn_pattern != "learned":
            return
        if self.rank is None:
            nn.init.trunc_normal_(self.R, std=0.01, a=-0.02, b=0.02)
        else:
            std = 0.1 * self.rank ** -0.25
            nn.init.trunc_normal_(self.R1, std=std, a=-2 * std, b=2 * std)
            nn.init.trunc_normal_(self.R2, std=std, a=-2 * std, b=2 * std)

    def positional_matrix(self, positions):
        """``[H or 1, L, L]`` scores for the given absolute slots."""
        if self.attn_pattern != "learned":
            return self.log_pattern[:, positions][:, :, positions]
        if self.rank is None:
            r = self.R[:, positions][:, :, positions]
        else:
            r = torch.matmul(self.R1[:, positions], self.R2[:, positions].transpose(-1, -2))
        return r / math.sqrt(self.head_size)

    def forward(self, hidden, positions, keys=None):
        return self.positional_matrix(positions).unsqueeze(0)

    def normalize(self, scores, mask):
        return masked_softmax(scores, mask)


class LinearAttentionScorer(nn.Module):
    """Linearised attention (Katharopoulos et al. 2020), FPARec's "Linear Attention" baseline:
    weights ``phi(q_i) . phi(k_j) / sum_{j' <= i} phi(q_i) . phi(k_j')`` with ``phi = elu + 1``.

    Computed in its quadratic form, which is exact and, at recommendation sequence lengths,
    cheaper than the cumulative-sum form (``[L, d, d]`` states per position).
    """

    def __init__(self, n_heads, hidden_size, eps=1e-6):
        super().__init__()
        self.n_heads = n_heads
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.eps = eps

    def forward(self, hidden, positions, keys=None):
        q = F.elu(split_heads(self.query(hidden), self.n_heads)) + 1
        k = F.elu(split_heads(self.key(hidden if keys is None else keys), self.n_heads)) + 1
        return torch.matmul(q, k.transpose(-1, -2))  # similarities, all positive

    def normalize(self, scores, mask):
        sim = scores * mask
        return sim / (sim.sum(dim=-1, keepdim=True) + self.eps)


class AttentionSublayer(nn.Module):
    """What every attention sublayer shares: scores from ``self.scorer``, optionally refined by
    ``self.refiner`` (AWRSR), and the last weights kept for plots when ``keep_attention`` is set."""

    def attention_weights(self, hidden, mask, positions, keys=None):
        """Returns ``(A, weights)``: the scorer's scores and the weights applied to the values.
        ``keys``: where the keys are read from when not ``hidden`` (the official block)."""
        scores = self.scorer(hidden, positions) if keys is None else self.scorer(hidden, positions, keys=keys)
        if self.refiner is not None:
            weights = self.refiner(scores, mask, positions, self.scorer.normalize)
        else:
            weights = self.scorer.normalize(scores, mask)
        if self.keep_attention:
            self.last_attention = {
                "A": self.scorer.normalize(scores, mask).detach(),
                "B": weights.detach() if self.refiner is not None else None,
            }
        return scores, weights


class SelfAttention(AttentionSublayer):
    """Multi-head self-attention sublayer with a swappable scorer and an optional refiner.

    Parameter registration order (scorer's query/key, value, output dense, LayerNorm) equals
    RecBole's ``MultiHeadAttention``, so with the dot-product scorer the same seed gives the
    same initial weights and the same outputs as RecBole's SASRec.
    """

    def __init__(self, scorer, n_heads, hidden_size, hidden_dropout_prob, attn_dropout_prob,
                 layer_norm_eps, refiner=None):
        super().__init__()
        self.n_heads = n_heads
        self.scorer = scorer
        self.value = nn.Linear(hidden_size, hidden_size)
        self.attn_dropout = nn.Dropout(attn_dropout_prob)
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.out_dropout = nn.Dropout(hidden_dropout_prob)
        self.refiner = refiner
        self.keep_attention = False  # set True to keep the last weights (for plots)
        self.last_attention = None

    def mix(self, hidden, mask, positions, keys=None):
        """The sublayer's update before its residual connection and LayerNorm. ``keys``: the
        states keys and values are read from, when not ``hidden`` (the official block)."""
        _, weights = self.attention_weights(hidden, mask, positions, keys=keys)
        value = split_heads(self.value(hidden if keys is None else keys), self.n_heads)
        context = merge_heads(torch.matmul(self.attn_dropout(weights), value))
        if self.dense is None:  # the official block: no output projection, no dropout on the output
            return context
        return self.out_dropout(self.dense(context))

    def forward(self, hidden, mask, positions):
        return self.LayerNorm(self.mix(hidden, mask, positions) + hidden)


class CausalTokenMixing(nn.Module):
    """FPARec's "Token Mixing" baseline: MLP-Mixer's token-mixing MLP (Tolstikhin et al. 2021)
    across positions, shared by all channels, with future positions masked.

    ``y_i = sum_{m<=i} W2[i,m] GELU(sum_{j<=m} W1[m,j] x_j + b1[m]) + b2[i]``: both weight
    matrices are lower-triangular, so output i depends only on inputs at positions <= i.
    Padding positions are zeroed before and inside the MLP. Then dropout and residual LayerNorm.
    """

    def __init__(self, max_seq_length, hidden_size, hidden_dropout_prob, layer_norm_eps):
        super().__init__()
        n = max_seq_length
        self.W1 = nn.Parameter(torch.empty(n, n))
        self.b1 = nn.Parameter(torch.zeros(n))
        self.W2 = nn.Parameter(torch.empty(n, n))
        self.b2 = nn.Parameter(torch.zeros(n))
        self.reset_parameters()
        self.dropout = nn.Dropout(hidden_dropout_prob)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)

    def reset_parameters(self):
        for w in (self.W1, self.W2):
            nn.init.trunc_normal_(w, std=0.02, a=-0.04, b=0.04)

    def mix(self, hidden, mask, positions):
        """The sublayer's update before its residual connection and LayerNorm."""
        valid = mask[:, 0].diagonal(dim1=-2, dim2=-1).unsqueeze(-1).to(hidden.dtype)  # [B, L, 1]
        causal = torch.tril(torch.ones(len(positions), len(positions), device=hidden.device, dtype=torch.bool))
        w1 = self.W1[positions][:, positions].masked_fill(~causal, 0)
        w2 = self.W2[positions][:, positions].masked_fill(~causal, 0)
        x = hidden * valid
        h = F.gelu(torch.matmul(w1, x) + self.b1[positions, None]) * valid
        y = torch.matmul(w2, h) + self.b2[positions, None]
        return self.dropout(y)

    def forward(self, hidden, mask, positions):
        return self.LayerNorm(self.mix(hidden, mask, positions) + hidden)
