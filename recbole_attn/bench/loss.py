"""Loss benchmark: the all-position cross-entropy over all items, three ways, side by side.

* ``plain``: ``F.cross_entropy(hidden @ items.T, targets)``, all ``N x n_items`` logits at once;
* ``recompute``: chunks of at most ``--max-logits`` logits, each recomputed in backward
  (``torch.utils.checkpoint``), the usual way to bound the memory;
* ``chunked``: :func:`recbole_attn.layers.loss.chunked_cross_entropy`, same chunks, gradients
  computed in the forward pass (what the models train with).

For each it prints the time of one forward + backward (median of ``--repeats``), the peak
memory, the largest difference of the loss and gradients from ``plain``, and ratios to
``recompute``. The defaults are one ML-1M batch of the FPARec paper's settings: 128 windows
of up to 200 items, about 21k target positions, 3.4k items, hidden size 50.

    python -m recbole_attn.bench loss
    python -m recbole_attn.bench loss --positions 1000 --items 12102 --hidden 50   # Beauty, n=50
"""

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from recbole_attn.bench.speed import PeakMemory, machine_description
from recbole_attn.layers.loss import chunked_cross_entropy, default_max_logits

METHODS = ("plain", "recompute", "chunked")


def _ce_sum(hidden, weight, targets):
    return F.cross_entropy(hidden @ weight.t(), targets, reduction="sum")


def recompute_cross_entropy(hidden, weight, targets, max_logits):
    """Chunked cross-entropy through activation checkpointing: backward recomputes each chunk."""
    chunk = max(1, max_logits // weight.size(0))
    total = hidden.new_zeros(())
    for start in range(0, hidden.size(0), chunk):
        total = total + checkpoint(_ce_sum, hidden[start:start + chunk], weight, targets[start:start + chunk],
                                   use_reentrant=False)
    return total / hidden.size(0)


def loss_function(method, max_logits):
    if method == "plain":
        return lambda h, w, t: F.cross_entropy(h @ w.t(), t)
    if method == "recompute":
        return lambda h, w, t: recompute_cross_entropy(h, w, t, max_logits)
    return lambda h, w, t: chunked_cross_entropy(h, w, t, max_logits)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_method(method, hidden, weight, targets, max_logits, repeats):
    """Seconds of each forward + backward, peak memory, and the loss and gradients of the last one."""
    fn = loss_function(method, max_logits)
    device = hidden.device
    times = []
    with PeakMemory(device) as memory:
        for _ in range(repeats + 1):  # the first call warms up the allocator and kernels
            h = hidden.detach().requires_grad_()
            w = weight.detach().requires_grad_()
            _sync(device)
            start = time.perf_counter()
            loss = fn(h, w, targets)
            loss.backward()
            _sync(device)
            times.append(time.perf_counter() - start)
    peak = memory.cuda_peak if device.type == "cuda" else memory.growth
    return {"method": method, "seconds": statistics.median(times[1:]), "peak_bytes": peak,
            "loss": loss.detach(), "grads": (h.grad, w.grad)}


def format_table(results):
    reference = next(r for r in results if r["method"] == "plain")
    baseline = next(r for r in results if r["method"] == "recompute")
    lines = ["| method | ms per forward+backward | speed vs recompute | peak memory (MiB) | memory vs recompute "
             "| max diff from plain (loss, grads) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        diff = max(float((r["loss"] - reference["loss"]).abs()),
                   *(float((a - b).abs().max()) for a, b in zip(r["grads"], reference["grads"])))
        memory_ratio = f"{r['peak_bytes'] / baseline['peak_bytes']:.2f}x" if baseline["peak_bytes"] > 0 else "-"
        lines.append(f"| {r['method']} | {1000 * r['seconds']:.1f} | {baseline['seconds'] / r['seconds']:.2f}x "
                     f"| {r['peak_bytes'] / 2 ** 20:.0f} | {memory_ratio} | {diff:.1e} |")
    return "\n".join(lines)


def build_parser():
    p = argparse.ArgumentParser(prog="python -m recbole_attn.bench loss", description=__doc__.split("\n\n")[0])
    p.add_argument("--positions", type=int, default=21000, help="target positions in the batch (N)")
    p.add_argument("--items", type=int, default=3417, help="items scored, padding included")
    p.add_argument("--hidden", type=int, default=50, help="hidden size")
    p.add_argument("--max-logits", type=int, default=None,
                   help="logits in memory at once (default: the models' bound on the device, "
                        "2^20 on a CPU, 2^25 on a GPU)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", choices=["auto", "cpu"], default="auto")
    p.add_argument("--seed", type=int, default=2020)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    for name in ("positions", "items", "hidden", "max_logits", "repeats"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            print(f"error: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    use_cuda = args.device == "auto" and torch.cuda.is_available()
    device = torch.device("cuda" if use_cuda else "cpu")
    if args.max_logits is None:
        args.max_logits = default_max_logits(device)
    g = torch.Generator().manual_seed(args.seed)
    hidden = torch.randn(args.positions, args.hidden, generator=g).to(device)
    weight = (0.1 * torch.randn(args.items, args.hidden, generator=g)).to(device)
    targets = torch.randint(1, args.items, (args.positions,), generator=g).to(device)
    print(f"Machine: {machine_description(device)}")
    chunk = max(1, args.max_logits // args.items)
    chunks = -(-args.positions // chunk)
    print(f"N={args.positions} positions x {args.items} items, hidden {args.hidden}; chunks of {chunk} rows "
          f"({chunks} chunk{'s' if chunks > 1 else ''}); median of {args.repeats}")
    results = [bench_method(m, hidden, weight, targets, args.max_logits, args.repeats) for m in METHODS]
    print()
    print(format_table(results))
    return 0
