"""Training batches of similar sequence length for the all-position mode.

The model trims every batch to its longest row, so a batch of short windows costs little,
unless one long window sits in it. :class:`LengthBucketSampler` shuffles the rows, sorts each
pool of ``BUCKET_POOL`` batches by length, cuts it into batches and shuffles the batch order:
batches stay random, but rows in a batch have similar lengths.
"""

import torch
from recbole.data.dataloader import TrainDataLoader
from torch.utils.data import DataLoader, Sampler

BUCKET_POOL = 50  # batches sorted together


class LengthBucketSampler(Sampler):
    def __init__(self, lengths, batch_size, generator):
        self.lengths = torch.as_tensor(lengths)
        self.batch_size = batch_size
        self.generator = generator

    def __len__(self):
        return len(self.lengths)

    def __iter__(self):
        order = torch.randperm(len(self.lengths), generator=self.generator)
        pool = self.batch_size * BUCKET_POOL
        batches = []
        for start in range(0, len(order), pool):
            chunk = order[start:start + pool]
            chunk = chunk[torch.argsort(self.lengths[chunk], stable=True)]
            batches.extend(chunk.split(self.batch_size))
        for b in torch.randperm(len(batches), generator=self.generator).tolist():
            yield from batches[b].tolist()


class _BucketingDataLoader(DataLoader):
    """Sits between RecBole's ``AbstractDataLoader`` and torch's ``DataLoader`` in the MRO and
    swaps RecBole's shuffling for :class:`LengthBucketSampler` (single process only)."""

    def __init__(self, dataset, batch_size, collate_fn, num_workers, shuffle, sampler, generator):
        if shuffle and sampler is None:
            lengths = self._dataset.inter_feat[self._dataset.item_list_length_field]
            sampler = LengthBucketSampler(lengths, batch_size, generator)
            shuffle = False
        super().__init__(dataset=dataset, batch_size=batch_size, collate_fn=collate_fn, num_workers=num_workers,
                         shuffle=shuffle, sampler=sampler, generator=generator)


class BucketedTrainDataLoader(TrainDataLoader, _BucketingDataLoader):
    """RecBole's ``TrainDataLoader`` with length-bucketed batches."""
