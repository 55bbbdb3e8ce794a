"""Comparisons: model specs, significance tests against scipy, per-user metrics against RecBole's
evaluator, and a 2 models x 2 seeds comparison on ml-100k that resumes without redoing runs."""

import contextlib
import csv
import io
import json
import math
import os
import shutil

import numpy as np
import pytest
import torch
from scipy import stats

from recbole_attn import compare
from recbole_attn.errors import ConfigError

MODELS = "SASRecAttn,AWRSR-SASRec[refine_mode=add,refine_per_head=True]"
TINY_ARGS = ["--epochs=1", "--MAX_ITEM_LIST_LENGTH=10", "--hidden_size=16", "--inner_size=32", "--n_layers=1",
             "--n_heads=1", "--train_batch_size=512", "--use_gpu=False", "--state=ERROR", "--show_progress=False"]


# ----- no training -----------------------------------------------------------------------
def test_model_specs_keep_brackets_and_convert_values():
    specs = compare.split_model_specs("SASRec, FPARec,AWRSR-SASRec[refine_mode=add,refine_per_head=True]")
    assert specs == ["SASRec", "FPARec", "AWRSR-SASRec[refine_mode=add,refine_per_head=True]"]
    assert compare.parse_model_spec(specs[2]) == ("AWRSR-SASRec", {"refine_mode": "add", "refine_per_head": True})
    assert compare.parse_model_spec("FPARec[fpa_rank=8]") == ("FPARec", {"fpa_rank": 8})
    for bad in ("A[x=1", "A]x", "A,,B"):
        with pytest.raises(ConfigError):
            compare.split_model_specs(bad)
    with pytest.raises(ConfigError, match="key=value"):
        compare.parse_model_spec("FPARec[fpa_rank]")


def test_paired_t_test_matches_scipy():
    model, base = [0.0312, 0.0298, 0.0335], [0.0301, 0.0275, 0.0300]
    assert compare.paired_t_test(model, base) == pytest.approx(stats.ttest_rel(model, base).pvalue, rel=1e-12)
    assert compare.paired_t_test(model, base) == pytest.approx(0.08, abs=1e-6)  # t = 3.32, df = 2, by hand
    assert math.isnan(compare.paired_t_test([0.1], [0.2]))  # one seed: no test


def test_wilcoxon_matches_scipy():
    rng = np.random.default_rng(0)
    base = rng.random(200)
    model = base + rng.normal(0.05, 0.1, size=200)
    assert compare.wilcoxon_test(model, base) == pytest.approx(stats.wilcoxon(model, base).pvalue, rel=1e-12)
    fixed_model, fixed_base = [0.5, 0.3, 0.9, 0.2, 0.7, 0.4], [0.1, 0.25, 0.6, 0.3, 0.2, 0.05]
    assert compare.wilcoxon_test(fixed_model, fixed_base) == pytest.approx(6 / 64)  # exact: W- = 2, 2 * 3 / 2**6
    assert math.isnan(compare.wilcoxon_test([0.1, 0.2], [0.1, 0.2]))  # no difference to rank


def test_summary_rows_from_records():
    def record(values, users):
        return {"test_result": {"ndcg@10": float(np.mean(values))},
                "per_user": {"user_id": users, "ndcg@10": values}}

    users = [3, 1, 2, 4, 5]
    records = {("base", 1): record([0.1, 0.2, 0.3, 0.0, 0.5], users),
               ("base", 2): record([0.2, 0.2, 0.1, 0.1, 0.4], users),
               ("new", 1): record([0.3, 0.1, 0.6, 0.2, 0.9], users),
               ("new", 2): record([0.4, 0.3, 0.2, 0.3, 0.9], users[::-1])}  # order must not matter
    base_row, new_row = compare.summarize(records, ["base", "new"], ["ndcg@10"])
    assert base_row["model"] == "base" and math.isnan(base_row["improvement_pct"]) and math.isnan(base_row["p_ttest"])
    new_means = [records[("new", s)]["test_result"]["ndcg@10"] for s in (1, 2)]
    base_means = [records[("base", s)]["test_result"]["ndcg@10"] for s in (1, 2)]
    assert new_row["mean"] == pytest.approx(np.mean(new_means))
    assert new_row["std"] == pytest.approx(np.std(new_means, ddof=1))
    assert new_row["improvement_pct"] == pytest.approx((np.mean(new_means) / np.mean(base_means) - 1) * 100)
    assert new_row["p_ttest"] == pytest.approx(stats.ttest_rel(new_means, base_means).pvalue)
    # per user (sorted ids 1..5): the mean over both seeds of each model, paired by user
    by_user = lambda r: dict(zip(r["per_user"]["user_id"], r["per_user"]["ndcg@10"]))  # noqa: E731
    new_users = [(by_user(records[("new", 1)])[u] + by_user(records[("new", 2)])[u]) / 2 for u in range(1, 6)]
    base_users = [(by_user(records[("base", 1)])[u] + by_user(records[("base", 2)])[u]) / 2 for u in range(1, 6)]
    assert new_row["p_wilcoxon"] == pytest.approx(stats.wilcoxon(new_users, base_users).pvalue)


def test_one_seed_has_no_spread_in_the_table():
    records = {(model, 1): {"test_result": {"ndcg@10": value}, "per_user": {"user_id": [1, 2], "ndcg@10": [value] * 2}}
               for model, value in (("base", 0.2), ("new", 0.3))}
    rows = compare.summarize(records, ["base", "new"], ["ndcg@10"])
    assert all(math.isnan(row["std"]) and math.isnan(row["p_ttest"]) for row in rows)
    table = compare.markdown_table(rows)
    assert "| ndcg@10 | base | 1 | 0.2000 | 0.2000 | baseline |" in table and "±" not in table.split("\n", 2)[2]


def test_metric_arrays_follow_recbole_formulas():
    from recbole_attn.evaluation import metric_arrays

    # row 0: the positive at rank 3; row 1: not in the top 4; row 2: two positives at ranks 1 and 4
    pos_index = np.array([[0, 0, 1, 0], [0, 0, 0, 0], [1, 0, 0, 1]], dtype=bool)
    values = metric_arrays(pos_index, np.array([1, 1, 2]))
    assert values["hit"][:, 2].tolist() == [1, 0, 1]
    assert values["mrr"][:, 3].tolist() == [1 / 3, 0, 1]
    assert values["recall"][:, 3].tolist() == [1, 0, 1]
    assert values["ndcg"][0, 3] == pytest.approx(1 / np.log2(4))
    assert values["ndcg"][2, 3] == pytest.approx((1 + 1 / np.log2(5)) / (1 + 1 / np.log2(3)))


# ----- a real comparison -----------------------------------------------------------------
@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    """2 models x 2 seeds on ml-100k, one epoch each."""
    folder = tmp_path_factory.mktemp("compare")
    old_cwd, old_threads = os.getcwd(), torch.get_num_threads()
    os.chdir(folder)  # RecBole writes log/ into the working directory
    torch.set_num_threads(1)  # faster on a shared CPU
    argv = ["--models", MODELS, "--dataset", "ml-100k", "--seeds", "2", "--out_dir", str(folder / "out"), *TINY_ARGS]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = compare.main(argv)
    yield {"folder": folder, "out": folder / "out", "argv": argv, "code": code, "printed": printed.getvalue()}
    os.chdir(old_cwd)
    torch.set_num_threads(old_threads)


def test_comparison_writes_runs_and_both_tables(comparison, capsys):
    assert comparison["code"] == 0
    out = comparison["out"]
    runs = sorted(p.name for p in (out / "runs").glob("*.json"))
    assert runs == ["AWRSR-SASRec_refine_mode=add_refine_per_head=True-seed2020.json",
                    "AWRSR-SASRec_refine_mode=add_refine_per_head=True-seed2021.json",
                    "SASRecAttn-seed2020.json", "SASRecAttn-seed2021.json"]
    with open(out / "table.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(compare.TABLE_COLUMNS)
    assert [r["metric"] for r in rows] == [m for m in compare.DEFAULT_METRICS for _ in range(2)]
    display = "AWRSR-SASRec[refine_mode=add,refine_per_head=True]"
    for base, other in zip(rows[::2], rows[1::2]):
        assert base["model"] == "SASRecAttn" and other["model"] == display
        assert base["improvement_pct"] == base["p_ttest"] == base["p_wilcoxon"] == ""
        assert base["seeds"] == other["seeds"] == "2"
        for key in ("median", "mean", "std", "improvement_pct", "p_ttest", "p_wilcoxon"):
            assert math.isfinite(float(other[key])), key
        assert 0 <= float(other["p_ttest"]) <= 1 and 0 <= float(other["p_wilcoxon"]) <= 1
    table = (out / "table.md").read_text()
    header = "| metric | model | seeds | median | mean ± std | vs baseline | p (t-test, seeds) | p (Wilcoxon, users) |"
    assert header in table
    assert f"| ndcg@10 | {display} | 2 |" in table and "| ndcg@10 | SASRecAttn | 2 |" in table


def test_each_epoch_prints_its_validation_score(comparison):
    lines = [line.strip() for line in comparison["printed"].splitlines() if line.strip().startswith("epoch ")]
    assert len(lines) == 4  # 2 models x 2 seeds x 1 epoch
    for line, record in zip(lines, _records_in_run_order(comparison["out"])):
        score = record["valid_scores"][0][1]
        assert line == f"epoch 0: valid {record['valid_metric']} {score:.4f} (best {score:.4f} at epoch 0)"


def _records_in_run_order(out):
    names = ["SASRecAttn-seed2020", "AWRSR-SASRec_refine_mode=add_refine_per_head=True-seed2020",
             "SASRecAttn-seed2021", "AWRSR-SASRec_refine_mode=add_refine_per_head=True-seed2021"]
    return [json.loads((out / "runs" / f"{name}.json").read_text()) for name in names]


def test_run_files_hold_metrics_per_user_values_and_checkpoint(comparison):
    for path in (comparison["out"] / "runs").glob("*.json"):
        record = json.loads(path.read_text())
        assert os.path.isfile(record["checkpoint"])
        assert record["seed"] in (2020, 2021) and record["signature"]
        assert len(record["per_user"]["user_id"]) == len(record["per_user"]["ndcg@10"]) == 943
        assert len(record["grad_norms"]) == 1 and len(record["valid_scores"]) == 1
        for metric in compare.DEFAULT_METRICS:  # per-user means = RecBole's rounded result
            assert abs(np.mean(record["per_user"][metric]) - record["test_result"][metric]) <= 1e-4, metric


def test_per_user_metrics_equal_recbole_evaluator_on_a_checkpoint(comparison):
    from recbole_attn import registry
    from recbole_attn.evaluation import per_user_metrics
    from recbole_attn.quick_start import load_data_and_model

    record = json.loads((comparison["out"] / "runs" / "SASRecAttn-seed2021.json").read_text())
    config, model, _, _, _, test_data = load_data_and_model(record["checkpoint"], {"state": "ERROR"})
    trainer = registry.get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    expected = trainer.evaluate(test_data, load_best_model=False)
    assert dict(expected) == record["test_result"]
    values = per_user_metrics(model, test_data, list(expected))
    assert values["user_id"].tolist() == sorted(values["user_id"].tolist())
    for metric, value in expected.items():
        assert abs(values[metric].mean() - value) <= 1e-4, metric


def test_resume_skips_finished_runs_and_redoes_changed_ones(comparison, monkeypatch, capsys):
    def must_not_train(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    capsys.readouterr()
    monkeypatch.setattr(compare, "train_run", must_not_train)
    assert compare.main(comparison["argv"]) == 0
    out = capsys.readouterr().out
    assert out.count("finished earlier, skipped") == 4 and "[4/4]" in out

    # a run whose configuration changed (here: its recorded signature) is trained again, alone
    path = comparison["out"] / "runs" / "SASRecAttn-seed2021.json"
    record = json.loads(path.read_text())
    record["signature"] = "stale"
    path.write_text(json.dumps(record))
    trained = []

    def fake_train(model, dataset, config_dict, config_files, metrics):
        trained.append((model, config_dict["seed"]))
        return {key: record[key] for key in ("test_result", "best_valid_score", "best_valid_result", "valid_metric",
                                             "valid_scores", "grad_norms", "per_user", "checkpoint")}

    monkeypatch.setattr(compare, "train_run", fake_train)
    assert compare.main(comparison["argv"]) == 0
    assert trained == [("SASRecAttn", 2021)]
    assert json.loads(path.read_text())["signature"] != "stale"
    out = capsys.readouterr().out
    assert "[3/4] SASRecAttn seed=2021: training" in out and out.count("skipped") == 3


def test_finished_only_tabulates_what_finished_and_trains_nothing(comparison, tmp_path, monkeypatch, capsys):
    def must_not_train(*args, **kwargs):
        raise AssertionError("--finished_only trained a run")

    out = tmp_path / "out"
    shutil.copytree(comparison["out"], out)
    other = "AWRSR-SASRec_refine_mode=add_refine_per_head=True"
    (out / "runs" / f"{other}-seed2021.json").unlink()
    monkeypatch.setattr(compare, "train_run", must_not_train)
    argv = list(comparison["argv"])
    argv[argv.index("--out_dir") + 1] = str(out)
    capsys.readouterr()
    assert compare.main([*argv, "--finished_only"]) == 0
    printed = capsys.readouterr().out
    assert "seed=2021: not finished, left out" in printed and printed.count("finished earlier, skipped") == 3
    with open(out / "table.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["metric"] == "ndcg@10"]
    assert [(r["model"], r["seeds"]) for r in rows] == [
        ("SASRecAttn", "2"), ("AWRSR-SASRec[refine_mode=add,refine_per_head=True]", "1")]
    assert rows[1]["std"] == rows[1]["p_ttest"] == ""  # one finished seed: no spread, no t-test
    assert 0 <= float(rows[1]["p_wilcoxon"]) <= 1  # users paired on the common seed 2020

    for seed in (2020, 2021):
        (out / "runs" / f"SASRecAttn-seed{seed}.json").unlink()
    assert compare.main([*argv, "--finished_only"]) == 2
    assert "the baseline SASRecAttn has no finished run" in capsys.readouterr().err


def test_user_errors_are_one_line(tmp_path, capsys):
    assert compare.main(["--models", "SASRecAttn,NoSuchModel", "--out_dir", str(tmp_path), *TINY_ARGS]) == 2
    assert "error: model [NoSuchModel]" in capsys.readouterr().err
    assert compare.main(["--models", "SASRecAttn,AWRSR-SASRec[refine_mode=bogus]", "--out_dir", str(tmp_path),
                         *TINY_ARGS]) == 2
    assert "refine_mode" in capsys.readouterr().err
    assert compare.main(["--models", "SASRecAttn", "--seed=3", "--out_dir", str(tmp_path), *TINY_ARGS]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert compare.main(["--models", "SASRecAttn", "--table_metrics", "ndcg@20", "--out_dir", str(tmp_path),
                         *TINY_ARGS]) == 2
    assert "ndcg@20" in capsys.readouterr().err


def test_valid_split_summarises_best_validation_results():
    from recbole_attn.compare import summarize

    records = {
        ("A", 1): {"test_result": {"ndcg@10": 0.1}, "best_valid_result": {"ndcg@10": 0.3}},
        ("A", 2): {"test_result": {"ndcg@10": 0.2}, "best_valid_result": {"ndcg@10": 0.5}},
        ("B", 1): {"test_result": {"ndcg@10": 0.4}, "best_valid_result": {"ndcg@10": 0.6}},
        ("B", 2): {"test_result": {"ndcg@10": 0.4}, "best_valid_result": {"ndcg@10": 0.6}},
    }
    rows = summarize(records, ["A", "B"], ["ndcg@10"], split="valid")
    assert [r["mean"] for r in rows] == pytest.approx([0.4, 0.6])
    assert rows[1]["improvement_pct"] == pytest.approx(50.0)
    assert rows[1]["p_wilcoxon"] != rows[1]["p_wilcoxon"]  # NaN: no per-user validation values
