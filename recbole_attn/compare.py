"""Compare models over several seeds under one configuration, with significance tests.

    python -m recbole_attn.compare --models "SASRec,FPARec,AWRSR-SASRec[refine_mode=add]" \\
        --dataset ml-100k --seeds 3 --epochs=50

Every model is trained once per seed (``seed = first_seed + i``) with the same configuration:
the ``--config_files``, every ``--key=value`` override and, per model, the ``key=value`` pairs
between its brackets. The first model is the baseline. Each finished run is written to
``<out_dir>/runs/<model>-seed<seed>.json`` (test metrics, per-user test metrics, checkpoint
path, per-epoch validation score and gradient norm); running the same command again skips the
runs whose file exists and whose configuration is unchanged, so an interrupted comparison
resumes where it stopped. Then ``table.md`` and ``table.csv`` are written, one row per
(metric, model):

* median, mean and standard deviation (``ddof=1``) over seeds of RecBole's test result;
* the relative improvement of the mean over the baseline's mean, in percent;
* ``p_ttest``: paired t-test over seeds (``scipy.stats.ttest_rel`` on the per-seed values of
  the model and the baseline with the same seed; NaN with fewer than 2 seeds);
* ``p_wilcoxon``: Wilcoxon signed-rank test over users (``scipy.stats.wilcoxon``): each user's
  metric is averaged over the seeds both models finished, then model and baseline are paired
  by user. Users are the independent units; concatenating (user, seed) pairs would count every
  user once per seed and overstate significance.
"""

import argparse
import hashlib
import json
import math
import os
import re
import sys
import time
import warnings

import numpy as np
import yaml

from recbole_attn.checkpoint import plain_value
from recbole_attn.errors import ConfigError, RecboleAttnError

# the metrics of both papers (AWRSR: Recall@1/5/10, NDCG@5/10, MRR@10; FPARec: HR@10, NDCG@10)
DEFAULT_METRICS = ("recall@1", "recall@5", "recall@10", "ndcg@5", "ndcg@10", "hit@10", "mrr@10")
# options that change where results go or what is printed, not the results
UNSIGNED_KEYS = ("checkpoint_dir", "show_progress", "state")
TABLE_COLUMNS = ("metric", "model", "seeds", "median", "mean", "std", "improvement_pct", "p_ttest", "p_wilcoxon")


# ----- model specs -----------------------------------------------------------------------
def split_model_specs(text):
    """``"A,B[x=1,y=2],C"`` -> ``["A", "B[x=1,y=2]", "C"]`` (commas inside brackets kept)."""
    specs, depth, current = [], 0, ""
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise ConfigError(f"unbalanced ']' in --models {text!r}")
        if char == "," and depth == 0:
            specs.append(current.strip())
            current = ""
        else:
            current += char
    if depth != 0:
        raise ConfigError(f"unbalanced '[' in --models {text!r}")
    specs.append(current.strip())
    if not all(specs):
        raise ConfigError(f"empty model name in --models {text!r}")
    return specs


def parse_model_spec(spec):
    """``"AWRSR-SASRec[refine_mode=add]"`` -> ``("AWRSR-SASRec", {"refine_mode": "add"})``;
    values are converted as RecBole converts command-line values."""
    from recbole_attn.hyper import convert_values

    match = re.fullmatch(r"([^\[\]]+?)\s*(?:\[(.*)\])?", spec)
    if not match:
        raise ConfigError(f"model spec {spec!r} is not NAME or NAME[key=value,...]")
    name, inside = match.group(1), match.group(2)
    raw = {}
    for item in split_model_specs(inside) if inside else []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"model spec {spec!r}: expected key=value, got {item!r}")
        raw[key.strip()] = value.strip()
    return name, convert_values(raw)


# ----- one run ---------------------------------------------------------------------------
def run_signature(model, params, dataset, seed, overrides, config_files):
    """A hash of everything that determines a run's result."""
    contents = []
    for file in config_files:
        with open(file, encoding="utf-8") as f:
            contents.append(f.read())
    signed = {key: value for key, value in overrides.items() if key not in UNSIGNED_KEYS}
    text = json.dumps(plain_value({"model": model, "params": params, "dataset": dataset, "seed": seed,
                                   "overrides": signed, "config_files": contents}), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_file(out_dir, display, seed):
    slug = re.sub(r"[^A-Za-z0-9._=-]+", "_", display).strip("_")
    return os.path.join(out_dir, "runs", f"{slug}-seed{seed}.json")


def load_finished(path, signature, metrics):
    """The record of a finished run, or ``None`` when it must be (re)done."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None  # a damaged file: run again
    if record.get("signature") != signature:
        return None
    if any(m not in record.get("test_result", {}) or m not in record.get("per_user", {}) for m in metrics):
        return None
    return record


def write_json_atomic(record, path):
    """Write to a temporary file, then rename: an interrupted write never looks finished."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def train_run(model, dataset, config_dict, config_files, metrics):
    """Train and test one (model, seed); returns the run's record (without bookkeeping keys)."""
    from recbole_attn import registry
    from recbole_attn.evaluation import per_user_metrics
    from recbole_attn.quick_start import prepare

    config, net, train_data, valid_data, test_data = prepare(
        model, dataset, config_files or None, config_dict, read_cmd_line=False, log=False)
    trainer = registry.get_trainer(config["MODEL_TYPE"], config["model"])(config, net)
    valid_scores = []

    def progress(epoch, score):
        # one line an epoch: a comparison on a CPU runs for hours with RecBole's own logging off
        valid_scores.append([epoch, float(score)])
        best_epoch, best = max(valid_scores, key=lambda item: item[1])
        print(f"    epoch {epoch}: valid {config['valid_metric']} {float(score):.4f} "
              f"(best {best:.4f} at epoch {best_epoch})", flush=True)

    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=True, show_progress=config["show_progress"], verbose=False,
        callback_fn=progress)
    test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=config["show_progress"])
    per_user = per_user_metrics(net, test_data, metrics)  # net now holds the best checkpoint
    return {
        "test_result": plain_value(dict(test_result)),
        "best_valid_score": float(best_valid_score),
        "best_valid_result": plain_value(dict(best_valid_result or {})),
        "valid_metric": config["valid_metric"],
        "valid_scores": valid_scores,
        "grad_norms": [float(g) for g in getattr(trainer, "grad_norms", [])],
        "per_user": {name: values.tolist() for name, values in per_user.items()},
        "checkpoint": trainer.saved_model_file,
    }


def _check_config(model, dataset, config_dict, config_files, metrics):
    """Build one run's configuration without data: typos in options or model specs fail
    before any training, and the requested metrics must be computed by RecBole."""
    from recbole_attn.config import Config
    from recbole_attn.evaluation import parse_metric

    config = Config(model, dataset, config_files or None, config_dict, read_cmd_line=False)
    listed = config["metrics"] if isinstance(config["metrics"], list) else [config["metrics"]]
    computed = {m.lower() for m in listed}
    topk = config["topk"] if isinstance(config["topk"], list) else [config["topk"]]
    for name in metrics:
        metric, k = parse_metric(name)
        if metric not in computed or k not in topk:
            raise ConfigError(f"metric [{name}] is not computed by this configuration "
                              f"(metrics: {listed}, topk: {topk}); add it with --metrics=[...] --topk=[...]")


# ----- statistics ------------------------------------------------------------------------
def paired_t_test(values, baseline):
    """p-value of ``scipy.stats.ttest_rel(values, baseline)``; NaN with fewer than 2 pairs."""
    from scipy import stats

    if len(values) < 2:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # identical pairs: NaN, as scipy returns
        return float(stats.ttest_rel(values, baseline).pvalue)


def wilcoxon_test(values, baseline):
    """p-value of ``scipy.stats.wilcoxon(values, baseline)`` (two-sided); NaN when every
    difference is zero (scipy cannot rank them)."""
    from scipy import stats

    values, baseline = np.asarray(values, dtype=float), np.asarray(baseline, dtype=float)
    if len(values) == 0 or np.all(values == baseline):
        return math.nan
    return float(stats.wilcoxon(values, baseline).pvalue)


def per_user_mean(records, metric):
    """``(user_ids, values)``: each user's metric averaged over the given runs (users present in all)."""
    users = None
    for record in records:
        ids = np.asarray(record["per_user"]["user_id"])
        users = ids if users is None else np.intersect1d(users, ids)
    total = np.zeros(len(users))
    for record in records:
        ids = np.asarray(record["per_user"]["user_id"])
        index = {u: i for i, u in enumerate(ids.tolist())}
        values = np.asarray(record["per_user"][metric], dtype=float)
        total += values[[index[u] for u in users.tolist()]]
    return users, total / len(records)


def summarize(records, models, metrics, split="test"):
    """Table rows (dicts with :data:`TABLE_COLUMNS`) from ``records[(display, seed)]``.

    ``split="valid"`` summarises the best validation results instead (to choose settings
    without looking at the test set); per-user values exist for the test split only."""
    result_key = RESULT_KEYS[split]
    baseline = models[0]
    rows = []
    for metric in metrics:
        base_by_seed = {seed: r for (m, seed), r in records.items() if m == baseline}
        base_mean = np.mean([r[result_key][metric] for r in base_by_seed.values()])
        for display in models:
            by_seed = {seed: r for (m, seed), r in records.items() if m == display}
            values = np.array([by_seed[s][result_key][metric] for s in sorted(by_seed)], dtype=float)
            row = {"metric": metric, "model": display, "seeds": len(values), "median": float(np.median(values)),
                   "mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                   "improvement_pct": math.nan, "p_ttest": math.nan, "p_wilcoxon": math.nan}
            if display != baseline:
                row["improvement_pct"] = (float((values.mean() - base_mean) / base_mean * 100)
                                          if base_mean else math.nan)
                common = sorted(set(by_seed) & set(base_by_seed))
                row["p_ttest"] = paired_t_test([by_seed[s][result_key][metric] for s in common],
                                               [base_by_seed[s][result_key][metric] for s in common])
                if common and split == "test":
                    users, model_values = per_user_mean([by_seed[s] for s in common], metric)
                    base_users, base_values = per_user_mean([base_by_seed[s] for s in common], metric)
                    _, i, j = np.intersect1d(users, base_users, return_indices=True)
                    row["p_wilcoxon"] = wilcoxon_test(model_values[i], base_values[j])
            rows.append(row)
    return rows


RESULT_KEYS = {"test": "test_result", "valid": "best_valid_result"}
RESULT_NAMES = {"test": "test result", "valid": "best validation result"}


# ----- tables ----------------------------------------------------------------------------
def format_p_value(p):
    """A p-value for a table: empty when undefined (NaN), ``<0.001`` below that, else 3 decimals."""
    if p is None or math.isnan(p):
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def markdown_table(rows, title_lines=()):
    lines = list(title_lines)
    lines += ["| metric | model | seeds | median | mean ± std | vs baseline "
              "| p (t-test, seeds) | p (Wilcoxon, users) |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    baseline = rows[0]["model"] if rows else None
    for row in rows:
        if row["model"] == baseline:
            improvement = "baseline"
        elif math.isnan(row["improvement_pct"]):
            improvement = ""
        else:
            improvement = f"{row['improvement_pct']:+.1f}%"
        model = row["model"].replace("|", "\\|")
        spread = "" if math.isnan(row["std"]) else f" ± {row['std']:.4f}"  # no spread from one seed
        lines.append(f"| {row['metric']} | {model} | {row['seeds']} | {row['median']:.4f} | "
                     f"{row['mean']:.4f}{spread} | {improvement} | "
                     f"{format_p_value(row['p_ttest'])} | {format_p_value(row['p_wilcoxon'])} |")
    return "\n".join(lines) + "\n"


def write_tables(rows, out_dir, title_lines=(), suffix=""):
    """``table<suffix>.md`` and ``table<suffix>.csv`` in ``out_dir``; returns their paths."""
    import csv

    md_path = os.path.join(out_dir, f"table{suffix}.md")
    csv_path = os.path.join(out_dir, f"table{suffix}.csv")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(markdown_table(rows, title_lines))
    with open(csv_path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=TABLE_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: ("" if isinstance(v, float) and math.isnan(v) else v)
                             for key, v in row.items()})
    return md_path, csv_path


# ----- the comparison --------------------------------------------------------------------
def compare(model_specs, dataset, seeds, overrides=None, config_files=None, out_dir=None, metrics=DEFAULT_METRICS,
            split="test", finished_only=False):
    """Train every (model, seed) not finished yet, then write and return the table rows.

    Args:
        model_specs: ``["SASRec", "AWRSR-SASRec[refine_mode=add]", ...]``, baseline first.
        seeds: the seeds, e.g. ``[2020, 2021, 2022]``.
        overrides: configuration applied to every run.
        out_dir: default ``compare_results/<dataset>``.
        finished_only: train nothing; tabulate the runs finished so far (a comparison spread
            over several sittings).

    Returns:
        tuple: ``(rows, md_path, csv_path)``.
    """
    from recbole_attn import registry

    overrides = dict(overrides or {})
    config_files = [os.path.abspath(f) for f in (config_files or [])]
    for file in config_files:
        if not os.path.isfile(file):
            raise ConfigError(f"config file [{file}] does not exist")
    metrics = [m.lower() for m in metrics]
    out_dir = os.path.abspath(out_dir or os.path.join("compare_results", dataset))
    if len(set(model_specs)) != len(model_specs):
        raise ConfigError(f"a model is listed twice in --models: {', '.join(model_specs)}")
    reserved = {"model", "dataset", "seed"} & set(overrides)
    if reserved:
        raise ConfigError(f"--{reserved.pop()}=... cannot be fixed here; use --models, --dataset and --seeds")

    file_config = {}
    for file in config_files:
        with open(file, encoding="utf-8") as f:
            file_config.update(yaml.safe_load(f) or {})
    if "checkpoint_dir" not in overrides and "checkpoint_dir" not in file_config:
        overrides["checkpoint_dir"] = os.path.join(out_dir, "saved")

    runs = []  # (display, model, config_dict, path, signature, seed)
    paths = set()
    for spec in model_specs:
        name, params = parse_model_spec(spec)
        registry.get_model(name)
        name = registry.canonical_name(name) or name
        for seed in seeds:
            config_dict = dict(overrides, **params, seed=seed)
            if seed == seeds[0]:
                _check_config(name, dataset, config_dict, config_files, metrics)
            path = run_file(out_dir, spec, seed)
            if path in paths:
                raise ConfigError(f"two model specs map to the same result file {path}; rename one")
            paths.add(path)
            signature = run_signature(name, params, dataset, seed, overrides, config_files)
            runs.append((spec, name, config_dict, path, signature, seed))
    runs.sort(key=lambda run: seeds.index(run[5]))  # seed by seed: an early stop still compares all models

    records = {}
    total = len(runs)
    for i, (display, name, config_dict, path, signature, seed) in enumerate(runs, 1):
        record = load_finished(path, signature, metrics)
        if record is not None:
            print(f"[{i}/{total}] {display} seed={seed}: finished earlier, skipped", flush=True)
        elif finished_only:
            print(f"[{i}/{total}] {display} seed={seed}: not finished, left out", flush=True)
            continue
        else:
            print(f"[{i}/{total}] {display} seed={seed}: training ...", flush=True)
            started = time.time()
            record = train_run(name, dataset, config_dict, config_files, metrics)
            record.update(model=display, model_name=name, dataset=dataset, seed=seed, signature=signature,
                          config=plain_value(config_dict), seconds=round(time.time() - started, 1))
            write_json_atomic(record, path)
            shown = [m for m in ("ndcg@10", "recall@10", "mrr@10") if m in metrics] or metrics[:3]
            summary = ", ".join(f"{m}={record['test_result'][m]:.4f}" for m in shown)
            print(f"[{i}/{total}] {display} seed={seed}: done in {record['seconds']:.0f}s ({summary})", flush=True)
        records[(display, seed)] = record

    if finished_only:
        if not any(display == model_specs[0] for display, _ in records):
            raise ConfigError(f"the baseline {model_specs[0]} has no finished run in {out_dir}; nothing to compare")
        model_specs = [spec for spec in model_specs if any(display == spec for display, _ in records)]
    rows = summarize(records, model_specs, metrics, split)
    title = [f"# {dataset}: {len(model_specs)} model(s) x {len(seeds)} seed(s) ({', '.join(map(str, seeds))})", "",
             f"Baseline: {model_specs[0]}. Overrides: "
             f"{', '.join(f'{k}={v}' for k, v in overrides.items() if k not in UNSIGNED_KEYS) or 'none'}. "
             f"Median and mean ± std (ddof=1) over seeds of RecBole's {RESULT_NAMES[split]}; improvement of "
             "the mean over the baseline; p-values vs the baseline: paired t-test over seeds, Wilcoxon "
             "signed-rank over users (each user's value averaged over seeds; test split only)."
             + (" Finished runs only: a model's mean is over its own seeds, the p-values pair the seeds both "
                "models finished." if finished_only else ""), ""]
    suffix = "" if split == "test" else f"-{split}"
    md_path, csv_path = write_tables(rows, out_dir, title, suffix)
    return rows, md_path, csv_path


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m recbole_attn.compare",
        allow_abbrev=False,  # --seed=1 is a RecBole override, not an abbreviation of --seeds
        description="Train several models for several seeds under one configuration and write a "
        "comparison table (Markdown and CSV) with significance tests against the first model. "
        "Any other --key=value is a RecBole/recbole_attn configuration override applied to every run "
        "(e.g. --epochs=50 --MAX_ITEM_LIST_LENGTH=50). Running the same command again resumes.",
    )
    parser.add_argument("--models", required=True,
                        help="comma-separated, baseline first; per-model options in brackets, "
                        "e.g. 'SASRec,FPARec,AWRSR-SASRec[refine_mode=add]' (quote it in the shell)")
    parser.add_argument("--dataset", "-d", default="ml-100k", help="dataset name (default: ml-100k)")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds per model (default: 3)")
    parser.add_argument("--first_seed", type=int, default=2020,
                        help="seeds are first_seed, first_seed+1, ... (default: 2020, RecBole's seed)")
    parser.add_argument("--config_files", default=None, help="space-separated YAML files for every run")
    parser.add_argument("--out_dir", default=None, help="results folder (default: compare_results/<dataset>)")
    parser.add_argument("--split", choices=["test", "valid"], default="test",
                        help="summarise test results (default) or best validation results "
                        "(table-valid.md), e.g. to choose settings without the test set")
    parser.add_argument("--finished_only", action="store_true",
                        help="train nothing: tabulate the runs finished so far (a comparison spread over sittings)")
    parser.add_argument("--table_metrics", default=",".join(DEFAULT_METRICS),
                        help=f"comma-separated table metrics (default: {','.join(DEFAULT_METRICS)})")
    return parser


def main(argv=None):
    from recbole_attn.hyper import parse_overrides

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    try:
        stray = [a for a in unknown if not (a.startswith("--") and "=" in a)]
        if stray:
            raise ConfigError(f"unrecognized arguments: {' '.join(stray)} (overrides are written --key=value)")
        if args.seeds < 1:
            raise ConfigError(f"--seeds must be at least 1, got {args.seeds}")
        own = {a.dest for a in parser._actions}
        overrides = parse_overrides(unknown, reserved=own)
        seeds = [args.first_seed + i for i in range(args.seeds)]
        config_files = args.config_files.split() if args.config_files else None
        metrics = [m.strip() for m in args.table_metrics.split(",") if m.strip()]
        rows, md_path, csv_path = compare(split_model_specs(args.models), args.dataset, seeds, overrides,
                                          config_files, args.out_dir, metrics, args.split,
                                          args.finished_only)
    except RecboleAttnError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept; run the same command again to resume", file=sys.stderr)
        return 130
    with open(md_path, encoding="utf-8") as f:
        print("\n" + f.read())
    print(f"tables: {md_path}\n        {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
