"""Dataset and dataloader creation: RecBole's, except for plugin models in ``train_mode: seq2seq``."""

from recbole.data import data_preparation as recbole_data_preparation
from recbole.data import create_dataset as create_recbole_dataset

from recbole_attn import registry
from recbole_attn.data.dataloader import BucketedTrainDataLoader
from recbole_attn.data.dataset import Seq2SeqDataset


def uses_seq2seq(config):
    return registry.is_plugin_model(config["model"]) and config["train_mode"] == "seq2seq"


def create_dataset(config):
    if uses_seq2seq(config):
        return Seq2SeqDataset(config)
    return create_recbole_dataset(config)


def data_preparation(config, dataset):
    """RecBole's split and loaders; in seq2seq mode the training loader buckets rows by length."""
    train_data, valid_data, test_data = recbole_data_preparation(config, dataset)
    if uses_seq2seq(config) and config["bucket_by_length"] is not False:
        train_data = BucketedTrainDataLoader(config, train_data._dataset, train_data._sampler,
                                             shuffle=config["shuffle"])
    return train_data, valid_data, test_data
