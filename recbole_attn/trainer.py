"""Trainers.

:func:`with_checkpoint_fixes` adds to any RecBole trainer class what every run needs:

* checkpoints in the safe format of :mod:`recbole_attn.checkpoint` (they load on torch>=2.6,
  where RecBole's own ``evaluate(load_best_model=True)`` and ``resume_checkpoint`` crash),
  written atomically, with file names that cannot collide between two runs started in the
  same second;
* a "last" checkpoint at the end of every evaluated epoch (model, optimizer, early-stopping
  state, RNG states), so an interrupted run resumes where it stopped with ``--resume``;
* ``adam_betas`` for the Adam and AdamW learners;
* the global gradient norm, averaged per epoch, in the log and in ``grad_norms``;
* the time spent in ``fit`` summed over every sitting of a resumed run, in ``fit_time_s``;
* a clear error when the loss becomes NaN/inf, naming the last good checkpoint;
* DDP over gloo when running distributed on CPU.
"""

import os
import time
import uuid
from logging import getLogger

import torch
from recbole.trainer import Trainer as RecBoleTrainer
from recbole.utils import get_local_time, set_color

from recbole_attn import checkpoint
from recbole_attn.errors import CheckpointError, RecboleAttnError


class TrainingDiverged(RecboleAttnError):
    """The training loss became NaN or infinite."""


class CheckpointMixin:
    """Put before a RecBole trainer class in the bases (see :func:`with_checkpoint_fixes`)."""

    def __init__(self, config, model):
        single_spec = config["single_spec"]
        cpu_ddp = not single_spec and config["device"].type == "cpu"
        if cpu_ddp:  # RecBole builds DDP with device_ids=[rank], which CPU modules reject
            config["single_spec"] = True
        super().__init__(config, model)
        if cpu_ddp:
            config["single_spec"] = False
            self.distributed_model = torch.nn.parallel.DistributedDataParallel(self.model)
        run_id = [f"{get_local_time()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"]
        if not single_spec:  # all DDP ranks must name rank 0's checkpoint file
            torch.distributed.broadcast_object_list(run_id, src=0)
        run_id = run_id[0]
        self.saved_model_file = os.path.join(self.checkpoint_dir, f"{config['model']}-{run_id}.pth")
        self.last_checkpoint_file = self.saved_model_file[: -len(".pth")] + "-last.pth"
        self.grad_norms = []  # per epoch
        self.best_epoch = None  # the epoch of the best validation score (saved as the best model)
        self._grad_norm_sum = 0.0
        self._grad_norm_steps = 0
        self._epoch_idx = 0
        self._train_data = None
        # seconds in fit (training and validation) over all sittings; None once resumed from a
        # checkpoint that did not record it
        self.fit_time_s = 0.0
        self._fit_started = None
        self.optimizer.register_step_pre_hook(self._record_grad_norm)

    def _build_optimizer(self, **kwargs):
        """RecBole's optimizer, with ``adam_betas`` when set (RecBole passes none: torch's
        (0.9, 0.999); the official SASRec and FPARec code use (0.9, 0.98))."""
        optimizer = super()._build_optimizer(**kwargs)
        betas = self.config["adam_betas"]
        if betas is not None:
            for group in optimizer.param_groups:
                group["betas"] = tuple(float(b) for b in betas)
        return optimizer

    # ----- gradient norm ---------------------------------------------------------------
    def _record_grad_norm(self, optimizer, args, kwargs):
        grads = [p.grad.detach() for p in self.model.parameters() if p.grad is not None]
        if grads:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
            self._grad_norm_sum += float(norm)
            self._grad_norm_steps += 1

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self._epoch_idx = epoch_idx
        self._grad_norm_sum, self._grad_norm_steps = 0.0, 0
        loss = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        grad_norm = self._grad_norm_sum / max(1, self._grad_norm_steps)
        self.grad_norms.append(grad_norm)
        getLogger().info(set_color("epoch %d grad_norm", "green") % epoch_idx + f": {grad_norm:.6f}")
        return loss

    def _check_nan(self, loss):
        if not torch.isfinite(loss).all():
            last = self.last_checkpoint_file if os.path.isfile(self.last_checkpoint_file) else None
            kept = f"the last good checkpoint is {last}" if last else "no epoch had finished yet"
            raise TrainingDiverged(
                f"training loss became {float(loss.detach())} in epoch {self._epoch_idx}; training stopped, {kept}. "
                "Lower learning_rate or set clip_grad_norm."
            )

    # ----- saving ----------------------------------------------------------------------
    def _state(self, epoch):
        return {
            "format": checkpoint.FORMAT,
            "config": checkpoint.plain_config(self.config),
            "config_overrides": checkpoint.plain_value(self.config.external_config_dict),
            "epoch": epoch,
            "cur_step": int(self.cur_step),
            "best_valid_score": float(self.best_valid_score),
            "best_valid_result": checkpoint.plain_value(dict(self.best_valid_result or {})),
            "state_dict": self.model.state_dict(),
            "other_parameter": checkpoint.plain_value(self.model.other_parameter()),
            "optimizer": self.optimizer.state_dict(),
            "grad_norms": [float(g) for g in self.grad_norms],
            "best_epoch": self.best_epoch,
            "fit_time_s": self._fit_time_so_far(),
        }

    def _fit_time_so_far(self):
        if self.fit_time_s is None or self._fit_started is None:
            return self.fit_time_s
        return self.fit_time_s + (time.monotonic() - self._fit_started)

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        if saved_model_file == self.saved_model_file:  # RecBole saves the best model only on improvement
            self.best_epoch = epoch
        checkpoint.save_atomic(self._state(epoch), saved_model_file)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    def save_last_checkpoint(self, epoch):
        """Everything needed to continue after ``epoch`` as if never interrupted."""
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        state = self._state(epoch)
        state["best_model_file"] = self.saved_model_file
        state["rng"] = checkpoint.rng_state(self._train_data)
        checkpoint.save_atomic(state, self.last_checkpoint_file)

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        self._train_data = train_data
        if self.start_epoch > 0 and (self.start_epoch >= self.epochs or self.cur_step > self.stopping_step):
            # resumed from a run whose training had finished (all epochs, or stopped early):
            # RecBole's fit would save the current weights as epoch -1 over the best model
            self.logger.info("Training had already finished in the resumed run; evaluating its best model")
            return self.best_valid_score, self.best_valid_result

        def end_of_epoch(epoch_idx, valid_score):
            if saved:
                self.save_last_checkpoint(epoch_idx)
            if callback_fn:
                callback_fn(epoch_idx, valid_score)

        self._fit_started = time.monotonic()
        try:
            return super().fit(train_data, valid_data, verbose=verbose, saved=saved,
                               show_progress=show_progress, callback_fn=end_of_epoch)
        finally:
            self.fit_time_s, self._fit_started = self._fit_time_so_far(), None

    # ----- loading ---------------------------------------------------------------------
    def resume_checkpoint(self, resume_file, train_data=None):
        """Continue from a checkpoint written by :meth:`save_last_checkpoint` (or a best-model file)."""
        state = checkpoint.load(resume_file, map_location=self.device)
        check_compatible(state, self.config, self.model, resume_file)
        self.model.load_state_dict(state["state_dict"])
        self.model.load_other_parameter(state.get("other_parameter"))
        self.optimizer.load_state_dict(state["optimizer"])
        self.start_epoch = state["epoch"] + 1
        self.cur_step = state["cur_step"]
        self.best_valid_score = state["best_valid_score"]
        self.best_valid_result = state.get("best_valid_result") or None
        self.grad_norms = list(state.get("grad_norms", []))
        self.best_epoch = state.get("best_epoch")
        self.fit_time_s = state.get("fit_time_s")
        if state.get("best_model_file"):
            self.saved_model_file = state["best_model_file"]
            self.last_checkpoint_file = str(resume_file)
        if "rng" in state:
            checkpoint.set_rng_state(state["rng"], train_data)
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if eval_data and load_best_model:
            if not self.config["single_spec"]:
                torch.distributed.barrier()  # rank 0 writes the file the other ranks read
            checkpoint_file = model_file or self.saved_model_file
            state = checkpoint.load(checkpoint_file, map_location=self.device)
            check_compatible(state, self.config, self.model, checkpoint_file)
            self.model.load_state_dict(state["state_dict"])
            self.model.load_other_parameter(state.get("other_parameter"))
            self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
        return super().evaluate(eval_data, load_best_model=False, model_file=model_file,
                                show_progress=show_progress)


def check_compatible(state, config, model, path):
    """A checkpoint only fits a run with the same model, sequence length and item count."""
    saved = state.get("config", {})
    for key in ("model", "MAX_ITEM_LIST_LENGTH"):
        if key in saved and saved[key] != config[key]:
            raise CheckpointError(
                f"checkpoint [{path}] was trained with {key}={saved[key]!r}, "
                f"but this run has {key}={config[key]!r}"
            )
    current = model.state_dict()
    for name, tensor in state["state_dict"].items():
        if name in current and current[name].shape != tensor.shape:
            if "item" in name and "embedding" in name:
                raise CheckpointError(
                    f"checkpoint [{path}] was trained with {tensor.shape[0] - 1} items, "
                    f"but dataset [{config['dataset']}] has {current[name].shape[0] - 1} items"
                )
            raise CheckpointError(
                f"checkpoint [{path}] does not fit this model: parameter [{name}] has shape "
                f"{tuple(tensor.shape)} in the file and {tuple(current[name].shape)} here"
            )


_FIXED = {}


def with_checkpoint_fixes(trainer_class):
    """``trainer_class`` with :class:`CheckpointMixin` in front (cached, so it stays picklable)."""
    if issubclass(trainer_class, CheckpointMixin):
        return trainer_class
    if trainer_class is RecBoleTrainer:
        return Trainer
    if trainer_class not in _FIXED:
        _FIXED[trainer_class] = type(trainer_class.__name__, (CheckpointMixin, trainer_class),
                                     {"__module__": __name__})
    return _FIXED[trainer_class]


class Trainer(CheckpointMixin, RecBoleTrainer):
    """RecBole's Trainer with the fixes above; used for all recbole_attn models."""
