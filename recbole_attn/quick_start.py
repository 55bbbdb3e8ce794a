"""Run a model end to end, RecBole-style: config, data, model, training, full-sort test.

:func:`run_recbole_attn` mirrors ``recbole.quick_start.run_recbole`` (and ``run`` for the
multi-process DDP path) for every registry model, plugin or RecBole's.
"""

import logging
import os
import sys
from logging import getLogger

import torch
import torch.distributed as dist

from recbole.utils import get_environment, init_logger, init_seed, set_color

from recbole_attn import checkpoint, registry
from recbole_attn.config import Config
from recbole_attn.data.utils import create_dataset, data_preparation


def _start_log(config):
    """RecBole's ``init_logger`` (a new log file per run). It uses ``logging.basicConfig``, which does
    nothing once the root logger has handlers: drop the previous run's, so every run of a process
    (tuning trials, comparisons) gets its own log."""
    # RecBole's ensure_dir checks, then creates: DDP processes starting together race on it
    os.makedirs(os.path.join("log", config["model"]), exist_ok=True)
    os.makedirs(config["checkpoint_dir"], exist_ok=True)
    root = logging.getLogger()
    for handler in root.handlers[:]:
        if type(handler) in (logging.FileHandler, logging.StreamHandler):
            root.removeHandler(handler)
            handler.close()
    init_logger(config)


def _seed(config, seed):
    """RecBole's ``init_seed`` (which pins cuDNN only), and with ``reproducibility`` the thread
    count MKL splits a matrix product over: torch turns MKL's per-call choice of threads off only
    when ``set_num_threads`` is called, and a product split over another number of threads sums in
    another order (other last bits on the larger products)."""
    init_seed(seed, config["reproducibility"])
    if config["reproducibility"]:
        torch.set_num_threads(torch.get_num_threads())


def prepare(model=None, dataset=None, config_file_list=None, config_dict=None, read_cmd_line=True,
            log=True, log_file=True):
    """Config, dataloaders and a freshly initialised model: ``(config, model, train, valid, test)``.

    ``log_file=False`` writes no log file (loading a checkpoint for evaluation or plots)."""
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list,
                    config_dict=config_dict, read_cmd_line=read_cmd_line)
    _seed(config, config["seed"])
    if log_file:
        _start_log(config)
    logger = getLogger()
    if log:
        logger.info(sys.argv)
        logger.info(config)
    counts = getattr(config, "inter_file_counts", None)
    if counts and counts["single_interaction_users"]:
        logger.warning(f"{counts['single_interaction_users']} of {counts['users']} users have a single "
                       "interaction: no training, validation or test row can be built for them, so they are left out")
    if counts and counts["valid_users"] == 0:
        logger.warning("no user has 4 or more interactions: the leave-one-out split has no validation rows, "
                       "so there is no early stopping and the model of the last epoch is tested")

    data = create_dataset(config)
    if log:
        logger.info(data)
    train_data, valid_data, test_data = data_preparation(config, data)

    _seed(config, config["seed"] + config["local_rank"])
    model_class = registry.get_model(config["model"])
    net = model_class(config, train_data._dataset).to(config["device"])
    if log:
        logger.info(net)
    return config, net, train_data, valid_data, test_data


def run_recbole_attn(model=None, dataset=None, config_file_list=None, config_dict=None, saved=True,
                     resume=None, read_cmd_line=True, queue=None, verbose=True):
    """Train and test one model; returns RecBole's result dict (plus ``"model"``).

    Args:
        resume (str, optional): a ``*-last.pth`` checkpoint of an interrupted run to continue.
    """
    config, net, train_data, valid_data, test_data = prepare(
        model, dataset, config_file_list, config_dict, read_cmd_line, log=verbose)
    logger = getLogger()
    trainer = registry.get_trainer(config["MODEL_TYPE"], config["model"])(config, net)
    if resume:
        trainer.resume_checkpoint(resume, train_data=train_data)

    try:
        best_valid_score, best_valid_result = trainer.fit(
            train_data, valid_data, saved=saved, show_progress=config["show_progress"], verbose=verbose)
    except KeyboardInterrupt as interrupt:
        interrupt.last_checkpoint = getattr(trainer, "last_checkpoint_file", None)  # for the CLI's message
        raise
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])

    if verbose:
        logger.info("The running environment of this training is as follows:\n" + get_environment(config).draw())
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")

    result = {
        "model": config["model"],
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "saved_model_file": trainer.saved_model_file if saved else None,
        "grad_norms": list(getattr(trainer, "grad_norms", [])),
        "best_epoch": getattr(trainer, "best_epoch", None),
        "fit_time_s": getattr(trainer, "fit_time_s", None),
    }
    if not config["single_spec"]:
        dist.destroy_process_group()
    if config["local_rank"] == 0 and queue is not None:
        queue.put(result)
    return result


def _run_rank(rank, model, dataset, config_file_list, config_dict, saved, queue):
    # spawned processes get this process's sys.argv, so --key=value overrides apply as in RecBole
    config_dict = dict(config_dict, local_rank=rank)
    run_recbole_attn(model, dataset, config_file_list, config_dict, saved=saved, queue=queue)


def run(model=None, dataset=None, config_file_list=None, config_dict=None, saved=True, resume=None,
        nproc=1, world_size=-1, ip="localhost", port="5678", group_offset=0):
    """Single process, or ``nproc`` DDP processes on this machine (RecBole's ``run``)."""
    if nproc == 1 and world_size <= 0:
        return run_recbole_attn(model, dataset, config_file_list, config_dict, saved=saved, resume=resume)
    import torch.multiprocessing as mp

    config_dict = dict(config_dict or {})
    config_dict.update({"world_size": nproc if world_size == -1 else world_size, "ip": ip, "port": port,
                        "nproc": nproc, "offset": group_offset})
    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_run_rank, args=(model, dataset, config_file_list, config_dict, saved, queue),
             nprocs=nproc, join=True)
    return None if queue.empty() else queue.get()


def objective_function(config_dict=None, config_file_list=None, saved=True):
    """The objective for RecBole's ``HyperTuning``: trains through the plugin registry and
    returns the dict RecBole expects (``model`` included)."""
    logging.basicConfig(level=logging.ERROR)
    return run_recbole_attn(config_dict=config_dict, config_file_list=config_file_list, saved=saved,
                            read_cmd_line=False, verbose=False)


def load_data_and_model(model_file, config_dict=None):
    """Rebuild config, data and model from a recbole_attn checkpoint (loaded safely).

    Returns ``(config, model, dataset, train_data, valid_data, test_data)`` like RecBole's."""
    state = checkpoint.load(model_file)
    overrides = dict(state.get("config_overrides") or {})
    overrides.update(config_dict or {})
    saved_cfg = state["config"]
    config, net, train_data, valid_data, test_data = prepare(
        saved_cfg["model"], saved_cfg["dataset"], None, overrides, read_cmd_line=False, log=False, log_file=False)
    from recbole_attn.trainer import check_compatible

    check_compatible(state, config, net, model_file)
    net.load_state_dict(state["state_dict"])
    net.load_other_parameter(state.get("other_parameter"))
    return config, net, train_data._dataset, train_data, valid_data, test_data
