"""TokenMixRec: SASRec with its attention replaced by MLP-Mixer's token-mixing MLP with future
positions masked (Tolstikhin et al. 2021), the "Token Mixing" baseline of FPARec's Table 3."""

from recbole_attn.layers.attention import CausalTokenMixing
from recbole_attn.model.base import AttentionSequentialRecommender


class TokenMixRec(AttentionSequentialRecommender):
    def build_attention(self):
        return CausalTokenMixing(self.max_seq_length, self.hidden_size, self.hidden_dropout_prob,
                                 self.layer_norm_eps)

    def attention_modules(self):
        return []  # no attention matrix to show
