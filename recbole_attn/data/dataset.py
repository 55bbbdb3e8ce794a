"""All-position ("seq2seq") training rows on top of RecBole's sequential dataset.

RecBole's :class:`SequentialDataset` turns every prefix of every user sequence into one
training row with a loss at its last position. :class:`Seq2SeqDataset` emits, per user,

* training *windows* of at most ``MAX_ITEM_LIST_LENGTH`` items whose every position is a
  training target (the next item), covering exactly the training targets of RecBole's rows;
* followed by RecBole's own last rows of that user (validation and test, same context and
  target), so RecBole's leave-one-out split, evaluation loaders and metrics are untouched.

The field ``loss_start`` of a row is the first position that carries a loss: 0 for a window
that starts at the user's first item; ``L - seq2seq_stride`` for later windows of length
``L``, whose earlier positions were already targets of the previous window; ``L - 1`` for the
evaluation rows (last position only). With ``seq2seq_stride: 1`` each window adds exactly one
target with RecBole's full context, so the (context, target) pairs equal RecBole's; the
default stride ``MAX_ITEM_LIST_LENGTH`` gives non-overlapping windows, where a target in a
later window sees the items from its window's start (at least ``n - stride + 1`` items).
``seq2seq_windows: last`` keeps only each user's most recent window (its last ``n`` training
targets), as the official SASRec and FPARec samplers do (``seq = train[:-1][-n:]``): targets
older than that are never trained on, a third of ML-1M's at n = 200.
"""

import numpy as np
import torch
from recbole.data.dataset import SequentialDataset
from recbole.data.interaction import Interaction
from recbole.utils.enum_type import FeatureSource, FeatureType

LOSS_START = "loss_start"


def evaluation_rows(m):
    """RecBole's leave-one-out for a user of ``m`` interactions: its number of valid/test rows."""
    return min(2, m - 2) if m >= 3 else 0


def seq2seq_rows(user_ids, max_len, stride, last_only=False):
    """Row layout for one pass over interactions sorted by (user, time).

    Args:
        user_ids (np.ndarray): user id of each interaction, grouped by user.
        max_len (int): ``MAX_ITEM_LIST_LENGTH``.
        stride (int): targets added per window after the first.
        last_only (bool): keep only each user's most recent window.

    Returns:
        tuple of np.ndarray: ``(start, length, target, loss_start)``: row r's input is the
        interactions ``[start, start + length)`` and its last target is interaction ``target``.
    """
    starts, lengths, targets, loss_starts = [], [], [], []
    boundaries = np.flatnonzero(np.diff(user_ids)) + 1
    for b, e in zip(np.r_[0, boundaries], np.r_[boundaries, len(user_ids)]):
        m = e - b  # interactions of this user at indices b .. e-1
        n_eval = evaluation_rows(m)
        last_train = e - 1 - n_eval  # index of the last training target
        windows = []
        t = last_train
        while t >= b + 1:
            start = max(b, t - max_len)
            if start == b or last_only:
                windows.append((start, t - start, t, 0))
                break
            windows.append((start, t - start, t, max(0, (t - start) - stride)))
            t -= stride
        for row in reversed(windows):
            starts.append(row[0]), lengths.append(row[1]), targets.append(row[2]), loss_starts.append(row[3])
        for t in range(e - n_eval, e):  # evaluation rows, exactly as RecBole builds them
            start = max(b, t - max_len)
            starts.append(start), lengths.append(t - start), targets.append(t), loss_starts.append(t - start - 1)
    return (np.asarray(starts, dtype=np.int64), np.asarray(lengths, dtype=np.int64),
            np.asarray(targets, dtype=np.int64), np.asarray(loss_starts, dtype=np.int64))


class Seq2SeqDataset(SequentialDataset):
    """:class:`SequentialDataset` whose training rows are all-position windows."""

    def data_augmentation(self):
        self.logger.debug("seq2seq data_augmentation")
        self._aug_presets()
        self._check_field("uid_field", "time_field")
        max_len = self.config["MAX_ITEM_LIST_LENGTH"]
        stride = self.config["seq2seq_stride"] or max_len
        self.sort(by=[self.uid_field, self.time_field], ascending=True)

        user_ids = self.inter_feat[self.uid_field].numpy()
        last_only = self.config["seq2seq_windows"] == "last"
        start, length, target, loss_start = seq2seq_rows(user_ids, max_len, min(stride, max_len), last_only)
        if last_only:
            per_user = np.unique(user_ids, return_counts=True)[1]
            targets = [max(0, m - 1 - evaluation_rows(m)) for m in per_user]
            kept = sum(min(t, max_len) for t in targets)
            self.logger.info(f"seq2seq_windows last: {kept:,} of {sum(targets):,} training targets kept "
                             f"({100 * kept / max(1, sum(targets)):.1f}%), the last {max_len} of each user")
        new_data = self.inter_feat[torch.from_numpy(target)]
        new_dict = {
            self.item_list_length_field: torch.from_numpy(length),
            LOSS_START: torch.from_numpy(loss_start),
        }
        # gather every list field at once: [rows, max_len] indices into the sorted interactions
        offsets = np.arange(max_len)
        index = start[:, None] + offsets[None, :]
        valid = torch.from_numpy(offsets[None, :] < length[:, None])
        index = torch.from_numpy(np.minimum(index, len(self.inter_feat) - 1))
        for field in self.inter_feat:
            if field == self.uid_field:
                continue
            list_field = getattr(self, f"{field}_list_field")
            value = self.inter_feat[field][index]
            mask = valid.view(valid.shape + (1,) * (value.dim() - 2))
            new_dict[list_field] = torch.where(mask, value, torch.zeros((), dtype=value.dtype))
        self.set_field_property(LOSS_START, FeatureType.TOKEN, FeatureSource.INTERACTION, 1)
        new_data.update(Interaction(new_dict))
        self.inter_feat = new_data
