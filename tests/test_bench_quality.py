"""``python -m recbole_attn.bench quality``: paper anchors, row plan, results file, and a smoke run
on a tiny dataset (1 epoch, 1 seed, 2 rows) that never needs ``../shared``."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from recbole_attn.bench import anchors, quality
from recbole_attn.bench.__main__ import main as bench_main
from tests.conftest import SHARED_RAW, write_tiny_dataset

TINY_SET = ["MAX_ITEM_LIST_LENGTH=8", "hidden_size=16", "inner_size=16", "fpa_rank=4", "use_gpu=False",
            "train_batch_size=64", "eval_batch_size=256", "state=ERROR"]


def _tiny_args(data, results, *extra):
    args = ["quality", "--dataset", "tiny", "--data_path", str(data), "--anchors-from", "ml-1m",
            "--tables", "fparec-t3", "--models", "SASRecAttn,FPARec", "--seeds", "1", "--epochs", "1",
            "--results", str(results)]
    for item in TINY_SET:
        args += ["--set", item]
    return args + list(extra)


def _tables(text):
    """The Markdown tables of ``text``, each as its lines."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables


def _table_lines(text):
    return _tables(text)[0]


def _cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


# ----- anchors -----------------------------------------------------------------------------------


def test_anchor_values_match_the_papers():
    assert anchors.anchor("fparec-t3", "ml-1m", "FPARec") == {"hit@10": 0.2419, "ndcg@10": 0.1232}
    assert anchors.anchor("fparec-t3", "ml-1m", "Linear Attention")["ndcg@10"] == 0.1089
    assert anchors.anchor("fparec-t3", "beauty", "SASRec") == {"hit@10": 0.0813, "ndcg@10": 0.0405}
    assert anchors.anchor("fparec-t3", "beauty", "Token Mixing")["hit@10"] == 0.0798
    assert anchors.anchor("fparec-t4", "ml-1m", "+Exponential Annealing") == {"hit@10": 0.2386, "ndcg@10": 0.1283}
    assert anchors.anchor("fparec-t4", "ml-1m", "+Average")["hit@10"] == 0.2025
    assert anchors.anchor("fparec-s4.7", "ml-1m", "FPARec (n=200)") == {"hit@10": 0.2351}
    assert anchors.anchor("awrsr-t2", "ml-1m", "SASRec Original") == \
        {"recall@1": 0.0265, "recall@5": 0.0959, "ndcg@5": 0.0616}
    assert anchors.anchor("awrsr-t2", "ml-1m", "STOSA M_value")["recall@1"] == 0.0246
    assert anchors.anchor("awrsr-t2", "ml-1m", "STOSA M_stoc")["ndcg@5"] == 0.0478
    # AWRSR's Beauty is another dataset than ours: no anchors, and a stated reason
    assert anchors.anchor("awrsr-t2", "beauty", "SASRec Original") is None
    assert "not comparable" in anchors.NOT_COMPARABLE["awrsr-t2"]["beauty"]


def test_every_row_has_its_anchor_and_settings_file():
    for row in quality.ROWS:
        metrics = anchors.TABLES[row.table][2]
        assert row.anchor is not None and set(row.anchor) == set(metrics), row
        settings = quality.load_paper_settings(row.family, row.dataset)
        assert isinstance(settings["learning_rate"], float)  # 1e-3 style values read as numbers
        assert settings["stopping_step"] == 20
        assert settings["valid_metric"] == ("NDCG@5" if row.table == "awrsr-t2" else "NDCG@10")
        assert {1, 5, 10} <= set(settings["topk"]) and {"Recall", "NDCG", "Hit"} <= set(settings["metrics"])


def test_plan_shares_runs_between_rows_and_tracks_settings():
    rows = quality.select_rows("ml-1m", models=["FPARec"])
    assert {r.table for r in rows} == {"fparec-t3", "fparec-t4", "fparec-s4.7"}
    planned = quality.plan_rows(rows, "ml-1m", 200, {})
    by_table = {p.row.table: p for p in planned}
    assert by_table["fparec-t3"].signature == by_table["fparec-t4"].signature  # same settings, same runs
    assert by_table["fparec-t3"].config["MAX_ITEM_LIST_LENGTH"] == 500
    assert by_table["fparec-s4.7"].config["MAX_ITEM_LIST_LENGTH"] == 200
    assert len(quality.plan_runs(planned, [2020, 2021])) == 4
    changed = quality.plan_rows(rows[:1], "ml-1m", 200, {"learning_rate": 1e-4})[0]
    assert changed.signature != planned[0].signature
    assert all(p.mode == "seq2seq" for p in planned)
    # opt-in row: RecBole's SASRec (prefix rows) only when asked for
    assert not any(r.extra for r in quality.select_rows("ml-1m"))
    extra = quality.plan_rows(quality.select_rows("beauty", models=["SASRec (RecBole)"]), "beauty", 5, {})
    assert [(p.row.model, p.mode) for p in extra] == [("SASRec", "augment")]


def test_beauty_notes_the_papers_sampled_evaluation_users():
    planned = quality.plan_rows(quality.select_rows("beauty", models=["SASRecAttn", "FPARec"]), "beauty", 5, {})
    sasrec, fparec = planned
    records = {(sasrec.signature, 2020): {"test_result": {"hit@10": 0.08}},
               (fparec.signature, 2020): {"test_result": {"hit@10": 0.05}},
               (fparec.signature, 2021): {"test_result": {"hit@10": 0.07}}}
    (note,) = quality.sampling_notes(planned, records, [2020, 2021], "beauty")
    # sqrt(p (1 - p) / 10000) / p at p = 0.08 (SASRec) and the median 0.06 (FPARec)
    assert "random 10,000 users" in note and "3.4-4.0%" in note
    (pending,) = quality.sampling_notes(planned, {}, [2020], "beauty")
    assert "10,000" in pending and "standard error" not in pending
    # ML-1m is scored whole by the paper's code: no such note
    ml1m = quality.plan_rows(quality.select_rows("ml-1m", models=["FPARec"]), "ml-1m", 5, {})
    assert quality.sampling_notes(ml1m, {}, [2020], "ml-1m") == []


def test_fparec_rows_use_the_official_optimizer_and_initialisation_and_say_so(tmp_path):
    for dataset in ("beauty", "ml-1m"):
        planned = quality.plan_rows(quality.select_rows(dataset, tables=["fparec-t3"]), dataset, 5, {})
        for p in planned:
            assert p.config["adam_betas"] == [0.9, 0.98], p.row
            assert p.config["weight_init"] == "glorot" and p.config["embedding_scale"] is True, p.row
    text = quality.render(planned, {}, [2020], "ml-1m", "ml-1m", 5, tmp_path / "r.json")
    assert "initialisation Glorot-uniform, sqrt(d) item-embedding scale (official code" in text
    # RecBole's initialisation given back by --set: another run, and the note says which
    recbole_init = {"weight_init": "normal", "embedding_scale": False}
    other = quality.plan_rows(quality.select_rows("ml-1m", tables=["fparec-t3"]), "ml-1m", 5, recbole_init)
    assert all(o.signature != p.signature for o, p in zip(other, planned))
    text = quality.render(other, {}, [2020], "ml-1m", "ml-1m", 5, tmp_path / "r.json", recbole_init)
    assert "initialisation N(0, 0.02) (official code" in text


def test_the_notes_give_the_runs_own_patience(tmp_path):
    rows = quality.select_rows("ml-1m", tables=["fparec-t3", "awrsr-t2"])
    text = quality.render(quality.plan_rows(rows, "ml-1m", 200, {}), {}, [2020], "ml-1m", "ml-1m", 200,
                          tmp_path / "r.json")
    assert "FPARec rows: early stopping on validation NDCG@10 with patience 20 (" in text
    assert "AWRSR rows: early stopping on validation NDCG@5 with patience 20 (§3.1)," in text
    # --set stopping_step at the epoch cap: no early stopping, and the notes must not claim one
    user_set = {"stopping_step": 100}
    text = quality.render(quality.plan_rows(rows, "ml-1m", 100, user_set), {}, [2020], "ml-1m", "ml-1m", 100,
                          tmp_path / "r.json", user_set)
    assert "with patience 20" not in text
    assert "FPARec rows: no early stopping within the 100-epoch cap" in text
    assert "AWRSR rows: no early stopping within the 100-epoch cap" in text and "(§3.1: patience 20)" in text


def test_each_awrsr_refinement_is_tested_against_its_own_base_on_shared_seeds(tmp_path):
    from scipy import stats

    planned = quality.plan_rows(quality.select_rows("ml-1m", tables=["awrsr-t2"]), "ml-1m", 5, {})
    by_label = {p.row.label: p for p in planned}

    def record(recall1):
        result = {"recall@1": recall1, "recall@5": 0.1, "ndcg@5": 0.06}
        return {"test_result": result, "best_valid_result": result, "spec": "AWRSR", "train_mode": "seq2seq",
                "epochs_run": 5, "best_epoch": 4, "wall_time_s": 1.0, "device": "cpu", "date": "2026-12-03"}

    records = {}
    for seed, base, simp in ((2020, 0.020, 0.025), (2021, 0.022, 0.026), (2022, 0.021, 0.027)):
        records[(by_label["SASRec Original"].signature, seed)] = record(base)
        records[(by_label["SASRec M_simp"].signature, seed)] = record(simp)
    records[(by_label["STOSA M_stoc"].signature, 2020)] = record(0.03)  # its base has not run: no line
    lines = quality.paired_rows(planned, records, [2020, 2021, 2022])
    assert {line[0] for line in lines} == {"SASRec M_simp"}
    recall1 = next(line for line in lines if line[2] == "Recall@1")
    expected_p = stats.ttest_rel([0.025, 0.026, 0.027], [0.020, 0.022, 0.021]).pvalue
    assert recall1[:7] == ("SASRec M_simp", "SASRec Original", "Recall@1", "3", "0.0260", "0.0210", "+23.8")
    assert recall1[7] == f"{expected_p:.3f}"
    ndcg5 = next(line for line in lines if line[2] == "NDCG@5")
    assert ndcg5[6] == "+0.0" and ndcg5[7] == ""  # identical pairs: no p-value
    text = quality.render(planned, records, [2020, 2021, 2022], "ml-1m", "ml-1m", 5, tmp_path / "r.json")
    assert "AWRSR's refinements against their base model" in text and "| SASRec M_simp | SASRec Original |" in text
    # one seed: the means, no test
    (one,) = [line for line in quality.paired_rows(planned, records, [2020]) if line[2] == "Recall@1"]
    assert one[3] == "1" and one[7] == ""


def test_fparec_is_tested_against_the_rows_its_paper_claims_it_beats(tmp_path):
    from scipy import stats

    planned = quality.plan_rows(quality.select_rows("ml-1m", tables=["fparec-t3", "fparec-t4"]), "ml-1m", 5, {})
    by_label = {p.row.label: p for p in planned if p.row.table == "fparec-t3"}
    patterns = {p.row.label: p for p in planned if p.row.table == "fparec-t4" and p.row.label.startswith("+")}

    def record(hr, ndcg):
        result = {"hit@10": hr, "ndcg@10": ndcg}
        return {"test_result": result, "best_valid_result": result, "spec": "x", "train_mode": "seq2seq",
                "epochs_run": 5, "best_epoch": 4, "wall_time_s": 1.0, "device": "cpu", "date": "2026-12-04"}

    records = {}
    for seed, (sas, fpa) in zip((2020, 2021, 2022), ((0.21, 0.22), (0.20, 0.22), (0.22, 0.23))):
        records[(by_label["SASRec"].signature, seed)] = record(sas, sas / 2)
        records[(by_label["FPARec"].signature, seed)] = record(fpa, fpa / 2)
    records[(by_label["PARec"].signature, 2020)] = record(0.3, 0.15)  # one seed: the means, no test
    records[(patterns["+Average"].signature, 2021)] = record(0.19, 0.09)
    records[(by_label["Token Mixing"].signature, 2020)] = record(0.3, 0.15)  # no claim: no line
    lines = quality.paired_rows(planned, records, [2020, 2021, 2022])
    # Table 4 holds the same FPARec, PARec and SASRec runs; those claims are tested once, for Table 3
    assert [(line[0], line[1], line[2]) for line in lines] == [
        ("FPARec", "SASRec", "HR@10"), ("FPARec", "SASRec", "NDCG@10"),
        ("FPARec", "PARec", "HR@10"), ("FPARec", "PARec", "NDCG@10"),
        ("FPARec", "+Average", "HR@10"), ("FPARec", "+Average", "NDCG@10")]
    expected_p = stats.ttest_rel([0.22, 0.22, 0.23], [0.21, 0.20, 0.22]).pvalue
    assert lines[0][3:] == ("3", "0.2233", "0.2100", "+6.3", f"{expected_p:.3f}")
    assert lines[2][3:] == ("1", "0.2200", "0.3000", "-26.7", "")  # the seed both finished
    assert lines[4][3:6] == ("1", "0.2200", "0.1900")
    text = quality.render(planned, records, [2020, 2021, 2022], "ml-1m", "ml-1m", 5, tmp_path / "r.json")
    assert "FPARec above SASRec and above PARec" in text and "above each fixed pattern in HR@10" in text
    assert "AWRSR's refinements" not in text and "| FPARec | SASRec | HR@10 | 3 |" in text
    assert "| FPARec | +Average | HR@10 | 1 |" in text


def test_tuned_rows_take_the_settings_chosen_on_validation_and_reuse_equal_runs():
    rows = quality.select_rows("ml-1m", tables=["fparec-t3"], models=["SASRecAttn", "PARec", "FPARec",
                                                                       "SASRec (RecBole)"])
    tuned, used = quality.apply_tuned(rows, "ml-1m")
    assert set(used) == {"SASRecAttn", "PARec", "FPARec"}  # RecBole's SASRec has no such file
    planned = {p.row.label: p for p in quality.plan_rows(tuned, "ml-1m", 200, {})}
    for row in tuned:
        path = quality.tuned_settings_file(row.model, "ml-1m")
        chosen = quality._load_settings(path) if path is not None and path.is_file() else {}
        for key, value in chosen.items():
            assert planned[row.label].config[key] == value
            assert f"{key}={value}" in row.spec  # shown in the Our model column
    assert planned["SASRec (RecBole)"].row == rows[-1]
    # the same settings reached another way are the same runs: FPARec at its chosen n is §4.7's FPARec
    # when that n is the paper file's, and PARec is PARec with the length given by --set
    n_fpa = planned["FPARec"].config["MAX_ITEM_LIST_LENGTH"]
    s47 = quality.plan_rows(quality.select_rows("ml-1m", tables=["fparec-s4.7"], models=["FPARec"]), "ml-1m", 200, {})
    assert (planned["FPARec"].signature == s47[0].signature) == (n_fpa == s47[0].config["MAX_ITEM_LIST_LENGTH"])
    n_pa = planned["PARec"].config["MAX_ITEM_LIST_LENGTH"]
    by_set = quality.plan_rows(quality.select_rows("ml-1m", tables=["fparec-t3"], models=["PARec"]), "ml-1m", 200,
                               {"MAX_ITEM_LIST_LENGTH": n_pa})
    assert by_set[0].signature == planned["PARec"].signature
    # --set still has the last word
    over = quality.plan_rows(tuned[:1], "ml-1m", 200, {"MAX_ITEM_LIST_LENGTH": 7})[0]
    assert over.config["MAX_ITEM_LIST_LENGTH"] == 7


def test_tuned_command_prints_the_chosen_settings_and_refuses_other_tables(tmp_path, capsys):
    args = ["quality", "--dataset", "beauty", "--tuned", "--results", str(tmp_path / "r.json"), "--dry-run"]
    assert bench_main(args) == 0
    out = capsys.readouterr().out
    body = [dict(zip(quality.TABLE_HEADER, _cells(line))) for line in _table_lines(out)[2:]]
    assert {b["Table"] for b in body} == {"FPARec Table 3"} and len(body) == 5 * 2
    for b in body:
        model = b["Our model"].split("[")[0]
        chosen = quality._load_settings(quality.tuned_settings_file(model, "beauty"))
        assert all(f"{k}={v}" in b["Our model"] for k, v in chosen.items()) and b["Ours"] == "pending"
    assert "--tuned: each row over the settings chosen on validation" in out and "fparec-beauty.yaml" in out
    assert bench_main(args + ["--tables", "fparec-t4"]) == 2
    assert "--tuned applies to FPARec Table 3 only" in capsys.readouterr().err
    data = write_tiny_dataset(tmp_path / "data")
    assert bench_main(_tiny_args(data, tmp_path / "r.json", "--tuned", "--dry-run")) == 2
    assert "no settings chosen on validation for tiny" in capsys.readouterr().err


# ----- command -----------------------------------------------------------------------------------


def test_a_run_from_uncommitted_code_says_so(tmp_path):
    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path,
                       check=True, capture_output=True)

    assert quality._commit(tmp_path) is None  # not a checkout
    git("init", "-q")
    (tmp_path / "model.py").write_text("a = 1\n")
    results = tmp_path / "recbole_attn" / "bench" / "results"
    results.mkdir(parents=True)
    (results / "quality-x.json").write_text("{}\n")
    git("add", "."), git("commit", "-q", "-m", "x")
    head = quality._commit(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{40}", head)
    (results / "quality-x.json").write_text('{"runs": []}\n')  # the command's own output
    (tmp_path / "notes.txt").write_text("untracked\n")
    assert quality._commit(tmp_path) == head
    (tmp_path / "model.py").write_text("a = 2\n")
    assert quality._commit(tmp_path) == head + "+uncommitted"


def test_quality_smoke_on_tiny_data_then_skips_finished_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # RecBole's log/ folders
    data = write_tiny_dataset(tmp_path / "data")
    results, out_md = tmp_path / "results" / "quality-tiny.json", tmp_path / "table.md"

    assert bench_main(_tiny_args(data, results, "--out", str(out_md))) == 0
    first = capsys.readouterr()
    lines = _table_lines(first.out)
    assert _cells(lines[0]) == list(quality.TABLE_HEADER)
    body = [dict(zip(quality.TABLE_HEADER, _cells(line))) for line in lines[2:]]
    assert len(body) == 4  # 2 rows x (HR@10, NDCG@10)
    assert [(b["Row"], b["Metric"]) for b in body] == [
        ("SASRec", "HR@10"), ("SASRec", "NDCG@10"), ("FPARec", "HR@10"), ("FPARec", "NDCG@10")]
    assert [b["Paper"] for b in body] == ["0.2346", "0.1186", "0.2419", "0.1232"]
    for b in body:
        assert b["Mode"] == "seq2seq" and b["Seeds"] == "1/1"
        ours = float(b["Ours"])
        assert 0.0 <= ours <= 1.0
        assert float(b["Diff %"]) == pytest.approx((ours - float(b["Paper"])) / float(b["Paper"]) * 100, abs=0.1)
    assert out_md.read_text().strip() == first.out.strip()
    # Table 3's claim, FPARec above SASRec, on the one seed: the means, no test
    paired = _tables(first.out)[1]
    assert _cells(paired[0]) == list(quality.PAIRED_HEADER)
    assert [_cells(line)[:4] for line in paired[2:]] == [["FPARec", "SASRec", "HR@10", "1"],
                                                         ["FPARec", "SASRec", "NDCG@10", "1"]]
    assert "not comparable" in first.out  # AWRSR's Beauty rows and why

    data_json = json.loads(results.read_text())
    assert len(data_json["runs"]) == 2
    run = data_json["runs"][0]
    for key in ("dataset", "model", "spec", "overrides", "seed", "train_mode", "epochs_run", "best_valid_result",
                "test_result", "wall_time_s", "device", "date", "signature"):
        assert key in run
    assert run["epochs_run"] == 1 and run["seed"] == 2020 and run["dataset"] == "tiny"
    assert run["resumed"] is False and 0 <= run["fit_time_s"] <= run["wall_time_s"]
    # the thread count a CPU result depends on, recorded and printed with the run's line
    assert run["threads"] == torch.get_num_threads()
    assert f"{run['device']}, {run['threads']} thread" in first.out
    assert "hit@10" in run["test_result"] and "ndcg@5" in run["test_result"]
    assert not list(tmp_path.glob("results/*.pth"))

    # started again: nothing is retrained, the file is untouched, the same table is printed
    before = (results.read_bytes(), os.stat(results).st_mtime_ns)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(quality, "run_one", no_training)
    assert bench_main(_tiny_args(data, results)) == 0
    second = capsys.readouterr()
    assert second.err.count("skipping") == 2
    assert (results.read_bytes(), os.stat(results).st_mtime_ns) == before
    assert _table_lines(second.out) == lines

    # a changed setting is a new run: pending in the plan, nothing trained by --dry-run
    assert bench_main(_tiny_args(data, results, "--set", "learning_rate=0.01", "--dry-run")) == 0
    third = capsys.readouterr()
    assert third.out.count("pending  ") == 2
    assert "pending" in _cells(_table_lines(third.out)[2])[5]


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_interrupted_run_resumes_from_its_last_epoch(stop, tmp_path, monkeypatch, capsys):
    from recbole_attn import checkpoint, trainer
    from recbole_attn.trainer import CheckpointMixin

    class SlowClock:  # the first sitting's clock moves 1000 s a reading
        now = 0.0

        @classmethod
        def monotonic(cls):
            cls.now += 1000.0
            return cls.now

    monkeypatch.chdir(tmp_path)
    data = write_tiny_dataset(tmp_path / "data")
    results = tmp_path / "r.json"
    args = _tiny_args(data, results, "--models", "FPARec", "--epochs", "3")
    args = args[:args.index("SASRecAttn,FPARec") - 1] + args[args.index("SASRecAttn,FPARec") + 1:]
    real_save = CheckpointMixin.save_last_checkpoint

    def stop_after_epoch_1(self, epoch):  # Ctrl-C or a kill right after epoch 1's checkpoint
        real_save(self, epoch)
        if epoch == 1:
            if stop == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)
            else:
                raise KeyboardInterrupt

    monkeypatch.setattr(CheckpointMixin, "save_last_checkpoint", stop_after_epoch_1)
    monkeypatch.setattr(trainer, "time", SlowClock)
    assert bench_main(args) == 130
    assert "continues from" in capsys.readouterr().err
    assert not results.exists()
    folders = list((tmp_path / "saved" / "quality" / "tiny").iterdir())
    assert len(folders) == 1 and list(folders[0].glob("*-last.pth"))
    first_sitting = checkpoint.load(str(next(folders[0].glob("*-last.pth"))))["fit_time_s"]
    assert first_sitting >= 1000

    monkeypatch.setattr(CheckpointMixin, "save_last_checkpoint", real_save)
    monkeypatch.setattr(trainer, "time", time)
    assert bench_main(args) == 0
    out = capsys.readouterr()
    assert "resuming from" in out.err
    run = json.loads(results.read_text())["runs"][0]
    assert run["resumed"] is True and run["epochs_run"] == 3  # epochs 0-1 before, epoch 2 after
    # the first sitting's time is kept; the second, on the real clock, adds seconds
    assert first_sitting <= run["fit_time_s"] < first_sitting + 600
    assert f"in the last sitting ({run['fit_time_s']:.0f} s of training in all sittings)" in out.out
    assert 0 <= run["best_epoch"] <= 2
    assert not folders[0].exists()  # removed once the record is saved
    assert f"[seq2seq] seed 2020: 3 epochs, best epoch {run['best_epoch']}" in out.out


@pytest.mark.skipif(quality.fcntl is None, reason="no file locks on this platform")
def test_a_run_held_by_another_command_is_skipped(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = write_tiny_dataset(tmp_path / "data")
    results = tmp_path / "r.json"
    assert bench_main(_tiny_args(data, results, "--dry-run")) == 0
    signature = re.search(r"pending  SASRecAttn \[seq2seq\] seed 2020 \((\w+)\)", capsys.readouterr().out)[1]
    sasrec = next(p for p in quality.plan_rows(quality.select_rows("ml-1m", ["SASRecAttn"]), "tiny", 1, {}))
    sasrec.signature = signature  # the run as the command plans it with the tiny settings
    # what another command running SASRecAttn seed 2020 holds while it trains
    with quality._locked(quality.run_folder(sasrec, 2020, "tiny") / "running.lock", block=False) as held:
        assert held
        assert bench_main(_tiny_args(data, results)) == 0
    err = capsys.readouterr().err
    assert "skipping SASRecAttn seed 2020: running in another process" in err
    assert [r["model"] for r in json.loads(results.read_text())["runs"]] == ["FPARec"]


def test_a_run_finished_by_another_command_meanwhile_is_not_trained_again(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = write_tiny_dataset(tmp_path / "data")
    results = tmp_path / "r.json"
    args = _tiny_args(data, results)
    args[args.index("SASRecAttn,FPARec")] = "FPARec"
    assert bench_main(args + ["--dry-run"]) == 0
    signature = re.search(r"pending  \S+ \[seq2seq\] seed 2020 \((\w+)\)", capsys.readouterr().out)[1]

    def other_command_finishes_it(*a, **k):  # between this command's plan and its training loop
        quality.save_record(results, {"dataset": "tiny", "model": "FPARec", "spec": "FPARec", "signature": signature,
                                      "seed": 2020, "date": "2026-01-01T00:00:00Z", "train_mode": "seq2seq",
                                      "epochs_run": 1, "best_valid_result": {"ndcg@10": 0.1},
                                      "test_result": {"hit@10": 0.2, "ndcg@10": 0.1}, "wall_time_s": 1.0,
                                      "device": "cpu"})

    def no_training(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(quality, "check_configs", other_command_finishes_it)
    monkeypatch.setattr(quality, "run_one", no_training)
    assert bench_main(args) == 0
    assert "seed 2020: finished by another process" in capsys.readouterr().err
    assert not (tmp_path / "saved" / "quality" / "tiny" / f"{signature}-seed2020").exists()


def test_jobs_trains_every_pending_run_once_in_commands_side_by_side(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    data = write_tiny_dataset(tmp_path / "data")
    results = tmp_path / "r.json"

    def not_here(*args, **kwargs):
        raise AssertionError("--jobs trains in the commands it starts, not in itself")

    monkeypatch.setattr(quality, "run_one", not_here)
    assert bench_main(_tiny_args(data, results, "--seeds", "2", "--jobs", "2")) == 0
    out, err = capfd.readouterr()
    assert "2 commands side by side (OMP_NUM_THREADS=1 each) for 4 runs" in err
    runs = json.loads(results.read_text())["runs"]
    assert sorted((r["model"], r["seed"]) for r in runs) == [
        ("FPARec", 2020), ("FPARec", 2021), ("SASRecAttn", 2020), ("SASRecAttn", 2021)]
    assert len(re.findall(r"\] running (SASRecAttn|FPARec)\b", err)) == 4  # each run trained once
    body = [dict(zip(quality.TABLE_HEADER, _cells(line))) for line in _table_lines(out)[2:]]
    assert len(body) == 4 and all(b["Seeds"] == "2/2" for b in body)
    assert out.count("## Quality") == 1  # one table, from the command that started the others

    # --max-runs holds for all the commands together: one new run of the two pending, trained here
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    assert bench_main(_tiny_args(data, results, "--seeds", "3", "--jobs", "2", "--max-runs", "1")) == 0
    assert "commands side by side" not in capfd.readouterr().err
    assert len(json.loads(results.read_text())["runs"]) == 5


@pytest.mark.skipif(quality.fcntl is None, reason="no file locks on this platform")
def test_jobs_stopped_with_sigterm_keeps_each_run_in_progress(tmp_path):
    data = write_tiny_dataset(tmp_path / "data")
    results = tmp_path / "r.json"
    # runs that would not end on their own: stopped while both train
    args = _tiny_args(data, results, "--epochs", "100000", "--set", "stopping_step=100000", "--jobs", "2")
    proc = subprocess.Popen([sys.executable, "-m", "recbole_attn.bench", *args], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    folders = tmp_path / "saved" / "quality" / "tiny"
    deadline = time.time() + 180
    while len(list(folders.glob("*/*-last.pth"))) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err[-3000:]
    assert "stopping the commands side by side" in err
    assert not results.exists()
    runs = list(folders.iterdir())
    assert len(runs) == 2 and all(list(run.glob("*-last.pth")) for run in runs)  # both resume from there
    assert "| FPARec Table 3 | SASRec |" in out and "pending" in out


def test_bad_setting_stops_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = write_tiny_dataset(tmp_path / "data")
    results = tmp_path / "r.json"
    assert bench_main(_tiny_args(data, results, "--set", "n_heads=3")) == 2
    err = capsys.readouterr().err
    assert any(line.startswith("error:") and "n_heads" in line for line in err.splitlines())
    assert not results.exists()


def test_user_errors(tmp_path, capsys):
    assert bench_main(["quality", "--dataset", "tiny", "--data_path", str(tmp_path)]) == 2
    assert "--anchors-from" in capsys.readouterr().err
    assert bench_main(["quality", "--dataset", "ml-1m", "--data_path", str(tmp_path), "--raw",
                       str(tmp_path / "nowhere"), "--results", str(tmp_path / "r.json")]) == 2
    assert "raw data folder not found" in capsys.readouterr().err
    assert bench_main(["quality", "--dataset", "beauty", "--tables", "fparec-t9", "--dry-run"]) == 2
    assert "unknown table" in capsys.readouterr().err
    assert bench_main(["quality", "--dataset", "beauty", "--models", "FPARec,FPARec[pre_norm=True]", "--dry-run"]) == 2
    assert "no beauty row is called 'FPARec[pre_norm=True]'" in capsys.readouterr().err
    assert bench_main(["nope"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err


@pytest.mark.skipif(not (SHARED_RAW / "beauty" / "Beauty.txt").is_file(), reason="../shared/data/raw absent")
def test_beauty_is_converted_from_the_raw_folder(tmp_path):
    stats = quality.ensure_dataset("beauty", tmp_path, SHARED_RAW)
    assert (stats["users"], stats["items"], stats["interactions"]) == (22363, 12101, 198502)
    assert quality.ensure_dataset("beauty", tmp_path, SHARED_RAW) is None  # already there


def test_rows_of_a_missing_model_say_so(tmp_path, monkeypatch, capsys):
    real = quality.model_status
    monkeypatch.setattr(quality, "model_status",
                        lambda name: (False, "not in the registry") if name == "AWRSR-STOSA" else real(name))
    args = ["quality", "--dataset", "ml-1m", "--tables", "awrsr-t2", "--results", str(tmp_path / "r.json"),
            "--dry-run"]
    assert bench_main(args) == 0
    out = capsys.readouterr().out
    body = [dict(zip(quality.TABLE_HEADER, _cells(line))) for line in _table_lines(out)[2:]]
    assert len(body) == 9 * 3
    stosa = [b for b in body if b["Row"].startswith("STOSA")]
    assert len(stosa) == 15 and all(b["Ours"] == "model not available" and b["Paper"] for b in stosa)
    assert all(b["Ours"] == "pending" for b in body if b["Row"].startswith("SASRec"))
    assert "model not available: AWRSR-STOSA (not in the registry)" in out
    assert out.count("pending  ") == 4 * 3  # only the available model's runs are planned
