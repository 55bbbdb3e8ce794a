"""Registry: plugin names resolve, RecBole names fall back, unknown names fail cleanly."""

import subprocess
import sys

import pytest
from recbole.model.abstract_recommender import SequentialRecommender

from recbole_attn import registry
from recbole_attn.errors import ConfigError
from tests.conftest import run_cli


@pytest.mark.parametrize("name", sorted(registry._available_plugin_models()))
def test_every_plugin_name_resolves_to_a_sequential_recommender(name):
    cls = registry.get_model(name)
    assert issubclass(cls, SequentialRecommender)
    assert cls.__module__.startswith("recbole_attn.model.")


def test_design_card_names_are_registered():
    for name in ("PARec", "FPARec", "AWRSR-SASRec", "STOSA", "AWRSR-STOSA"):
        assert name in registry.PLUGIN_MODELS


def test_alias_resolves_to_the_same_class():
    assert registry.get_model("AWRSRSASRec") is registry.get_model("AWRSR-SASRec")


@pytest.mark.parametrize("name", ["SASRec", "GRU4Rec", "BERT4Rec"])
def test_recbole_models_fall_back(name):
    cls = registry.get_model(name)
    assert cls.__module__.startswith("recbole.model.")
    assert not registry.is_plugin_model(name)


def test_names_are_case_sensitive():
    with pytest.raises(ConfigError):
        registry.get_model("fparec")


def test_unknown_name_lists_plugin_models():
    with pytest.raises(ConfigError) as err:
        registry.get_model("NoSuchModel")
    assert "NoSuchModel" in str(err.value) and "FPARec" in str(err.value)


def test_get_trainer_adds_checkpoint_fixes_to_recbole_trainers():
    from recbole.trainer import Trainer as RecBoleTrainer
    from recbole.utils import ModelType

    from recbole_attn.trainer import CheckpointMixin, Trainer

    assert registry.get_trainer(ModelType.SEQUENTIAL, "FPARec") is Trainer
    assert registry.get_trainer(ModelType.SEQUENTIAL, "SASRec") is Trainer
    s3rec = registry.get_trainer(ModelType.SEQUENTIAL, "S3Rec")  # RecBole's own pre-training trainer
    assert issubclass(s3rec, CheckpointMixin) and issubclass(s3rec, RecBoleTrainer)
    assert s3rec.__name__ == "S3RecTrainer"


def test_cli_unknown_model_is_one_line_and_exit_2():
    proc = run_cli("--model=NoSuchModel", "--dataset=ml-100k")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "NoSuchModel" in lines[0] and "FPARec" in lines[0]


@pytest.mark.parametrize("enabled_before", [False, True])
def test_looking_up_a_recbole_model_keeps_anomaly_detection_as_it_was(enabled_before):
    # A fresh interpreter, so RecBole's sine.py (set_detect_anomaly(True) at import) runs here
    # for the first time: through the registry and through the Config that --model=SASRec builds.
    code = (
        "import sys, torch\n"
        f"torch.autograd.set_detect_anomaly({enabled_before})\n"
        "from recbole_attn import registry\n"
        "from recbole_attn.config import Config\n"
        "registry.get_model('SASRec')\n"
        "assert 'recbole.model.sequential_recommender.sine' in sys.modules\n"
        "print(torch.is_anomaly_enabled())\n"
        "Config(model='GRU4Rec', dataset='ml-100k', config_dict={'state': 'ERROR'}, read_cmd_line=False)\n"
        "print(torch.is_anomaly_enabled())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == [str(enabled_before)] * 2
