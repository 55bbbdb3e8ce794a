"""The transformer stack shared by the SASRec family: RecBole's post-LN block
(attention sublayer, then RecBole's ``FeedForward``) with the attention sublayer passed in."""

import copy

import torch.nn as nn
from recbole.model.layers import FeedForward


class TransformerBlock(nn.Module):
    def __init__(self, attention, hidden_size, inner_size, hidden_dropout_prob, hidden_act, layer_norm_eps):
        super().__init__()
        self.multi_head_attention = attention
        self.feed_forward = FeedForward(hidden_size, inner_size, hidden_dropout_prob, hidden_act, layer_norm_eps)

    def forward(self, hidden, mask, positions):
        return self.feed_forward(self.multi_head_attention(hidden, mask, positions))


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
