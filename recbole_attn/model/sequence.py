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
