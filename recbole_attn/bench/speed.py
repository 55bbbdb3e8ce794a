"""Speed benchmark: RecBole's SASRec (prefix rows, ``augment``) against the plugin's SASRec
backbone and FPARec in the all-position mode (``seq2seq``), side by side in one process on the
same data, hidden size, sequence length and device.

For every model it prints seconds per training epoch, the wall time (training + validation)
until validation NDCG@10 first reaches a target, and the peak memory of the run. The target
defaults to the best validation NDCG@10 that RecBole's SASRec reaches within its epoch budget,
so the baseline reaches it by construction. Ratios are relative to the first model.

    python -m recbole_attn.bench speed                       # ml-100k, n=50, hidden 64
    python -m recbole_attn.bench speed --dataset ml-1m --max-len 200 --models SASRecAttn,FPARec
"""

import argparse
import copy
import ctypes
import gc
import json
import platform
import sys
import tempfile
import threading
import time

import psutil
import torch

from recbole_attn import registry
from recbole_attn.errors import RecboleAttnError

DEFAULT_MODELS = "SASRec,SASRecAttn,FPARec"


def release_freed_memory():
    """Return freed heap to the OS, so the next run's resident memory starts from what is live."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the numbers then include earlier runs' heap
        pass


class PeakMemory:
    """Peak resident memory of this process while the block runs (sampled every 20 ms) and its
    rise over the resident memory at the start (``growth``), or peak CUDA memory on a GPU."""

    def __init__(self, device):
        self.device = device
        self.peak = 0

    def __enter__(self):
        release_freed_memory()
        self._proc = psutil.Process()
        self._stop = threading.Event()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.start = self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)
        self.growth = self.peak - self.start
        self.cuda_peak = torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else None


def machine_description(device):
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = f"CPU: {cpu}, {psutil.cpu_count()} logical cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    if device.type == "cuda":
        text += f"; GPU: {torch.cuda.get_device_name(device)}"
    return text + f"; device used: {device.type}"


def bench_model(name, config_dict, max_epochs, target, metric="ndcg@10"):
    """Train ``name`` epoch by epoch; returns its timings and metrics."""
    from recbole_attn.quick_start import prepare

    start = time.perf_counter()
    config, model, train_data, valid_data, test_data = prepare(name, config_dict["dataset"], config_dict=config_dict,
                                                                 read_cmd_line=False, log=False)
    prep_seconds = time.perf_counter() - start
    trainer = registry.get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    trainer.eval_collector.data_collect(train_data)
    epoch_times, valid_scores, elapsed, elapsed_by_epoch = [], [], 0.0, []
    time_to_target, epochs_to_target = None, None
    best, best_state = -1.0, None
    for epoch in range(max_epochs):
        t0 = time.perf_counter()
        trainer._train_epoch(train_data, epoch)
        t1 = time.perf_counter()
        _, result = trainer._valid_epoch(valid_data)
        t2 = time.perf_counter()
        epoch_times.append(t1 - t0)
        elapsed += t2 - t0
        elapsed_by_epoch.append(elapsed)
        score = result[metric]
        valid_scores.append(score)
        if score > best:
            best, best_state = score, copy.deepcopy(model.state_dict())
        if target is not None and time_to_target is None and score >= target:
            time_to_target, epochs_to_target = elapsed, epoch + 1
            break
    model.load_state_dict(best_state)
    test = trainer.evaluate(test_data, load_best_model=False)
    return {
        "model": name,
        "train_mode": config["train_mode"],
        "train_rows": len(train_data._dataset),
        "data_seconds": prep_seconds,
        "epochs": len(epoch_times),
        "seconds_per_epoch": sum(epoch_times) / len(epoch_times),
        "valid_scores": valid_scores,
        "elapsed_by_epoch": elapsed_by_epoch,
        "best_valid": best,
        "time_to_target": time_to_target,
        "epochs_to_target": epochs_to_target,
        "test_ndcg@10": test["ndcg@10"],
        "test_hit@10": test["hit@10"],
    }


def ratio(base, value):
    return f"{base / value:.1f}x" if base and value else "-"


def format_table(rows, target, machine):
    base = rows[0]
    lines = [
        f"Machine: {machine}",
        f"Validation target: NDCG@10 >= {target:.4f}" if target is not None else "Validation target: none",
        "Memory growth: peak resident memory of the run (data preparation, training, evaluation) minus "
        "the resident memory when it started (peak CUDA memory allocated on a GPU).",
        "",
        "| model | train mode | train rows | s/epoch | epoch speed-up | time to target (s) | speed-up to target "
        "| memory growth (MiB) | best valid NDCG@10 | test NDCG@10 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ttt = f"{r['time_to_target']:.1f} ({r['epochs_to_target']} ep)" if r["time_to_target"] else \
            f"not reached in {r['epochs']} ep"
        lines.append(
            f"| {r['model']} | {r['train_mode']} | {r['train_rows']} | {r['seconds_per_epoch']:.2f} "
            f"| {ratio(base['seconds_per_epoch'], r['seconds_per_epoch'])} | {ttt} "
            f"| {ratio(base['time_to_target'], r['time_to_target'])} | {r['peak_mib']:.0f} "
            f"| {r['best_valid']:.4f} | {r['test_ndcg@10']:.4f} |"
        )
    return "\n".join(lines)


def build_parser():
    p = argparse.ArgumentParser(prog="python -m recbole_attn.bench speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--data_path", default=None, help="folder holding <dataset>/<dataset>.inter")
    p.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated; the first is the baseline")
    p.add_argument("--max-len", type=int, default=50, help="MAX_ITEM_LIST_LENGTH for every model")
    p.add_argument("--hidden-size", type=int, default=64)
    p.add_argument("--n-layers", type=int, default=2)
    p.add_argument("--n-heads", type=int, default=2)
    p.add_argument("--baseline-epochs", type=int, default=2, help="epochs of the first model (sets the target)")
    p.add_argument("--max-epochs", type=int, default=40, help="epoch cap for the other models")
    p.add_argument("--target", type=float, default=None, help="validation NDCG@10 target (default: baseline's best)")
    p.add_argument("--augment-batch-size", type=int, default=2048, help="RecBole's default train_batch_size")
    p.add_argument("--seq2seq-batch-size", type=int, default=128, help="windows per batch (official SASRec code)")
    p.add_argument("--device", choices=["auto", "cpu"], default="auto")
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--detect-anomaly", action="store_true",
                   help="train with torch's anomaly detection on, as every run does after RecBole 1.2.1's "
                        "models are imported without this plugin's registry (measures what that costs)")
    p.add_argument("--out", default=None, help="also write the results as JSON")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    try:
        for m in models:
            registry.get_model(m)
    except RecboleAttnError as e:
        print(f"error: {e}")
        return 2
    use_gpu = args.device == "auto" and torch.cuda.is_available()
    device = torch.device("cuda" if use_gpu else "cpu")
    machine = machine_description(device)
    if args.detect_anomaly:
        machine += "; torch anomaly detection on"
    print(machine, flush=True)
    # set for the runs and restored afterwards; the registry keeps it (it restores the caller's setting)
    try:
        with torch.autograd.set_detect_anomaly(args.detect_anomaly):
            return _run_models(args, models, device, machine)
    except RecboleAttnError as e:  # a missing dataset, a bad size for a model: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run_models(args, models, device, machine):
    use_gpu = device.type == "cuda"
    workdir = tempfile.mkdtemp(prefix="recbole-attn-speed-")
    rows, target = [], args.target
    for i, name in enumerate(models):
        plugin = registry.is_plugin_model(name)
        cfg = {
            "dataset": args.dataset, "MAX_ITEM_LIST_LENGTH": args.max_len, "hidden_size": args.hidden_size,
            "inner_size": 4 * args.hidden_size, "n_layers": args.n_layers, "n_heads": args.n_heads,
            "hidden_dropout_prob": 0.2, "attn_dropout_prob": 0.2, "hidden_act": "gelu",
            "train_mode": "seq2seq" if plugin else "augment", "pad_side": "right",
            "train_batch_size": args.seq2seq_batch_size if plugin else args.augment_batch_size,
            "use_gpu": use_gpu, "seed": args.seed, "checkpoint_dir": workdir, "state": "ERROR",
            "show_progress": False, "loss_type": "CE",
        }
        if args.data_path:
            cfg["data_path"] = args.data_path
        if name == "FPARec":
            cfg["fpa_rank"] = min(40, args.max_len)
        epochs = args.baseline_epochs if i == 0 else args.max_epochs
        print(f"[{i + 1}/{len(models)}] {name} ({cfg['train_mode']}), up to {epochs} epochs ...", flush=True)
        with PeakMemory(device) as mem:
            row = bench_model(name, cfg, epochs, target if i > 0 else None)
        row["peak_mib"] = (mem.cuda_peak if mem.cuda_peak is not None else mem.growth) / 2 ** 20
        row["process_peak_mib"] = mem.peak / 2 ** 20
        if i == 0 and target is None:
            target = row["best_valid"]
            row["time_to_target"] = _time_to_reach(row, target)
        rows.append(row)
        print(f"    {row['seconds_per_epoch']:.2f} s/epoch, best valid NDCG@10 {row['best_valid']:.4f}", flush=True)
    if rows and rows[0]["time_to_target"] is None and target is not None:
        rows[0]["time_to_target"] = _time_to_reach(rows[0], target)
    print()
    print(format_table(rows, target, machine))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"machine": machine, "target": target, "rows": rows, "args": vars(args)}, f, indent=1)
    return 0


def _time_to_reach(row, target):
    """Wall time (training + validation) until the first epoch whose validation reaches ``target``."""
    for epoch, score in enumerate(row["valid_scores"]):
        if score >= target:
            row["epochs_to_target"] = epoch + 1
            return row["elapsed_by_epoch"][epoch]
    return None


if __name__ == "__main__":
    raise SystemExit(main())
