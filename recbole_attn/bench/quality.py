"""Quality benchmark: train each model with the papers' settings and put our test metrics beside
the papers' tables.

    python -m recbole_attn.bench quality --dataset ml-1m            # all ML-1m rows, 3 seeds
    python -m recbole_attn.bench quality --dataset beauty --models FPARec,PARec --seeds 1
    python -m recbole_attn.bench quality --dataset ml-1m --dry-run  # the plan and the table so far
    python -m recbole_attn.bench quality --dataset ml-1m --jobs 16  # 16 single-threaded copies side by side
    python -m recbole_attn.bench quality --dataset ml-1m --tuned    # Table 3 with the settings of properties/tuned/

Rows are ``(paper table, row label, our model, config overrides)`` (:data:`ROWS`); the paper values
are in :mod:`recbole_attn.bench.anchors`. The settings a family of rows shares are in
``properties/paper/<family>-<dataset>.yaml`` (e.g. ``fparec-ml-1m.yaml``):

* FPARec Tables 3 and 4 and §4.7 (§4.1-4.2): full ranking against all items, leave-one-out,
  HR@10 and NDCG@10, the median of the runs (3 seeds). The paper's code trains a fixed 801 epochs;
  here training stops when validation NDCG@10 has not improved for 20 epochs, or after ``--epochs``.
* AWRSR Table 2, ML-1M (§3.1): Recall@1, Recall@5, NDCG@5; early stopping on validation NDCG@5
  with patience 20, at most ``--epochs`` epochs. AWRSR's Beauty is another dataset than ours
  (:data:`recbole_attn.bench.anchors.NOT_COMPARABLE`), so those rows are left out.

Every row whose paper trains on all positions of a sequence (SASRec's, FPARec's and STOSA's code)
uses the fast all-position mode ``train_mode: seq2seq``; the table's Mode column says which mode
each row used.

A run is one row's configuration with one seed. Finished runs (metrics, settings, time, device,
date) are kept in ``recbole_attn/bench/results/quality-<dataset>.json`` (``--results``), written
atomically after each run, and skipped when the command is started again, so a long reproduction
can be spread over several sittings (``--max-runs``); a run interrupted midway keeps its last
epoch's checkpoint under ``saved/quality/`` and continues from it. A run is identified by a hash of its
effective settings, so a changed setting is never mistaken for a finished run, and rows with the
same settings (e.g. FPARec in Tables 3 and 4) share their runs. The table is printed from
whatever has finished. Under it, each AWRSR refinement is compared with its own base model, and
FPARec with the rows its paper claims it beats (SASRec and PARec in Table 3, the fixed patterns
in Table 4, PARec at n = 200 in §4.7), by the paired t-test over the seeds both finished.

``--tuned`` puts each of Table 3's rows on the settings chosen for its model on validation
(``properties/tuned/<model>-<dataset>.yaml``, over the row's own, under ``--set``): the same
table and claims with every model at its own best setting. Runs whose settings equal runs already
finished (e.g. the paper's length where the choice kept it) are those runs.
"""

import argparse
import contextlib
import datetime
import hashlib
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from recbole_attn.bench import anchors
from recbole_attn.errors import ConfigError, DataError, RecboleAttnError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

_REPO_DIR = Path(__file__).resolve().parents[2]
RESULTS_DIR = Path(__file__).resolve().parent / "results"
RAW_DIR = _REPO_DIR.parent / "shared" / "data" / "raw"
RESULTS_FORMAT = 1
FIRST_SEED = 2020
DEFAULT_EPOCHS = 200

# datasets the command converts from the raw folder itself (dataset_atomic/README.md)
RAW_DATASETS = {
    "beauty": {"input": "beauty/Beauty.txt", "fmt": "seq"},
    "ml-1m": {"input": "ml-1m/ml-1m_sequences_from_dataset_pkl.txt", "fmt": "seq", "item_core": 5},
}

# settings of every run that do not change what is measured: not part of a run's identity
RUN_SETTINGS = {"show_progress": False, "metric_decimal_place": 6, "reproducibility": True}
NOT_EXPERIMENT_KEYS = frozenset([
    "data_path", "checkpoint_dir", "gpu_id", "use_gpu", "show_progress", "state", "eval_batch_size",
    "metric_decimal_place", "worker", "log_wandb", "reproducibility",
])

TABLE_HEADER = ("Table", "Row", "Our model", "Mode", "Metric", "Ours", "Paper", "Diff %", "Seeds")
PAIRED_HEADER = ("Row", "Base", "Metric", "Seeds", "Mean", "Base mean", "Diff %", "p (paired t-test)")


@dataclass
class Row:
    """One row of a paper table and the run that reproduces it.

    Args:
        table (str): a key of :data:`anchors.TABLES`.
        dataset (str): the dataset of the paper's values.
        label (str): the paper's row label (the key in :data:`anchors.ANCHORS`).
        model (str): our registry name.
        overrides (dict): settings of this row on top of ``properties/paper/<family>-<dataset>.yaml``.
        family (str): which ``properties/paper`` file the row shares.
        extra (bool): opt-in row, run only when ``--models`` names it.
    """

    table: str
    dataset: str
    label: str
    model: str
    overrides: dict = field(default_factory=dict)
    family: str = "fparec"
    extra: bool = False
    anchor_label: str = None

    @property
    def spec(self):
        if not self.overrides:
            return self.model
        return self.model + "[" + ", ".join(f"{k}={v}" for k, v in self.overrides.items()) + "]"

    @property
    def anchor(self):
        return anchors.anchor(self.table, self.dataset, self.anchor_label or self.label)


def _fparec_rows(dataset, fparec_len):
    n = {"MAX_ITEM_LIST_LENGTH": fparec_len} if fparec_len else {}
    return [
        Row("fparec-t3", dataset, "SASRec", "SASRecAttn"),
        Row("fparec-t3", dataset, "Linear Attention", "LinearAttnRec"),
        Row("fparec-t3", dataset, "Token Mixing", "TokenMixRec"),
        Row("fparec-t3", dataset, "PARec", "PARec"),
        Row("fparec-t3", dataset, "FPARec", "FPARec", dict(n)),
        # RecBole's own SASRec (prefix rows), for comparison with the fast mode: slow on ML-1m
        Row("fparec-t3", dataset, "SASRec (RecBole)", "SASRec", {"train_mode": "augment"}, extra=True,
            anchor_label="SASRec"),
    ]


ROWS = (
    # FPARec Table 3. ML-1m: n = 200 (official SASRec and PARec scripts), FPARec n = 500
    # (train_fpa.sh, Table 5). Beauty: n = 50 for every model (properties/paper/fparec-beauty.yaml).
    *_fparec_rows("ml-1m", 500),
    *_fparec_rows("beauty", None),
    # FPARec Table 4: FPARec's positional attention replaced by the fixed patterns of appendix B
    # (PARec with attn_pattern, at FPARec's n = 500); the first three rows repeat Table 3.
    Row("fparec-t4", "ml-1m", "FPARec", "FPARec", {"MAX_ITEM_LIST_LENGTH": 500}),
    Row("fparec-t4", "ml-1m", "PARec", "PARec"),
    Row("fparec-t4", "ml-1m", "SASRec", "SASRecAttn"),
    Row("fparec-t4", "ml-1m", "+Average", "PARec", {"attn_pattern": "average", "MAX_ITEM_LIST_LENGTH": 500}),
    Row("fparec-t4", "ml-1m", "+Linear Annealing", "PARec",
        {"attn_pattern": "linear", "MAX_ITEM_LIST_LENGTH": 500}),
    Row("fparec-t4", "ml-1m", "+Exponential Annealing", "PARec",
        {"attn_pattern": "exponential", "MAX_ITEM_LIST_LENGTH": 500}),
    # FPARec §4.7: both models with n = 200
    Row("fparec-s4.7", "ml-1m", "FPARec (n=200)", "FPARec"),
    Row("fparec-s4.7", "ml-1m", "PARec (n=200)", "PARec"),
    # AWRSR Table 2, ML-1M: refine_mode none is the backbone itself
    *[Row("awrsr-t2", "ml-1m", f"SASRec {name}", "AWRSR-SASRec", {"refine_mode": mode}, family="awrsr-sasrec")
      for name, mode in (("Original", "none"), ("M_simp", "simp"), ("M_value", "value"), ("M_add", "add"))],
    *[Row("awrsr-t2", "ml-1m", f"STOSA {name}", "AWRSR-STOSA", {"refine_mode": mode}, family="awrsr-stosa")
      for name, mode in (("Original", "none"), ("M_simp", "simp"), ("M_value", "value"), ("M_add", "add"),
                         ("M_stoc", "stoc"))],
)


# ----- settings ------------------------------------------------------------------------------


class _YamlLoader(yaml.SafeLoader):
    """YAML as RecBole reads it: ``1e-3`` is a float (plain YAML 1.1 reads it as a string)."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+][0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def paper_settings_file(family, dataset):
    from recbole_attn.config import properties_dir

    return properties_dir() / "paper" / f"{family}-{dataset}.yaml"


def _load_settings(path):
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=_YamlLoader) or {}


def load_paper_settings(family, dataset):
    path = paper_settings_file(family, dataset)
    if not path.is_file():
        raise ConfigError(f"paper settings file not found: {path}")
    return _load_settings(path)


# our model -> the stem of its settings chosen on validation, properties/tuned/<stem>-<dataset>.yaml
TUNED_STEMS = {"SASRecAttn": "sasrec", "LinearAttnRec": "linearattn", "TokenMixRec": "tokenmix",
               "PARec": "parec", "FPARec": "fparec"}
TUNED_TABLE = "fparec-t3"  # the rows those settings were chosen for


def tuned_settings_file(model, dataset):
    from recbole_attn.config import properties_dir

    stem = TUNED_STEMS.get(model)
    return None if stem is None else properties_dir() / "tuned" / f"{stem}-{dataset}.yaml"


def apply_tuned(rows, dataset):
    """``--tuned``: each row with the settings chosen on validation for ``dataset`` over its own
    overrides (so they show in the Our model column). Returns the rows and ``{model: file name}``
    of the files used; a row without such a file stays as the paper has it."""
    out, used = [], {}
    for row in rows:
        path = tuned_settings_file(row.model, dataset)
        if path is None or not path.is_file():
            out.append(row)
            continue
        used[row.model] = path.name
        out.append(replace(row, overrides={**row.overrides, **_load_settings(path)}))
    if not used:
        raise ConfigError(f"--tuned: no settings chosen on validation for {dataset} "
                          f"(properties/tuned/<model>-{dataset}.yaml)")
    return out, used


def parse_set(items):
    """``["key=value", ...]`` -> dict, values typed as in a RecBole YAML file."""
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            raise ConfigError(f"--set takes key=value, got {item!r}")
        if key == "seed":
            raise ConfigError("--set seed=... is not allowed: the seeds come from --seeds")
        try:
            out[key] = yaml.load(value, Loader=_YamlLoader)
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: cannot read the value {value!r}") from None
    return out


def experiment_config(row, epochs, user_set):
    """The settings that define a run of ``row`` (seed apart): paper file < row < ``--epochs`` < ``--set``."""
    from recbole_attn import registry

    cfg = dict(load_paper_settings(row.family, row.dataset))
    cfg.update(row.overrides)
    cfg["epochs"] = epochs
    cfg.update(user_set)
    if not registry.is_plugin_model(row.model):
        cfg["train_mode"] = "augment"  # RecBole's models train on prefix rows only
    return cfg


def signature(dataset, model, cfg):
    """Hash of what a run measures: dataset, model and every setting that can change the result."""
    key = {k: v for k, v in cfg.items() if k not in NOT_EXPERIMENT_KEYS}
    text = json.dumps({"dataset": dataset, "model": model, "config": key}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def model_status(name):
    """``(True, "")`` when ``name`` can be built, else ``(False, why)``."""
    from recbole_attn import registry

    try:
        registry.get_model(name)
    except Exception as e:  # a missing module, or one that is still being written
        return False, str(e).splitlines()[0] if str(e) else type(e).__name__
    return True, ""


# ----- data ----------------------------------------------------------------------------------


def ensure_dataset(dataset, data_path, raw_dir):
    """Make sure ``<data_path>/<dataset>/<dataset>.inter`` exists, converting beauty / ml-1m from
    the raw folder with the project's converter when it does not."""
    inter = Path(data_path) / dataset / f"{dataset}.inter"
    if inter.is_file():
        return None
    if dataset not in RAW_DATASETS:
        raise DataError(f"dataset [{dataset}] not found: {inter} does not exist "
                        f"(only {' and '.join(RAW_DATASETS)} are converted from the raw folder)")
    spec = RAW_DATASETS[dataset]
    source = Path(raw_dir) / spec["input"]
    if not Path(raw_dir).is_dir():
        raise DataError(f"raw data folder not found: {raw_dir}; it should hold {spec['input']} "
                        f"(or pass --raw DIR, or convert {dataset} yourself: see dataset_atomic/README.md)")
    if not source.is_file():
        raise DataError(f"raw file not found: {source}")
    from recbole_attn.data.convert import convert

    stats = convert(source, dataset, spec["fmt"], output_dir=data_path, item_core=spec.get("item_core"))
    _log(f"converted {source} -> {stats['path']}: {stats['users']:,} users, {stats['items']:,} items, "
         f"{stats['interactions']:,} interactions")
    return stats


# ----- results file --------------------------------------------------------------------------


def default_results_file(dataset):
    return RESULTS_DIR / f"quality-{dataset}.json"


def load_results(path):
    """Finished runs in ``path``: ``{(signature, seed): record}`` (empty when the file is absent)."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read the results file {path}: {e}") from None
    if not isinstance(data, dict) or data.get("format") != RESULTS_FORMAT or not isinstance(data.get("runs"), list):
        raise DataError(f"{path} is not a results file of this command (format {RESULTS_FORMAT})")
    return {(r["signature"], r["seed"]): r for r in data["runs"]}


@contextlib.contextmanager
def _locked(lock_path, block=True):
    """Hold an exclusive lock on ``lock_path``; yields False (without waiting) when ``block`` is False
    and another process holds it. Without ``fcntl`` (Windows) nothing is locked: run one command at
    a time there."""
    if fcntl is None:
        yield True
        return
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def save_record(path, record):
    """Add one finished run to ``path``: re-read, merge, write a temporary file, rename; under a lock,
    so commands running at the same time (each picks the runs no other one holds) keep every run."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.with_name(f".{path.name}.lock")):
        runs = load_results(path)
        runs[(record["signature"], record["seed"])] = record
        ordered = sorted(runs.values(), key=lambda r: (r["dataset"], r["model"], r["spec"], r["signature"], r["seed"]))
        text = json.dumps({"format": RESULTS_FORMAT, "runs": ordered}, indent=1, sort_keys=True) + "\n"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()


# ----- plan ----------------------------------------------------------------------------------


@dataclass
class PlannedRow:
    row: Row
    config: dict = None
    signature: str = None
    mode: str = None
    available: bool = True
    reason: str = ""


def select_rows(anchor_dataset, models=None, tables=None):
    """The rows for ``anchor_dataset``, filtered by ``--models`` (row label, our model name or
    spec, case-insensitive) and ``--tables``; opt-in rows only when ``--models`` names them."""
    wanted = {m.lower() for m in models or ()}
    rows = []
    for row in ROWS:
        if row.dataset != anchor_dataset or (tables and row.table not in tables):
            continue
        names = {row.label.lower(), row.model.lower(), row.spec.lower()}
        if wanted and not names & wanted:
            continue
        if row.extra and not wanted:
            continue
        rows.append(row)
    return rows


def plan_rows(rows, dataset, epochs, user_set):
    planned = []
    status = {}
    for row in rows:
        if row.model not in status:
            status[row.model] = model_status(row.model)
        ok, why = status[row.model]
        cfg = experiment_config(row, epochs, user_set)
        planned.append(PlannedRow(row, cfg, signature(dataset, row.model, cfg), cfg.get("train_mode", "augment"),
                                  ok, why))
    return planned


def plan_runs(planned, seeds):
    """Unique runs ``[(PlannedRow, seed)]``, seed by seed (every row gets its first seed first)."""
    runs, seen = [], set()
    for seed in seeds:
        for p in planned:
            if p.available and (p.signature, seed) not in seen:
                seen.add((p.signature, seed))
                runs.append((p, seed))
    return runs


def check_configs(planned, dataset, data_path):
    """Build each pending configuration once (no data, no training) so a bad setting stops the
    command before hours of training rather than in the middle."""
    from recbole_attn.config import Config

    checked = set()
    for p in planned:
        if not p.available or p.signature in checked:
            continue
        checked.add(p.signature)
        cfg = {**RUN_SETTINGS, **p.config, "data_path": str(data_path)}
        try:
            Config(model=p.row.model, dataset=dataset, config_dict=cfg, read_cmd_line=False)
        except RecboleAttnError as e:
            raise ConfigError(f"{p.row.spec} ({anchors.TABLES[p.row.table][1]}, {p.row.label}): {e}") from None


# ----- one run -------------------------------------------------------------------------------


def _device_name(cfg):
    import torch

    if cfg.get("use_gpu") is not False and torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return f"cpu ({platform.machine()}, {os.cpu_count()} cores)"


def _commit(repo=_REPO_DIR):
    """HEAD of the checkout the code runs from, with ``+uncommitted`` when tracked code differs from
    it (the results files, which the command itself writes, aside); None outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                  ":(exclude)recbole_attn/bench/results"],
                                 cwd=repo, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    if not head:
        return None
    return head + ("+uncommitted" if changed else "")


def _plain(result):
    return {k: float(v) for k, v in dict(result or {}).items()}


def run_folder(p, seed, dataset):
    """Where a run keeps its checkpoints while it trains (relative to the working directory, like
    RecBole's ``saved/``); removed once the run's record is saved."""
    return Path("saved") / "quality" / dataset / f"{p.signature}-seed{seed}"


def last_checkpoint(folder):
    """The newest ``*-last.pth`` of an interrupted run in ``folder``, or None."""
    found = sorted(Path(folder).glob("*-last.pth"), key=lambda f: f.stat().st_mtime)
    return str(found[-1]) if found else None


def run_one(p, seed, dataset, data_path):
    """Train and test one run; returns its record for the results file.

    The run writes a resumable checkpoint after every epoch into :func:`run_folder`; a run that was
    interrupted (Ctrl-C, end of a sitting) continues from there when the command is started again.
    """
    from recbole_attn.quick_start import run_recbole_attn
    import recbole
    import torch

    checkpoint_dir = run_folder(p, seed, dataset)
    resume = last_checkpoint(checkpoint_dir)
    if resume:
        _log(f"    resuming from {resume}")
    cfg = {**RUN_SETTINGS, **p.config, "seed": seed, "data_path": str(data_path),
           "checkpoint_dir": str(checkpoint_dir)}
    start = time.time()
    result = run_recbole_attn(p.row.model, dataset, config_dict=cfg, saved=True, resume=resume,
                              read_cmd_line=False, verbose=True)
    wall = time.time() - start
    return {
        "dataset": dataset,
        "model": p.row.model,
        "spec": p.row.spec,
        "overrides": json.loads(json.dumps(p.config, default=str)),
        "signature": p.signature,
        "seed": seed,
        "train_mode": p.mode,
        "epochs_run": len(result.get("grad_norms") or []),
        "best_epoch": result.get("best_epoch"),
        "best_valid_score": float(result["best_valid_score"]),
        "best_valid_result": _plain(result["best_valid_result"]),
        "test_result": _plain(result["test_result"]),
        "wall_time_s": round(wall, 1),  # of the last sitting only when resumed
        "resumed": bool(resume),
        # training and validation over every sitting; None when resumed from an older checkpoint
        "fit_time_s": None if result.get("fit_time_s") is None else round(result["fit_time_s"], 1),
        "device": _device_name(cfg),
        # CPU results depend on it at the float level (the order of each sum), so a run repeats to
        # the last digit only at the same thread count
        "threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": _commit(),
        "versions": {"recbole": recbole.__version__, "torch": torch.__version__,
                     "python": platform.python_version()},
    }


# ----- table ---------------------------------------------------------------------------------


def _fmt(value):
    return f"{value:.4f}"


def table_rows(planned, records, seeds):
    """One line per (paper row, metric): our median over finished seeds, the paper's value, the
    difference in percent, seeds finished / requested, and the training mode."""
    lines = []
    for p in planned:
        _, caption, metrics = anchors.TABLES[p.row.table]
        paper = p.row.anchor or {}
        done = [records[(p.signature, s)] for s in seeds if (p.signature, s) in records]
        for metric in metrics:
            ref = paper.get(metric)
            ours, diff = "", ""
            if not p.available:
                ours = "model not available"
            elif not done:
                ours = "pending"
            else:
                values = [r["test_result"][metric] for r in done if metric in r["test_result"]]
                if values:
                    med = statistics.median(values)
                    ours = _fmt(med)
                    if ref:
                        diff = f"{(med - ref) / ref * 100:+.1f}"
                else:
                    ours = f"no {metric} in results"
            lines.append((caption, p.row.label, p.row.spec, p.mode, anchors.METRIC_NAMES.get(metric, metric),
                          ours, _fmt(ref) if ref is not None else "", diff, f"{len(done)}/{len(seeds)}"))
    return lines


def compared_pairs(planned):
    """``(table, row, base row)`` of every comparison the table tests: each AWRSR refinement against
    its own base model (the "<base> Original" row) and the orderings the papers claim
    (:data:`anchors.CLAIMS`, e.g. FPARec above SASRec and PARec in FPARec's Table 3)."""
    by_label = {}
    for p in planned:
        by_label.setdefault(p.row.table, {})[p.row.label] = p
    pairs = []
    for label, p in by_label.get("awrsr-t2", {}).items():
        base = by_label["awrsr-t2"].get(label.split()[0] + " Original")
        if base is not None and base is not p:
            pairs.append(("awrsr-t2", p, base))
    for table, (_, claims) in anchors.CLAIMS.items():
        for label, base_label in claims:
            rows = by_label.get(table, {})
            if label in rows and base_label in rows:
                pairs.append((table, rows[label], rows[base_label]))
    return pairs


def paired_rows(planned, records, seeds):
    """Each pair of :func:`compared_pairs` on the seeds both finished: the means, the difference in
    percent and the p-value of the comparison tool's paired t-test over seeds (empty under two
    seeds)."""
    from recbole_attn.compare import format_p_value, paired_t_test

    lines = []
    for table, p, base in compared_pairs(planned):
        common = [s for s in seeds if (p.signature, s) in records and (base.signature, s) in records]
        if not common:
            continue
        for metric in anchors.TABLES[table][2]:
            ours = [records[(p.signature, s)]["test_result"][metric] for s in common]
            theirs = [records[(base.signature, s)]["test_result"][metric] for s in common]
            mean, base_mean = statistics.fmean(ours), statistics.fmean(theirs)
            diff = f"{(mean - base_mean) / base_mean * 100:+.1f}" if base_mean else ""
            lines.append((p.row.label, base.row.label, anchors.METRIC_NAMES.get(metric, metric), str(len(common)),
                          _fmt(mean), _fmt(base_mean), diff, format_p_value(paired_t_test(ours, theirs))))
    return lines


def markdown_table(lines, header=TABLE_HEADER):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in line) + " |" for line in lines]
    return "\n".join(out)


def sampling_notes(planned, records, seeds, anchor_dataset):
    """Where a paper's values come from a random sample of users, how much that sample alone moves
    HR@10: the binomial standard error sqrt(p (1 - p) / users) at our median p, in percent of p."""
    notes = []
    for table, by_dataset in anchors.EVAL_USER_SAMPLE.items():
        users = by_dataset.get(anchor_dataset)
        if not users or not any(p.row.table == table for p in planned):
            continue
        relative = []
        for p in (p for p in planned if p.row.table == table):
            values = [records[(p.signature, s)]["test_result"].get("hit@10") for s in seeds
                      if (p.signature, s) in records]
            values = [v for v in values if v]
            if values:
                hr = statistics.median(values)
                relative.append(math.sqrt(hr * (1 - hr) / users) / hr * 100)
        note = (f"{anchors.TABLES[table][1]}'s {anchor_dataset} values: the paper's code scores a random "
                f"{users:,} users per evaluation (util.py, exact_evaluate with sample_user_num={users}; the paper "
                "does not say so), where we score every user")
        if relative:
            spread = f"{min(relative):.1f}" if round(min(relative), 1) == round(max(relative), 1) \
                else f"{min(relative):.1f}-{max(relative):.1f}"
            note += (f"; at our HR@10 that sample alone has a standard error of {spread}% of the value "
                     f"(binomial, sqrt(p(1-p)/{users})/p): the paper's values carry that noise on top of "
                     "the seeds'")
        notes.append(note + ".")
    return notes


def stopping_label(configs, metric, epochs):
    """How the runs of ``configs`` stop, in the words of the notes: their patience (RecBole's
    ``stopping_step``), or none where it is at least the epoch cap."""
    patience = sorted({c.get("stopping_step", 10) for c in configs})
    if all(steps >= epochs for steps in patience):
        return f"no early stopping within the {epochs}-epoch cap, testing the epoch of best validation {metric}"
    return f"early stopping on validation {metric} with patience " + " / ".join(map(str, patience))


def init_label(config):
    """How a run initialises its weights, in the words of the notes."""
    init = ("Glorot-uniform" if config.get("weight_init") == "glorot"
            else f"N(0, {config.get('initializer_range', 0.02)})")
    return init + (", sqrt(d) item-embedding scale" if config.get("embedding_scale") else "")


def render(planned, records, seeds, dataset, anchor_dataset, epochs, results_path, user_set=None, tuned=None):
    title = f"## Quality on {dataset}"
    if anchor_dataset != dataset:
        title += f" (beside the papers' {anchor_dataset} values)"
    parts = [title, "", markdown_table(table_rows(planned, records, seeds)), ""]
    paired = paired_rows(planned, records, seeds)
    if paired:
        tested = {table for table, _, _ in compared_pairs(planned)}
        what = (["AWRSR's refinements against their base model"] if "awrsr-t2" in tested else []) + \
            [claim for table, (claim, _) in anchors.CLAIMS.items() if table in tested]
        parts += ["Paired comparisons on the seeds both finished (paired t-test over seeds, as "
                  f"`python -m recbole_attn.compare`): {'; '.join(what)}:", "",
                  markdown_table(paired, PAIRED_HEADER), ""]
    parts.append("Notes:")
    files = sorted({paper_settings_file(p.row.family, p.row.dataset).name for p in planned})
    notes = [
        "Ours: median over the finished seeds of the test value at the best validation epoch; "
        "Diff % = (ours - paper) / paper * 100; Seeds: finished / requested "
        f"({', '.join(map(str, seeds))}).",
        "Mode: seq2seq = the fast all-position training (loss at every position of a user's window), "
        "the objective of SASRec's, FPARec's and STOSA's code; augment = RecBole's prefix rows "
        "(last position only).",
        f"Settings: properties/paper/{{{', '.join(files)}}} plus each row's overrides (Our model column); "
        f"full ranking against all items, leave-one-out; epoch cap {epochs}.",
    ]
    if tuned:
        plain = sorted({p.row.spec for p in planned if p.row.model not in tuned})
        notes.append("--tuned: each row over the settings chosen on validation for its model (Our model column): "
                     f"properties/tuned/{{{', '.join(sorted(set(tuned.values())))}}}"
                     + (f"; none for {', '.join(plain)}, which runs as the paper's row" if plain else "") + ".")
    if user_set:
        notes.append("--set for every run (over the Our model column): "
                     + ", ".join(f"{k}={v}" for k, v in user_set.items()) + ".")
    tables = {p.row.table for p in planned}
    fparec_tables = {"fparec-t3", "fparec-t4", "fparec-s4.7"}
    if tables & fparec_tables:
        fparec_configs = [p.config for p in planned if p.row.table in fparec_tables]
        betas = sorted({str(tuple(c.get("adam_betas") or (0.9, 0.999))) for c in fparec_configs})
        inits = sorted({init_label(c) for c in fparec_configs})
        notes.append("FPARec rows: " + stopping_label(fparec_configs, "NDCG@10", epochs) + " (the paper's code "
                     "trains a fixed 801 epochs and has no early stopping); Adam betas " + " / ".join(betas)
                     + " (official code: (0.9, 0.98)); initialisation " + " / ".join(inits)
                     + " (official code: Glorot-uniform, sqrt(d) item-embedding scale).")
    if "fparec-t4" in tables:
        notes.append("FPARec Table 4: the fixed patterns (appendix B) replace FPARec's positional attention, "
                     "so they run as PARec with attn_pattern at FPARec's n = 500.")
    if "awrsr-t2" in tables:
        stopping = stopping_label([p.config for p in planned if p.row.table == "awrsr-t2"], "NDCG@5", epochs)
        stopping += " (§3.1)" if stopping.endswith("patience 20") else " (§3.1: patience 20)"
        notes.append("AWRSR rows: " + stopping + ", one layer "
                     "(§3.3); the paper does not report its tuned ML-1M settings (see the files' comments).")
    notes.extend(sampling_notes(planned, records, seeds, anchor_dataset))
    for by_dataset in anchors.NOT_COMPARABLE.values():
        notes.extend(by_dataset.values())
    unavailable = sorted({(p.row.model, p.reason) for p in planned if not p.available})
    for model, why in unavailable:
        notes.append(f"model not available: {model} ({why}); its rows are skipped.")
    notes.append(f"Results file: {_show_path(results_path)}")
    parts += [f"- {n}" for n in notes]
    runs = run_lines(planned, records, seeds)
    if runs:
        parts += ["", "Finished runs (the key lines of each run's log):", ""] + runs
    return "\n".join(parts) + "\n"


def run_lines(planned, records, seeds):
    """One line per finished run: epochs trained, best epoch, validation and test metrics, time, device."""
    lines, seen = [], set()
    for p in planned:
        metrics = anchors.TABLES[p.row.table][2]
        for seed in seeds:
            key = (p.signature, seed)
            if key in seen or key not in records:
                continue
            seen.add(key)
            r = records[key]
            best = "?" if r.get("best_epoch") is None else r["best_epoch"]  # "?": resumed from an older checkpoint
            sitting = ""
            if r.get("resumed"):
                sitting = " (the last sitting; resumed)"
                if r.get("fit_time_s") is not None:
                    sitting = f" in the last sitting ({r['fit_time_s']:.0f} s of training in all sittings)"
            threads = f", {r['threads']} thread{'s' if r['threads'] != 1 else ''}" if r.get("threads") else ""
            valid = ", ".join(f"{m} {r['best_valid_result'][m]:.4f}" for m in metrics if m in r["best_valid_result"])
            test = ", ".join(f"{m} {r['test_result'][m]:.4f}" for m in metrics if m in r["test_result"])
            lines.append(f"- {r['spec']} [{r['train_mode']}] seed {seed}: {r['epochs_run']} epochs, best epoch {best}; "
                         f"valid {valid}; test {test}; {r['wall_time_s']:.0f} s{sitting} on {r['device']}{threads}, {r['date'][:10]}")
    return lines


def describe_plan(runs, records, planned):
    lines = []
    for p, seed in runs:
        state = "done   " if (p.signature, seed) in records else "pending"
        used = "; ".join(sorted({f"{anchors.TABLES[q.row.table][1]}: {q.row.label}"
                                 for q in planned if q.signature == p.signature}))
        lines.append(f"  {state}  {p.row.spec} [{p.mode}] seed {seed} ({p.signature})  <- {used}")
    for p in planned:
        if not p.available:
            lines.append(f"  not available  {p.row.spec}  <- {anchors.TABLES[p.row.table][1]}: {p.row.label}")
    return lines


# ----- command -------------------------------------------------------------------------------


def _show_path(path):
    """``path`` relative to the working directory when it lies inside it."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _log(message):
    print(f"[quality] {message}", file=sys.stderr, flush=True)


def _split(values):
    """Comma-separated, repeatable option values; commas inside a spec's [...] do not split."""
    return [v.strip() for value in values or () for v in re.split(r",(?![^\[]*\])", value) if v.strip()]


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m recbole_attn.bench quality",
        description="Train the models with the papers' settings and print our test metrics beside the "
                    "papers' values (FPARec Tables 3-4, AWRSR Table 2).",
    )
    p.add_argument("--dataset", required=True, help="beauty or ml-1m (converted from the raw folder if needed), "
                   "or any converted dataset with --data_path and --anchors-from")
    p.add_argument("--models", action="append", default=None,
                   help="only these rows: row label, model name or spec (comma-separated, repeatable)")
    p.add_argument("--tables", action="append", default=None,
                   help=f"only these paper tables ({', '.join(anchors.TABLES)}; comma-separated)")
    p.add_argument("--seeds", type=int, default=3, help="runs per row (seeds 2020, 2021, ...; default 3)")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                   help=f"epoch cap of every run, with early stopping (default {DEFAULT_EPOCHS})")
    p.add_argument("--set", dest="set_", action="append", default=None, metavar="KEY=VALUE",
                   help="config override for every run, e.g. --set MAX_ITEM_LIST_LENGTH=10 (repeatable)")
    p.add_argument("--tuned", action="store_true",
                   help="FPARec Table 3 with each row's settings chosen on validation "
                        "(properties/tuned/<model>-<dataset>.yaml) over the paper's")
    p.add_argument("--data_path", "--data-path", dest="data_path", default=None,
                   help="folder holding <dataset>/<dataset>.inter (default: dataset_atomic/)")
    p.add_argument("--raw", default=str(RAW_DIR), help="raw data folder for beauty / ml-1m (default: %(default)s)")
    p.add_argument("--anchors-from", dest="anchors_from", default=None,
                   help="which dataset's paper values to compare with (default: --dataset)")
    p.add_argument("--results", default=None,
                   help="results file (default: recbole_attn/bench/results/quality-<dataset>.json)")
    p.add_argument("--max-runs", dest="max_runs", type=int, default=None,
                   help="stop after this many new runs (spread a reproduction over several sittings)")
    p.add_argument("--dry-run", dest="dry_run", action="store_true",
                   help="print the plan (finished and pending runs) and the table so far; train nothing")
    p.add_argument("--jobs", type=int, default=1,
                   help="commands to run side by side, each single-threaded (OMP_NUM_THREADS=1) and taking "
                        "the runs no other one holds; on one GPU they share it (default 1)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one of --jobs' commands
    p.add_argument("--out", default=None, help="also write the table to this Markdown file")
    return p


def main(argv=None):
    from recbole_attn.cli import raise_interrupt

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    # SIGTERM (a killed job) stops like Ctrl-C: the run in progress keeps its last epoch to resume from
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        return _main(args)
    except RecboleAttnError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(args):
    from recbole_attn.config import default_data_path

    dataset = args.dataset
    anchor_dataset = args.anchors_from or dataset
    if anchor_dataset not in anchors.datasets_with_anchors():
        raise ConfigError(f"no paper values for dataset [{anchor_dataset}]; pass --anchors-from "
                          f"{'|'.join(anchors.datasets_with_anchors())}")
    if args.seeds < 1 or args.epochs < 1 or args.jobs < 1 or (args.max_runs is not None and args.max_runs < 0):
        raise ConfigError("--seeds, --epochs and --jobs must be positive and --max-runs at least 0")
    tables = _split(args.tables)
    unknown = [t for t in tables if t not in anchors.TABLES]
    if unknown:
        raise ConfigError(f"unknown table {unknown[0]!r}; choose from: {', '.join(anchors.TABLES)}")
    if args.tuned:
        if any(t != TUNED_TABLE for t in tables):
            raise ConfigError(f"--tuned applies to {anchors.TABLES[TUNED_TABLE][1]} only (--tables {TUNED_TABLE}): "
                              "the settings in properties/tuned/ were chosen for its rows")
        tables = [TUNED_TABLE]
    user_set = parse_set(args.set_)
    seeds = [FIRST_SEED + i for i in range(args.seeds)]
    data_path = Path(args.data_path) if args.data_path else Path(default_data_path())
    results_path = Path(args.results) if args.results else default_results_file(dataset)

    names = {n.lower() for row in ROWS if row.dataset == anchor_dataset for n in (row.label, row.model, row.spec)}
    unknown = [m for m in _split(args.models) if m.lower() not in names]
    if unknown:
        # a typo or a spec of our own would otherwise be dropped from the table without a word
        raise ConfigError(f"--models: no {anchor_dataset} row is called {unknown[0]!r} (rows are named by "
                          f"label, model or spec, as in the table); change every run's settings with --set")
    rows = select_rows(anchor_dataset, _split(args.models), tables)
    if not rows:
        raise ConfigError(f"no rows match --models/--tables for the {anchor_dataset} paper values")
    tuned = None
    if args.tuned:
        rows, tuned = apply_tuned(rows, dataset)
    planned = plan_rows(rows, dataset, args.epochs, user_set)
    runs = plan_runs(planned, seeds)
    records = load_results(results_path)
    pending = [(p, s) for p, s in runs if (p.signature, s) not in records]
    if not args.worker:  # a copy of --jobs leaves these lines to the command that started it
        if not args.dry_run:
            for p, seed in runs:
                done = records.get((p.signature, seed))
                if done:
                    _log(f"skipping {p.row.spec} seed {seed} ({p.signature}): finished {done['date']}")
        _log(f"{dataset}: {len(runs)} runs ({len(rows)} rows x {len(seeds)} seeds, shared settings run once), "
             f"{len(runs) - len(pending)} finished, {len(pending)} pending; results: {_show_path(results_path)}")

    failed, interrupted = [], False
    if args.dry_run:
        print("\n".join([f"Plan ({len(pending)} pending):"] + describe_plan(runs, records, planned)) + "\n")
    else:
        if args.jobs > 1 and not args.worker:
            failed, interrupted = _train_in_workers(args, pending, dataset, data_path, results_path)
        else:
            failed, interrupted = _train(pending, dataset, data_path, Path(args.raw), results_path, args.max_runs)
        if args.worker:  # the command that started it prints the table
            return 130 if interrupted else (1 if failed else 0)
        records = load_results(results_path)

    text = render(planned, records, seeds, dataset, anchor_dataset, args.epochs, results_path, user_set, tuned)
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    if interrupted:
        return 130
    return 1 if failed else 0


def _train(pending, dataset, data_path, raw_dir, results_path, max_runs):
    """Run the pending runs, saving each finished one; returns ``(failed runs, interrupted)``."""
    from recbole_attn.trainer import TrainingDiverged

    if max_runs is not None:
        pending = pending[:max_runs]
    if not pending:
        return [], False
    ensure_dataset(dataset, data_path, raw_dir)
    check_configs([p for p, _ in pending], dataset, data_path)
    failed = []
    for i, (p, seed) in enumerate(pending, 1):
        with _locked(run_folder(p, seed, dataset) / "running.lock", block=False) as mine:
            if not mine:
                _log(f"[{i}/{len(pending)}] skipping {p.row.spec} seed {seed}: running in another process")
                continue
            if (p.signature, seed) in load_results(results_path):
                _log(f"[{i}/{len(pending)}] skipping {p.row.spec} seed {seed}: finished by another process")
                shutil.rmtree(run_folder(p, seed, dataset), ignore_errors=True)  # the lock file just made
                continue
            _log(f"[{i}/{len(pending)}] running {p.row.spec} [{p.mode}] seed {seed} ({p.signature})")
            try:
                with warnings.catch_warnings():  # RecBole's pandas/torch deprecation warnings, once per run
                    warnings.simplefilter("ignore", FutureWarning)
                    warnings.simplefilter("ignore", DeprecationWarning)
                    record = run_one(p, seed, dataset, data_path)
            except TrainingDiverged as e:
                print(f"error: {p.row.spec} seed {seed}: {e}", file=sys.stderr)
                failed.append((p, seed))
                continue
            except KeyboardInterrupt:
                _log(f"interrupted; the finished runs are in {_show_path(results_path)}; the run in progress "
                     f"continues from {run_folder(p, seed, dataset)} when the command is started again")
                return failed, True
            save_record(results_path, record)
            shutil.rmtree(run_folder(p, seed, dataset), ignore_errors=True)
        test = record["test_result"]
        metrics = anchors.TABLES[p.row.table][2]
        _log(f"    done in {record['wall_time_s']:.0f} s, {record['epochs_run']} epochs: "
             + ", ".join(f"{m} {test[m]:.4f}" for m in metrics if m in test))
    return failed, False


def _train_in_workers(args, pending, dataset, data_path, results_path):
    """``--jobs N``: start N copies of this command, each single-threaded, and wait for them.

    Each copy takes the pending runs no other one holds (the per-run locks of :func:`_train`), so
    together they run every pending run once. Returns ``(any copy failed, interrupted)``. Ctrl-C or
    SIGTERM stops every copy as it would stop one command: the runs in progress keep their last epoch.
    """
    if args.max_runs is not None:
        pending = pending[:args.max_runs]  # each copy considers these only: --max-runs holds for all of them
    if not pending:
        return False, False
    # convert the data and check every setting once, before the copies start
    ensure_dataset(dataset, data_path, Path(args.raw))
    check_configs([p for p, _ in pending], dataset, data_path)
    jobs = min(args.jobs, len(pending))
    if jobs == 1:
        return _train(pending, dataset, data_path, Path(args.raw), results_path, None)
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")  # N commands with one thread each share the cores without waiting on each other
    # the copies import this package from where this command did, installed or not
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO_DIR), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "recbole_attn.bench", "quality", *args.argv, "--jobs", "1", "--worker"]
    _log(f"{jobs} commands side by side (OMP_NUM_THREADS={env['OMP_NUM_THREADS']} each) for {len(pending)} runs")
    # their own session: a Ctrl-C in the terminal reaches this command only, which passes one SIGTERM on
    workers = []
    try:
        for _ in range(jobs):
            workers.append(subprocess.Popen(command, env=env, start_new_session=True))
        codes = [w.wait() for w in workers]
    except KeyboardInterrupt:
        _log("interrupted; stopping the commands side by side (each keeps its run's last epoch)")
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait()
        return False, True
    return any(code not in (0, 130) for code in codes), any(code == 130 for code in codes)
