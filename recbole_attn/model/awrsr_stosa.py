"""AWRSR-STOSA: STOSA with attention-weight refinement (Liu et al., "Pay Attention to
Attention for Sequential Recommendation", RecSys'24, §2.3).

``refine_mode: simp|value|add`` refines every layer's Wasserstein scores ``A`` exactly as
AWRSR-SASRec refines its dot-product scores (the same :class:`AttentionRefinement`);
``stoc`` (M_stoc, STOSA only) maps each row ``A_k:`` to a Gaussian
``N(A_k: W_mu, ELU(A_k: W_Sigma) + 1)`` and uses negative Wasserstein distances between rows
as the refined scores. The refined weights multiply STOSA's mean values and, squared, its
covariance values. ``none`` builds exactly STOSA.
"""

from recbole_attn.model.awrsr_sasrec import build_refiner, refiner_options
from recbole_attn.model.stosa import STOSA


class AWRSRSTOSA(STOSA):
    def __init__(self, config, dataset):
        self.refine = refiner_options(config)
        super().__init__(config, dataset)

    def build_refiner(self):
        return build_refiner(self.refine, self.n_heads, self.hidden_size // self.n_heads, self.max_seq_length)
