"""Hyper-parameter tuning of any registry model (plugin or RecBole's), with RecBole's
``HyperTuning`` (hyperopt) or with Ray Tune.

Run through the main command line::

    python run_recbole_attn.py --model=FPARec --dataset=ml-100k \\
        --params_file=properties/hyper/fparec.hyper --tool=hyperopt --algo=exhaustive --epochs=50

The params file uses RecBole's format, one ``name type value`` a line::

    learning_rate choice [0.001,0.0001]
    hidden_dropout_prob uniform 0.1,0.5
    weight_decay loguniform -9,-2        # bounds in log space: exp(-9)..exp(-2)
    n_layers quniform 1,4,1

plus ``#`` comments (RecBole's own ``run_hyper.py`` rejects those). What differs from RecBole's
``run_hyper.py``:

* every trial trains through :func:`recbole_attn.quick_start.objective_function`, so plugin
  models and RecBole's models are tuned the same way;
* ``--key=value`` overrides are parsed once here and passed to every trial as a config dict
  (trials never read ``sys.argv``: Ray workers do not share it);
* Ray trials take their CPUs and GPUs from ``--cpus_per_trial``/``--gpus_per_trial`` (RecBole
  hard-codes one GPU, so its trials never start on a CPU machine) and the best trial is chosen
  on the validation score, not on a test metric;
* a trial whose parameter combination is invalid (:class:`ConfigError`, e.g. ``fpa_rank``
  above ``MAX_ITEM_LIST_LENGTH``) is recorded as failed and the search goes on;
* ``quniform`` values with integral bounds and step are passed as ``int`` (hyperopt and Ray
  return floats such as ``2.0``, which ``n_layers`` cannot take);
* results go to three files: RecBole's text report (``.result``), a JSON file with the best
  parameters and every trial's parameters and validation/test metrics, and the best
  parameters as a YAML config file (``-best.yaml``) to pass to ``--config_files``.
"""

import ast
import math
import os
import re
import sys
import time

import numpy as np
import yaml

from recbole_attn.checkpoint import plain_value
from recbole_attn.errors import ConfigError

PARAM_TYPES = ("choice", "uniform", "quniform", "loguniform")


# ----- command-line overrides ------------------------------------------------------------
def convert_values(raw):
    """Convert ``{key: "string"}`` as RecBole's ``Config`` converts command-line values
    (``eval`` of each value; plain words stay strings), with the plugin's guard for words."""
    from recbole_attn.config import Config

    # _convert_config_dict uses no instance state; an uninitialised Config is enough to call it
    return Config.__new__(Config)._convert_config_dict(dict(raw))


def parse_overrides(argv, reserved=()):
    """The ``--key=value`` items of a command line as a converted config dict.

    Args:
        argv: command-line items (without the program name).
        reserved: option names of the tool itself (not configuration keys).

    Raises:
        ConfigError: a key is given twice with different values.
    """
    raw = {}
    for arg in argv:
        if not arg.startswith("--") or "=" not in arg:
            continue
        key, value = arg[2:].split("=", 1)
        if key in reserved:
            continue
        if key in raw and raw[key] != value:
            raise ConfigError(f"--{key} is given twice with different values ({raw[key]!r} and {value!r})")
        raw[key] = value
    return convert_values(raw)


def _cli_option_names():
    from recbole_attn.cli import build_parser

    names = set()
    for action in build_parser()._actions:
        names.add(action.dest)
        names.update(opt.lstrip("-") for opt in action.option_strings)
    return names


# ----- params files ----------------------------------------------------------------------
def read_params_file(path):
    """Parse a params file into ``[(name, type, value)]``.

    ``value`` is the list of candidates for ``choice`` and a tuple of floats for the others
    (``(low, high)``, or ``(low, high, q)`` for ``quniform``). As in RecBole, everything after
    the type is joined without spaces.

    Raises:
        ConfigError: the file is missing or a line is malformed (with its line number).
    """
    if not os.path.isfile(path):
        raise ConfigError(f"params file [{path}] does not exist")
    specs, seen = [], set()
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = re.sub(r"(^|\s)#.*$", "", line).strip()  # comments: '#' at the start or after a space
            if not line:
                continue
            parts = line.split()
            where = f"{path}:{lineno}"
            if len(parts) < 3:
                raise ConfigError(f"{where}: expected `name type value`, got {line!r}")
            name, kind, value = parts[0], parts[1], "".join(parts[2:])
            if kind not in PARAM_TYPES:
                raise ConfigError(f"{where}: unknown type [{kind}]; use one of {', '.join(PARAM_TYPES)}")
            if name in seen:
                raise ConfigError(f"{where}: [{name}] is defined twice")
            seen.add(name)
            if kind == "choice":
                try:
                    values = ast.literal_eval(value)
                except (ValueError, SyntaxError):
                    raise ConfigError(f"{where}: choice needs a Python list literal, got {value!r}") from None
                if not isinstance(values, (list, tuple)) or not values:
                    raise ConfigError(f"{where}: choice needs a non-empty list, got {value!r}")
                specs.append((name, kind, list(values)))
                continue
            n_numbers = 3 if kind == "quniform" else 2
            try:
                numbers = tuple(float(v) for v in value.split(","))
            except ValueError:
                numbers = ()
            if len(numbers) != n_numbers:
                shape = "low,high,q" if kind == "quniform" else "low,high"
                raise ConfigError(f"{where}: {kind} needs {shape}, got {value!r}")
            if numbers[0] >= numbers[1]:
                raise ConfigError(f"{where}: {kind} needs low < high, got {value!r}")
            specs.append((name, kind, numbers))
    if not specs:
        raise ConfigError(f"params file [{path}] defines no parameter")
    return specs


def integer_params(specs):
    """Names of ``quniform`` parameters whose bounds and step are integers."""
    return {name for name, kind, value in specs
            if kind == "quniform" and all(float(v).is_integer() for v in value)}


def plain_params(params, int_names=()):
    """Trial parameters as plain Python values (numpy scalars unwrapped, integral quniform -> int)."""
    result = {}
    for name, value in params.items():
        if isinstance(value, np.generic):
            value = value.item()
        if name in int_names and isinstance(value, float) and value.is_integer():
            value = int(value)
        result[name] = value
    return result


def hyperopt_params_dict(specs):
    """``params_dict`` for RecBole's ``HyperTuning`` (same space as its params-file parser)."""
    params = {}
    for name, kind, value in specs:
        params.setdefault(kind, {})[name] = list(value)
    return params


def ray_space(specs, grid):
    """Ray Tune search space, mapped as RecBole's ``run_hyper.py`` does (``loguniform`` bounds
    are exponentiated); with ``grid`` every ``choice`` becomes ``tune.grid_search``."""
    from ray import tune

    space = {}
    for name, kind, value in specs:
        if kind == "choice":
            space[name] = tune.grid_search(list(value)) if grid else tune.choice(list(value))
        elif kind == "uniform":
            space[name] = tune.uniform(*value)
        elif kind == "quniform":
            space[name] = tune.quniform(*value)
        else:
            space[name] = tune.loguniform(math.exp(value[0]), math.exp(value[1]))
    return space


# ----- one trial -------------------------------------------------------------------------
def trial_record(params, result=None, error=None, seconds=None):
    """One trial's entry in the JSON results file."""
    result = result or {}
    score = result.get("best_valid_score")
    return {
        "params": plain_value(params),
        "valid_score": None if score is None or not math.isfinite(score) else float(score),
        "valid_result": plain_value(dict(result.get("best_valid_result") or {})),
        "test_result": plain_value(dict(result.get("test_result") or {})),
        "saved_model_file": result.get("saved_model_file"),
        "seconds": None if seconds is None else round(seconds, 2),
        "error": error,
    }


class TrialObjective:
    """The objective handed to ``HyperTuning``: ``(params, config_file_list) -> result dict``.

    Adds the fixed configuration (model, dataset, command-line overrides) to each trial's
    parameters, trains through the plugin's objective function and records every trial.
    """

    def __init__(self, fixed, int_names=(), valid_score_bigger=True):
        self.fixed = dict(fixed)
        self.int_names = set(int_names)
        self.valid_score_bigger = valid_score_bigger
        self.trials = []

    def __call__(self, config_dict, config_file_list=None):
        from recbole_attn.quick_start import objective_function

        params = plain_params(config_dict, self.int_names)
        started = time.time()
        try:
            result = objective_function(dict(self.fixed, **params), config_file_list)
        except ConfigError as e:  # one invalid combination must not end the whole search
            print(f"trial skipped: {e}", file=sys.stderr)
            self.trials.append(trial_record(params, error=str(e), seconds=time.time() - started))
            worst = -math.inf if self.valid_score_bigger else math.inf
            return {"model": self.fixed["model"], "best_valid_score": worst,
                    "valid_score_bigger": self.valid_score_bigger, "best_valid_result": {}, "test_result": {}}
        self.trials.append(trial_record(params, result, seconds=time.time() - started))
        return result


def ray_trial(config, fixed=None, config_file_list=None, int_names=(), valid_score_bigger=True):
    """Ray Tune trainable: one training run, reported once at its end."""
    import ray
    from ray.air import session

    from recbole_attn.quick_start import objective_function

    params = plain_params(config, int_names)
    config_dict = dict(fixed, **params)
    # use exactly the GPUs Ray gave this trial: RecBole's Config would otherwise point
    # CUDA_VISIBLE_DEVICES at its gpu_id (0) whatever Ray assigned
    gpu_ids = ray.get_gpu_ids()
    if gpu_ids:
        config_dict.update(use_gpu=True, gpu_id=",".join(str(g) for g in gpu_ids))
    else:
        config_dict["use_gpu"] = False
    try:
        result = objective_function(config_dict, config_file_list)
    except ConfigError as e:
        worst = -math.inf if valid_score_bigger else math.inf
        session.report({"valid_score": worst, "error": str(e)})
        return
    test_result = plain_value(dict(result["test_result"]))
    session.report(dict(test_result, valid_score=float(result["best_valid_score"]),
                        valid_result=plain_value(dict(result["best_valid_result"])),
                        test_result=test_result, saved_model_file=result["saved_model_file"]))


# ----- the search ------------------------------------------------------------------------
def output_paths(output_file, model, dataset):
    """``{"result", "json", "best", "ray_dir"}`` derived from ``--output_file``."""
    if not output_file:
        output_file = os.path.join("hyper_results", f"{model}-{dataset}.result")
    stem, ext = os.path.splitext(os.path.abspath(output_file))
    result = stem + ".result" if ext == ".json" else os.path.abspath(output_file)
    return {"result": result, "json": stem + ".json", "best": stem + "-best.yaml",
            "ray_dir": os.path.join(os.path.dirname(stem), "ray_log")}


def _absolute_paths(fixed, config_files):
    """Ray runs each trial in its own working directory: make path options absolute."""
    merged = {}
    for file in config_files:
        with open(file, encoding="utf-8") as f:
            merged.update(yaml.safe_load(f) or {})
    merged.update(fixed)
    paths = {"checkpoint_dir": merged.get("checkpoint_dir", "saved")}
    if merged.get("data_path"):
        paths["data_path"] = merged["data_path"]
    return {key: os.path.abspath(str(value)) for key, value in paths.items()}


def _probe_config(fixed, specs, config_files):
    """Build the configuration of a first trial without training: wrong fixed options fail
    here with their own message, and the valid metric and its direction are known."""
    from recbole_attn.config import Config

    params = {name: value[0] for name, kind, value in specs}
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        config = Config(config_dict=dict(fixed, **params), config_file_list=config_files or None,
                        read_cmd_line=False)
    finally:  # RecBole's Config sets CUDA_VISIBLE_DEVICES, which Ray reads when it starts
        if visible is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = visible
    return config


def tune(args, config_files=None, overrides=None):
    """Tune ``args.model`` on ``args.dataset`` over ``args.params_file``; write and print results.

    Args:
        args: the parsed command line of :mod:`recbole_attn.cli` (``params_file``, ``tool``,
            ``algo``, ``max_evals``, ``early_stop``, ``output_file``, ``ray_address``,
            ``cpus_per_trial``, ``gpus_per_trial``, ``model``, ``dataset``).
        config_files: YAML files applied to every trial.
        overrides: configuration applied to every trial; default: the ``--key=value`` items
            of ``sys.argv`` that are not options of the command line.

    Returns:
        dict: the content of the JSON results file.
    """
    from recbole_attn import registry

    if overrides is None:
        overrides = parse_overrides(sys.argv[1:], reserved=_cli_option_names())
    specs = read_params_file(args.params_file)
    tuned = [name for name, _, _ in specs]
    both = [name for name in tuned if name in overrides or name in ("model", "dataset")]
    if both:
        raise ConfigError(f"[{', '.join(both)}] is both tuned in {args.params_file} and fixed; drop one of them")
    if args.algo == "exhaustive":
        continuous = [name for name, kind, _ in specs if kind != "choice"]
        if continuous:
            raise ConfigError(f"--algo=exhaustive needs `choice` parameters only; [{', '.join(continuous)}] "
                              "are continuous: use --algo=random or --algo=bayes")
    config_files = [os.path.abspath(f) for f in (config_files or [])]
    for file in config_files:
        if not os.path.isfile(file):
            raise ConfigError(f"config file [{file}] does not exist")

    registry.get_model(args.model)  # unknown names fail before any trial
    model = registry.canonical_name(args.model) or args.model
    fixed = dict(overrides, model=model, dataset=args.dataset)
    fixed.update(_absolute_paths(fixed, config_files))
    probe = _probe_config(fixed, specs, config_files)
    bigger = bool(probe["valid_metric_bigger"])
    paths = output_paths(args.output_file, model, args.dataset)
    os.makedirs(os.path.dirname(paths["result"]), exist_ok=True)

    started = time.time()
    if args.tool == "ray":
        trials = _tune_ray(args, specs, fixed, config_files, bigger, paths)
    else:
        trials = _tune_hyperopt(args, specs, fixed, config_files, bigger, paths)

    finished = [t for t in trials if t["valid_score"] is not None]
    if not finished:
        errors = {t["error"] for t in trials if t["error"]}
        raise ConfigError(f"no trial finished ({'; '.join(sorted(errors)) or 'no trial ran'})")
    best = (max if bigger else min)(finished, key=lambda t: t["valid_score"])
    report = {
        "model": model,
        "dataset": args.dataset,
        "tool": args.tool,
        "algo": args.algo,
        "params_file": os.path.abspath(args.params_file),
        "config_files": config_files,
        "fixed_config": plain_value(fixed),
        "valid_metric": probe["valid_metric"],
        "valid_score_bigger": bigger,
        "seconds": round(time.time() - started, 2),
        "best": best,
        "trials": trials,
    }
    write_results(report, paths)
    print_summary(report, paths)
    return report


def _tune_hyperopt(args, specs, fixed, config_files, bigger, paths):
    from recbole.trainer import HyperTuning

    objective = TrialObjective(fixed, integer_params(specs), bigger)
    hp = HyperTuning(objective, params_dict=hyperopt_params_dict(specs), fixed_config_file_list=config_files or None,
                     algo=args.algo, max_evals=args.max_evals, early_stop=args.early_stop)
    hp.run()
    hp.export_result(output_file=paths["result"])
    return objective.trials


def _tune_ray(args, specs, fixed, config_files, bigger, paths):
    import ray
    from ray import tune

    _start_ray(args)
    try:
        _check_ray_resources(args)
        mode = "max" if bigger else "min"
        search_alg, num_samples = None, args.max_evals
        if args.algo == "exhaustive":
            num_samples = 1  # grid_search enumerates the grid once
        elif args.algo == "bayes":
            from ray.tune.search.hyperopt import HyperOptSearch

            search_alg = HyperOptSearch(metric="valid_score", mode=mode)
        trainable = tune.with_parameters(ray_trial, fixed=fixed, config_file_list=config_files or None,
                                         int_names=integer_params(specs), valid_score_bigger=bigger)
        analysis = tune.run(
            trainable,
            name=f"{fixed['model']}-{fixed['dataset']}",
            config=ray_space(specs, grid=args.algo == "exhaustive"),
            search_alg=search_alg,
            num_samples=num_samples,
            resources_per_trial={"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial},
            storage_path=paths["ray_dir"],
            metric="valid_score",
            mode=mode,
            raise_on_failed_trial=False,  # a failed trial is reported, the others still count
            verbose=1,
        )
        trials = [_ray_trial_record(trial, specs) for trial in analysis.trials]
    finally:
        ray.shutdown()
    write_text_report(trials, paths["result"])
    return trials


def _start_ray(args):
    import ray

    if args.ray_address:
        # the cluster's nodes must have recbole_attn installed (pip install recbole-attn)
        ray.init(address=args.ray_address)
        return
    # local workers must import recbole_attn also when it runs from a checkout
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    python_path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    ray.init(num_cpus=max(os.cpu_count() or 1, math.ceil(args.cpus_per_trial)), include_dashboard=False,
             runtime_env={"env_vars": {"PYTHONPATH": python_path}})


def _check_ray_resources(args):
    """Trials asking for more than the cluster has stay PENDING forever: fail instead."""
    import ray

    available = ray.cluster_resources()
    for resource, wanted, option in (("CPU", args.cpus_per_trial, "cpus_per_trial"),
                                     ("GPU", args.gpus_per_trial, "gpus_per_trial")):
        if wanted > available.get(resource, 0):
            raise ConfigError(f"--{option}={wanted:g} but the Ray cluster has {available.get(resource, 0):g} "
                              f"{resource}(s); lower --{option}")


def _ray_trial_record(trial, specs):
    params = plain_params({name: trial.config[name] for name, _, _ in specs}, integer_params(specs))
    last = trial.last_result or {}
    error = last.get("error")
    if trial.status == "ERROR" and not error:
        error = f"trial failed, see {trial.error_file}"
    result = {}
    if "valid_result" in last:
        result = {"best_valid_score": last["valid_score"], "best_valid_result": last["valid_result"],
                  "test_result": last["test_result"], "saved_model_file": last.get("saved_model_file")}
    seconds = last.get("time_total_s")
    return trial_record(params, result, error=error, seconds=seconds)


# ----- results ---------------------------------------------------------------------------
def _dict2str(result):
    return "    ".join(f"{key} : {value}" for key, value in result.items())


def write_text_report(trials, path):
    """RecBole's ``HyperTuning.export_result`` format, for the Ray path."""
    with open(path, "w", encoding="utf-8") as f:
        for trial in trials:
            f.write(", ".join(f"{k}:{v}" for k, v in trial["params"].items()) + "\n")
            if trial["error"]:
                f.write(f"Error: {trial['error']}\n\n")
                continue
            f.write("Valid result:\n" + _dict2str(trial["valid_result"]) + "\n")
            f.write("Test result:\n" + _dict2str(trial["test_result"]) + "\n\n")


def write_results(report, paths):
    """The JSON results file and the best parameters as a YAML config file."""
    import json

    with open(paths["json"], "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    best = report["best"]
    header = (f"# best parameters of {report['model']} on {report['dataset']} "
              f"(valid {report['valid_metric']} = {best['valid_score']}), {len(report['trials'])} trials\n"
              f"# use with: --config_files={paths['best']}\n")
    with open(paths["best"], "w", encoding="utf-8") as f:
        f.write(header)
        yaml.safe_dump(best["params"], f, default_flow_style=False, sort_keys=False)


def read_best_params(path):
    """The parameters of a ``-best.yaml`` (or the ``best`` entry of a results ``.json``) file."""
    import json

    if not os.path.isfile(path):
        raise ConfigError(f"results file [{path}] does not exist")
    with open(path, encoding="utf-8") as f:
        if path.endswith(".json"):
            return json.load(f)["best"]["params"]
        return yaml.safe_load(f) or {}


def print_summary(report, paths):
    best = report["best"]
    failed = sum(1 for t in report["trials"] if t["error"])
    print(f"\n{len(report['trials'])} trials ({failed} failed) in {report['seconds']:.0f}s")
    print("best params:", best["params"])
    print(f"best valid ({report['valid_metric']} = {best['valid_score']}):", best["valid_result"])
    print("test result:", best["test_result"])
    print(f"results: {paths['result']}\n         {paths['json']}\n         {paths['best']}")
