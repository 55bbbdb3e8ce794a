"""Layout helpers for right-padded (RecBole) and left-padded (official code) batches."""

import torch


def _roll_rows(seq, shift):
    width = seq.size(1)
    index = (torch.arange(width, device=seq.device).unsqueeze(0) + shift.unsqueeze(1)) % width
    if seq.dim() > 2:
        index = index.view(index.shape + (1,) * (seq.dim() - 2)).expand_as(seq)
    return seq.gather(1, index)


def right_to_left(seq, lengths):
    """``[B, W, ...]`` with items in slots ``0..len-1`` -> items in slots ``W-len..W-1``."""
    return _roll_rows(seq, lengths - seq.size(1))


def left_to_right(seq, lengths):
    """Inverse of :func:`right_to_left`."""
    return _roll_rows(seq, seq.size(1) - lengths)


def align(item_seq, item_seq_len, pad_side, max_seq_length, full_width=False):
    """Trim all-padding columns and arrange a right-padded batch in a model's layout.

    Returns ``(item_seq [B, W], positions [W])``, ``positions`` being the absolute slots of the
    columns in the ``max_seq_length`` layout: ``0..W-1`` for ``right`` (RecBole's layout) and
    ``n-W..n-1`` for ``left`` (newest item in slot ``n-1``, as the official PARec/FPARec/STOSA
    code). Computing on ``W`` columns gives the same values as on ``n``: the extra columns are
    padding that causal, key-masked attention never reads. Slots at or beyond ``item_seq_len``
    are set to 0 (padding) whatever they hold. ``full_width``: keep all ``max_seq_length`` columns
    (for masks that let padding be read, ``official_masks``, the number of padding slots matters)."""
    width = max_seq_length if full_width else max(int(item_seq_len.max()), 1)
    if width > item_seq.size(1):
        item_seq = torch.nn.functional.pad(item_seq, (0, width - item_seq.size(1)))
    cols = torch.arange(width, device=item_seq.device).unsqueeze(0)
    # whatever a padding slot holds, it is padding: the mask is built from item ids
    item_seq = item_seq[:, :width] * (cols < item_seq_len.unsqueeze(1))
    if pad_side == "left":
        item_seq = right_to_left(item_seq, item_seq_len)
        positions = torch.arange(max_seq_length - width, max_seq_length, device=item_seq.device)
    else:
        positions = torch.arange(width, device=item_seq.device)
    return item_seq, positions


def causal_padding_mask(item_seq):
    """Boolean ``[B, 1, W, W]``: query i may attend to key j iff ``j <= i`` and j is an item."""
    width = item_seq.size(1)
    causal = torch.tril(torch.ones(width, width, dtype=torch.bool, device=item_seq.device))
    return (item_seq != 0)[:, None, None, :] & causal


def position_targets(item_seq, item_seq_len, target_item, loss_start):
    """``(targets [B, W], loss_mask [B, W])`` of all-position rows (right-padded layout):
    position p predicts the item at p+1, the last valid position predicts ``target_item``;
    positions ``< loss_start`` and padding carry no loss."""
    width = max(int(item_seq_len.max()), 1)
    targets = torch.nn.functional.pad(item_seq[:, 1:width], (0, 1))
    targets = targets.scatter(1, (item_seq_len - 1).unsqueeze(1), target_item.unsqueeze(1))
    cols = torch.arange(width, device=item_seq.device).unsqueeze(0)
    loss_mask = (cols >= loss_start.unsqueeze(1)) & (cols < item_seq_len.unsqueeze(1))
    return targets, loss_mask


# most attention entries (rows x heads x W x W) materialised at once when scoring: RecBole sends
# eval_batch_size (4096) users per full-sort batch, 1.3 GB per attention matrix at W=200
SCORE_CHUNK_ELEMENTS = 2 ** 25


def forward_in_chunks(forward, item_seq, item_seq_len, n_heads, longest_first=True):
    """``forward(item_seq, item_seq_len)`` over row chunks of bounded attention size; tensor or
    tuple-of-tensors outputs are concatenated along the rows, in the input's row order.

    With ``longest_first`` the chunks take the rows longest first, so that each chunk is trimmed
    (:func:`align`) to its own longest sequence instead of the batch's, and holds more rows when
    they are short (``python -m recbole_attn.bench score`` measures both orders)."""
    width = max(int(item_seq_len.max()), 1)
    if len(item_seq_len) <= _chunk_rows(width, n_heads):
        return forward(item_seq, item_seq_len)
    if not longest_first:  # fixed chunks at the batch's width
        rows = _chunk_rows(width, n_heads)
        return _cat([forward(item_seq[i:i + rows], item_seq_len[i:i + rows])
                     for i in range(0, len(item_seq_len), rows)])
    order = torch.argsort(item_seq_len, descending=True)
    parts, start = [], 0
    while start < len(order):
        rows = order[start:start + _chunk_rows(max(int(item_seq_len[order[start]]), 1), n_heads)]
        parts.append(forward(item_seq[rows], item_seq_len[rows]))
        start += len(rows)
    restore = torch.empty_like(order)
    restore[order] = torch.arange(len(order), device=order.device)
    output = _cat(parts)
    if isinstance(output, tuple):
        return tuple(part[restore] for part in output)
    return output[restore]


def _chunk_rows(width, n_heads):
    return max(1, SCORE_CHUNK_ELEMENTS // (n_heads * width * width))


def _cat(parts):
    if isinstance(parts[0], tuple):
        return tuple(torch.cat(p) for p in zip(*parts))
    return torch.cat(parts)
