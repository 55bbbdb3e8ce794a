"""The transformer stack shared by the SASRec family: an attention sublayer (passed in) and
RecBole's ``FeedForward`` per block, in one of two layouts:

* post-LN (default, RecBole's SASRec): ``x = LN(x + Attn(x)); x = LN(x + FFN(x))``;
* pre-LN (``pre_norm: True``, the layout of the official SASRec and FPARec code,
  ``pre_norm=True`` there): ``x = x + Attn(LN(x)); x = x + FFN(LN(x))``, with one LayerNorm
  after the last block (the model moves its embedding LayerNorm there). The official code feeds
  the attention keys and values un-normalised and adds the residual to ``LN(x)``; this is the
  standard pre-LN form (Xiong et al. 2020) with the same LayerNorms in the same places.
"""

import copy

import torch.nn as nn
from recbole.model.layers import FeedForward


class TransformerBlock(nn.Module):
    def __init__(self, attention, hidden_size, inner_size, hidden_dropout_prob, hidden_act, layer_norm_eps,
                 pre_norm=False):
        super().__init__()
        self.multi_head_attention = attention
        self.feed_forward = FeedForward(hidden_size, inner_size, hidden_dropout_prob, hidden_act, layer_norm_eps)
        self.pre_norm = pre_norm

    def forward(self, hidden, mask, positions):
        if not self.pre_norm:
            return self.feed_forward(self.multi_head_attention(hidden, mask, positions))
        attention = self.multi_head_attention
        hidden = hidden + attention.mix(attention.LayerNorm(hidden), mask, positions)
        ffn = self.feed_forward
        update = ffn.dense_2(ffn.intermediate_act_fn(ffn.dense_1(ffn.LayerNorm(hidden))))
        return hidden + ffn.dropout(update)


class TransformerStack(nn.Module):
    """``n_layers`` deep copies of one block, as RecBole's ``TransformerEncoder`` builds them
    (so a seed gives RecBole's random stream). Parameters outside RecBole's Linear/Embedding
    initialisation (positional matrices, refinement matrices) are drawn anew for every copy."""

    def __init__(self, block, n_layers):
        super().__init__()
        self.layer = nn.ModuleList([copy.deepcopy(block) for _ in range(n_layers)])
        for layer in self.layer[1:]:
            for module in layer.modules():
                if hasattr(module, "reset_parameters") and not isinstance(module, (nn.Linear, nn.LayerNorm)):
                    module.reset_parameters()

    def forward(self, hidden, mask, positions):
        for layer in self.layer:
            hidden = layer(hidden, mask, positions)
        return hidden
