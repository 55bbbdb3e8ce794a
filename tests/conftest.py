"""Shared fixtures: a tiny synthetic atomic dataset and model builders.

RecBole's Config reads ``--key=value`` from ``sys.argv``; tests build configs with
``read_cmd_line=False`` so pytest's own options never leak into them.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
N_TINY = 8  # MAX_ITEM_LIST_LENGTH of the tiny config
SHARED_RAW = REPO.parent / "shared" / "data" / "raw"

TINY = {
    "epochs": 1,
    "MAX_ITEM_LIST_LENGTH": N_TINY,
    "hidden_size": 16,
    "inner_size": 32,
    "n_layers": 2,
    "n_heads": 2,
    "train_batch_size": 64,
    "eval_batch_size": 256,
    "use_gpu": False,
    "state": "ERROR",
    "show_progress": False,
    "fpa_rank": 3,
    "hidden_dropout_prob": 0.1,
    "attn_dropout_prob": 0.1,
}


def write_tiny_dataset(folder, name="tiny", n_users=30, n_items=40, max_len=25, seed=0):
    """Users with 1..max_len interactions (some longer than MAX_ITEM_LIST_LENGTH)."""
    rng = np.random.default_rng(seed)
    path = Path(folder) / name
    path.mkdir(parents=True, exist_ok=True)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u in range(1, n_users + 1):
        length = int(rng.integers(1, max_len + 1)) if u > 3 else [1, 2, max_len][u - 1]
        for t, item in enumerate(rng.integers(1, n_items + 1, size=length)):
            lines.append(f"{u}\t{item}\t{t}")
    (path / f"{name}.inter").write_text("\n".join(lines) + "\n")
    return str(folder)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def saved_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("saved"))


def tiny_config(data_path, checkpoint_dir, **overrides):
    cfg = dict(TINY, data_path=data_path, checkpoint_dir=checkpoint_dir)
    cfg.update(overrides)
    return cfg


def build(model, data_path, checkpoint_dir, dataset="tiny", **overrides):
    """``(config, model, train, valid, test)`` for a tiny config."""
    from recbole_attn.quick_start import prepare

    return prepare(model, dataset, config_dict=tiny_config(data_path, checkpoint_dir, **overrides),
                   read_cmd_line=False, log=False)


def make_batch(n_items, lengths, width=N_TINY, seed=0):
    """A right-padded batch of random item ids with the given lengths."""
    import torch

    g = torch.Generator().manual_seed(seed)
    seq = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        seq[row, :length] = torch.randint(1, n_items, (length,), generator=g)
    return seq, torch.tensor(lengths)


def assert_no_leakage(encode, n_items, lengths=(N_TINY, 5, 1, 3), width=N_TINY):
    """``encode(seq, lens) -> [B, W, ...]``: outputs at positions <= t do not change when items
    after t change (causality), and valid outputs do not change whatever padding slots hold."""
    import torch

    seq, lens = make_batch(n_items, list(lengths), width)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        base = encode(seq, lens)
        for t in range(width - 1):
            changed = seq.clone()
            for row, length in enumerate(lens.tolist()):
                if t + 1 < length:
                    changed[row, t + 1:length] = torch.randint(1, n_items, (length - t - 1,), generator=g)
            out = encode(changed, lens)
            assert torch.allclose(out[:, :t + 1], base[:, :t + 1], atol=1e-6), f"position {t} sees the future"
        garbage = seq.clone()
        for row, length in enumerate(lens.tolist()):
            garbage[row, length:] = torch.randint(1, n_items, (width - length,), generator=g)
        out = encode(garbage, lens)
        for row, length in enumerate(lens.tolist()):
            assert torch.allclose(out[row, :length], base[row, :length], atol=1e-6), "padding leaks"


def assert_save_load_round_trip(name, overrides, data_path, checkpoint_dir):
    """Train and save ``name``, reload it with ``load_data_and_model``: same config, and a fresh
    model given the saved weights scores every item exactly as the reloaded one."""
    import torch

    from recbole_attn import checkpoint
    from recbole_attn.quick_start import load_data_and_model, run_recbole_attn

    result = run_recbole_attn(name, "tiny", config_dict=tiny_config(data_path, checkpoint_dir, **overrides),
                              read_cmd_line=False, verbose=False)
    state = checkpoint.load(result["saved_model_file"])
    config, model, _, _, _, test = load_data_and_model(result["saved_model_file"])
    assert config["model"] == name and all(config[k] == v for k, v in overrides.items())
    model.eval()
    batch = next(iter(test))[0]
    _, fresh, _, _, _ = build(name, data_path, checkpoint_dir, seed=123, **overrides)
    fresh.eval()
    with torch.no_grad():
        before = fresh.full_sort_predict(batch)
        fresh.load_state_dict(state["state_dict"])
        assert torch.equal(fresh.full_sort_predict(batch), model.full_sort_predict(batch))
        assert not torch.equal(before, model.full_sort_predict(batch))


def assert_loss_decreases(model, batch, steps, same_draws=False):
    """Adam (lr 0.01) on one fixed batch: every loss finite, the last under 90% of the first.
    ``same_draws`` reseeds each step, so sampled negatives and dropout masks repeat."""
    import math

    import torch

    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(steps):
        if same_draws:
            torch.manual_seed(0)
        optimizer.zero_grad()
        loss = model.calculate_loss(batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(x) for x in losses), losses
    assert losses[-1] < 0.9 * losses[0], losses


def run_cli(*args, cwd=None, timeout=600):
    """Run ``run_recbole_attn.py`` as a user would; returns the CompletedProcess."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(REPO / "run_recbole_attn.py"), *args], cwd=cwd or REPO,
                          capture_output=True, text=True, timeout=timeout, env=env)
