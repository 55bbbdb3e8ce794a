"""AWRSR-SASRec: SASRec with attention-weight refinement (Liu et al., "Pay Attention to
Attention for Sequential Recommendation", RecSys'24, §2.3).

``refine_mode: simp|value|add`` refines every layer's attention scores with n x n matrices
(:mod:`recbole_attn.layers.refinement`); ``none`` builds exactly the SASRec backbone.
"""

from recbole_attn.layers.attention import DotProductScorer, SelfAttention
from recbole_attn.layers.refinement import AttentionRefinement
from recbole_attn.model.base import AttentionSequentialRecommender


def refiner_options(config):
    """The ``refine_*`` keys of a config, with the defaults of the paper's reading."""
    return {
        "mode": config["refine_mode"] or "none",
        "refine_input": config["refine_input"] or "scores",
        "refine_scale": config["refine_scale"] or "sqrt_d",
        "per_head": bool(config["refine_per_head"]),
        "init": config["refine_init"] or "normal",
        "initializer_range": config["initializer_range"],
    }


def build_refiner(options, n_heads, head_size, max_seq_length):
    """The AWRSR refiner, or ``None`` for ``refine_mode: none``."""
    options = dict(options)
    mode = options.pop("mode")
    if mode == "none":
        return None
    return AttentionRefinement(mode, max_seq_length, n_heads, head_size, **options)


class AWRSRSASRec(AttentionSequentialRecommender):
    def __init__(self, config, dataset):
        self.refine = refiner_options(config)
        super().__init__(config, dataset)

    def build_attention(self):
        refiner = build_refiner(self.refine, self.n_heads, self.hidden_size // self.n_heads, self.max_seq_length)
        return SelfAttention(DotProductScorer(self.n_heads, self.hidden_size), self.n_heads, self.hidden_size,
                             self.hidden_dropout_prob, self.attn_dropout_prob, self.layer_norm_eps, refiner=refiner)
