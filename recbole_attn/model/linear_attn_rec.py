"""LinearAttnRec: SASRec with its attention replaced by causal linearised attention
(Katharopoulos et al. 2020), the "Linear Attention" baseline of FPARec's Table 3."""

from recbole_attn.layers.attention import LinearAttentionScorer, SelfAttention
from recbole_attn.model.base import AttentionSequentialRecommender


class LinearAttnRec(AttentionSequentialRecommender):
    def build_attention(self):
        return SelfAttention(LinearAttentionScorer(self.n_heads, self.hidden_size), self.n_heads,
                             self.hidden_size, self.hidden_dropout_prob, self.attn_dropout_prob,
                             self.layer_norm_eps)
