"""PARec (Luo et al., "Learning Positional Attention for Sequential Recommendation", §3.1).

SASRec with the query-key attention replaced by a learnable positional matrix per layer and
head: ``Mask(softmax(R / sqrt(d))) V`` (eq. 6); no query or key projections.
``attn_pattern: average|linear|exponential`` swaps R for the fixed patterns of the paper's
ablation (Table 4, appendix B).
"""

from recbole_attn.layers.attention import PositionalScorer, SelfAttention
from recbole_attn.model.base import AttentionSequentialRecommender


class PARec(AttentionSequentialRecommender):
    def __init__(self, config, dataset):
        self.attn_pattern = config["attn_pattern"] or "learned"
        super().__init__(config, dataset)

    def positional_rank(self):
        return None  # full n x n matrix

    def build_attention(self):
        scorer = PositionalScorer(self.n_heads, self.hidden_size, self.max_seq_length,
                                  attn_pattern=self.attn_pattern, rank=self.positional_rank())
        return SelfAttention(scorer, self.n_heads, self.hidden_size, self.hidden_dropout_prob,
                             self.attn_dropout_prob, self.layer_norm_eps)
