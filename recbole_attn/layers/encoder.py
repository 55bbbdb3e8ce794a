"""The transformer stack shared by the SASRec family: an attention sublayer (passed in) and
RecBole's ``FeedForward`` per block, in one of three layouts:

* ``post`` (default, RecBole's SASRec): ``x = LN(x + Attn(x)); x = LN(x + FFN(x))``, with a
  LayerNorm on the embeddings;
* ``pre`` (``pre_norm: True``): the standard pre-LN block (Xiong et al. 2020),
  ``x = x + Attn(LN(x)); x = x + FFN(LN(x))``, with one LayerNorm after the last block (the
  model moves its embedding LayerNorm there);
* ``official`` (``official_block: True``): the block of the official TensorFlow SASRec code
  (kang205/SASRec ``model.py``; FPARec's code has the same sublayers):
  ``q = LN(x); x = q + Attn(queries=q, keys=values=x); h = LN(x); x = h + FFN(h)``, one LayerNorm
  after the last block. Each update is added to the *normalised* input, so the stream between
  sublayers is the post-LN one; what differs from ``post`` is that keys and values are read from
  the stream before its LayerNorm, that the attention has no output projection (nor dropout on
  its output) and that the feed-forward network has dropout after its activation too.

The LayerNorms are the same modules in the same places in every layout (``official`` also drops
the attention's output projection), so ``post`` and ``pre`` load each other's weights.

``single_ffn`` keeps the feed-forward sublayer of the last block only, in any layout. With
``official`` this is the stack of the official FPARec code (``model.py``: the attention loop, then
one feed-forward network after it), where the paper and SASRec's code have one per block.

``official_masks`` (``official`` layout only) replaces the exact item mask by the official code's
masks, built in each block from the states (:class:`recbole_attn.layers.attention.ContentMask`):
a key is hidden only while its row is all zeros. The embeddings of padding slots are zeros, so in
the first block padding is hidden; its queries ``LN(0)`` are the LayerNorm's bias, which training
moves off zero, so each padding slot then takes the even average of all slots' values, future
items included, and from the second block on the item slots after it can read that average.
"""

import copy

import torch.nn as nn
from recbole.model.layers import FeedForward

from recbole_attn.layers.attention import content_mask


LAYOUTS = ("post", "pre", "official")


class TransformerBlock(nn.Module):
    def __init__(self, attention, hidden_size, inner_size, hidden_dropout_prob, hidden_act, layer_norm_eps,
                 layout="post", official_masks=False):
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"unknown block layout [{layout}]; one of {LAYOUTS}")
        if official_masks and layout != "official":
            raise ValueError("official_masks needs the official block layout")
        self.official_masks = official_masks
        self.multi_head_attention = attention
        self.feed_forward = FeedForward(hidden_size, inner_size, hidden_dropout_prob, hidden_act, layer_norm_eps)
        self.layout = layout
        if layout == "official":
            attention.dense = None  # the official code has no output projection after the attention

    def forward(self, hidden, mask, positions):
        attention, ffn = self.multi_head_attention, self.feed_forward
        if self.layout == "post":
            hidden = attention(hidden, mask, positions)
            return hidden if ffn is None else ffn(hidden)
        if self.layout == "pre":
            hidden = hidden + attention.mix(attention.LayerNorm(hidden), mask, positions)
            if ffn is None:
                return hidden
            update = ffn.dense_2(ffn.intermediate_act_fn(ffn.dense_1(ffn.LayerNorm(hidden))))
            return hidden + ffn.dropout(update)
        query = attention.LayerNorm(hidden)
        if self.official_masks:
            mask = content_mask(keys=hidden, queries=query)
        hidden = query + attention.mix(query, mask, positions, keys=hidden)
        if ffn is None:
            return hidden
        normed = ffn.LayerNorm(hidden)
        update = ffn.dense_2(ffn.dropout(ffn.intermediate_act_fn(ffn.dense_1(normed))))
        return normed + ffn.dropout(update)


class TransformerStack(nn.Module):
    """``n_layers`` deep copies of one block, as RecBole's ``TransformerEncoder`` builds them
    (so a seed gives RecBole's random stream). Parameters outside RecBole's Linear/Embedding
    initialisation (positional matrices, refinement matrices) are drawn anew for every copy.
    ``single_ffn``: every block but the last loses its feed-forward sublayer."""

    def __init__(self, block, n_layers, single_ffn=False):
        super().__init__()
        self.layer = nn.ModuleList([copy.deepcopy(block) for _ in range(n_layers)])
        for layer in self.layer[1:]:
            for module in layer.modules():
                if hasattr(module, "reset_parameters") and not isinstance(module, (nn.Linear, nn.LayerNorm)):
                    module.reset_parameters()
        if single_ffn:
            for layer in self.layer[:-1]:
                layer.feed_forward = None

    def forward(self, hidden, mask, positions):
        for layer in self.layer:
            hidden = layer(hidden, mask, positions)
        return hidden
