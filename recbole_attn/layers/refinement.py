"""AWRSR attention-weight refinement (Liu et al., "Pay Attention to Attention for Sequential
Recommendation", RecSys'24, §2.3), shared by the SASRec and STOSA families.

The refiner receives a layer's attention scores ``A`` (``[B or 1, H, L, L]``) and returns the
weights that multiply the values. With ``q_k = A_k: W^(RQ)`` and ``k_t = A_t: W^(RK)``
(``W`` are ``n x n``, ``n = MAX_ITEM_LIST_LENGTH``; the rows of ``A`` are indexed by absolute slot):

* ``simp`` (eq. 2):  ``B = q k^T / s``, weights ``softmax(B)``;
* ``add``  (eq. 4):  ``B = (q k^T / s + A) / 2``, weights ``softmax(B)``;
* ``value`` (eq. 3): ``B = softmax(q k^T / s) (A W^(RV))``, used as weights directly (no
  softmax, as in the paper), with future and padding columns zeroed;
* ``stoc`` (STOSA only): ``N(mu_k, Sigma_k)`` with ``mu_k = A_k: W_mu``,
  ``Sigma_k = ELU(A_k: W_Sigma) + 1``; ``B_kt = -W2(N_k, N_t) / s``, weights ``softmax(B)``.

Choices the paper leaves open, as configuration keys:

* ``refine_input``: ``scores`` (default, the paper: ``A_kt = Q_k K_t^T / sqrt(d)``) or
  ``probs`` (the softmax-normalised weights). Masked entries enter as 0 either way: a linear
  map of the -inf/-1e4 mask values would swamp every row.
* ``refine_scale``: ``sqrt_d`` (default, eq. 2: ``s = sqrt(d_head)``), ``sqrt_n`` or ``none``.
* ``refine_per_head``: one set of matrices per head (``[H, n, n]``) instead of one per layer
  shared by the heads (default: shared, as written in the paper).
* ``refine_init``: ``normal`` (N(0, initializer_range), default) or ``identity``.

Causality: ``q_k`` depends on items <= k (row k of a causal ``A``), ``k_t`` on items <= t, and
the refined scores are masked again before the softmax, so weight (k, t) is non-zero only for
valid t <= k. ``A W^(RV)`` mixes columns, so for M_value the result is masked again.
"""

import math

import torch
import torch.nn as nn

from recbole_attn.layers.attention import masked_softmax
from recbole_attn.layers.stochastic import positive, wasserstein_pairwise


class AttentionRefinement(nn.Module):
    MODES = ("simp", "value", "add", "stoc")

    def __init__(self, mode, max_seq_length, n_heads, head_size, refine_input="scores",
                 refine_scale="sqrt_d", per_head=False, init="normal", initializer_range=0.02):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"unknown refine_mode [{mode}]")
        self.mode = mode
        self.refine_input = refine_input
        n = max_seq_length
        self.scale = {"sqrt_d": math.sqrt(head_size), "sqrt_n": math.sqrt(n), "none": 1.0}[refine_scale]
        shape = (n_heads if per_head else 1, n, n)
        names = {"simp": ("W_RQ", "W_RK"), "add": ("W_RQ", "W_RK"),
                 "value": ("W_RQ", "W_RK", "W_RV"), "stoc": ("W_mu", "W_sigma")}[mode]
        self.init, self.initializer_range = init, initializer_range
        for name in names:
            self.register_parameter(name, nn.Parameter(torch.empty(shape)))
        self.reset_parameters()

    def reset_parameters(self):
        for w in self.parameters():
            if self.init == "identity":
                with torch.no_grad():
                    w.copy_(torch.eye(w.shape[-1]).expand_as(w))
            else:
                nn.init.normal_(w, 0.0, self.initializer_range)

    def _input(self, scores, mask, normalize):
        if self.refine_input == "probs":
            return normalize(scores, mask)
        return scores.masked_fill(~mask, 0.0)

    def forward(self, scores, mask, positions, normalize):
        a = self._input(scores, mask, normalize)  # [B|1, H, L, L]; masked entries are 0
        if self.mode == "stoc":
            w_mu, w_sigma = self.W_mu[:, positions], self.W_sigma[:, positions]
            mu = torch.matmul(a, w_mu)
            var = positive(torch.matmul(a, w_sigma))
            refined = -wasserstein_pairwise(mu, var, mu, var) / self.scale
            return masked_softmax(refined, mask)
        q = torch.matmul(a, self.W_RQ[:, positions])  # [B, H, L, n]
        k = torch.matmul(a, self.W_RK[:, positions])
        refined = torch.matmul(q, k.transpose(-1, -2)) / self.scale
        if self.mode == "simp":
            return masked_softmax(refined, mask)
        if self.mode == "add":
            return masked_softmax((refined + a) / 2, mask)
        # value: attention over attention-determined values A W^(RV), then re-masked
        values = torch.matmul(a, self.W_RV[:, positions][:, :, positions])
        return torch.matmul(masked_softmax(refined, mask), values) * mask
