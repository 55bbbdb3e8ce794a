"""Cross-entropy over all items for many positions at once, in bounded memory.

The all-position mode scores every target of a batch against every item: ``N x n_items``
logits (an ML-1M batch of 128 windows of up to 200 items has about 21k targets x 3.4k items:
72M floats, 290 MB, and as much again for their gradient and for the softmax).
:func:`chunked_cross_entropy` walks ``N`` in chunks and, for each chunk, computes the loss and
at once the gradient of the loss with respect to the hidden states and the item table
(``(softmax - one_hot) / N``, two small matrix products). Backward then only scales the two
stored gradients.

Compared with recomputing each chunk's logits in backward (activation checkpointing), this does
one forward product and one softmax per chunk instead of two, and never builds the ``N x
n_items`` zero-filled gradient of NLL; ``python -m recbole_attn.bench loss`` measures the three
ways side by side.
"""

import torch
from torch.autograd.function import once_differentiable


class _ChunkedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk):
        n = hidden.size(0)
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = torch.zeros_like(weight) if need_weight else None
        total = hidden.new_zeros(())
        for start in range(0, n, chunk):
            h = hidden[start:start + chunk]
            t = targets[start:start + chunk]
            log_probs = torch.log_softmax(h @ weight.t(), dim=1)
            total -= log_probs.gather(1, t.unsqueeze(1)).sum()
            if not (need_hidden or need_weight):
                continue
            grad_logits = log_probs.exp_()  # softmax, in place
            grad_logits[torch.arange(t.size(0), device=t.device), t] -= 1.0
            grad_logits.div_(n)
            if need_hidden:
                grad_hidden[start:start + chunk] = grad_logits @ weight
            if need_weight:
                grad_weight.addmm_(grad_logits.t(), h)
        ctx.save_for_backward(grad_hidden, grad_weight)
        return total / n

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.saved_tensors
        return (grad_hidden * grad_output if grad_hidden is not None else None,
                grad_weight * grad_output if grad_weight is not None else None, None, None)


def default_max_logits(device):
    """Logits per chunk: 2^20 (4 MiB) on a CPU, where a chunk that stays in cache and is reused by
    the allocator is 2x faster than a 2^25 one (``bench loss --max-logits``); 2^25 (128 MiB) on a
    GPU, fewer and larger kernels (not yet timed against smaller chunks there)."""
    return 2 ** 20 if torch.device(device).type == "cpu" else 2 ** 25


def chunked_cross_entropy(hidden, weight, targets, max_logits=None):
    """Mean of ``F.cross_entropy(hidden @ weight.T, targets)`` with at most ``max_logits`` logits
    in memory at a time.

    Args:
        hidden (torch.FloatTensor): ``[N, H]`` hidden states.
        weight (torch.FloatTensor): ``[n_items, H]`` item table.
        targets (torch.LongTensor): ``[N]`` target item of each row.
        max_logits (int, optional): logits materialised at once (a chunk is ``max_logits //
            n_items`` rows); default :func:`default_max_logits` of the device.
    """
    if max_logits is None:
        max_logits = default_max_logits(hidden.device)
    chunk = max(1, max_logits // weight.size(0))
    return _ChunkedCrossEntropy.apply(hidden, weight, targets, chunk)
