"""RecBole ``Config`` for recbole_attn.

It overrides only narrow hooks of RecBole's ``Config`` (never ``__init__``):

* ``_get_model_and_dataset``: resolve the model through the plugin registry;
* ``_load_internal_config_dict``: layer the plugin's ``properties/`` YAMLs (overall,
  per-model, per-dataset) on top of RecBole's own defaults;
* ``_load_cmd_line``: can be switched off for library use (tests, tuning workers);
* ``_set_default_parameters``: plugin defaults that depend on other keys, then validation
  of every plugin key before any data is loaded;
* ``_init_device``: GPU when available unless ``use_gpu: False``; gloo for DDP on CPU.

Priority, lowest first: RecBole's YAMLs < plugin ``properties/`` < ``config_file_list`` <
``config_dict`` < ``--key=value`` on the command line.
"""

import os
from pathlib import Path

from recbole.config import Config as RecBoleConfig
from recbole.utils import InputType

from recbole_attn import registry
from recbole_attn.errors import ConfigError, DataError

_PACKAGE_DIR = Path(__file__).resolve().parent
_CHECKOUT_DIR = _PACKAGE_DIR.parent


def properties_dir():
    """The ``properties/`` folder: the checkout's when running from source, else the copy
    installed inside the package (``recbole_attn/properties``)."""
    for candidate in (_CHECKOUT_DIR / "properties", _PACKAGE_DIR / "properties"):
        if (candidate / "overall.yaml").is_file():
            return candidate
    raise ConfigError("cannot find recbole_attn's properties/overall.yaml; reinstall the package")


def default_data_path():
    """``dataset_atomic/`` of the checkout when running from source, else of the working directory."""
    if (_CHECKOUT_DIR / "pyproject.toml").is_file():
        return str(_CHECKOUT_DIR / "dataset_atomic")
    return os.path.join(os.getcwd(), "dataset_atomic")


# datasets the converter knows how to create from ../shared/data/raw (see dataset_atomic/README.md)
CONVERT_COMMANDS = {
    "beauty": "python -m recbole_attn.data.convert --format seq "
    "--input ../shared/data/raw/beauty/Beauty.txt --name beauty",
    "ml-1m": "python -m recbole_attn.data.convert --format seq "
    "--input ../shared/data/raw/ml-1m/ml-1m_sequences_from_dataset_pkl.txt --name ml-1m --item-core 5",
}

TRAIN_MODES = ("seq2seq", "augment")


class Config(RecBoleConfig):
    """RecBole's Config with the plugin's registry, YAMLs and validation.

    Args:
        read_cmd_line (bool): read ``--key=value`` from ``sys.argv`` as RecBole does
            (default ``True``); library callers such as tests and tuning workers pass ``False``.
    """

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None, read_cmd_line=True):
        self._read_cmd_line = read_cmd_line
        super().__init__(model, dataset, config_file_list, config_dict)

    def _convert_config_dict(self, config_dict):
        # RecBole eval()s every string value inside this method, so a plain word that names one
        # of its local variables silently becomes something else: `refine_mode: value` turned
        # into the previous key's value. Plain words stay strings (true/false/none as RecBole).
        words = {key: v for key, v in config_dict.items()
                 if isinstance(v, str) and v.isidentifier() and v.lower() not in ("true", "false", "none")}
        converted = super()._convert_config_dict({k: v for k, v in config_dict.items() if k not in words})
        converted.update(words)
        return converted

    def _load_cmd_line(self):
        if not self._read_cmd_line:
            return dict()
        try:
            return super()._load_cmd_line()
        except SyntaxError as e:  # RecBole's message for a key given twice with different values
            raise ConfigError(str(e)) from None

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
        if model is None:
            raise ConfigError("no model given: pass --model=NAME (e.g. --model=FPARec)")
        if isinstance(model, str):
            name = registry.canonical_name(model) or model
            model = registry.get_model(name)
            if dataset is None:
                dataset = self.external_config_dict.get("dataset")
            if dataset is None:
                raise ConfigError("no dataset given: pass --dataset=NAME (e.g. --dataset=ml-100k)")
            return name, model, dataset
        return super()._get_model_and_dataset(model, dataset)

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        props = properties_dir()
        for file in (props / "overall.yaml", props / "model" / f"{model}.yaml"):
            if file.is_file():
                self._update_internal_config_dict(str(file))
        dataset_file = props / "dataset" / f"{dataset}.yaml"
        if dataset_file.is_file():
            keys = self._update_internal_config_dict(str(dataset_file)) or {}
            self.parameters["Dataset"] += [k for k in keys if k not in self.parameters["Dataset"]]

    def _set_default_parameters(self):
        cfg = self.final_config_dict
        external = self.external_config_dict
        plugin = registry.is_plugin_model(self.model)

        if "data_path" not in external:
            cfg["data_path"] = default_data_path()
        # a seq2seq row is a whole window: RecBole's 2048 prefix rows per batch would be 2048 users
        if plugin and cfg.get("train_mode") == "seq2seq" and "train_batch_size" not in external:
            cfg["train_batch_size"] = cfg.get("seq2seq_batch_size") or cfg["train_batch_size"]
        # CE needs no sampled negatives; BPR and BCE need one per row (RecBole's default) unless told otherwise.
        if "train_neg_sample_args" not in external:
            if plugin and cfg.get("train_mode") == "seq2seq":
                cfg["train_neg_sample_args"] = None  # seq2seq models draw one negative per position
            elif cfg.get("loss_type") in ("BPR", "BCE"):
                cfg["train_neg_sample_args"] = {"distribution": "uniform", "sample_num": 1, "alpha": 1.0,
                                                "dynamic": False, "candidate_num": 0}
            elif cfg.get("loss_type") == "CE":
                cfg["train_neg_sample_args"] = None
        if not plugin:
            if external.get("train_mode", "augment") != "augment":
                raise ConfigError(
                    f"train_mode [{external['train_mode']}] is only available for recbole_attn models; "
                    f"RecBole's [{self.model}] trains in its own way (train_mode: augment)"
                )
            cfg["train_mode"] = "augment"
            # without an input_type of its own RecBole's model reads only these (else a ValueError deep in a loader)
            if not hasattr(self.model_class, "input_type") and cfg.get("loss_type") not in ("CE", "BPR"):
                raise ConfigError(f"invalid value for [loss_type]: {cfg.get('loss_type')!r}; RecBole's "
                                  f"[{self.model}] takes 'CE' or 'BPR'")
        if external.get("seq2seq_windows", "all") != "all" and cfg.get("train_mode") != "seq2seq":
            raise ConfigError(f"[seq2seq_windows] is only read in train_mode seq2seq; [{self.model}] trains in "
                              f"train_mode [{cfg.get('train_mode')}] and would ignore it")
        super()._set_default_parameters()
        if plugin and cfg.get("loss_type") == "BCE":
            # RecBole knows CE and BPR only; BCE, like BPR, scores one (positive, negative) pair per row
            cfg["MODEL_INPUT_TYPE"] = InputType.PAIRWISE
        from recbole_attn.validation import validate_model_config, validate_optimizer_config

        validate_optimizer_config(cfg)
        if plugin:
            validate_model_config(cfg, explicit=external)
        self._check_dataset_files()

    def _check_dataset_files(self):
        dataset = self.final_config_dict["dataset"]
        if dataset == "ml-100k" or self.final_config_dict.get("benchmark_filename"):
            return  # ml-100k ships inside recbole
        folder = self.final_config_dict["data_path"]  # RecBole has appended the dataset name
        path = os.path.join(folder, f"{dataset}.inter")
        if os.path.isfile(path):
            from recbole_attn.data.validate import check_inter_file

            cfg = self.final_config_dict
            load_col = cfg.get("load_col")
            self.inter_file_counts = check_inter_file(
                path, uid_field=cfg["USER_ID_FIELD"], iid_field=cfg["ITEM_ID_FIELD"], time_field=cfg["TIME_FIELD"],
                sep=cfg.get("field_separator") or "\t", encoding=cfg.get("encoding") or "utf-8",
                load_columns=load_col.get("inter") if isinstance(load_col, dict) else None,
                leave_one_out="LS" in ((cfg.get("eval_args") or {}).get("split") or {}))
            return
        how = CONVERT_COMMANDS.get(
            dataset,
            f"python -m recbole_attn.data.convert --format seq|movielens|csv --input FILE --name {dataset}",
        )
        raise DataError(
            f"dataset [{dataset}] not found: {os.path.join(folder, dataset + '.inter')} does not exist; "
            f"create it with: {how}"
        )

    def _init_device(self):
        cfg = self.final_config_dict
        if cfg.get("use_gpu") is False:
            cfg["gpu_id"] = ""  # force CPU (RecBole alone would still pick CUDA when gpu_id is set)
        if "local_rank" not in cfg:
            return super()._init_device()
        import torch

        if isinstance(cfg["gpu_id"], tuple):
            cfg["gpu_id"] = ",".join(map(str, cfg["gpu_id"]))
        cfg["gpu_id"] = str(cfg["gpu_id"])
        use_cuda = len(cfg["gpu_id"]) > 0 and torch.cuda.is_available()
        if use_cuda:
            return super()._init_device()
        # RecBole hard-codes NCCL (CUDA only); on CPU run the same process group over gloo.
        torch.distributed.init_process_group(
            backend="gloo",
            rank=cfg["local_rank"] + cfg["offset"],
            world_size=cfg["world_size"],
            init_method=f"tcp://{cfg['ip']}:{cfg['port']}",
        )
        cfg["device"] = torch.device("cpu")
        cfg["single_spec"] = False
        if cfg["local_rank"] != 0:
            cfg["state"] = "error"
            cfg["show_progress"] = False
            cfg["verbose"] = False
