"""Smoke tests of the speed and loss benchmark commands (their timings are never asserted:
timing stays out of unit tests)."""

import json

from recbole_attn.bench.speed import main


def test_speed_command_prints_one_row_per_model(tiny_data, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "speed.json"
    code = main(["--dataset", "tiny", "--data_path", tiny_data, "--max-len", "8", "--hidden-size", "16",
                 "--n-layers", "1", "--baseline-epochs", "1", "--max-epochs", "2", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    table = [line for line in printed.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 3  # header + SASRec, SASRecAttn, FPARec
    assert "Machine: CPU" in printed and "Validation target" in printed
    rows = json.loads(out.read_text())["rows"]
    assert [r["model"] for r in rows] == ["SASRec", "SASRecAttn", "FPARec"]
    assert [r["train_mode"] for r in rows] == ["augment", "seq2seq", "seq2seq"]
    assert rows[0]["train_rows"] > rows[1]["train_rows"]  # one row per target vs windows
    assert all(r["seconds_per_epoch"] > 0 and r["peak_mib"] >= 0 for r in rows)


def test_unknown_model_is_a_clear_error(capsys):
    assert main(["--models", "NoSuchModel"]) == 2
    assert "NoSuchModel" in capsys.readouterr().out


def test_loss_command_compares_three_ways_that_agree(capsys):
    from recbole_attn.bench.__main__ import main as bench_main

    code = bench_main(["loss", "--positions", "300", "--items", "40", "--hidden", "8", "--max-logits", "400",
                       "--repeats", "2"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "chunks of 10 rows (30 chunks)" in printed
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in printed.splitlines()
            if line.startswith("| ") and not line.startswith("| method")}
    assert set(rows) == {"plain", "recompute", "chunked"}
    assert rows["recompute"][2] == "1.00x"
    assert all(float(cells[-1].strip(" |")) < 1e-4 for cells in rows.values())  # same loss and gradients


def test_loss_command_rejects_a_bad_size(capsys):
    from recbole_attn.bench.loss import main as loss_main

    assert loss_main(["--items", "0"]) == 2
    assert "--items must be at least 1" in capsys.readouterr().err


def test_detect_anomaly_flag_is_on_for_the_runs_only(tiny_data, tmp_path, capsys, monkeypatch):
    import torch

    from recbole_attn.bench import speed

    monkeypatch.chdir(tmp_path)
    seen = []
    real_bench_model = speed.bench_model

    def recording_bench_model(*args, **kwargs):
        seen.append(torch.is_anomaly_enabled())
        return real_bench_model(*args, **kwargs)

    monkeypatch.setattr(speed, "bench_model", recording_bench_model)
    common = ["--dataset", "tiny", "--data_path", tiny_data, "--max-len", "8", "--hidden-size", "16",
              "--n-layers", "1", "--baseline-epochs", "1", "--max-epochs", "1", "--models", "SASRec,FPARec"]
    assert main(common + ["--detect-anomaly"]) == 0
    assert "anomaly detection on" in capsys.readouterr().out
    assert not torch.is_anomaly_enabled()
    assert main(common) == 0
    assert "anomaly" not in capsys.readouterr().out
    assert seen == [True, True, False, False]


def test_score_command_compares_two_chunk_orders_that_agree(tiny_data, tmp_path, capsys, monkeypatch):
    from recbole_attn.bench.__main__ import main as bench_main
    from recbole_attn.model import sequence

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sequence, "SCORE_CHUNK_ELEMENTS", 3 * 8 * 8)  # 3 full-width rows a chunk
    code = bench_main(["score", "--dataset", "tiny", "--data_path", tiny_data, "--max-len", "8", "--hidden-size", "8",
                       "--n-layers", "1", "--models", "SASRecAttn,STOSA", "--repeats", "1", "--device", "cpu"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "validation users in 1 batch of up to" in printed
    rows = [line.strip("| ").split(" | ") for line in printed.splitlines()
            if line.startswith("| ") and not line.startswith("| model")]
    assert [(r[0], r[1]) for r in rows] == [("SASRecAttn", "input order"), ("SASRecAttn", "longest first"),
                                          ("STOSA", "input order"), ("STOSA", "longest first")]
    calls = [int(r[2]) for r in rows]
    assert calls[0] > 1 and calls[1] <= calls[0]  # the batch is chunked; longest first never needs more chunks
    assert all(float(r[-1]) < 1e-5 for r in rows)  # same outputs either way


def test_score_command_takes_plugin_models_only(capsys):
    from recbole_attn.bench.score import main as score_main

    assert score_main(["--models", "SASRec"]) == 2
    assert "plugin models only" in capsys.readouterr().err
    assert score_main(["--repeats", "0"]) == 2


def test_score_command_reports_a_missing_dataset_in_one_line(tmp_path, capsys):
    from recbole_attn.bench.score import main as score_main

    assert score_main(["--dataset", "nosuch", "--data_path", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: dataset [nosuch] not found") and "Traceback" not in err


def test_speed_command_reports_a_missing_dataset_in_one_line(tmp_path, capsys):
    assert main(["--dataset", "nosuch", "--data_path", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: dataset [nosuch] not found") and "Traceback" not in err
