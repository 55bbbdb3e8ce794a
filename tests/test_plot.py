"""Plots: every command renders from tiny trained checkpoints to a PNG of the requested pixel
size (and a PDF); log parsing and the correlation formula on fixed inputs."""

import logging
import os

import matplotlib.image
import numpy as np
import pytest
import torch

from recbole_attn import plot
from recbole_attn.errors import ConfigError
from tests.conftest import write_tiny_dataset

TINY_PLOT = {"epochs": 2, "MAX_ITEM_LIST_LENGTH": 20, "hidden_size": 16, "inner_size": 32, "n_layers": 2,
             "n_heads": 2, "train_batch_size": 64, "use_gpu": False, "fpa_rank": 4, "show_progress": False,
             "state": "INFO"}
SIZE = ["--width", "4", "--height", "3", "--dpi", "50"]  # 200 x 150 pixels


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """AWRSR-SASRec (refined attention) and FPARec (positional attention), with their logs."""
    from recbole_attn.quick_start import run_recbole_attn

    folder = tmp_path_factory.mktemp("plot")
    data = write_tiny_dataset(folder / "data")
    old_cwd, old_threads = os.getcwd(), torch.get_num_threads()
    os.chdir(folder)  # RecBole writes log/ into the working directory
    torch.set_num_threads(1)
    root = logging.getLogger()
    handlers = root.handlers[:]
    files = {}
    try:
        for model, extra in (("AWRSR-SASRec", {"refine_mode": "add"}), ("FPARec", {})):
            # RecBole's init_logger calls logging.basicConfig, a no-op while the root logger has
            # handlers (pytest's): detach them so the run writes its log file
            root.handlers = []
            config = dict(TINY_PLOT, data_path=data, checkpoint_dir=str(folder / "saved"), **extra)
            result = run_recbole_attn(model, "tiny", config_dict=config, read_cmd_line=False, verbose=True)
            for handler in root.handlers:
                handler.close()
            files[model] = result["saved_model_file"]
            files[model + ".log"] = str(next((folder / "log" / model).glob("*.log")))
    finally:
        root.handlers = handlers
    yield {"folder": folder, **files}
    os.chdir(old_cwd)
    torch.set_num_threads(old_threads)


def check_png(path, width=200, height=150):
    assert os.path.getsize(path) > 0
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (height, width)
    assert image[..., :3].std() > 0  # something was drawn
    pdf = path[: -len(".png")] + ".pdf"
    assert os.path.getsize(pdf) > 0


def test_attention_heatmaps(trained, capsys):
    out = str(trained["folder"] / "out" / "attention.png")
    # 2 layers x 2 heads x (A, B) panels need room: 8 x 6 inches at 25 dpi
    assert plot.main(["attention", "--checkpoint", trained["AWRSR-SASRec"], "--out", out,
                      "--width", "8", "--height", "6", "--dpi", "25"]) == 0
    check_png(out)
    assert out in capsys.readouterr().out


def test_attention_weights_cover_last_positions_of_layers_and_heads(trained):
    _, model, dataset, _, _, test_data = plot.load_checkpoint(trained["AWRSR-SASRec"])
    row = plot.sample_row(model, test_data, dataset, min_length=15)
    layers = plot.attention_weights(model, row)
    length = int(row[model.ITEM_SEQ_LEN][0])
    assert length >= 15 and len(layers) == 2
    for layer in layers:
        assert layer["A"].shape == layer["B"].shape == (2, length, length)
        assert np.allclose(layer["A"].sum(-1), 1, atol=1e-5)  # softmax rows over valid keys
        assert np.allclose(np.triu(layer["A"], 1), 0)  # causal
    assert not any(m.keep_attention for m in plot.attention_layers(model))  # switched off again


def test_positional_attention(trained):
    out = str(trained["folder"] / "out" / "positional.png")
    assert plot.main(["positional", "--checkpoint", trained["FPARec"], "--out", out, *SIZE]) == 0
    check_png(out)


def test_positional_needs_a_positional_model(trained, capsys):
    out = str(trained["folder"] / "out" / "bad.png")
    assert plot.main(["positional", "--checkpoint", trained["AWRSR-SASRec"], "--out", out, *SIZE]) == 2
    assert "error: model [AWRSR-SASRec] has no positional attention" in capsys.readouterr().err
    assert not os.path.exists(out)


def test_positional_embedding_correlation(trained):
    out = str(trained["folder"] / "out" / "pos_corr.png")
    assert plot.main(["pos-correlation", "--checkpoint", trained["AWRSR-SASRec"], "--out", out, *SIZE]) == 0
    check_png(out)


def test_ndcg_curve_of_two_checkpoints(trained):
    out = str(trained["folder"] / "out" / "ndcg.png")
    assert plot.main(["ndcg-curve", "--checkpoint", trained["AWRSR-SASRec"], trained["FPARec"],
                      "--labels", "AWRSR,FPARec", "--max_n", "20", "--out", out, *SIZE]) == 0
    check_png(out)


def test_training_curves_from_logs_and_checkpoints(trained):
    out = str(trained["folder"] / "out" / "training.png")
    inputs = [trained["AWRSR-SASRec.log"], trained["FPARec.log"], trained["FPARec"]]
    assert plot.main(["training", *inputs, "--out", out, "--width", "5", "--height", "2", "--dpi", "60"]) == 0
    check_png(out, width=300, height=120)
    parsed = plot.parse_log(trained["FPARec.log"])
    assert sorted(parsed["grad_norm"]) == sorted(parsed["valid"]) == [0, 1]
    assert "ndcg@10" in parsed["valid"][0]


def test_parse_log_on_recbole_lines(tmp_path):
    log = tmp_path / "run.log"
    log.write_text(
        "Mon 23 Nov 2026 12:41:38 INFO  epoch 0 grad_norm: 0.170832\n"
        "Mon 23 Nov 2026 12:41:38 INFO  epoch 0 training [time: 11.17s, train loss: 147.8857]\n"
        "Mon 23 Nov 2026 12:41:38 INFO  epoch 0 evaluating [time: 0.22s, valid_score: 0.012900]\n"
        "Mon 23 Nov 2026 12:41:38 INFO  valid result: \n"
        "recall@1 : 0.0064    ndcg@5 : 0.0106    ndcg@10 : 0.0129    hit@10 : 0.0223\n"
        "Mon 23 Nov 2026 12:41:53 INFO  epoch 1 grad_norm: nan\n")
    parsed = plot.parse_log(str(log))
    assert parsed["valid"] == {0: {"recall@1": 0.0064, "ndcg@5": 0.0106, "ndcg@10": 0.0129, "hit@10": 0.0223}}
    assert parsed["grad_norm"][0] == 0.170832 and np.isnan(parsed["grad_norm"][1])


def write_curve_log(path, values, start=0):
    with open(path, "w") as f:
        for epoch, value in enumerate(values, start):
            f.write(f"Sun 06 Dec 2026 14:57:08 INFO  epoch {epoch} evaluating [time: 2.48s, valid_score: {value:.6f}]\n"
                    f"Sun 06 Dec 2026 14:57:08 INFO  valid result: \nndcg@10 : {value:.6f}    hit@10 : 0.2\n")


def test_training_summary_reads_trend_and_noise(tmp_path, capsys):
    # rising 0.001 per epoch, then alternating +-0.002 around a flat top: best, samples, noise, trend
    values = [0.001 * e for e in range(60)] + [0.06 + (0.002 if e % 2 else 0.0) for e in range(40)]
    log = str(tmp_path / "run.log")
    write_curve_log(log, values)
    s = plot.curve_summary({e: v for e, v in enumerate(values)}, every=50, tail=40)
    assert (s["first"], s["last"], s["best_epoch"], s["tail_first"]) == (0, 99, 61, 60)
    assert [e for e, _ in s["sampled"]] == [0, 50] and s["sampled"][1][1] == pytest.approx(0.05)
    assert s["tail_mean_change"] == pytest.approx(0.002) and s["tail_largest_change"] == pytest.approx(0.002)
    assert abs(s["tail_slope"]) < 5e-4  # flat top: the rise gives 0.05 per 50 epochs, the noise alone ~0
    rising = plot.curve_summary({e: v for e, v in enumerate(values)}, every=50, tail=50)
    assert rising["tail_slope"] > 0.005  # the window reaches back into the rise

    out = str(tmp_path / "curve.png")
    assert plot.main(["training", log, "--labels", "flat", "--tail", "40", "--out", out, *SIZE]) == 0
    printed = capsys.readouterr().out
    assert "flat: ndcg@10 over epochs 0-99; best 0.0620 at epoch 61; every 50 epochs: 0: 0.0000, 50: 0.0500" in printed
    assert "epochs 60-99: epoch-to-epoch change mean 0.00200, largest 0.0020, trend " in printed
    assert plot.main(["training", log, "--tail", "1", "--out", out, *SIZE]) == 2
    assert "--tail at least 2" in capsys.readouterr().err


def test_logs_of_a_resumed_run_join_into_one_curve(tmp_path, capsys):
    # sitting 1 evaluated epochs 0-4 but was stopped before checkpointing epoch 4; sitting 2 ran 4-7 again
    first, second = str(tmp_path / "a.log"), str(tmp_path / "b.log")
    write_curve_log(first, [0.01, 0.02, 0.03, 0.04, 0.09])
    write_curve_log(second, [0.05, 0.06, 0.07, 0.08], start=4)
    (label, valid, _), = plot.load_training([f"{first}+{second}"])
    assert sorted(valid) == list(range(8))
    assert valid[3] == pytest.approx(0.04) and valid[4] == pytest.approx(0.05)  # the later sitting's epoch 4
    out = str(tmp_path / "joined.png")
    assert plot.main(["training", f"{first}+{second}", "--labels", "run", "--every", "4", "--tail", "4",
                      "--out", out, *SIZE]) == 0
    assert "run: ndcg@10 over epochs 0-7; best 0.0800 at epoch 7; every 4 epochs: 0: 0.0100, 4: 0.0500" \
        in capsys.readouterr().out
    assert plot.main(["training", f"{first}+{tmp_path / 'missing.log'}", "--out", out, *SIZE]) == 2
    assert "missing.log] does not exist" in capsys.readouterr().err
    run_file = tmp_path / "run.json"
    run_file.write_text("{}")
    assert plot.main(["training", f"{first}+{run_file}", "--out", out, *SIZE]) == 2
    assert "only RecBole .log files can be joined" in capsys.readouterr().err


def test_correlation_is_the_papers_formula():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(6, 4)) * 3
    expected = np.tril(np.exp(p @ p.T / 2))
    expected = expected / expected.max(axis=-1, keepdims=True)  # row-wise, as the caption says
    assert np.allclose(plot.causal_row_normalized(p @ p.T / 2), expected)


def test_size_and_output_errors(tmp_path, capsys):
    assert plot.main(["pos-correlation", "--checkpoint", "missing.pth", "--out", str(tmp_path / "x.png")]) == 2
    assert "error: checkpoint [missing.pth] does not exist" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=".png or .pdf"):
        plot.save_figure(plot.new_figure(1, 1, 10), str(tmp_path / "x.svg"))
