"""All-position ("seq2seq") training: same pairs as RecBole's prefix rows, same loss per
position, RecBole's evaluation untouched."""

import logging
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from recbole_attn.data.dataloader import BucketedTrainDataLoader
from recbole_attn.data.dataset import LOSS_START
from recbole_attn.layers.loss import chunked_cross_entropy
from tests.conftest import N_TINY as N, build


def rows(dataset):
    feat = dataset.inter_feat
    return (feat["user_id"].tolist(), feat["item_id_list"].tolist(), feat["item_length"].tolist(),
            feat["item_id"].tolist(), feat[LOSS_START].tolist() if LOSS_START in feat else None)


def augment_pairs(dataset):
    users, lists, lens, targets, _ = rows(dataset)
    return Counter((u, tuple(seq[:n]), t) for u, seq, n, t in zip(users, lists, lens, targets))


def seq2seq_pairs(dataset):
    users, lists, lens, targets, starts = rows(dataset)
    pairs = Counter()
    for u, seq, n, t, s in zip(users, lists, lens, targets, starts):
        for p in range(s, n):
            pairs[(u, tuple(seq[:p + 1]), seq[p + 1] if p + 1 < n else t)] += 1
    return pairs


class RecordList(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture(scope="module")
def datasets(tiny_data, saved_dir):
    out = {}
    for mode, stride, windows in (("augment", None, "all"), ("seq2seq", None, "all"), ("stride1", 1, "all"),
                                  ("last", None, "last")):
        train_mode = "augment" if mode == "augment" else "seq2seq"
        records, root = RecordList(), logging.getLogger()  # RecBole's dataset logs to the root logger
        level = root.level
        root.addHandler(records), root.setLevel(logging.INFO)
        try:
            _, _, train, valid, test = build("SASRecAttn", tiny_data, saved_dir, train_mode=train_mode,
                                             seq2seq_stride=stride, seq2seq_windows=windows)
        finally:
            root.removeHandler(records), root.setLevel(level)
        out[mode] = (train, valid, test)
        out[mode + " log"] = [r.getMessage() for r in records.records]
    return out


def test_stride_one_gives_exactly_recboles_pairs(datasets):
    aug = augment_pairs(datasets["augment"][0]._dataset)
    assert max(len(c) for _, c, _ in aug) == N  # users longer than n are in the data
    assert seq2seq_pairs(datasets["stride1"][0]._dataset) == aug


def test_default_windows_cover_every_target_once_with_a_suffix_of_its_context(datasets):
    aug = augment_pairs(datasets["augment"][0]._dataset)
    s2s = seq2seq_pairs(datasets["seq2seq"][0]._dataset)
    assert sum(s2s.values()) == sum(aug.values())
    # every all-position pair is a RecBole pair with its context cut at the window start
    by_target = {}
    for (u, ctx, t), count in aug.items():
        by_target.setdefault((u, t), []).append(ctx)
    for (u, ctx, t), count in s2s.items():
        assert any(full[-len(ctx):] == ctx for full in by_target[(u, t)])
    assert Counter((u, t) for u, _, t in aug.elements()) == Counter((u, t) for u, _, t in s2s.elements())
    # and far fewer rows than RecBole's one row per target
    assert len(datasets["seq2seq"][0]._dataset) < len(datasets["augment"][0]._dataset) / 3


def test_last_window_only_trains_each_users_latest_n_targets_with_all_positions(datasets):
    """The official samplers' ``train[:-1][-n:]``: one row per user, every position a target."""
    # every user's training targets in time order, from the default windows (which cover each once)
    all_targets, latest_window = {}, {}
    for u, seq, n, t, s in zip(*rows(datasets["seq2seq"][0]._dataset)):  # a user's windows in time order
        all_targets.setdefault(u, []).extend(seq[s + 1:n] + [t])
        latest_window[u] = (seq, n, t)
    users, lists, lens, targets, starts = rows(datasets["last"][0]._dataset)
    assert sorted(users) == sorted(all_targets)  # one row per user
    assert set(starts) == {0}
    dropped = 0
    for u, seq, n, t in zip(users, lists, lens, targets):
        assert seq[1:n] + [t] == all_targets[u][-n:]  # the last n targets, ending at the last training one
        dropped += len(all_targets[u]) - n
    assert dropped > 0  # users longer than n lose their older targets
    total = sum(len(t) for t in all_targets.values())
    assert f"seq2seq_windows last: {total - dropped:,} of {total:,} training targets kept" in " ".join(
        datasets["last log"])
    # each is the most recent of the user's default windows
    assert {u: (seq, n, t) for u, seq, n, t in zip(users, lists, lens, targets)} == latest_window


@pytest.mark.parametrize("mode", ["seq2seq", "last"])
def test_validation_and_test_rows_are_recboles(datasets, mode):
    """Same rows (one per user, in the order users first appear in time, which may differ)."""
    for split in (1, 2):
        a = datasets["augment"][split]._dataset.inter_feat
        b = datasets[mode][split]._dataset.inter_feat
        order_a, order_b = torch.argsort(a["user_id"]), torch.argsort(b["user_id"])
        for field in ("user_id", "item_id", "item_length", "item_id_list"):
            assert torch.equal(a[field][order_a], b[field][order_b]), field


def test_training_batches_are_bucketed_by_length(datasets):
    train = datasets["seq2seq"][0]
    assert isinstance(train, BucketedTrainDataLoader)
    seen = []
    for batch in train:
        seen.extend(batch["user_id"].tolist())
    assert sorted(seen) == sorted(train._dataset.inter_feat["user_id"].tolist())  # every row once


def test_all_position_loss_equals_last_position_loss_of_each_prefix(tiny_data, saved_dir, datasets):
    _, model, _, _, _ = build("SASRecAttn", tiny_data, saved_dir)
    model.eval()
    ds = datasets["seq2seq"][0]._dataset
    first = [i for i, s in enumerate(ds.inter_feat[LOSS_START].tolist()) if s == 0]
    row = ds.inter_feat[first[: 8]]
    targets_all = []
    with torch.no_grad():
        hidden = model.encode(row["item_id_list"], row["item_length"])
        for r in range(len(row)):
            n = int(row["item_length"][r])
            seq = row["item_id_list"][r]
            for p in range(n):
                target = seq[p + 1] if p + 1 < n else row["item_id"][r]
                position_loss = F.cross_entropy(hidden[r, p] @ model.item_embedding.weight.t(), target)
                prefix = torch.zeros(1, N, dtype=torch.long)
                prefix[0, :p + 1] = seq[:p + 1]
                last = model.calculate_loss({model.ITEM_SEQ: prefix, model.ITEM_SEQ_LEN: torch.tensor([p + 1]),
                                             model.POS_ITEM_ID: target.view(1)})
                assert torch.allclose(position_loss, last, atol=1e-5)
                targets_all.append(position_loss)
        mean_loss = model.calculate_loss(row)
    assert torch.allclose(mean_loss, torch.stack(targets_all).mean(), atol=1e-5)


@pytest.mark.parametrize("rows_per_chunk", [1, 7, 64, 1000, None])  # None: the device's default
def test_chunked_cross_entropy_has_the_loss_and_gradients_of_the_plain_one(rows_per_chunk):
    torch.manual_seed(0)
    n_items = 53
    hidden = torch.randn(200, 8, requires_grad=True)
    weight = torch.randn(n_items, 8, requires_grad=True)
    targets = torch.randint(1, n_items, (200,))
    plain = F.cross_entropy(hidden @ weight.t(), targets)
    plain_grads = torch.autograd.grad(3 * plain, (hidden, weight))
    max_logits = rows_per_chunk and rows_per_chunk * n_items
    chunked = chunked_cross_entropy(hidden, weight, targets, max_logits=max_logits)
    chunked_grads = torch.autograd.grad(3 * chunked, (hidden, weight))  # backward scales by grad_output
    assert torch.allclose(chunked, plain, atol=1e-5)
    for got, want in zip(chunked_grads, plain_grads):
        assert torch.allclose(got, want, atol=1e-6)
    frozen = chunked_cross_entropy(hidden.detach(), weight, targets, max_logits=7 * n_items)
    assert torch.allclose(torch.autograd.grad(frozen, weight)[0], plain_grads[1] / 3, atol=1e-6)


def test_all_position_training_in_loss_chunks_takes_the_same_step(tiny_data, saved_dir, datasets, monkeypatch):
    """The model's all-position loss split into chunks of a few positions: same loss, same gradients
    on every parameter as one chunk."""
    train = datasets["seq2seq"][0]
    batch = next(iter(train))
    results = []
    for max_logits in (2 ** 25, 3 * 100):
        _, model, _, _, _ = build("SASRecAttn", tiny_data, saved_dir, hidden_dropout_prob=0.0, attn_dropout_prob=0.0)
        monkeypatch.setattr(model, "CE_CHUNK_ELEMENTS", max_logits)
        loss = model.calculate_loss(batch)
        loss.backward()
        results.append((loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}))
    (whole, whole_grads), (chunked, chunked_grads) = results
    assert torch.allclose(whole, chunked, atol=1e-5)
    assert whole_grads.keys() == chunked_grads.keys() and "item_embedding.weight" in whole_grads
    for name in whole_grads:
        assert torch.allclose(whole_grads[name], chunked_grads[name], atol=1e-5), name


def test_evaluation_does_not_depend_on_the_training_mode(tiny_data, saved_dir, datasets):
    from recbole_attn.trainer import Trainer

    results = []
    weights = None
    for mode in ("augment", "seq2seq"):
        config, model, _, valid, test = build("SASRecAttn", tiny_data, saved_dir, train_mode=mode)
        if weights is None:
            weights = {k: torch.randn_like(v) * 0.1 for k, v in model.state_dict().items()}
        model.load_state_dict(weights)
        trainer = Trainer(config, model)
        results.append((trainer.evaluate(valid, load_best_model=False), trainer.evaluate(test, load_best_model=False)))
    assert results[0] == results[1]
