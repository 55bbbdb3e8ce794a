"""SASRecAttn: SASRec (Kang & McAuley, ICDM 2018) on recbole_attn's shared layers.

Same architecture, defaults and initialisation as RecBole's ``SASRec``: with the same seed and
``train_mode: augment`` both give the same results. It is the reference every paper model
here is compared with, and the backbone they modify.
"""

from recbole_attn.layers.attention import DotProductScorer, SelfAttention
from recbole_attn.model.base import AttentionSequentialRecommender


class SASRecAttn(AttentionSequentialRecommender):
    def build_attention(self):
        return SelfAttention(DotProductScorer(self.n_heads, self.hidden_size), self.n_heads, self.hidden_size,
                             self.hidden_dropout_prob, self.attn_dropout_prob, self.layer_norm_eps)
