r"""STOSA
################################################

Reference:
    Ziwei Fan et al. "Sequential Recommendation via Stochastic Self-Attention." in WWW 2022.

Reference code:
    https://github.com/zfan20/STOSA (``seqmodels.py`` ``DistSAModel``, ``modules.py``,
    ``trainers.py`` ``DistSAModelTrainer``)

Items, positions and the sequence representation are diagonal Gaussians (mean and covariance
embeddings, covariances made positive with ``ELU(x) + 1``); self-attention weights are softmax-
normalised negative 2-Wasserstein distances (:mod:`recbole_attn.layers.stochastic`). Items are
ranked by the Wasserstein distance between the sequence's Gaussian and theirs: ``predict`` and
``full_sort_predict`` return ``-W2^2`` (RecBole ranks larger first).

Differences from the official code, all deliberate:

* ``mean_passthrough_bug: False`` (default) builds the model of the paper; the official encoder
  never updates the mean path (``modules.py:461``), ``True`` reproduces that for comparisons
  (see :class:`recbole_attn.layers.stochastic.STOSAStack`).
* Masks are exact (``masked_fill``), not the additive ``-2^32+1``; fully masked rows give zeros.
* ``-log sigmoid(d_neg - d_pos)`` is computed with ``logsigmoid`` (the official
  ``-log(sigmoid(. + 1e-24))`` overflows to inf for large distance gaps).
* In ``seq2seq`` mode the negative of each position is drawn uniformly from all items except
  that position's target (official: except every item of the user's sequence); in ``augment``
  mode it is RecBole's sampled ``neg_item_id``.
* RecBole's full-sort evaluation does not exclude history items (the official one does).

Initialisation as the official code: every ``Linear`` and ``Embedding`` weight ~
``N(0.01, initializer_range)`` (the padding row included; its gradient stays 0), Linear biases 0,
LayerNorm weight 1 and bias 0.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender

from recbole_attn.data.dataset import LOSS_START
from recbole_attn.errors import ConfigError
from recbole_attn.layers.stochastic import (STOSABlock, STOSAStack, StochasticEmbedding, WassersteinScorer,
                                            WassersteinSelfAttention, wasserstein_distance,
                                            wasserstein_pairwise)
from recbole_attn.model.sequence import (align, causal_padding_mask, forward_in_chunks, left_to_right,
                                         position_targets)


class STOSA(SequentialRecommender):
    INIT_MEAN = 0.01  # official ``init_weights``: N(0.01, initializer_range)

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.n_layers = config["n_layers"]
        self.n_heads = config["n_heads"]
        self.hidden_size = config["hidden_size"]  # of the mean and of the covariance embedding
        self.inner_size = config["inner_size"]
        self.hidden_dropout_prob = config["hidden_dropout_prob"]
        self.attn_dropout_prob = config["attn_dropout_prob"]
        self.layer_norm_eps = config["layer_norm_eps"]
        self.initializer_range = config["initializer_range"]
        self.pvn_weight = config["pvn_weight"] if config["pvn_weight"] is not None else 0.0
        self.loss_type = config["loss_type"]
        self.train_mode = config["train_mode"] or "seq2seq"
        self.pad_side = config["pad_side"] or "left"
        self.mean_passthrough_bug = bool(config["mean_passthrough_bug"])
        if self.loss_type != "BPR":
            raise ConfigError(
                f"invalid value for [loss_type]: {self.loss_type!r}; {type(self).__name__} ranks by "
                "Wasserstein distance and trains with a BPR-style loss: allowed: BPR"
            )

        # define layers
        self.embedding = StochasticEmbedding(self.n_items, self.max_seq_length, self.hidden_size,
                                             self.hidden_dropout_prob, self.layer_norm_eps)
        block = STOSABlock(self.build_attention(), self.hidden_size, self.inner_size,
                           self.hidden_dropout_prob, self.layer_norm_eps)
        self.encoder = STOSAStack(block, self.n_layers, mean_passthrough_bug=self.mean_passthrough_bug)

        # parameters initialization
        self.apply(self._init_weights)

    def build_refiner(self):
        """The AWRSR refiner of one layer (``None``: plain STOSA); see :mod:`recbole_attn.model.awrsr_stosa`."""
        return None

    def build_attention(self):
        return WassersteinSelfAttention(WassersteinScorer(self.n_heads, self.hidden_size), self.n_heads,
                                        self.hidden_size, self.hidden_dropout_prob, self.attn_dropout_prob,
                                        self.layer_norm_eps, refiner=self.build_refiner())

    def _init_weights(self, module):
        """Initialize the weights (official STOSA: mean 0.01, not 0)."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=self.INIT_MEAN, std=self.initializer_range)
        elif isinstance(module, nn.LayerNorm):
            module.bias.data.zero_()
            module.weight.data.fill_(1.0)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()

    # ----- encoding --------------------------------------------------------------------
    def encode(self, item_seq, item_seq_len):
        """``(mean, cov)`` of every position, each ``[B, W, d]``, in RecBole's right-padded layout."""
        seq, positions = align(item_seq, item_seq_len, self.pad_side, self.max_seq_length)
        mean, cov = self.encoder(self.embedding(seq, positions), causal_padding_mask(seq), positions)
        if self.pad_side == "left":
            mean, cov = left_to_right(mean, item_seq_len), left_to_right(cov, item_seq_len)
        return mean, cov

    def forward(self, item_seq, item_seq_len):
        """The sequence Gaussian ``(mean [B, d], cov [B, d])`` at the last valid position."""
        mean, cov = self.encode(item_seq, item_seq_len)
        last = (item_seq_len - 1).clamp_min(0)  # an empty row reads its (padding) slot 0, never fails
        return self.gather_indexes(mean, last), self.gather_indexes(cov, last)

    # ----- losses ----------------------------------------------------------------------
    def calculate_loss(self, interaction):
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        if LOSS_START in interaction:  # seq2seq rows: every position from loss_start on
            targets, loss_mask = position_targets(item_seq, item_seq_len, interaction[self.POS_ITEM_ID],
                                                  interaction[LOSS_START])
            mean, cov = self.encode(item_seq, item_seq_len)
            targets = targets[loss_mask]
            return self.distance_loss(mean[loss_mask], cov[loss_mask], targets, self.sample_negatives(targets))
        mean, cov = self.forward(item_seq, item_seq_len)
        return self.distance_loss(mean, cov, interaction[self.POS_ITEM_ID], interaction[self.NEG_ITEM_ID])

    def sample_negatives(self, targets):
        """One negative per target, uniform over the items ``1..n_items-1`` other than the target."""
        if self.n_items <= 2:
            return torch.randint(1, self.n_items, targets.shape, device=targets.device)
        neg = torch.randint(1, self.n_items - 1, targets.shape, device=targets.device)
        return neg + (neg >= targets).long()

    def distance_loss(self, mean, cov, pos_items, neg_items):
        """Official loss (``trainers.py:354-387``), averaged over the ``N`` rows given:
        ``-log sigmoid(d(s, n) - d(s, p)) + pvn_weight * max(0, d(s, p) - d(p, n))``."""
        pos_mean, pos_cov = self.embedding.items(pos_items)
        neg_mean, neg_cov = self.embedding.items(neg_items)
        d_pos = wasserstein_distance(mean, cov, pos_mean, pos_cov)
        d_neg = wasserstein_distance(mean, cov, neg_mean, neg_cov)
        loss = -F.logsigmoid(d_neg - d_pos).mean()
        if self.pvn_weight:
            d_pos_neg = wasserstein_distance(pos_mean, pos_cov, neg_mean, neg_cov)
            loss = loss + self.pvn_weight * torch.relu(d_pos - d_pos_neg).mean()
        return loss

    # ----- scoring ---------------------------------------------------------------------
    def sequence_output(self, interaction):
        """:meth:`forward` over an evaluation batch, in chunks of bounded attention size."""
        return forward_in_chunks(self.forward, interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN],
                                 self.n_heads)

    def predict(self, interaction):
        mean, cov = self.sequence_output(interaction)
        item_mean, item_cov = self.embedding.items(interaction[self.ITEM_ID])
        return -wasserstein_distance(mean, cov, item_mean, item_cov)  # [B]

    def full_sort_predict(self, interaction):
        mean, cov = self.sequence_output(interaction)
        item_mean, item_cov = self.embedding.items()
        return -wasserstein_pairwise(mean, cov, item_mean, item_cov)  # [B, n_items], one batched computation

    # ----- introspection (plots) -------------------------------------------------------
    def attention_modules(self):
        return [layer.multi_head_attention for layer in self.encoder.layer]
