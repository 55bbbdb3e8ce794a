"""Checkpoint files that load safely on torch>=2.6.

RecBole 1.2.1 pickles its ``Config`` object with protocol 4, which torch's weights-only
loader (the default since torch 2.6) refuses. Our checkpoints hold only tensors and plain
Python values (the configuration as a plain dict), so they load with ``weights_only=True``:
loading one never executes code from the file. Files are written atomically.
"""

import contextlib
import enum
import os
import random
import signal
import tempfile
import threading

import numpy as np
import torch

from recbole_attn.errors import CheckpointError

FORMAT = "recbole_attn/1"


def plain_value(value):
    """A value made of str/int/float/bool/None, lists and dicts only."""
    if isinstance(value, np.generic):  # before float: np.float64 subclasses float
        return value.item()
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, (list, tuple)):
        return [plain_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain_value(v) for k, v in value.items()}
    return str(value)


def plain_config(config):
    return {key: plain_value(config[key]) for key in config.final_config_dict}


def rng_state(train_data=None):
    np_state = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "numpy": [np_state[0], np_state[1].tolist(), np_state[2], np_state[3], np_state[4]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if train_data is not None and getattr(train_data, "generator", None) is not None:
        state["train_loader"] = train_data.generator.get_state()
    return state


def set_rng_state(state, train_data=None):
    random.setstate((state["python_version"], tuple(state["python"]), None))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if train_data is not None and "train_loader" in state:
        train_data.generator.set_state(state["train_loader"])


@contextlib.contextmanager
def signals_deferred(signums=(signal.SIGINT, signal.SIGTERM)):
    """Hold Python-handled signals until the block ends, then run their handlers.

    A Ctrl-C (or the CLI's SIGTERM handler) raising in the middle of a save could land between
    the temporary file's creation and the ``try`` that removes it, leaving the file behind.
    Signals are only deferred in the main thread (where Python runs their handlers) and only
    when a Python handler is installed: a default SIGTERM still ends the process at once.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = {}
    holding = True

    def hold(signum, frame):
        if holding:
            received.append(signum)
        else:  # arrived while the handlers are being put back
            previous[signum](signum, frame)

    for signum in signums:
        if callable(signal.getsignal(signum)):
            previous[signum] = signal.signal(signum, hold)
    try:
        yield
    finally:
        holding = False
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in received:  # each handler usually raises on the first
            previous[signum](signum, None)


def save_atomic(state, path):
    """Write to a temporary file in the same folder, then rename: a kill while saving never
    leaves a truncated file under ``path``, and an interrupt waits for the save to finish."""
    with signals_deferred():
        _save_atomic(state, path)


def _save_atomic(state, path):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pth", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load(path, map_location="cpu"):
    """Load a recbole_attn checkpoint without unpickling arbitrary objects.

    Raises:
        CheckpointError: the file is missing, is not a checkpoint, or was written by
            something else (e.g. RecBole's own trainer).
    """
    path = str(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint [{path}] does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception:  # torch raises several types for foreign or corrupt files
        raise CheckpointError(
            f"[{path}] is not a recbole_attn checkpoint: not a PyTorch file, or it holds objects that "
            "could only be loaded by running code from it (e.g. RecBole's own checkpoints), which is refused"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "state_dict" not in state:
        raise CheckpointError(f"[{path}] is not a recbole_attn checkpoint")
    return state
