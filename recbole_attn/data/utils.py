"""Dataset creation: RecBole's, except for plugin models in ``train_mode: seq2seq``."""

from recbole.data import create_dataset as create_recbole_dataset

from recbole_attn import registry
from recbole_attn.data.dataset import Seq2SeqDataset


def create_dataset(config):
    if registry.is_plugin_model(config["model"]) and config["train_mode"] == "seq2seq":
        return Seq2SeqDataset(config)
    return create_recbole_dataset(config)
