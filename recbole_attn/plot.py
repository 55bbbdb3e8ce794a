"""Figures of the papers, from recbole_attn checkpoints and training logs (matplotlib).

    python -m recbole_attn.plot attention --checkpoint saved/AWRSR-SASRec-....pth --out attention.png
    python -m recbole_attn.plot positional --checkpoint saved/FPARec-....pth --out positional.png
    python -m recbole_attn.plot pos-correlation --checkpoint saved/SASRec-....pth --out pos_corr.png
    python -m recbole_attn.plot ndcg-curve --checkpoint A.pth B.pth --labels SASRec,AWRSR --out ndcg.png
    python -m recbole_attn.plot training log/FPARec/FPARec-ml-100k-....log --out training.png

* ``attention``: attention weights on the last 15 positions of one test sequence, per layer and
  head: ``A`` before refinement and, for AWRSR models, the refined ``B`` (AWRSR Fig. 3);
* ``positional``: the learned positional attention ``softmax(R)`` of PARec/FPARec under the causal
  mask, each row divided by its maximum (FPARec Fig. 3);
* ``pos-correlation``: ``exp(P_i P_j^T / sqrt(d))`` of the positional embeddings ``P`` (future
  positions zeroed, rows divided by their maximum; FPARec Fig. 1 and appendix A);
* ``ndcg-curve``: mean NDCG@N (or Recall/Hit/MRR) over N for several checkpoints (AWRSR Fig. 2);
* ``training``: a validation metric and the global gradient norm per epoch (AWRSR Figs. 4-5),
  from RecBole log files (``log/<model>/*.log`` of a run with ``state: INFO``), checkpoints
  (gradient norms only) or the run files of :mod:`recbole_attn.compare`; it prints each validation
  curve's best epoch, late trend and epoch-to-epoch noise (``curve_summary``).

Every command writes ``--out`` (PNG) and a PDF next to it, of exactly ``--width`` x ``--height``
inches at ``--dpi`` (the PNG has ``width*dpi`` x ``height*dpi`` pixels).
"""

import argparse
import json
import math
import os
import re
import sys

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from recbole_attn.errors import ConfigError, RecboleAttnError

CMAP = "Blues"


# ----- figures ---------------------------------------------------------------------------
def new_figure(width, height, dpi):
    if width <= 0 or height <= 0 or dpi <= 0:
        raise ConfigError(f"--width, --height and --dpi must be positive, got {width}, {height}, {dpi}")
    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, out):
    """Write ``out`` (.png) and the same figure as .pdf; returns both paths. No tight bounding
    box: the PNG keeps exactly the requested size."""
    stem, ext = os.path.splitext(out)
    if ext.lower() not in (".png", ".pdf"):
        raise ConfigError(f"--out must end with .png or .pdf, got {out!r}")
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    paths = [stem + ".png", stem + ".pdf"]
    for path in paths:
        fig.savefig(path, dpi=fig.dpi)
    return paths


def heatmap(fig, ax, matrix, title, xlabel, ylabel, ticks=None, colorbar_label="weight"):
    """One matrix with its own colour bar; ``ticks = (indices, labels)`` for both axes."""
    image = ax.imshow(matrix, cmap=CMAP, vmin=0.0, aspect="equal", interpolation="nearest")
    ax.set_title(title, fontsize="small")
    ax.set_xlabel(xlabel, fontsize="small")
    ax.set_ylabel(ylabel, fontsize="small")
    if ticks is None:
        n = matrix.shape[-1]
        step = max(1, round(n / 5))
        ticks = (list(range(0, n, step)), [str(i + 1) for i in range(0, n, step)])  # 1-based positions
    ax.set_xticks(ticks[0], ticks[1], fontsize="x-small")
    ax.set_yticks(ticks[0], ticks[1], fontsize="x-small")
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label(colorbar_label, fontsize="x-small")
    bar.ax.tick_params(labelsize="x-small")
    return image


# ----- loading ---------------------------------------------------------------------------
def load_checkpoint(path):
    """``(config, model, dataset, train_data, valid_data, test_data)`` of a checkpoint, on CPU."""
    from recbole_attn.quick_start import load_data_and_model

    # plots never need a GPU; the model is rebuilt with its training configuration
    return load_data_and_model(path, config_dict={"use_gpu": False, "state": "ERROR"})


def attention_layers(model):
    """Attention sublayers that can keep their weights (``keep_attention``)."""
    modules = model.attention_modules() if hasattr(model, "attention_modules") else []
    modules = [m for m in modules if hasattr(m, "keep_attention")]
    if not modules:
        raise ConfigError(f"model [{type(model).__name__}] has no attention weights to show "
                          "(recbole_attn attention models only)")
    return modules


def sample_row(model, eval_data, dataset, user=None, min_length=15):
    """One test row: the given user's (external id), else the first row with at least
    ``min_length`` items (else the longest)."""
    uid_field = dataset.uid_field
    wanted = None
    if user is not None:
        try:
            wanted = int(dataset.token2id(uid_field, str(user)))
        except ValueError:
            raise ConfigError(f"user [{user}] is not in dataset [{dataset.dataset_name}]") from None
    best, best_len = None, -1
    for interaction, *_ in eval_data:
        lengths = interaction[model.ITEM_SEQ_LEN]
        if wanted is not None:
            hits = (interaction[uid_field] == wanted).nonzero().flatten()
            if len(hits):
                return interaction[hits[:1]]
            continue
        i = int(torch.argmax(lengths))
        if int(lengths[i]) > best_len:
            best, best_len = interaction[[i]], int(lengths[i])
        if best_len >= min_length:
            break
    if best is None:
        raise ConfigError(f"user [{user}] has no row in the test set")
    return best


@torch.no_grad()
def attention_weights(model, interaction):
    """Per layer ``{"A": [H, L, L], "B": [H, L, L] or None}`` for one row."""
    layers = attention_layers(model)
    model.eval()
    for layer in layers:
        layer.keep_attention = True
    try:
        model.full_sort_predict(interaction)
    finally:
        for layer in layers:
            layer.keep_attention = False
    result = []
    for layer in layers:
        kept = layer.last_attention
        result.append({"A": kept["A"][0].cpu().numpy(),
                       "B": None if kept["B"] is None else kept["B"][0].cpu().numpy()})
    return result


def causal_row_normalized(scores):
    """``exp(scores)`` with future positions zeroed, each row divided by its maximum
    (computed as ``exp(s_ij - max_{j<=i} s_ij)``, which never overflows)."""
    scores = np.asarray(scores, dtype=float)
    n = scores.shape[-1]
    causal = np.tril(np.ones((n, n), dtype=bool))
    masked = np.where(causal, scores, -np.inf)
    return np.where(causal, np.exp(masked - masked.max(axis=-1, keepdims=True)), 0.0)


# ----- commands --------------------------------------------------------------------------
def plot_attention(checkpoint, out, last=15, user=None, width=10.0, height=8.0, dpi=100):
    config, model, dataset, _, _, test_data = load_checkpoint(checkpoint)
    row = sample_row(model, test_data, dataset, user=user, min_length=last)
    layers = attention_weights(model, row)
    length = layers[0]["A"].shape[-1]
    m = min(last, length)
    n_heads = layers[0]["A"].shape[0]
    refined = layers[0]["B"] is not None
    panels = ["A", "B"] if refined else ["A"]
    fig = new_figure(width, height, dpi)
    axes = fig.subplots(len(layers), n_heads * len(panels), squeeze=False)
    # label positions relative to the most recent item (0), about 5 labels
    indices = list(range(m - 1, -1, -max(1, round(m / 5))))[::-1]
    ticks = (indices, [str(k - (m - 1)) for k in indices])
    for i, weights in enumerate(layers):
        for h in range(n_heads):
            for p, panel in enumerate(panels):
                heatmap(fig, axes[i, h * len(panels) + p], weights[panel][h, -m:, -m:],
                        f"layer {i + 1}, head {h + 1}: {panel}", "key position", "query position", ticks)
    uid = dataset.id2token(dataset.uid_field, int(row[dataset.uid_field][0]))
    legend = "A: before refinement, B: refined; " if refined else ""
    fig.suptitle(f"{config['model']} attention weights, last {m} positions of user {uid} ({config['dataset']})\n"
                 f"{legend}0 = most recent item", fontsize="medium")
    return save_figure(fig, out)


def plot_positional(checkpoint, out, last=None, width=10.0, height=8.0, dpi=100):
    from recbole_attn.layers.attention import masked_softmax

    config, model, _, _, _, _ = load_checkpoint(checkpoint)
    layers = attention_layers(model)
    if not all(hasattr(layer.scorer, "positional_matrix") for layer in layers):
        raise ConfigError(f"model [{config['model']}] has no positional attention (PARec/FPARec only)")
    n = model.max_seq_length
    m = min(last or n, n)
    positions = torch.arange(n)
    causal = torch.tril(torch.ones(n, n, dtype=torch.bool))[None]
    with torch.no_grad():
        matrices = [masked_softmax(layer.scorer.positional_matrix(positions), causal).numpy() for layer in layers]
    n_heads = matrices[0].shape[0]
    fig = new_figure(width, height, dpi)
    axes = fig.subplots(len(matrices), n_heads, squeeze=False)
    step = max(1, round(m / 5))
    ticks = (list(range(0, m, step)), [str(n - m + k + 1) for k in range(0, m, step)])  # 1-based slots
    for i, weights in enumerate(matrices):
        for h in range(n_heads):
            matrix = weights[h, -m:, -m:]
            matrix = matrix / matrix.max(axis=-1, keepdims=True)  # FPARec Fig. 3: rows scaled to max 1
            heatmap(fig, axes[i, h], matrix, f"layer {i + 1}, head {h + 1}", "key position j",
                    "query position i", ticks, colorbar_label="weight / row max")
    newest = "slot n is the most recent item" if config["pad_side"] == "left" else "slot 1 is the oldest item"
    shown = f"last {m} of {n} positions" if m < n else f"{n} positions"
    fig.suptitle(f"{config['model']} learned positional attention\n({shown}; {newest})", fontsize="medium")
    return save_figure(fig, out)


def plot_pos_correlation(checkpoint, out, width=6.0, height=5.0, dpi=100):
    config, model, _, _, _, _ = load_checkpoint(checkpoint)
    embedding = getattr(model, "position_embedding", None)
    if not isinstance(embedding, torch.nn.Embedding):
        raise ConfigError(f"model [{config['model']}] has no positional embedding (position_embedding)")
    p = embedding.weight.detach().cpu().numpy().astype(float)
    correlation = causal_row_normalized(p @ p.T / math.sqrt(p.shape[-1]))
    fig = new_figure(width, height, dpi)
    ax = fig.subplots()
    heatmap(fig, ax, correlation, "exp(P_i P_j^T / sqrt(d)), future positions masked",
            "position j", "position i", colorbar_label="correlation / row max")
    fig.suptitle(f"{config['model']} positional-embedding correlation\n({config['dataset']}, n={p.shape[0]})",
                 fontsize="medium")
    return save_figure(fig, out)


def plot_ndcg_curve(checkpoints, out, labels=None, metric="ndcg", max_n=50, split="test",
                    width=7.0, height=5.0, dpi=100):
    from recbole_attn.evaluation import mean_curve

    if labels and len(labels) != len(checkpoints):
        raise ConfigError(f"--labels has {len(labels)} names for {len(checkpoints)} checkpoints")
    fig = new_figure(width, height, dpi)
    ax = fig.subplots()
    dataset_name = None
    names = []
    for i, path in enumerate(checkpoints):
        config, model, _, _, valid_data, test_data = load_checkpoint(path)
        curve = mean_curve(model, test_data if split == "test" else valid_data, metric, max_n)
        name = labels[i] if labels else config["model"]
        if name in names:
            name = f"{name} ({os.path.splitext(os.path.basename(path))[0]})"
        names.append(name)
        ax.plot(np.arange(1, max_n + 1), curve, marker="o", markersize=3, label=name)
        dataset_name = config["dataset"]
    ax.set_xlabel("N (length of the recommendation list)")
    ax.set_ylabel(f"{metric.upper() if metric != 'recall' else 'Recall'}@N")
    ax.set_title(f"{metric.upper() if metric != 'recall' else 'Recall'}@N on the {split} set ({dataset_name})")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, out)


_GRAD = re.compile(r"epoch (\d+) grad_norm: ([-+0-9.eEnaif]+)")
_EVAL = re.compile(r"epoch (\d+) evaluating .*valid_score: ([-+0-9.eEnaif]+)")
_RESULT = re.compile(r"([a-zA-Z]+@\d+) : ([-+0-9.eEnaif]+)")


def parse_log(path):
    """``{"grad_norm": {epoch: x}, "valid": {epoch: {metric: x}}}`` from a RecBole log file
    (``valid result:`` blocks exist only when the run logged at level INFO, verbose)."""
    grad, valid = {}, {}
    pending = None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            match = _GRAD.search(line)
            if match:
                grad[int(match.group(1))] = float(match.group(2))
                continue
            match = _EVAL.search(line)
            if match:
                pending = int(match.group(1))
                continue
            if pending is not None and " : " in line:
                valid[pending] = {k.lower(): float(v) for k, v in _RESULT.findall(line)}
                pending = None
    return {"grad_norm": grad, "valid": valid}


def training_series(path, metric):
    """``(label, valid {epoch: value}, grad {epoch: value})`` of a .log, .pth or compare .json."""
    if path.endswith(".log"):
        parsed = parse_log(path)
        valid = {e: r[metric] for e, r in parsed["valid"].items() if metric in r}
        label = os.path.basename(os.path.dirname(os.path.abspath(path))) or os.path.basename(path)
        return label, valid, parsed["grad_norm"]
    if path.endswith(".json"):
        try:
            with open(path, encoding="utf-8") as f:
                record = json.load(f)
            label = f"{record['model']} seed {record['seed']}"
            same = record["valid_metric"].lower() == metric
            valid = {int(e): float(v) for e, v in record["valid_scores"]} if same else {}
            return label, valid, dict(enumerate(record["grad_norms"]))
        except (OSError, ValueError, KeyError):
            raise ConfigError(f"[{path}] is not a run file of recbole_attn.compare") from None
    from recbole_attn import checkpoint

    state = checkpoint.load(path)
    return f"{state['config']['model']} (checkpoint)", {}, dict(enumerate(state.get("grad_norms", [])))


def joined_series(parts, metric):
    """One curve from the logs of consecutive sittings of a resumed run (``a.log+b.log``): each
    sitting writes its own log from the epoch it resumed at; a later sitting's epoch replaces an
    earlier one's (an epoch evaluated but not checkpointed before an interruption is run again)."""
    label, valid, grad = None, {}, {}
    for path in parts:
        if not path.endswith(".log"):
            raise ConfigError(f"[{path}]: only RecBole .log files can be joined with '+'")
        part_label, part_valid, part_grad = training_series(path, metric)
        label = label or part_label
        valid.update(part_valid)
        grad.update(part_grad)
    return label, valid, grad


def load_training(inputs, labels=None, metric="ndcg@10"):
    """``[(label, valid, grad)]`` of each input, read once for both the plot and the summary.
    An input ``a.log+b.log`` joins the logs of a run resumed across sittings into one curve."""
    if labels and len(labels) != len(inputs):
        raise ConfigError(f"--labels has {len(labels)} names for {len(inputs)} inputs")
    parts = [[path] if os.path.isfile(path) or "+" not in path else path.split("+") for path in inputs]
    for path in (p for group in parts for p in group):
        if not os.path.isfile(path):
            raise ConfigError(f"[{path}] does not exist")
    series = [training_series(group[0], metric.lower()) if len(group) == 1 else joined_series(group, metric.lower())
              for group in parts]
    return [(labels[i] if labels else label, valid, grad) for i, (label, valid, grad) in enumerate(series)]


def plot_training(inputs, out, labels=None, metric="ndcg@10", width=10.0, height=4.0, dpi=100, series=None):
    """``series``: what ``load_training`` returned for these inputs (read here when not given)."""
    metric = metric.lower()
    series = series if series is not None else load_training(inputs, labels, metric)
    fig = new_figure(width, height, dpi)
    ax_valid, ax_grad = fig.subplots(1, 2)
    any_valid = any_grad = False
    for label, valid, grad in series:
        if valid:
            epochs = sorted(valid)
            ax_valid.plot(epochs, [valid[e] for e in epochs], marker="o", markersize=3, label=label)
            any_valid = True
        if grad:
            epochs = sorted(grad)
            ax_grad.plot(epochs, [grad[e] for e in epochs], marker="o", markersize=3, label=label)
            any_grad = True
    if not any_valid and not any_grad:
        raise ConfigError("no training curve found in the inputs (log files need state: INFO)")
    for ax, found, ylabel, title in ((ax_valid, any_valid, metric.upper(), f"validation {metric.upper()}"),
                                     (ax_grad, any_grad, "global gradient norm", "gradient norm (epoch mean)")):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if found:
            ax.legend(fontsize="x-small")
        else:
            ax.text(0.5, 0.5, "not in these inputs", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle("Training curves")
    return save_figure(fig, out)


def curve_summary(valid, every=50, tail=50):
    """Numbers that describe a validation curve ``{epoch: value}``: the best epoch, the value every
    ``every`` epochs, and over the last ``tail`` epochs the mean and largest change from one epoch
    to the next (its noise) and the least-squares slope per ``every`` epochs (its late trend)."""
    epochs = sorted(valid)
    values = np.array([valid[e] for e in epochs], dtype=float)
    best = epochs[int(np.nanargmax(values))]
    last = np.array(epochs[-tail:], dtype=float)
    last_values = values[-tail:]
    steps = np.abs(np.diff(last_values))
    slope = np.polyfit(last, last_values, 1)[0] * every if len(last) > 1 else float("nan")
    return {"first": epochs[0], "last": epochs[-1], "best_epoch": best, "best": valid[best],
            "sampled": [(e, valid[e]) for e in epochs if e % every == 0],
            "tail_first": int(last[0]), "tail_mean_change": float(steps.mean()) if steps.size else float("nan"),
            "tail_largest_change": float(steps.max()) if steps.size else float("nan"), "tail_slope": float(slope)}


def training_summaries(series, metric="ndcg@10", every=50, tail=50):
    """One line per series of ``load_training`` with a validation curve (see ``curve_summary``),
    for quoting a run's late trend and noise beside its plot."""
    metric = metric.lower()
    lines = []
    for label, valid, _ in series:
        if not any(math.isfinite(v) for v in valid.values()):
            continue
        s = curve_summary(valid, every=every, tail=tail)
        sampled = ", ".join(f"{e}: {v:.4f}" for e, v in s["sampled"])
        lines.append(f"{label}: {metric} over epochs {s['first']}-{s['last']}; best "
                     f"{s['best']:.4f} at epoch {s['best_epoch']}; every {every} epochs: {sampled}; epochs "
                     f"{s['tail_first']}-{s['last']}: epoch-to-epoch change mean {s['tail_mean_change']:.5f}, "
                     f"largest {s['tail_largest_change']:.4f}, trend {s['tail_slope']:+.4f} per {every} epochs")
    return lines


# ----- command line ----------------------------------------------------------------------
def _size_options(parser, width, height):
    parser.add_argument("--out", required=True, help="output .png (a .pdf is written next to it)")
    parser.add_argument("--width", type=float, default=width, help=f"inches (default {width})")
    parser.add_argument("--height", type=float, default=height, help=f"inches (default {height})")
    parser.add_argument("--dpi", type=int, default=100, help="dots per inch (default 100)")


def _labels(text):
    return [s.strip() for s in text.split(",")] if text else None


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m recbole_attn.plot", allow_abbrev=False,
                                     description="Plots of attention weights, positional attention and "
                                     "training from recbole_attn checkpoints and logs (PNG and PDF).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("attention", help="attention weights A (and refined B) of one test sequence (AWRSR Fig. 3)")
    p.add_argument("--checkpoint", required=True, help="a recbole_attn checkpoint (.pth)")
    p.add_argument("--last", type=int, default=15, help="positions shown (default 15)")
    p.add_argument("--user", default=None, help="user id (as in the dataset); default: a test user with a "
                   "sequence of at least --last items")
    _size_options(p, 10.0, 8.0)

    p = sub.add_parser("positional", help="learned positional attention of PARec/FPARec (FPARec Fig. 3)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--last", type=int, default=None, help="show only the last N positions (default: all)")
    _size_options(p, 10.0, 8.0)

    p = sub.add_parser("pos-correlation", help="positional-embedding correlation (FPARec Fig. 1)")
    p.add_argument("--checkpoint", required=True, help="a checkpoint of a model with position_embedding (SASRec)")
    _size_options(p, 6.0, 5.0)

    p = sub.add_parser("ndcg-curve", help="metric@N over N for several checkpoints (AWRSR Fig. 2)")
    p.add_argument("--checkpoint", required=True, nargs="+", help="one or more checkpoints")
    p.add_argument("--labels", default=None, help="comma-separated legend names (default: model names)")
    p.add_argument("--metric", default="ndcg", choices=["ndcg", "recall", "hit", "mrr"])
    p.add_argument("--max_n", type=int, default=50, help="largest N (default 50)")
    p.add_argument("--split", default="test", choices=["test", "valid"])
    _size_options(p, 7.0, 5.0)

    p = sub.add_parser("training", help="validation metric and gradient norm per epoch (AWRSR Figs. 4-5)")
    p.add_argument("inputs", nargs="+", help="RecBole .log files, checkpoints (.pth: gradient norm only) "
                   "or run files of recbole_attn.compare (.json); a.log+b.log joins the logs of a run "
                   "resumed across sittings into one curve")
    p.add_argument("--labels", default=None, help="comma-separated legend names")
    p.add_argument("--metric", default="ndcg@10", help="validation metric (default ndcg@10; AWRSR uses ndcg@5)")
    p.add_argument("--every", type=int, default=50, help="the printed summary samples the validation curve "
                   "every N epochs and gives its trend per N epochs (default 50)")
    p.add_argument("--tail", type=int, default=50, help="the printed summary's noise and trend use the last N "
                   "epochs (default 50)")
    _size_options(p, 10.0, 4.0)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    size = {"width": args.width, "height": args.height, "dpi": args.dpi}
    try:
        if args.command == "attention":
            paths = plot_attention(args.checkpoint, args.out, last=args.last, user=args.user, **size)
        elif args.command == "positional":
            paths = plot_positional(args.checkpoint, args.out, last=args.last, **size)
        elif args.command == "pos-correlation":
            paths = plot_pos_correlation(args.checkpoint, args.out, **size)
        elif args.command == "ndcg-curve":
            paths = plot_ndcg_curve(args.checkpoint, args.out, labels=_labels(args.labels), metric=args.metric,
                                    max_n=args.max_n, split=args.split, **size)
        else:
            if args.every < 1 or args.tail < 2:
                raise ConfigError("--every must be at least 1 and --tail at least 2")
            series = load_training(args.inputs, _labels(args.labels), args.metric)
            paths = plot_training(args.inputs, args.out, metric=args.metric, series=series, **size)
            for line in training_summaries(series, args.metric, args.every, args.tail):
                print(line)
    except RecboleAttnError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
