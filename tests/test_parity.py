"""SASRecAttn is RecBole's SASRec: same initial weights, same scores, same trained metrics."""

import torch

from recbole_attn.quick_start import run_recbole_attn
from tests.conftest import build, tiny_config


def test_same_seed_gives_recboles_weights_and_scores(tiny_data, saved_dir):
    _, recbole_model, _, _, test = build("SASRec", tiny_data, saved_dir, train_mode="augment")
    _, ours, _, _, _ = build("SASRecAttn", tiny_data, saved_dir, train_mode="augment")
    theirs = list(recbole_model.parameters())
    mine = list(ours.parameters())
    assert len(theirs) == len(mine)
    assert all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(theirs, mine))
    batch = next(iter(test))[0]
    recbole_model.eval(), ours.eval()
    with torch.no_grad():
        assert torch.equal(recbole_model.full_sort_predict(batch), ours.full_sort_predict(batch))


def test_training_in_augment_mode_gives_recboles_metrics(tiny_data, tmp_path):
    results = []
    for model in ("SASRec", "SASRecAttn"):
        cfg = tiny_config(tiny_data, str(tmp_path), train_mode="augment", epochs=3)
        results.append(run_recbole_attn(model, "tiny", config_dict=cfg, read_cmd_line=False, verbose=False))
    assert results[0]["best_valid_result"] == results[1]["best_valid_result"]
    assert results[0]["test_result"] == results[1]["test_result"]
