"""``official_masks``: the masks of the official TensorFlow SASRec/FPARec code, through which
padding slots carry future items from the second block on (README "Block layout")."""

import pytest
import torch

from recbole_attn.errors import ConfigError
from tests.conftest import N_TINY as N
from tests.conftest import assert_loss_decreases, build, make_batch, run_cli

# FPARec's code: its block, one feed-forward network after the loop, left padding, its masks
OFFICIAL_STACK = {"official_block": True, "single_ffn": True, "official_masks": True, "pad_side": "left"}


def official_model(name, tiny_data, saved_dir, trained_norms=True, **overrides):
    _, model, train, _, _ = build(name, tiny_data, saved_dir, **dict(OFFICIAL_STACK, **overrides))
    model.eval()
    if trained_norms:  # LayerNorm biases off zero, as training leaves them (they start at zero)
        g = torch.Generator().manual_seed(7)
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.LayerNorm):
                    module.bias.copy_(0.5 * torch.randn(module.bias.shape, generator=g))
    return model, train


def tensorflow_attention(attn, queries, keys, positions):
    """``multihead_attention`` + ``apply_attention`` of FPARec's ``modules.py`` (one head, no
    output projection), written out: masked scores replaced by -2^32+1, then softmax, then query
    rows of zeros zeroed; the output added to the queries."""
    scores = attn.scorer(queries.unsqueeze(0), positions, keys=keys.unsqueeze(0))[0, 0] \
        if hasattr(attn.scorer, "query") else attn.scorer.positional_matrix(positions)[0]
    width = len(positions)
    key_rows = keys.abs().sum(-1) != 0
    hidden_keys = ~key_rows.unsqueeze(0).expand(width, width) | ~torch.ones(width, width).tril().bool()
    weights = torch.softmax(scores.masked_fill(hidden_keys, -2.0 ** 32 + 1), dim=-1)
    weights = weights * (queries.abs().sum(-1) != 0).float().unsqueeze(-1)
    return queries + weights @ attn.value(keys)


@pytest.mark.parametrize("name", ["FPARec", "SASRecAttn"])
def test_official_masks_are_the_tensorflow_code_masks(name, tiny_data, saved_dir):
    """The stack on a left-padded user equals the TensorFlow code computed by hand, padding rows
    included (they are what the item rows read from the second block on)."""
    model, _ = official_model(name, tiny_data, saved_dir, n_heads=1)
    seq, lens = make_batch(model.n_items, [3])
    positions = torch.arange(N)
    left = torch.zeros_like(seq)
    left[0, N - 3:] = seq[0, :3]
    with torch.no_grad():
        x = model.embed(left, positions)[0]
        assert torch.equal(x[:N - 3], torch.zeros(N - 3, model.hidden_size))  # padding slots are zeros
        hidden = x
        for block in model.trm_encoder.layer:
            attn = block.multi_head_attention
            hidden = tensorflow_attention(attn, attn.LayerNorm(hidden), hidden, positions)
        ffn = model.trm_encoder.layer[-1].feed_forward
        h = ffn.LayerNorm(hidden)
        expected = model.LayerNorm(h + ffn.dense_2(ffn.intermediate_act_fn(ffn.dense_1(h))))
        ours = model.LayerNorm(model.trm_encoder(x.unsqueeze(0), None, positions))[0]
        assert torch.allclose(ours, expected, atol=1e-5)
        # and the model's own output at the user's items (right-padded back)
        assert torch.allclose(model.encode(seq, lens)[0, :3], expected[N - 3:], atol=1e-5)


def test_padding_carries_future_items_from_the_second_block_on(tiny_data, saved_dir):
    """The leak the masks reproduce: an item changed after position t changes the output at t,
    for a user with padding and two blocks once the LayerNorm biases are off zero; not with one
    block, not with the biases at their initial zeros, not for a user with no padding, and never
    with the exact masks."""
    seq, lens = make_batch(40, [4, N])

    def earlier_output_moves(model):
        changed = seq.clone()
        changed[:, 3] = (seq[:, 3] % (model.n_items - 1)) + 1  # another item at position 3
        with torch.no_grad():
            before, after = model.encode(seq, lens), model.encode(changed, lens)
        return [not torch.allclose(before[row, :3], after[row, :3], atol=1e-6) for row in range(2)]

    two_blocks, _ = official_model("FPARec", tiny_data, saved_dir, n_layers=2)
    assert earlier_output_moves(two_blocks) == [True, False]  # the short user leaks, the full one does not
    one_block, _ = official_model("FPARec", tiny_data, saved_dir, n_layers=1)
    assert earlier_output_moves(one_block) == [False, False]
    untrained, _ = official_model("FPARec", tiny_data, saved_dir, trained_norms=False, n_layers=2)
    assert earlier_output_moves(untrained) == [False, False]
    exact, _ = official_model("FPARec", tiny_data, saved_dir, n_layers=2, official_masks=False)
    assert earlier_output_moves(exact) == [False, False]


def test_outputs_do_not_depend_on_the_batch_width(tiny_data, saved_dir):
    """The average a padding slot takes is over all n slots, so every batch is computed at the
    full width n: a user alone in a narrow batch gets the outputs it gets in a wide one."""
    model, _ = official_model("FPARec", tiny_data, saved_dir)
    seq, lens = make_batch(model.n_items, [N, 4, 1])
    with torch.no_grad():
        full = model.forward(seq, lens)
        for row, length in enumerate(lens.tolist()):
            alone = model.forward(seq[row:row + 1, :length], lens[row:row + 1])
            assert torch.allclose(alone[0], full[row], atol=1e-5)
        assert model.encode(seq, lens).shape == (3, N, model.hidden_size)
        assert model.encode(seq[1:], lens[1:]).shape == (2, 4, model.hidden_size)
        assert torch.isfinite(model.full_sort_predict({model.ITEM_SEQ: seq, model.ITEM_SEQ_LEN: lens})).all()


@pytest.mark.parametrize("name", ["FPARec", "PARec", "SASRecAttn"])
def test_loss_decreases_with_official_masks(name, tiny_data, saved_dir):
    model, train = official_model(name, tiny_data, saved_dir, trained_norms=False)
    assert_loss_decreases(model.train(), next(iter(train)), steps=25)


def test_official_masks_need_the_official_block_and_left_padding(tiny_data, saved_dir):
    with pytest.raises(ConfigError, match="official_masks.*official_block: True"):
        build("FPARec", tiny_data, saved_dir, official_masks=True)
    with pytest.raises(ConfigError, match="official_masks.*pad_side: left.*pad_side='right'"):
        build("SASRecAttn", tiny_data, saved_dir, official_masks=True, official_block=True)
    with pytest.raises(ConfigError, match="official_masks.*model \\[LinearAttnRec\\]"):
        build("LinearAttnRec", tiny_data, saved_dir, **OFFICIAL_STACK)
    with pytest.raises(ConfigError, match="official_masks.*True \\| False"):
        build("FPARec", tiny_data, saved_dir, **dict(OFFICIAL_STACK, official_masks="yes"))


def test_fparec_code_stack_trains_through_the_cli(tmp_path):
    proc = run_cli("--model=FPARec", "--dataset=ml-100k", "--epochs=1", "--MAX_ITEM_LIST_LENGTH=5",
                   "--hidden_size=16", "--inner_size=32", "--fpa_rank=3", "--use_gpu=False",
                   "--train_batch_size=256", *(f"--{key}={value}" for key, value in OFFICIAL_STACK.items()),
                   f"--checkpoint_dir={tmp_path}", cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "official_masks = True" in out and "test result" in out and "Traceback" not in out
