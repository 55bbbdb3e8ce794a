"""The CLI end to end on the embedded ml-100k, as a user runs it from the README."""

import re

import pytest

from tests.conftest import run_cli

SMALL = ["--epochs=1", "--MAX_ITEM_LIST_LENGTH=5", "--hidden_size=16", "--inner_size=32", "--n_layers=1",
         "--n_heads=1", "--train_batch_size=2048", "--use_gpu=False", "--fpa_rank=2"]


@pytest.mark.parametrize("model", ["FPARec", "SASRec"])
def test_cli_trains_saves_reloads_and_prints_test_metrics(model, tmp_path):
    proc = run_cli(f"--model={model}", "--dataset=ml-100k", *SMALL, f"--checkpoint_dir={tmp_path}", cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    saved = re.findall(r"Saving current: (\S+\.pth)", out)
    loaded = re.findall(r"Loading model structure and parameters from (\S+\.pth)", out)
    assert saved and loaded and loaded[-1] == saved[-1]
    assert (tmp_path / saved[-1].split("/")[-1]).is_file()
    assert "best valid" in out
    test_line = [line for line in out.splitlines() if "test result" in line][-1]
    assert "ndcg@10" in test_line and "recall@1" in test_line and "hit@10" in test_line


def test_cli_missing_dataset_says_how_to_create_it(tmp_path):
    proc = run_cli("--model=FPARec", "--dataset=ml-1m", f"--data_path={tmp_path}", "--use_gpu=False", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "python -m recbole_attn.data.convert" in proc.stderr and "ml-1m" in proc.stderr


def test_cli_ddp_with_two_cpu_processes(tmp_path):
    """RecBole hard-codes NCCL; on CPU the plugin runs the same DDP path over gloo."""
    proc = run_cli("--model=SASRecAttn", "--dataset=ml-100k", *SMALL, "--nproc=2", "--port=29561",
                   f"--checkpoint_dir={tmp_path}", cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "test result" in out
