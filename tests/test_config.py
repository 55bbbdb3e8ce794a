"""Config: plugin YAMLs layered on RecBole's, priorities, installed-package lookup, device."""

import fnmatch
import sys
import tomllib

import pytest
import torch
import yaml

from recbole_attn import config as config_module
from recbole_attn.config import Config
from recbole_attn.errors import ConfigError
from tests.conftest import REPO, write_tiny_dataset


def make(model, dataset="tiny", data_path=None, read_cmd_line=False, **overrides):
    cfg = {"use_gpu": False, "state": "ERROR"}
    if data_path:
        cfg["data_path"] = data_path
    cfg.update(overrides)
    return Config(model=model, dataset=dataset, config_dict=cfg, read_cmd_line=read_cmd_line)


def test_model_yaml_is_layered_over_recboles_defaults(tiny_data):
    fparec = make("FPARec", data_path=tiny_data)
    assert fparec["fpa_rank"] == 40 and fparec["hidden_size"] == 50 and fparec["n_heads"] == 1
    assert fparec["train_mode"] == "seq2seq" and fparec["pad_side"] == "left"
    # plugin overall.yaml: the papers' protocol
    assert fparec["eval_args"]["split"] == {"LS": "valid_and_test"} and fparec["eval_args"]["mode"]["test"] == "full"
    assert fparec["valid_metric"] == "NDCG@10" and fparec["load_col"] == {"inter": ["user_id", "item_id", "timestamp"]}
    sasrec = make("SASRec", data_path=tiny_data)  # RecBole's model keeps RecBole's model defaults
    assert sasrec["hidden_size"] == 64 and sasrec["train_mode"] == "augment" and sasrec["train_batch_size"] == 2048


def test_dataset_yaml_applies(tmp_path):
    data = write_tiny_dataset(tmp_path, name="ml-1m")
    assert make("SASRecAttn", dataset="ml-1m", data_path=data)["MAX_ITEM_LIST_LENGTH"] == 200


def test_priority_yaml_lt_config_files_lt_dict_lt_command_line(tiny_data, tmp_path, monkeypatch):
    f = tmp_path / "a.yaml"
    f.write_text("hidden_size: 32\ninner_size: 48\nn_layers: 3\n")
    monkeypatch.setattr(sys, "argv", ["run_recbole_attn.py", "--n_layers=4"])
    cfg = Config(model="FPARec", dataset="tiny", config_file_list=[str(f)],
                 config_dict={"data_path": tiny_data, "inner_size": 64, "n_layers": 5, "use_gpu": False})
    assert (cfg["hidden_size"], cfg["inner_size"], cfg["n_layers"]) == (32, 64, 4)
    assert make("FPARec", data_path=tiny_data)["n_layers"] == 2  # read_cmd_line=False ignores sys.argv


def test_seq2seq_batches_default_to_windows_per_batch(tiny_data):
    assert make("FPARec", data_path=tiny_data)["train_batch_size"] == 128
    assert make("FPARec", data_path=tiny_data, train_mode="augment")["train_batch_size"] == 2048
    assert make("FPARec", data_path=tiny_data, train_batch_size=64)["train_batch_size"] == 64


def test_use_gpu_false_forces_cpu(tiny_data):
    assert make("FPARec", data_path=tiny_data)["device"] == torch.device("cpu")


def test_plain_words_stay_strings(tiny_data):
    """RecBole eval()s string values in a scope where `value` names another key's value."""
    cfg = make("AWRSR-SASRec", data_path=tiny_data, checkpoint_dir="/tmp/x", refine_mode="value")
    assert cfg["refine_mode"] == "value"


def test_keys_ignored_by_the_model_are_refused(tiny_data):
    with pytest.raises(ConfigError, match="refine_mode"):
        make("FPARec", data_path=tiny_data, refine_mode="add")
    with pytest.raises(ConfigError, match="train_mode"):
        make("SASRec", data_path=tiny_data, train_mode="seq2seq")
    for model, mode in (("SASRec", "augment"), ("FPARec", "augment")):
        with pytest.raises(ConfigError, match="seq2seq_windows"):
            make(model, data_path=tiny_data, train_mode=mode, seq2seq_windows="last")
    with pytest.raises(ConfigError, match="seq2seq_windows"):
        make("FPARec", data_path=tiny_data, seq2seq_windows="first")
    with pytest.raises(ConfigError, match="official_block.*model \\[TokenMixRec\\]"):
        make("TokenMixRec", data_path=tiny_data, official_block=True)
    with pytest.raises(ConfigError, match="official_block.*model \\[STOSA\\]"):
        make("STOSA", data_path=tiny_data, official_block=True)
    with pytest.raises(ConfigError, match="two different block layouts"):
        make("FPARec", data_path=tiny_data, pre_norm=True, official_block=True)
    with pytest.raises(ConfigError, match="official_block.*True \\| False"):
        make("FPARec", data_path=tiny_data, official_block="yes")
    with pytest.raises(ConfigError, match="single_ffn.*model \\[STOSA\\]"):
        make("STOSA", data_path=tiny_data, single_ffn=True)
    with pytest.raises(ConfigError, match="single_ffn.*True \\| False"):
        make("FPARec", data_path=tiny_data, single_ffn=1)


def test_properties_are_found_in_an_installed_package(tmp_path, monkeypatch):
    package = tmp_path / "site-packages" / "recbole_attn"
    (package / "properties").mkdir(parents=True)
    (package / "properties" / "overall.yaml").write_text("x: 1\n")
    monkeypatch.setattr(config_module, "_CHECKOUT_DIR", tmp_path / "site-packages")
    monkeypatch.setattr(config_module, "_PACKAGE_DIR", package)
    assert config_module.properties_dir() == package / "properties"


def test_every_properties_file_ships_in_the_wheel():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    setuptools = project["tool"]["setuptools"]
    assert setuptools["package-dir"]["recbole_attn.properties"] == "properties"
    patterns = setuptools["package-data"]["recbole_attn.properties"]
    for path in (REPO / "properties").rglob("*"):
        if path.is_file() and path.suffix in (".yaml", ".hyper"):
            rel = path.relative_to(REPO / "properties").as_posix()
            assert any(fnmatch.fnmatch(rel, p) for p in patterns), f"{rel} is not packaged"
    # every sub-package of recbole_attn is listed
    listed = set(setuptools["packages"])
    for init in (REPO / "recbole_attn").rglob("__init__.py"):
        name = ".".join(init.parent.relative_to(REPO).parts)
        assert name in listed, f"{name} is not packaged"


@pytest.mark.parametrize("model", ["FPARec", "SASRec"])
def test_adam_betas_reach_the_optimizer_of_plugin_and_recbole_models(model, tiny_data, tmp_path):
    from recbole_attn import registry
    from tests.conftest import build

    for betas, expected in ((None, (0.9, 0.999)), ([0.9, 0.98], (0.9, 0.98))):
        config, net, *_ = build(model, tiny_data, str(tmp_path), adam_betas=betas)
        trainer = registry.get_trainer(config["MODEL_TYPE"], config["model"])(config, net)
        assert trainer.optimizer.param_groups[0]["betas"] == expected


@pytest.mark.parametrize("overrides,message", [
    ({"adam_betas": [0.9]}, "invalid value for [adam_betas]: [0.9]"),
    ({"adam_betas": [0.9, 1.5]}, "two numbers in [0, 1)"),
    ({"adam_betas": [0.9, 0.98], "learner": "sgd"}, "learner [sgd] would ignore"),
])
def test_bad_adam_betas_are_refused(overrides, message, tiny_data):
    with pytest.raises(ConfigError) as error:
        make("SASRecAttn", data_path=tiny_data, **overrides)
    assert message in str(error.value)


@pytest.mark.parametrize("tuned", sorted((REPO / "properties" / "tuned").glob("*.yaml")), ids=lambda p: p.name)
def test_tuned_settings_apply_over_their_paper_file(tuned, tiny_data):
    """Each tuned file is used after its paper file: every key must reach the model's config."""
    family, dataset = tuned.stem.split("-", 1)  # fparec-ml-1m -> fparec, ml-1m
    # the model, and the paper whose settings file the tuned one goes on top of (Table 3's SASRec
    # row runs on the FPARec paper's settings)
    model, paper_family = {"fparec": ("FPARec", "fparec"), "parec": ("PARec", "fparec"),
                           "sasrec": ("SASRecAttn", "fparec"), "tokenmix": ("TokenMixRec", "fparec"),
                           "linearattn": ("LinearAttnRec", "fparec")}[family]
    paper = REPO / "properties" / "paper" / f"{paper_family}-{dataset}.yaml"
    def config(files):
        return Config(
            model=model,
            dataset="tiny",
            config_file_list=[str(f) for f in files],
            config_dict={"use_gpu": False, "state": "ERROR", "data_path": tiny_data},
        )

    known = config([paper]).final_config_dict  # without the tuned file: the keys the model has
    cfg = config([paper, tuned])
    settings = yaml.safe_load(tuned.read_text())
    assert settings, f"{tuned.name} sets nothing"
    for key, value in settings.items():
        assert key in known, f"{tuned.name}: {key} is not a setting of {model}"
        assert cfg[key] == value, key
