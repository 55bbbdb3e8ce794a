"""Tuning: params files, overrides, and 2-trial searches on ml-100k with hyperopt and with Ray on CPU."""

import json
import math
import os
from pathlib import Path

import pytest
import torch
import yaml

from recbole_attn import hyper
from recbole_attn.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
TINY_ML100K = {"epochs": 1, "MAX_ITEM_LIST_LENGTH": 10, "hidden_size": 16, "inner_size": 32, "n_layers": 1,
               "n_heads": 1, "train_batch_size": 512, "use_gpu": False, "fpa_rank": 4, "state": "ERROR",
               "show_progress": False}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """RecBole writes log/ into the working directory; one thread runs faster on a shared CPU."""
    folder = tmp_path_factory.mktemp("hyper")
    old_cwd, old_threads = os.getcwd(), torch.get_num_threads()
    os.chdir(folder)
    torch.set_num_threads(1)
    yield folder
    os.chdir(old_cwd)
    torch.set_num_threads(old_threads)


def cli_args(*argv):
    from recbole_attn.cli import build_parser

    args, _ = build_parser().parse_known_args(list(argv))
    return args


# ----- no training -----------------------------------------------------------------------
def test_params_file_all_types_and_comments(tmp_path):
    path = tmp_path / "space.hyper"
    path.write_text("# a comment with many words\n\nlearning_rate loguniform -8,0\n"
                    "hidden_size choice [64, 128]\nmlp choice ['[64,64]','[128]']\n"
                    "dropout uniform 0.1,0.5   # after a value\nn_layers quniform 1,4,1\n")
    specs = hyper.read_params_file(str(path))
    assert specs == [("learning_rate", "loguniform", (-8.0, 0.0)), ("hidden_size", "choice", [64, 128]),
                     ("mlp", "choice", ["[64,64]", "[128]"]), ("dropout", "uniform", (0.1, 0.5)),
                     ("n_layers", "quniform", (1.0, 4.0, 1.0))]
    assert hyper.integer_params(specs) == {"n_layers"}
    assert hyper.plain_params({"n_layers": 2.0, "dropout": 0.25}, {"n_layers"}) == {"n_layers": 2, "dropout": 0.25}
    assert hyper.hyperopt_params_dict(specs)["loguniform"] == {"learning_rate": [-8.0, 0.0]}

    space = hyper.ray_space(specs, grid=False)
    assert math.isclose(space["learning_rate"].lower, math.exp(-8)) and space["learning_rate"].upper == 1.0
    assert space["hidden_size"].categories == [64, 128]
    assert hyper.ray_space(specs[1:2], grid=True)["hidden_size"] == {"grid_search": [64, 128]}


@pytest.mark.parametrize("line, message", [
    ("learning_rate choice", "expected `name type value`"),
    ("learning_rate normal 0,1", "unknown type [normal]"),
    ("learning_rate choice 0.1", "non-empty list"),
    ("learning_rate uniform 0.5,0.1", "low < high"),
    ("n_layers quniform 1,4", "low,high,q"),
])
def test_params_file_errors_name_the_line(tmp_path, line, message):
    path = tmp_path / "bad.hyper"
    path.write_text(f"# header\n{line}\n")
    with pytest.raises(ConfigError, match=":2: ") as info:
        hyper.read_params_file(str(path))
    assert message in str(info.value)


def test_shipped_params_files_parse():
    files = sorted((REPO / "properties" / "hyper").glob("*.hyper"))
    assert files
    for file in files:
        specs = hyper.read_params_file(str(file))
        assert all(kind == "choice" for _, kind, _ in specs), file  # usable with --algo=exhaustive


def test_overrides_are_converted_like_recbole_and_skip_tool_options():
    overrides = hyper.parse_overrides(
        ["--epochs=1", "--learning_rate=1e-3", "--use_gpu=False", "--refine_mode=add", "--topk=[1,5]",
         "--model=FPARec", "--params_file=x.hyper", "-m", "SASRec", "positional"],
        reserved=hyper._cli_option_names())
    assert overrides == {"epochs": 1, "learning_rate": 0.001, "use_gpu": False, "refine_mode": "add", "topk": [1, 5]}
    with pytest.raises(ConfigError, match="given twice"):
        hyper.parse_overrides(["--epochs=1", "--epochs=2"])


def test_user_errors_before_any_trial(tmp_path):
    params = tmp_path / "p.hyper"
    params.write_text("learning_rate loguniform -8,0\n")
    with pytest.raises(ConfigError, match="exhaustive needs `choice`"):
        hyper.tune(cli_args("--model=FPARec", f"--params_file={params}", "--algo=exhaustive"), overrides={})
    params.write_text("learning_rate choice [0.1]\n")
    with pytest.raises(ConfigError, match="both tuned"):
        hyper.tune(cli_args("--model=FPARec", f"--params_file={params}"), overrides={"learning_rate": 0.1})
    with pytest.raises(ConfigError, match="NoSuchModel"):
        hyper.tune(cli_args("--model=NoSuchModel", f"--params_file={params}"), overrides={})


def test_invalid_combination_is_a_failed_trial_not_a_crash(tmp_path, monkeypatch):
    from recbole_attn import quick_start

    def fake_objective(config_dict, config_file_list=None, saved=True):
        if config_dict["fpa_rank"] > config_dict["MAX_ITEM_LIST_LENGTH"]:
            raise ConfigError("invalid value for [fpa_rank]")
        return {"model": "FPARec", "best_valid_score": 0.5, "valid_score_bigger": True,
                "best_valid_result": {"ndcg@10": 0.5}, "test_result": {"ndcg@10": 0.4}, "saved_model_file": "x.pth"}

    monkeypatch.setattr(quick_start, "objective_function", fake_objective)
    params = tmp_path / "p.hyper"
    params.write_text("fpa_rank choice [4,50]\n")
    report = hyper.tune(cli_args("--model=FPARec", "--dataset=ml-100k", f"--params_file={params}",
                                 f"--output_file={tmp_path / 'out.result'}"),
                        overrides={k: v for k, v in TINY_ML100K.items() if k != "fpa_rank"})
    errors = [t for t in report["trials"] if t["error"]]
    assert len(report["trials"]) == 2 and len(errors) == 1 and errors[0]["params"] == {"fpa_rank": 50}
    assert report["best"]["params"] == {"fpa_rank": 4}


# ----- real searches ---------------------------------------------------------------------
def _check_search(report, out_file, tool):
    assert report["tool"] == tool and report["model"] == "FPARec"
    trials = report["trials"]
    assert sorted(t["params"]["learning_rate"] for t in trials) == [0.001, 0.01]
    assert all(t["error"] is None and t["valid_score"] is not None and "ndcg@10" in t["test_result"]
               for t in trials)
    best = max(trials, key=lambda t: t["valid_score"])
    assert report["best"]["params"] == best["params"]
    assert all(os.path.isfile(t["saved_model_file"]) for t in trials)

    stem = str(out_file)[: -len(".result")]
    text = Path(out_file).read_text()
    assert "learning_rate:0.001" in text and "learning_rate:0.01" in text and "Test result:" in text
    with open(stem + ".json") as f:
        assert json.load(f)["best"] == report["best"]
    # the best parameters file parses back, as YAML and as a config file of a new run
    assert yaml.safe_load(Path(stem + "-best.yaml").read_text()) == best["params"]
    assert hyper.read_best_params(stem + "-best.yaml") == best["params"]
    from recbole_attn.config import Config

    config = Config("FPARec", "ml-100k", config_file_list=[stem + "-best.yaml"], config_dict={"use_gpu": False},
                    read_cmd_line=False)
    assert config["learning_rate"] == best["params"]["learning_rate"]


def test_hyperopt_exhaustive_two_trials(workdir):
    params = workdir / "lr.hyper"
    params.write_text("learning_rate choice [0.001,0.01]\n")
    out = workdir / "hyperopt" / "fparec.result"
    args = cli_args("--model=FPARec", "--dataset=ml-100k", f"--params_file={params}", "--tool=hyperopt",
                    "--algo=exhaustive", f"--output_file={out}")
    report = hyper.tune(args, overrides=dict(TINY_ML100K, checkpoint_dir=str(workdir / "saved")))
    _check_search(report, out, "hyperopt")


def test_ray_on_cpu_two_trials(workdir):
    pytest.importorskip("ray.tune")
    params = workdir / "lr.hyper"
    params.write_text("learning_rate choice [0.001,0.01]\n")
    out = workdir / "ray" / "fparec.result"
    args = cli_args("--model=FPARec", "--dataset=ml-100k", f"--params_file={params}", "--tool=ray",
                    "--algo=exhaustive", "--cpus_per_trial=1", "--gpus_per_trial=0", f"--output_file={out}")
    # a relative checkpoint_dir must reach the trials (each runs in its own folder) as an absolute path
    report = hyper.tune(args, overrides=dict(TINY_ML100K, checkpoint_dir="saved_ray"))
    assert report["fixed_config"]["checkpoint_dir"] == str(workdir / "saved_ray")
    assert all(t["saved_model_file"].startswith(str(workdir / "saved_ray")) for t in report["trials"])
    _check_search(report, out, "ray")
