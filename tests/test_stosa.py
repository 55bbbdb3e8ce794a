"""STOSA and AWRSR-STOSA: Wasserstein distances, causality, padding, widths, numerical
stability, distance ranking, losses, the official mean-path bug flag, save/load, CLI."""

import math
import os

import pytest
import torch

from recbole_attn.errors import ConfigError
from recbole_attn.layers.attention import merge_heads, split_heads
from recbole_attn.layers.stochastic import positive, wasserstein_distance, wasserstein_pairwise
from recbole_attn.model.sequence import align, causal_padding_mask
from tests.conftest import N_TINY as N
from tests.conftest import (assert_loss_decreases, assert_no_leakage, assert_save_load_round_trip, build,
                            make_batch, run_cli)

# (registry name, config overrides): plain STOSA, the official-bug flag and every refinement mode
VARIANTS = [
    ("STOSA", {}),
    ("STOSA", {"mean_passthrough_bug": True}),
    ("AWRSR-STOSA", {"refine_mode": "simp"}),
    ("AWRSR-STOSA", {"refine_mode": "value"}),
    ("AWRSR-STOSA", {"refine_mode": "add"}),
    ("AWRSR-STOSA", {"refine_mode": "stoc"}),
    ("AWRSR-STOSA", {"refine_mode": "stoc", "refine_input": "probs", "refine_per_head": True}),
]
IDS = [name + "".join(f"-{v}" for v in o.values()) for name, o in VARIANTS]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: on a shared machine, intra-op threads cost far more (waiting for each
    other) than they save. Also for the CLI runs (OMP_NUM_THREADS is read by torch at start)."""
    threads, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(threads)
    if env is None:
        os.environ.pop("OMP_NUM_THREADS")
    else:
        os.environ["OMP_NUM_THREADS"] = env


def eval_model(name, overrides, tiny_data, saved_dir, **more):
    _, model, train, _, _ = build(name, tiny_data, saved_dir, **dict(overrides, **more))
    return model.eval(), train


def both(pair):
    return torch.cat(pair, dim=-1)  # (mean, cov) side by side, for one comparison


# ----- distances ---------------------------------------------------------------------------
def w2_reference(mu_1, var_1, mu_2, var_2):
    """Gelbrich's formula on full covariance matrices (float64):
    ``||m1 - m2||^2 + tr(S1 + S2 - 2 (S2^1/2 S1 S2^1/2)^1/2)``."""
    def sqrtm(s):
        vals, vecs = torch.linalg.eigh(s)
        return vecs @ torch.diag(vals.clamp_min(0).sqrt()) @ vecs.T

    s1, s2 = torch.diag(var_1), torch.diag(var_2)
    root2 = sqrtm(s2)
    return float((mu_1 - mu_2).pow(2).sum() + torch.trace(s1 + s2 - 2 * sqrtm(root2 @ s1 @ root2)))


@pytest.mark.parametrize("scale", [1.0, 100.0])
def test_wasserstein_distance_matches_the_gaussian_formula(scale):
    g = torch.Generator().manual_seed(0)
    d, lq, lk = 6, 5, 7
    mu_q, mu_k = scale * torch.randn(lq, d, generator=g, dtype=torch.float64), torch.randn(lk, d, generator=g,
                                                                                            dtype=torch.float64)
    var_q = scale * torch.rand(lq, d, generator=g, dtype=torch.float64) + 1e-3
    var_k = torch.rand(lk, d, generator=g, dtype=torch.float64) + 1e-3
    expected = torch.tensor([[w2_reference(mu_q[i], var_q[i], mu_k[j], var_k[j]) for j in range(lk)]
                             for i in range(lq)], dtype=torch.float64)
    tol = dict(rtol=1e-9, atol=1e-9 * scale ** 2)
    assert torch.allclose(wasserstein_pairwise(mu_q, var_q, mu_k, var_k), expected, **tol)
    rows = wasserstein_distance(mu_q[:, None], var_q[:, None], mu_k[None], var_k[None])  # broadcasting
    assert torch.allclose(rows, expected, **tol)
    # batched leading axes (heads) give the same pairs
    batched = wasserstein_pairwise(mu_q.expand(2, 3, lq, d), var_q.expand(2, 3, lq, d), mu_k, var_k)
    assert batched.shape == (2, 3, lq, lk) and torch.allclose(batched[1, 2], expected, **tol)
    # symmetry, and zero between identical distributions
    assert torch.allclose(wasserstein_pairwise(mu_k, var_k, mu_q, var_q), expected.T, **tol)
    self_dist = wasserstein_pairwise(mu_q, var_q, mu_q, var_q)
    assert torch.allclose(self_dist.diagonal(), torch.zeros(lq, dtype=torch.float64), atol=1e-9 * scale ** 2)
    assert torch.equal(wasserstein_distance(mu_q, var_q, mu_q, var_q), torch.zeros(lq, dtype=torch.float64))
    assert (self_dist >= 0).all() and torch.allclose(self_dist, self_dist.T, **tol)


def test_float32_pairwise_distance_is_accurate_and_never_negative():
    g = torch.Generator().manual_seed(1)
    mu, var = torch.randn(2, 4, 50, 8, generator=g), positive(torch.randn(2, 4, 50, 8, generator=g))
    exact = wasserstein_pairwise(mu.double(), var.double(), mu.double(), var.double())
    fast = wasserstein_pairwise(mu, var, mu, var)
    assert (fast >= 0).all() and torch.allclose(fast.double(), exact, atol=1e-4)


# ----- causality, padding, widths ---------------------------------------------------------
@pytest.fixture(scope="module", params=["left", "right"])
def pad_side(request):
    return request.param


@pytest.mark.parametrize("name,overrides", VARIANTS, ids=IDS)
def test_no_leakage_from_future_items_or_padding(name, overrides, tiny_data, saved_dir, pad_side):
    model, _ = eval_model(name, overrides, tiny_data, saved_dir, pad_side=pad_side)
    assert_no_leakage(lambda seq, lens: both(model.encode(seq, lens)), model.n_items)


@pytest.mark.parametrize("name,overrides", VARIANTS, ids=IDS)
def test_every_batch_width_gives_the_same_outputs(name, overrides, tiny_data, saved_dir, pad_side):
    model, _ = eval_model(name, overrides, tiny_data, saved_dir, pad_side=pad_side)
    seq, lens = make_batch(model.n_items, [N, 4, 1])
    with torch.no_grad():
        mean, cov = model.forward(seq, lens)
        assert mean.shape == cov.shape == (3, model.hidden_size)
        assert torch.isfinite(mean).all() and (cov > 0).all()
        for row, length in enumerate(lens.tolist()):
            alone = both(model.forward(seq[row:row + 1, :max(length, 1)], lens[row:row + 1]))
            assert torch.allclose(alone[0], both((mean, cov))[row], atol=1e-5), f"width {length} differs from {N}"
        scores = model.full_sort_predict({model.ITEM_SEQ: seq, model.ITEM_SEQ_LEN: lens})
        assert scores.shape == (3, model.n_items) and torch.isfinite(scores).all() and (scores <= 0).all()


# ----- numerical stability ----------------------------------------------------------------
@pytest.mark.parametrize("name,overrides", VARIANTS, ids=IDS)
def test_no_nan_with_large_distances_long_sequences_and_empty_rows(name, overrides, tiny_data, saved_dir):
    n = 200
    _, model, train, _, _ = build(name, tiny_data, saved_dir, MAX_ITEM_LIST_LENGTH=n, **overrides)
    model.train()
    with torch.no_grad():  # items, queries and keys far apart: squared distances of 1e6 and more
        model.embedding.item_mean.weight.mul_(1e3)
        model.embedding.item_cov.weight.mul_(1e3)
        for layer in model.attention_modules():
            layer.scorer.mean_query.weight.mul_(1e3)
            layer.scorer.cov_key.weight.mul_(1e3)
    seq, lens = make_batch(model.n_items, [n, 150, 1, 7], width=n)
    with torch.no_grad():
        aligned, positions = align(seq, lens, model.pad_side, n)
        scores = model.attention_modules()[0].scorer(model.embedding(aligned, positions), positions)
        assert scores.abs().max() > 1e4  # beyond what an additive -10000 mask could hide
    interaction = {model.ITEM_SEQ: seq, model.ITEM_SEQ_LEN: lens, model.POS_ITEM_ID: torch.tensor([1, 2, 3, 4]),
                   model.NEG_ITEM_ID: torch.tensor([5, 6, 7, 8]), "loss_start": torch.zeros(4, dtype=torch.long)}
    for key in ("loss_start", None):
        batch = {k: v for k, v in interaction.items() if k != key}
        loss = model.calculate_loss(batch)
        loss.backward()
        assert torch.isfinite(loss), key
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        model.zero_grad()
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model.full_sort_predict(interaction)).all()
        # a row without any item (all padding) next to a real one: finite, and no effect on it
        empty = torch.zeros(2, n, dtype=torch.long)
        empty[1, :3] = seq[3, :3]
        pair = both(model.encode(empty, torch.tensor([0, 3])))
        alone = both(model.encode(empty[1:], torch.tensor([3])))
        assert torch.isfinite(pair).all() and torch.allclose(pair[1, :3], alone[0, :3], atol=1e-5)
        assert torch.isfinite(both(model.forward(empty, torch.tensor([0, 3])))).all()
        # a fully masked attention row gives zero weights (not NaN)
        layer = model.attention_modules()[0]
        hidden = model.embedding(empty[:, :4], torch.arange(4))
        _, weights = layer.attention_weights(hidden, torch.zeros(2, 1, 4, 4, dtype=torch.bool), torch.arange(4))
        assert torch.equal(weights, torch.zeros_like(weights))


# ----- attention sublayer -----------------------------------------------------------------
def test_wasserstein_attention_combines_means_with_weights_and_covariances_with_squared_weights(
        tiny_data, saved_dir):
    model, _ = eval_model("STOSA", {}, tiny_data, saved_dir, pad_side="right")
    layer = model.attention_modules()[0]
    seq, lens = make_batch(model.n_items, [N, 5])
    seq, positions = align(seq, lens, "right", N)
    mask = causal_padding_mask(seq)
    with torch.no_grad():
        mean, cov = model.embedding(seq, positions)
        mean_out, cov_out = layer((mean, cov), mask, positions)
        scorer, h = layer.scorer, model.n_heads
        mu_q, mu_k = split_heads(scorer.mean_query(mean), h), split_heads(scorer.mean_key(mean), h)
        var_q, var_k = split_heads(positive(scorer.cov_query(cov)), h), split_heads(positive(scorer.cov_key(cov)), h)
        dist = wasserstein_distance(mu_q.unsqueeze(-2), var_q.unsqueeze(-2), mu_k.unsqueeze(-3), var_k.unsqueeze(-3))
        scores = (-dist / math.sqrt(model.hidden_size // h)).masked_fill(~mask, -math.inf)
        weights = torch.softmax(scores, dim=-1)
        mu_v, var_v = split_heads(layer.mean_value(mean), h), split_heads(positive(layer.cov_value(cov)), h)
        expected_mean = layer.LayerNorm(layer.mean_dense(merge_heads(weights @ mu_v)) + mean)
        expected_cov = layer.LayerNorm(layer.cov_dense(merge_heads((weights ** 2) @ var_v)) + cov)
    assert torch.allclose(mean_out, expected_mean, atol=1e-5)
    assert torch.allclose(cov_out, expected_cov, atol=1e-5)


@pytest.mark.parametrize("name,overrides", [VARIANTS[0], VARIANTS[5]], ids=[IDS[0], IDS[5]])
def test_attention_weights_are_kept_for_plots(name, overrides, tiny_data, saved_dir):
    model, _ = eval_model(name, overrides, tiny_data, saved_dir)
    modules = model.attention_modules()
    assert len(modules) == model.n_layers
    for module in modules:
        module.keep_attention = True
    seq, lens = make_batch(model.n_items, [N, 3])
    with torch.no_grad():
        model.encode(seq, lens)
    for module in modules:
        a, b = module.last_attention["A"], module.last_attention["B"]
        assert a.shape == (2, model.n_heads, N, N)
        cols = torch.arange(N).unsqueeze(0)  # valid query rows in the model's layout
        valid = cols >= (N - lens).unsqueeze(1) if model.pad_side == "left" else cols < lens.unsqueeze(1)
        rows = a.sum(-1)[:, 0]
        assert torch.allclose(rows[valid], torch.ones(int(valid.sum())), atol=1e-5)
        assert torch.equal(rows[~valid], torch.zeros(int((~valid).sum())))
        assert (b is None) == (name == "STOSA")
        if b is not None:
            assert b.shape == a.shape and torch.equal(torch.triu(b, diagonal=1), torch.zeros_like(b))


def test_refine_mode_none_is_exactly_stosa(tiny_data, saved_dir):
    plain, _ = eval_model("STOSA", {}, tiny_data, saved_dir)
    none, _ = eval_model("AWRSR-STOSA", {"refine_mode": "none"}, tiny_data, saved_dir)
    a, b = plain.state_dict(), none.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    seq, lens = make_batch(plain.n_items, [N, 3])
    with torch.no_grad():
        assert torch.equal(both(plain.encode(seq, lens)), both(none.encode(seq, lens)))


@pytest.mark.parametrize("mode,matrices", [("simp", 2), ("value", 3), ("add", 2), ("stoc", 2)])
def test_refinement_adds_n_by_n_matrices_per_layer(mode, matrices, tiny_data, saved_dir):
    """AWRSR §3.5: 2 (M_simp, M_add, M_stoc) or 3 (M_value) extra n x n matrices per layer."""
    plain, _ = eval_model("STOSA", {}, tiny_data, saved_dir)
    refined, _ = eval_model("AWRSR-STOSA", {"refine_mode": mode}, tiny_data, saved_dir)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(refined) - count(plain) == plain.n_layers * matrices * N * N


# ----- the official mean-path bug -----------------------------------------------------------
MEAN_PATH = ("multi_head_attention.mean_value", "multi_head_attention.mean_dense", "mean_feed_forward")


@pytest.mark.parametrize("bug", [False, True])
def test_mean_passthrough_bug_flag(bug, tiny_data, saved_dir):
    """``True`` reproduces the official encoder (STOSA's ``DistSAEncoder.forward``): the mean
    returned is the embedding's, and the mean value/output/feed-forward weights get no gradient."""
    model, train = eval_model("STOSA", {"mean_passthrough_bug": bug}, tiny_data, saved_dir)
    seq, lens = make_batch(model.n_items, [N, 5])
    aligned, positions = align(seq, lens, model.pad_side, N)
    with torch.no_grad():
        embedded = model.embedding(aligned, positions)
        mean, cov = model.encoder(embedded, causal_padding_mask(aligned), positions)
    assert torch.equal(mean, embedded[0]) == bug
    assert not torch.allclose(cov, embedded[1])  # the covariance path is contextual either way
    model.train()
    model.calculate_loss(next(iter(train))).backward()
    for name, p in model.encoder.named_parameters():
        silent = p.grad is None or not p.grad.any()
        if any(part in name for part in MEAN_PATH):
            assert silent == bug, name
        elif "multi_head_attention.scorer" in name or "cov_" in name:
            assert not silent, name  # queries and keys shape the weights that drive the covariance


# ----- scoring and losses ------------------------------------------------------------------
@pytest.mark.parametrize("name,overrides", [VARIANTS[0], VARIANTS[5]], ids=[IDS[0], IDS[5]])
def test_full_sort_agrees_with_predict_and_ranks_by_smallest_distance(name, overrides, tiny_data, saved_dir):
    model, _ = eval_model(name, overrides, tiny_data, saved_dir)
    seq, lens = make_batch(model.n_items, [N, 5, 1, 2])
    b, items = len(lens), model.n_items
    with torch.no_grad():
        scores = model.full_sort_predict({model.ITEM_SEQ: seq, model.ITEM_SEQ_LEN: lens})
        every = model.predict({model.ITEM_SEQ: seq.repeat_interleave(items, 0),
                               model.ITEM_SEQ_LEN: lens.repeat_interleave(items),
                               model.ITEM_ID: torch.arange(items).repeat(b)}).view(b, items)
        mean, cov = model.forward(seq, lens)
        item_mean, item_cov = model.embedding.items()
        dist = wasserstein_distance(mean[:, None], cov[:, None], item_mean[None], item_cov[None])
    assert scores.shape == (b, items)
    assert torch.allclose(scores, every, rtol=1e-5, atol=1e-4)
    assert torch.allclose(scores, -dist, rtol=1e-5, atol=1e-4)
    assert torch.equal(scores.argmax(1), dist.argmin(1))
    top = torch.topk(scores, 5).indices  # the 5 best scores are the 5 smallest distances
    assert torch.allclose(dist.gather(1, top), torch.sort(dist, 1).values[:, :5], atol=1e-4)


LOSS_VARIANTS = VARIANTS + [("STOSA", {"train_mode": "augment"}), ("AWRSR-STOSA", {"refine_mode": "stoc",
                                                                                   "train_mode": "augment"})]


@pytest.mark.parametrize("name,overrides", LOSS_VARIANTS, ids=[n + "".join(f"-{v}" for v in o.values())
                                                               for n, o in LOSS_VARIANTS])
def test_loss_decreases_on_a_fixed_batch(name, overrides, tiny_data, saved_dir):
    model, train = eval_model(name, overrides, tiny_data, saved_dir)
    batch = next(iter(train))
    assert ("loss_start" in batch) == (overrides.get("train_mode", "seq2seq") == "seq2seq")
    assert_loss_decreases(model, batch, steps=20, same_draws=True)


def test_loss_is_bpr_on_distances_plus_the_pvn_hinge(tiny_data, saved_dir):
    model, train = eval_model("STOSA", {"train_mode": "augment", "pvn_weight": 0.3}, tiny_data, saved_dir)
    batch = next(iter(train))
    with torch.no_grad():
        mean, cov = model.forward(batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN])
        pos, neg = model.embedding.items(batch[model.POS_ITEM_ID]), model.embedding.items(batch[model.NEG_ITEM_ID])
        d_pos, d_neg = wasserstein_distance(mean, cov, *pos), wasserstein_distance(mean, cov, *neg)
        d_pn = wasserstein_distance(*pos, *neg)
        expected = -torch.log(torch.sigmoid(d_neg - d_pos)).mean() + 0.3 * torch.relu(d_pos - d_pn).mean()
        assert torch.allclose(model.calculate_loss(batch), expected, rtol=1e-5)


def test_sampled_negatives_are_uniform_over_the_other_items(tiny_data, saved_dir):
    model, _ = eval_model("STOSA", {}, tiny_data, saved_dir)
    targets = torch.arange(1, model.n_items).repeat(400)
    torch.manual_seed(0)
    neg = model.sample_negatives(targets)
    assert ((neg >= 1) & (neg < model.n_items) & (neg != targets)).all()
    counts = torch.bincount(neg[targets == 1], minlength=model.n_items)
    assert counts[0] == 0 and counts[1] == 0 and (counts[2:] > 0).all()


def test_loss_type_other_than_bpr_is_rejected(tiny_data, saved_dir):
    with pytest.raises(ConfigError, match="loss_type"):
        build("STOSA", tiny_data, saved_dir, loss_type="CE")


# ----- save/load and the command line ---------------------------------------------------------
@pytest.mark.parametrize("name,overrides", [VARIANTS[0], VARIANTS[5]], ids=[IDS[0], IDS[5]])
def test_save_load_gives_identical_full_sort_scores(name, overrides, tiny_data, tmp_path):
    assert_save_load_round_trip(name, overrides, tiny_data, str(tmp_path))


@pytest.mark.parametrize("args", [["--model=STOSA"]] + [["--model=AWRSR-STOSA", f"--refine_mode={mode}"]
                                                         for mode in ("simp", "value", "add", "stoc")],
                         ids=["STOSA", "simp", "value", "add", "stoc"])
def test_each_mode_trains_one_epoch_through_the_cli(args, tmp_path):
    proc = run_cli(*args, "--dataset=ml-100k", "--epochs=1", "--MAX_ITEM_LIST_LENGTH=10", "--hidden_size=16",
                   "--inner_size=32", "--n_layers=1", "--n_heads=2", "--use_gpu=False",
                   f"--checkpoint_dir={tmp_path}", cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "test result" in out and "Traceback" not in out
