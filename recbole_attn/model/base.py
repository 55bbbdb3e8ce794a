"""The SASRec backbone that every dot-product-family model of recbole_attn builds on.

:class:`AttentionSequentialRecommender` is RecBole's SASRec (same layers, defaults,
initialisation and random stream) with two hooks:

* :meth:`build_attention` returns the attention sublayer of one block (the only thing
  PARec, FPARec, the linear-attention and token-mixing baselines and AWRSR change);
* ``pre_norm`` / ``official_block``: RecBole's post-LN blocks (both False), standard pre-LN
  blocks (``pre_norm``) or the block of the official TensorFlow SASRec and FPARec code
  (``official_block``), see :mod:`recbole_attn.layers.encoder`; ``single_ffn`` keeps the
  feed-forward network of the last block only (with ``official_block``: FPARec's code);
  ``official_masks`` (with ``official_block``, left padding) the official code's masks, through
  which padding slots carry future items from the second block on (``encoder`` module);
* ``pad_side``: ``right`` keeps RecBole's layout (oldest item in slot 0); ``left`` puts the
  newest item in slot ``n-1`` as the official PARec/FPARec/STOSA code does, which matters for
  parameters indexed by absolute position;
* ``weight_init``: RecBole's ``N(0, initializer_range)`` (``normal``) or the Glorot-uniform
  weights of the official TensorFlow SASRec/FPARec code (``glorot``, padding row zeroed);
* ``embedding_scale``: multiply the input item embeddings by ``sqrt(hidden_size)`` as the
  official code does (the output logits use the unscaled table).

It also trains in the all-position mode (``train_mode: seq2seq``, rows from
:class:`recbole_attn.data.dataset.Seq2SeqDataset`): every valid position of a row is a target,
with CE over all items (in memory-bounded chunks, :mod:`recbole_attn.layers.loss`), or BPR or BCE with one sampled negative per
position (``loss_type: BCE`` is the original SASRec objective: ``-log sigmoid(pos) -
log(1 - sigmoid(neg))``; its negatives are uniform over all items, where SASRec's code redraws
the items of the user's own sequence: about one draw in 1,400 on Beauty, one in 22 on ML-1M).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.model.loss import BPRLoss

from recbole_attn.data.dataset import LOSS_START
from recbole_attn.layers.encoder import TransformerBlock, TransformerStack
from recbole_attn.layers.loss import chunked_cross_entropy
from recbole_attn.model.sequence import (align, causal_padding_mask, forward_in_chunks, left_to_right,
                                         position_targets)


# losses that score the target against one sampled negative item
SAMPLED_LOSSES = ("BPR", "BCE")


def one_negative_bce(pos_score, neg_score):
    """SASRec's objective: ``-log sigmoid(pos) - log(1 - sigmoid(neg))``, averaged (stable form)."""
    return (F.softplus(-pos_score) + F.softplus(neg_score)).mean()


class AttentionSequentialRecommender(SequentialRecommender):
    # most logits materialised at once by the all-position CE loss (None: by device, see
    # recbole_attn.layers.loss.default_max_logits)
    CE_CHUNK_ELEMENTS = None

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.n_layers = config["n_layers"]
        self.n_heads = config["n_heads"]
        self.hidden_size = config["hidden_size"]  # same as embedding_size
        self.inner_size = config["inner_size"]
        self.hidden_dropout_prob = config["hidden_dropout_prob"]
        self.attn_dropout_prob = config["attn_dropout_prob"]
        self.hidden_act = config["hidden_act"]
        self.layer_norm_eps = config["layer_norm_eps"]
        self.initializer_range = config["initializer_range"]
        self.loss_type = config["loss_type"]
        self.pad_side = config["pad_side"] or "right"
        self.train_mode = config["train_mode"] or "augment"
        self.pre_norm = bool(config["pre_norm"])
        self.official_block = bool(config["official_block"])
        self.single_ffn = bool(config["single_ffn"])
        self.official_masks = bool(config["official_masks"])
        # both layouts other than RecBole's normalise at the start of each sublayer and once at the end
        self.norm_last = self.pre_norm or self.official_block
        self.weight_init = config["weight_init"] or "normal"
        self.embedding_scale = bool(config["embedding_scale"])

        # define layers and loss (same order as RecBole's SASRec: same seed, same weights)
        self.item_embedding = nn.Embedding(self.n_items, self.hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(self.max_seq_length, self.hidden_size)
        block = TransformerBlock(self.build_attention(), self.hidden_size, self.inner_size,
                                 self.hidden_dropout_prob, self.hidden_act, self.layer_norm_eps,
                                 layout="official" if self.official_block else "pre" if self.pre_norm else "post",
                                 official_masks=self.official_masks)
        self.trm_encoder = TransformerStack(block, self.n_layers, single_ffn=self.single_ffn)
        # post-LN: normalises the embeddings; the other layouts: the output of the last block
        self.LayerNorm = nn.LayerNorm(self.hidden_size, eps=self.layer_norm_eps)
        self.dropout = nn.Dropout(self.hidden_dropout_prob)

        if self.loss_type == "BPR":
            self.loss_fct = BPRLoss()
        elif self.loss_type == "BCE":
            self.loss_fct = one_negative_bce
        elif self.loss_type == "CE":
            self.loss_fct = nn.CrossEntropyLoss()
        else:
            raise NotImplementedError("Make sure 'loss_type' in ['BPR', 'BCE', 'CE']!")

        # parameters initialization
        self.apply(self._init_weights)
        if self.weight_init == "glorot":
            self.item_embedding.weight.data[0].zero_()  # the official code's zero_pad

    def build_attention(self):
        """The attention sublayer of one block: ``module(hidden, mask, positions) -> hidden``."""
        raise NotImplementedError

    def _init_weights(self, module):
        """Initialize the weights (RecBole's SASRec, or Glorot-uniform with ``weight_init: glorot``)."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            if self.weight_init == "glorot":
                nn.init.xavier_uniform_(module.weight)
            else:
                module.weight.data.normal_(mean=0.0, std=self.initializer_range)
        elif isinstance(module, nn.LayerNorm):
            module.bias.data.zero_()
            module.weight.data.fill_(1.0)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()

    # ----- encoding --------------------------------------------------------------------
    def embed(self, item_seq, positions):
        item_emb = self.item_embedding(item_seq)
        if self.embedding_scale:
            item_emb = item_emb * self.hidden_size ** 0.5
        input_emb = item_emb + self.position_embedding(positions).unsqueeze(0)
        if self.official_masks:  # the official code zeroes padding slots: its masks find them by their zeros
            return self.dropout(input_emb) * (item_seq != 0).unsqueeze(-1)
        if self.norm_last:
            return self.dropout(input_emb)
        return self.dropout(self.LayerNorm(input_emb))

    def encode(self, item_seq, item_seq_len):
        """Hidden states of every position, ``[B, W, H]`` (``W`` the longest length), in RecBole's
        right-padded layout."""
        seq, positions = align(item_seq, item_seq_len, self.pad_side, self.max_seq_length,
                               full_width=self.official_masks)
        # official_masks: each block builds its masks from the states (layers.encoder)
        mask = None if self.official_masks else causal_padding_mask(seq)
        hidden = self.trm_encoder(self.embed(seq, positions), mask, positions)
        if self.norm_last:
            hidden = self.LayerNorm(hidden)
        if self.pad_side == "left":
            hidden = left_to_right(hidden, item_seq_len)
        if self.official_masks:  # computed at the full width: back to the batch's longest length
            hidden = hidden[:, :max(int(item_seq_len.max()), 1)]
        return hidden

    def forward(self, item_seq, item_seq_len):
        output = self.encode(item_seq, item_seq_len)
        return self.gather_indexes(output, item_seq_len - 1)  # [B H]

    # ----- losses ----------------------------------------------------------------------
    def calculate_loss(self, interaction):
        if LOSS_START in interaction:
            return self.all_position_loss(interaction)
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        seq_output = self.forward(item_seq, item_seq_len)
        pos_items = interaction[self.POS_ITEM_ID]
        if self.loss_type in SAMPLED_LOSSES:
            neg_items = interaction[self.NEG_ITEM_ID]
            pos_score = torch.sum(seq_output * self.item_embedding(pos_items), dim=-1)  # [B]
            neg_score = torch.sum(seq_output * self.item_embedding(neg_items), dim=-1)  # [B]
            return self.loss_fct(pos_score, neg_score)
        logits = torch.matmul(seq_output, self.item_embedding.weight.transpose(0, 1))
        return self.loss_fct(logits, pos_items)

    def all_position_loss(self, interaction):
        targets, loss_mask = position_targets(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN],
                                              interaction[self.POS_ITEM_ID], interaction[LOSS_START])
        hidden = self.encode(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return self.position_loss(hidden[loss_mask], targets[loss_mask])

    def position_loss(self, hidden, targets):
        """Mean loss over ``N`` (hidden state, target) pairs: ``hidden [N, H]``, ``targets [N]``."""
        if self.loss_type in SAMPLED_LOSSES:
            neg = torch.randint(1, self.n_items, targets.shape, device=targets.device)
            pos_score = (hidden * self.item_embedding(targets)).sum(-1)
            neg_score = (hidden * self.item_embedding(neg)).sum(-1)
            return self.loss_fct(pos_score, neg_score)
        return chunked_cross_entropy(hidden, self.item_embedding.weight, targets, self.CE_CHUNK_ELEMENTS)

    # ----- scoring ---------------------------------------------------------------------
    def sequence_output(self, interaction):
        """:meth:`forward` over an evaluation batch, in chunks of bounded attention size."""
        return forward_in_chunks(self.forward, interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN],
                                 self.n_heads)

    def predict(self, interaction):
        seq_output = self.sequence_output(interaction)
        test_item_emb = self.item_embedding(interaction[self.ITEM_ID])
        return torch.mul(seq_output, test_item_emb).sum(dim=1)  # [B]

    def full_sort_predict(self, interaction):
        seq_output = self.sequence_output(interaction)
        return torch.matmul(seq_output, self.item_embedding.weight.transpose(0, 1))  # [B n_items]

    # ----- introspection (plots) -------------------------------------------------------
    def attention_modules(self):
        return [layer.multi_head_attention for layer in self.trm_encoder.layer]
