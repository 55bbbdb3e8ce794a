"""Smoke test of the speed benchmark command (its numbers are never asserted: timing stays out
of unit tests)."""

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
