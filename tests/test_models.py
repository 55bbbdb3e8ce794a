"""The SASRec family: causality, padding, widths, parameter counts, losses, save/load, CLI."""

import math

import pytest
import torch

from tests.conftest import (assert_loss_decreases, assert_no_leakage, assert_save_load_round_trip, build,
                            make_batch, run_cli)

# (registry name, config overrides): every attention type and refinement mode
VARIANTS = [
    ("SASRecAttn", {}),
    ("PARec", {}),
    ("PARec", {"attn_pattern": "average"}),
    ("PARec", {"attn_pattern": "linear"}),
    ("PARec", {"attn_pattern": "exponential"}),
    ("FPARec", {}),
    ("LinearAttnRec", {}),
    ("TokenMixRec", {}),
    ("AWRSR-SASRec", {"refine_mode": "simp"}),
    ("AWRSR-SASRec", {"refine_mode": "value"}),
    ("AWRSR-SASRec", {"refine_mode": "add"}),
    ("AWRSR-SASRec", {"refine_mode": "simp", "refine_input": "probs", "refine_per_head": True}),
    ("AWRSR-SASRec", {"refine_mode": "value", "refine_input": "probs", "refine_init": "identity"}),
    ("SASRecAttn", {"pre_norm": True}),
    ("FPARec", {"pre_norm": True}),
    ("TokenMixRec", {"pre_norm": True}),
    ("AWRSR-SASRec", {"refine_mode": "add", "pre_norm": True}),
    ("SASRecAttn", {"weight_init": "glorot", "embedding_scale": True, "pre_norm": True}),
    ("FPARec", {"weight_init": "glorot", "embedding_scale": True}),
    ("SASRecAttn", {"official_block": True}),
    ("FPARec", {"official_block": True, "weight_init": "glorot", "embedding_scale": True}),
    ("LinearAttnRec", {"official_block": True}),
    ("AWRSR-SASRec", {"refine_mode": "value", "official_block": True}),
    ("FPARec", {"official_block": True, "single_ffn": True}),
    ("SASRecAttn", {"single_ffn": True}),
]
IDS = [name + "".join(f"-{k}" if v is True else f"-{v}" for k, v in o.items()) for name, o in VARIANTS]
N = 8  # MAX_ITEM_LIST_LENGTH of the tiny config


@pytest.fixture(scope="module", params=["right", "left"])
def pad_side(request):
    return request.param


def eval_model(name, overrides, tiny_data, saved_dir, **more):
    _, model, train, _, _ = build(name, tiny_data, saved_dir, **dict(overrides, **more))
    return model.eval(), train


@pytest.mark.parametrize("name,overrides", VARIANTS, ids=IDS)
def test_no_leakage_from_future_items_or_padding(name, overrides, tiny_data, saved_dir, pad_side):
    model, _ = eval_model(name, overrides, tiny_data, saved_dir, pad_side=pad_side)
    assert_no_leakage(model.encode, model.n_items)


@pytest.mark.parametrize("name,overrides", VARIANTS, ids=IDS)
def test_every_batch_width_gives_the_same_outputs(name, overrides, tiny_data, saved_dir, pad_side):
    model, _ = eval_model(name, overrides, tiny_data, saved_dir, pad_side=pad_side)
    seq, lens = make_batch(model.n_items, [N, 4, 1])
    with torch.no_grad():
        full = model.forward(seq, lens)
        assert full.shape == (3, model.hidden_size) and torch.isfinite(full).all()
        for row, length in enumerate(lens.tolist()):
            alone = model.forward(seq[row:row + 1, :max(length, 1)], lens[row:row + 1])
            assert torch.allclose(alone[0], full[row], atol=1e-5), f"width {length} differs from width {N}"
        scores = model.full_sort_predict({model.ITEM_SEQ: seq, model.ITEM_SEQ_LEN: lens})
        assert scores.shape == (3, model.n_items) and torch.isfinite(scores).all()


def attention_params(model):
    layer = model.trm_encoder.layer[0].multi_head_attention
    return sum(p.numel() for name, p in layer.named_parameters()
               if not name.endswith("bias") and not name.startswith(("dense", "LayerNorm")))


@pytest.mark.parametrize("name,overrides,formula", [
    ("SASRecAttn", {}, lambda d, n, k: 3 * d * d),
    ("PARec", {}, lambda d, n, k: d * d + n * n),
    ("FPARec", {}, lambda d, n, k: d * d + 2 * k * n),
    ("AWRSR-SASRec", {"refine_mode": "simp", "refine_per_head": False}, lambda d, n, k: 3 * d * d + 2 * n * n),
    ("AWRSR-SASRec", {"refine_mode": "add", "refine_per_head": False}, lambda d, n, k: 3 * d * d + 2 * n * n),
    ("AWRSR-SASRec", {"refine_mode": "value", "refine_per_head": False}, lambda d, n, k: 3 * d * d + 3 * n * n),
], ids=["SASRec", "PARec", "FPARec", "AWRSR-simp", "AWRSR-add", "AWRSR-value"])
def test_attention_parameter_counts_match_the_papers(name, overrides, formula, tiny_data, saved_dir):
    """FPARec Table 1 (per layer and head, biases aside; the output projection is RecBole's
    common extra) and AWRSR §3.5 (2n^2 or 3n^2 more per layer)."""
    model, _ = eval_model(name, overrides, tiny_data, saved_dir, n_heads=1)
    d, n, k = model.hidden_size, model.max_seq_length, 3
    assert attention_params(model) == formula(d, n, k)
    multi, _ = eval_model(name, overrides, tiny_data, saved_dir, n_heads=2)
    per_head = {"PARec": n * n, "FPARec": 2 * k * n}.get(name, 0)
    assert attention_params(multi) == formula(d, n, k) + per_head  # positional R is per head


def test_per_head_refinement_has_one_set_of_matrices_per_head(tiny_data, saved_dir):
    """The default (refine_per_head: True, chosen on validation): 2 n^2 per layer and head."""
    model, _ = eval_model("AWRSR-SASRec", {"refine_mode": "simp"}, tiny_data, saved_dir, n_heads=2)
    d, n = model.hidden_size, model.max_seq_length
    assert attention_params(model) == 3 * d * d + 2 * 2 * n * n


def test_refine_mode_none_is_exactly_the_backbone(tiny_data, saved_dir):
    backbone, _ = eval_model("SASRecAttn", {}, tiny_data, saved_dir, pad_side="left")
    plain, _ = eval_model("AWRSR-SASRec", {"refine_mode": "none"}, tiny_data, saved_dir, pad_side="left")
    a, b = backbone.state_dict(), plain.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    seq, lens = make_batch(backbone.n_items, [N, 3])
    with torch.no_grad():
        assert torch.equal(backbone.encode(seq, lens), plain.encode(seq, lens))


@pytest.mark.parametrize("name", ["SASRecAttn", "FPARec", "AWRSR-SASRec"])
def test_glorot_init_draws_every_weight_matrix_within_its_glorot_bound(name, tiny_data, saved_dir):
    """weight_init: glorot is Glorot-uniform on every Linear and Embedding (item padding row 0);
    the default stays RecBole's N(0, initializer_range)."""
    glorot, _ = eval_model(name, {"weight_init": "glorot"}, tiny_data, saved_dir)
    normal, _ = eval_model(name, {}, tiny_data, saved_dir)
    assert torch.equal(glorot.item_embedding.weight[0], torch.zeros(glorot.hidden_size))
    modules = [m for m in glorot.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Embedding))]
    assert len(modules) >= 4
    for module in modules:
        fan_out, fan_in = module.weight.shape
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        assert module.weight.abs().max() <= bound
        assert module.weight.abs().max() > 0.5 * bound  # uniform over the whole range, not N(0, 0.02)
    item = normal.item_embedding.weight.detach()
    assert abs(item.std().item() - normal.initializer_range) < 0.005  # the default is untouched


@pytest.mark.parametrize("pre_norm", [False, True])
def test_embedding_scale_multiplies_only_the_input_item_embeddings(pre_norm, tiny_data, saved_dir):
    """Same weights: the scaled model sees sqrt(d) * E[item] + P at the input and scores with E."""
    plain, _ = eval_model("SASRecAttn", {"pre_norm": pre_norm}, tiny_data, saved_dir)
    scaled, _ = eval_model("SASRecAttn", {"pre_norm": pre_norm, "embedding_scale": True}, tiny_data, saved_dir)
    scaled.load_state_dict(plain.state_dict())
    seq, lens = make_batch(plain.n_items, [N, 3])
    positions = torch.arange(N)
    with torch.no_grad():
        expected = scaled.item_embedding(seq) * math.sqrt(scaled.hidden_size) + scaled.position_embedding(positions)
        if not pre_norm:
            expected = scaled.LayerNorm(expected)
        assert torch.allclose(scaled.embed(seq, positions), expected, atol=1e-6)
        assert not torch.allclose(scaled.encode(seq, lens), plain.encode(seq, lens), atol=1e-3)
        hidden = scaled.forward(seq, lens)
        scores = scaled.full_sort_predict({scaled.ITEM_SEQ: seq, scaled.ITEM_SEQ_LEN: lens})
        assert torch.allclose(scores, hidden @ scaled.item_embedding.weight.t(), atol=1e-5)


@pytest.mark.parametrize("name", ["SASRecAttn", "FPARec", "TokenMixRec"])
def test_pre_norm_keeps_an_unnormalised_residual_stream(name, tiny_data, saved_dir):
    """Same weights, two layouts: with every sublayer update zeroed, the pre-LN stack passes its
    input through unchanged, while the post-LN stack normalises it at every sublayer."""
    post, _ = eval_model(name, {}, tiny_data, saved_dir)
    pre, _ = eval_model(name, {"pre_norm": True}, tiny_data, saved_dir)
    pre.load_state_dict(post.state_dict())  # the layouts share every parameter
    seq, lens = make_batch(pre.n_items, [N, 3])
    with torch.no_grad():
        assert not torch.allclose(pre.encode(seq, lens), post.encode(seq, lens), atol=1e-3)
        for model in (pre, post):
            for layer in model.trm_encoder.layer:
                output = getattr(layer.multi_head_attention, "dense", None)
                for linear in (output, layer.feed_forward.dense_2):
                    if linear is not None:
                        linear.weight.zero_()
                        linear.bias.zero_()
            if name == "TokenMixRec":
                for layer in model.trm_encoder.layer:
                    layer.multi_head_attention.W2.zero_()
        x = 3.0 * torch.randn(2, N, pre.hidden_size) + 1.0
        mask = torch.ones(2, 1, N, N, dtype=torch.bool).tril()
        positions = torch.arange(N)
        assert torch.equal(pre.trm_encoder(x, mask, positions), x)
        normalised = post.trm_encoder(x, mask, positions)
        assert torch.allclose(normalised.mean(-1), torch.zeros(2, N), atol=1e-4)
        assert torch.allclose(normalised.std(-1, unbiased=False), torch.ones(2, N), atol=1e-3)


def test_official_block_is_the_tensorflow_sasrec_block(tiny_data, saved_dir):
    """One block computed by hand as kang205/SASRec's model.py and modules.py write it: queries
    normalised, keys and values from the un-normalised stream, the attention output added to the
    normalised queries with no output projection; the feed-forward output added to its normalised
    input. The stack ends with one LayerNorm and takes no LayerNorm on the embeddings."""
    official, _ = eval_model("SASRecAttn", {"official_block": True}, tiny_data, saved_dir)
    post, _ = eval_model("SASRecAttn", {}, tiny_data, saved_dir)
    d, heads = official.hidden_size, official.n_heads
    assert sum(p.numel() for p in post.parameters()) - sum(p.numel() for p in official.parameters()) == \
        official.n_layers * (d * d + d)  # no output projection per layer
    layer = official.trm_encoder.layer[0]
    attn, ffn = layer.multi_head_attention, layer.feed_forward
    g = torch.Generator().manual_seed(3)
    x = 3.0 * torch.randn(2, N, d, generator=g) + 1.0
    mask = torch.ones(2, 1, N, N, dtype=torch.bool).tril()
    with torch.no_grad():
        q = attn.LayerNorm(x)
        per_head = lambda t: t.view(2, N, heads, d // heads).transpose(1, 2)  # noqa: E731
        scores = per_head(attn.scorer.query(q)) @ per_head(attn.scorer.key(x)).transpose(-1, -2)
        weights = torch.softmax((scores / math.sqrt(d // heads)).masked_fill(~mask, -1e9), dim=-1)
        context = (weights @ per_head(attn.value(x))).transpose(1, 2).reshape(2, N, d)
        h = ffn.LayerNorm(q + context)
        expected = h + ffn.dense_2(ffn.intermediate_act_fn(ffn.dense_1(h)))
        assert torch.allclose(layer(x, mask, torch.arange(N)), expected, atol=1e-5)
        seq, lens = make_batch(official.n_items, [N, 3])
        positions = torch.arange(N)
        emb = official.item_embedding(seq) + official.position_embedding(positions)
        assert torch.allclose(official.embed(seq, positions), emb, atol=1e-6)


def test_single_ffn_is_the_fparec_code_stack(tiny_data, saved_dir):
    """FPARec's model.py: each block's attention sublayer in turn (queries normalised, added to the
    normalised queries), then one feed-forward network on the normalised stream, added to it."""
    model, _ = eval_model("FPARec", {"official_block": True, "single_ffn": True, "n_layers": 3},
                          tiny_data, saved_dir)
    blocks = model.trm_encoder.layer
    assert [block.feed_forward is None for block in blocks] == [True, True, False]
    per_block, _ = eval_model("FPARec", {"official_block": True, "n_layers": 3}, tiny_data, saved_dir)
    ffn = blocks[-1].feed_forward
    assert sum(p.numel() for p in per_block.parameters()) - sum(p.numel() for p in model.parameters()) == \
        2 * sum(p.numel() for p in ffn.parameters())
    g = torch.Generator().manual_seed(5)
    x = 3.0 * torch.randn(2, N, model.hidden_size, generator=g) + 1.0
    mask = torch.ones(2, 1, N, N, dtype=torch.bool).tril()
    positions = torch.arange(N)
    with torch.no_grad():
        hidden = x
        for block in blocks:
            attn = block.multi_head_attention
            query = attn.LayerNorm(hidden)
            hidden = query + attn.mix(query, mask, positions, keys=hidden)
        h = ffn.LayerNorm(hidden)
        expected = h + ffn.dense_2(ffn.intermediate_act_fn(ffn.dense_1(h)))
        assert torch.allclose(model.trm_encoder(x, mask, positions), expected, atol=1e-5)


@pytest.mark.parametrize("name,overrides", VARIANTS, ids=IDS)
def test_loss_decreases_on_a_fixed_batch(name, overrides, tiny_data, saved_dir):
    model, train = eval_model(name, overrides, tiny_data, saved_dir)
    assert_loss_decreases(model, next(iter(train)), steps=25)


@pytest.mark.parametrize("loss_type", ["CE", "BPR", "BCE"])
def test_every_loss_trains_in_both_modes(loss_type, tiny_data, saved_dir):
    for mode in ("seq2seq", "augment"):
        model, train = eval_model("FPARec", {}, tiny_data, saved_dir, loss_type=loss_type, train_mode=mode)
        batch = next(iter(train))
        assert ("loss_start" in batch) == (mode == "seq2seq")
        # augment rows carry RecBole's sampled negative for the sampled losses, seq2seq draws its own
        assert (model.NEG_ITEM_ID in batch) == (mode == "augment" and loss_type != "CE")
        assert_loss_decreases(model, batch, steps=15, same_draws=True)


def test_bce_is_sasrecs_objective_on_the_models_scores(tiny_data, saved_dir):
    from recbole_attn.model.base import one_negative_bce

    model, train = eval_model("SASRecAttn", {}, tiny_data, saved_dir, loss_type="BCE", train_mode="augment")
    batch = next(iter(train))
    model.eval()
    with torch.no_grad():
        out = model.forward(batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN])
        pos = (out * model.item_embedding(batch[model.POS_ITEM_ID])).sum(-1)
        neg = (out * model.item_embedding(batch[model.NEG_ITEM_ID])).sum(-1)
        expected = -(torch.log(torch.sigmoid(pos)) + torch.log(1 - torch.sigmoid(neg))).mean()
        assert torch.allclose(model.calculate_loss(batch), expected, atol=1e-6)
    # a large wrong margin: log(sigmoid) of the naive form is log(0), the stable form gives ~400
    extreme = one_negative_bce(torch.tensor([-200.0]), torch.tensor([200.0]))
    assert torch.isfinite(extreme) and abs(extreme.item() - 400.0) < 1e-3


@pytest.mark.parametrize("name,overrides", VARIANTS[::3], ids=IDS[::3])
def test_save_load_gives_identical_full_sort_scores(name, overrides, tiny_data, saved_dir, tmp_path):
    assert_save_load_round_trip(name, overrides, tiny_data, str(tmp_path))


@pytest.mark.parametrize("name", ["PARec", "LinearAttnRec", "TokenMixRec", "AWRSR-SASRec", "SASRecAttn"])
def test_each_model_trains_one_epoch_through_the_cli(name, tmp_path):
    proc = run_cli(f"--model={name}", "--dataset=ml-100k", "--epochs=1", "--MAX_ITEM_LIST_LENGTH=5",
                   "--hidden_size=16", "--inner_size=32", "--n_layers=1", "--n_heads=1", "--use_gpu=False",
                   "--train_batch_size=256", f"--checkpoint_dir={tmp_path}", cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "test result" in out and "Traceback" not in out


@pytest.mark.parametrize("name", ["FPARec", "STOSA"])
def test_scoring_in_chunks_equals_one_pass(name, tiny_data, saved_dir, monkeypatch):
    """Large evaluation batches are scored in chunks of bounded attention size, longest rows
    first, each chunk trimmed to its own longest row; same scores, in the batch's row order."""
    from recbole_attn.model import sequence

    model, _ = eval_model(name, {}, tiny_data, saved_dir)
    seq, lens = make_batch(model.n_items, [N, 5, 1, 3, 7, 2, 8])
    batch = {model.ITEM_SEQ: seq, model.ITEM_SEQ_LEN: lens}
    budget = 2 * model.n_heads * N * N  # 2 rows of full width a chunk
    with torch.no_grad():
        whole = model.full_sort_predict(batch)
        monkeypatch.setattr(sequence, "SCORE_CHUNK_ELEMENTS", budget)
        widths = []
        original = model.forward
        monkeypatch.setattr(model, "forward", lambda s, l: widths.append((len(l), int(l.max()))) or original(s, l))
        chunked = model.full_sort_predict(batch)
        longest_first = list(widths)
        widths.clear()
        in_order = sequence.forward_in_chunks(model.forward, seq, lens, model.n_heads, longest_first=False)
    assert torch.allclose(whole, chunked, atol=1e-5)
    assert all(rows * model.n_heads * width ** 2 <= budget for rows, width in longest_first)
    assert sum(rows for rows, _ in longest_first) == len(lens)
    assert len(widths) == 4 and len(longest_first) < 4  # short rows share a narrower chunk
    one_pass = original(seq, lens)
    for got, want in zip(in_order if isinstance(in_order, tuple) else (in_order,),
                         one_pass if isinstance(one_pass, tuple) else (one_pass,)):
        assert torch.allclose(got, want, atol=1e-6)
