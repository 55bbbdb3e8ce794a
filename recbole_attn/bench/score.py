"""Scoring benchmark: encoding a dataset's validation users for full-sort evaluation, with the
evaluation batches cut into chunks two ways, side by side on the same model and batches.

* ``input order``: fixed chunks of the batch's rows in RecBole's order, every chunk as wide as
  the batch's longest sequence;
* ``longest first``: the rows sorted by length, each chunk trimmed to its own longest sequence
  (:func:`recbole_attn.model.sequence.forward_in_chunks`, what the models evaluate with).

Chunks bound the attention matrices in memory (``rows x heads x W x W`` entries); a batch that
fits in one chunk is encoded in one pass either way. For each model it prints the seconds spent
encoding all validation batches (median of ``--repeats``), the forward calls, and the largest
difference of the outputs from ``input order``. The model is freshly initialised: the time does
not depend on its weights. The defaults are the FPARec paper's sizes (hidden 50, 2 blocks, 1 head).

    python -m recbole_attn.bench score --dataset ml-100k --max-len 200
    python -m recbole_attn.bench score --dataset ml-1m --max-len 500   # after quality converted it
"""

import argparse
import statistics
import sys
import time
import warnings

import torch

from recbole_attn import registry
from recbole_attn.bench.speed import machine_description
from recbole_attn.errors import RecboleAttnError
from recbole_attn.model.sequence import forward_in_chunks

ORDERS = (("input order", False), ("longest first", True))


def validation_batches(model_name, cfg):
    """The model (eval mode) and its validation batches' ``(item_seq, item_seq_len)``."""
    from recbole_attn.quick_start import prepare

    with warnings.catch_warnings():  # RecBole's pandas/torch deprecation warnings
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        config, model, _, valid_data, _ = prepare(model_name, cfg["dataset"], config_dict=cfg, read_cmd_line=False,
                                                  log=False, log_file=False)
    model.eval()
    batches = [(batch[0][model.ITEM_SEQ].to(model.device), batch[0][model.ITEM_SEQ_LEN].to(model.device))
               for batch in valid_data]
    return model, batches


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_order(model, batches, longest_first, repeats):
    """Median seconds to encode every batch, forward calls per pass, and the outputs."""
    calls = []

    def counted_forward(item_seq, item_seq_len):
        calls.append(1)
        return model.forward(item_seq, item_seq_len)

    times = []
    with torch.no_grad():
        for _ in range(repeats):
            calls.clear()
            _sync(model.device)
            start = time.perf_counter()
            outputs = [forward_in_chunks(counted_forward, seq, lengths, model.n_heads, longest_first)
                       for seq, lengths in batches]
            _sync(model.device)
            times.append(time.perf_counter() - start)
    return statistics.median(times), len(calls), outputs


def _as_tuple(output):
    return output if isinstance(output, tuple) else (output,)  # STOSA encodes a mean and a covariance


def _max_diff(outputs, reference):
    return max(float((a - b).abs().max()) for out, ref in zip(outputs, reference)
               for a, b in zip(_as_tuple(out), _as_tuple(ref)))


def format_table(rows):
    lines = ["| model | chunks | forward calls | seconds | speed vs input order | max diff from input order |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['order']} | {r['calls']} | {r['seconds']:.2f} | {r['speedup']:.2f}x "
                     f"| {r['max_diff']:.1e} |")
    return "\n".join(lines)


def build_parser():
    p = argparse.ArgumentParser(prog="python -m recbole_attn.bench score", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--data_path", "--data-path", dest="data_path", default=None,
                   help="folder holding <dataset>/<dataset>.inter (default: dataset_atomic/)")
    p.add_argument("--models", default="SASRecAttn,FPARec", help="comma-separated plugin models")
    p.add_argument("--max-len", type=int, default=200, help="MAX_ITEM_LIST_LENGTH")
    p.add_argument("--hidden-size", type=int, default=50)
    p.add_argument("--n-layers", type=int, default=2)
    p.add_argument("--n-heads", type=int, default=1)
    p.add_argument("--eval-batch-size", type=int, default=4096, help="users per evaluation batch (RecBole's default)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", choices=["auto", "cpu"], default="auto")
    p.add_argument("--seed", type=int, default=2020)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    for name in ("max_len", "hidden_size", "n_layers", "n_heads", "eval_batch_size", "repeats"):
        if getattr(args, name) < 1:
            print(f"error: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if not registry.is_plugin_model(m)]
    if not models or unknown:
        print(f"error: --models takes plugin models only ({', '.join(registry.PLUGIN_MODELS)}); "
              f"got {', '.join(unknown) or 'none'}", file=sys.stderr)
        return 2
    try:
        rows = _run_models(args, models)
    except RecboleAttnError as e:  # a missing dataset, a bad size for a model: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    print()
    print(format_table(rows))
    return 0


def _run_models(args, models):
    use_gpu = args.device == "auto" and torch.cuda.is_available()
    rows = []
    for name in models:
        cfg = {"dataset": args.dataset, "MAX_ITEM_LIST_LENGTH": args.max_len, "hidden_size": args.hidden_size,
               "inner_size": args.hidden_size, "n_layers": args.n_layers, "n_heads": args.n_heads,
               "eval_batch_size": args.eval_batch_size, "use_gpu": use_gpu, "seed": args.seed,
               "state": "ERROR", "show_progress": False}
        if args.data_path:
            cfg["data_path"] = args.data_path
        if name == "FPARec":
            cfg["fpa_rank"] = min(40, args.max_len)
        model, batches = validation_batches(name, cfg)
        if not rows:
            lengths = torch.cat([lengths for _, lengths in batches]).float()
            print(f"Machine: {machine_description(model.device)}")
            print(f"{args.dataset}: {len(lengths)} validation users in {len(batches)} "
                  f"batch{'es' if len(batches) > 1 else ''} of up to "
                  f"{args.eval_batch_size}; sequence length at n = {args.max_len}: mean {lengths.mean():.1f}, "
                  f"max {int(lengths.max())}; median of {args.repeats}")
        reference = None
        for order, longest_first in ORDERS:
            seconds, calls, outputs = time_order(model, batches, longest_first, args.repeats)
            if reference is None:
                reference, base_seconds = outputs, seconds
            rows.append({"model": name, "order": order, "calls": calls, "seconds": seconds,
                         "speedup": base_seconds / seconds, "max_diff": _max_diff(outputs, reference)})
        print(f"    {name} done", flush=True)
    return rows
