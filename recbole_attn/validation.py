"""Validation of the plugin's configuration keys, before any data is loaded.

Every check names the key, the value and what is allowed, so the CLI can print it as one line.
"""

from recbole_attn.errors import ConfigError

CHOICES = {
    "train_mode": ("seq2seq", "augment"),
    "loss_type": ("CE", "BPR", "BCE"),
    "pad_side": ("right", "left"),
    "refine_mode": ("none", "simp", "value", "add", "stoc"),
    "refine_input": ("scores", "probs"),
    "refine_scale": ("sqrt_d", "sqrt_n", "none"),
    "refine_init": ("normal", "identity"),
    "attn_pattern": ("learned", "average", "linear", "exponential"),
    "weight_init": ("normal", "glorot"),
    "seq2seq_windows": ("all", "last"),
}
POSITIVE_INTS = (
    "hidden_size", "n_layers", "n_heads", "inner_size", "MAX_ITEM_LIST_LENGTH",
    "train_batch_size", "eval_batch_size", "epochs", "fpa_rank",
)
PROBABILITIES = ("hidden_dropout_prob", "attn_dropout_prob")


def _fail(key, value, allowed):
    raise ConfigError(f"invalid value for [{key}]: {value!r}; allowed: {allowed}")


# M_stoc turns attention rows into Gaussians: defined for the stochastic (STOSA) family only
REFINE_MODES_BY_MODEL = {"AWRSR-SASRec": ("none", "simp", "value", "add")}
# the models built on recbole_attn.model.base.AttentionSequentialRecommender
SASREC_FAMILY = ("SASRecAttn", "PARec", "FPARec", "LinearAttnRec", "TokenMixRec", "AWRSR-SASRec")
# keys that change only these models: setting them for another model would be silently ignored
READ_BY = {
    "refine_mode": ("AWRSR-SASRec", "AWRSR-STOSA"),
    "attn_pattern": ("PARec", "FPARec"),
    # the STOSA family has its own layers and initialisation
    "pre_norm": SASREC_FAMILY,
    # the official SASRec block has keys and values; token mixing has neither
    "official_block": tuple(m for m in SASREC_FAMILY if m != "TokenMixRec"),
    "single_ffn": SASREC_FAMILY,
    # the official code's masks, for the attention types of its code (softmax over scores)
    "official_masks": ("SASRecAttn", "PARec", "FPARec"),
    "weight_init": SASREC_FAMILY,
    "embedding_scale": SASREC_FAMILY,
}
INERT = {"refine_mode": "none", "attn_pattern": "learned", "pre_norm": False, "official_block": False,
         "single_ffn": False, "official_masks": False, "weight_init": "normal", "embedding_scale": False}
BOOLEANS = ("pre_norm", "official_block", "single_ffn", "official_masks", "embedding_scale")


def validate_model_config(cfg, explicit=()):
    """Check the keys that recbole_attn models read; raise :class:`ConfigError` on the first bad one.

    ``explicit`` are the keys the user set (files, dict, command line), as opposed to defaults."""
    for key, models in READ_BY.items():
        if key in explicit and cfg.get("model") not in models and cfg.get(key) not in (None, INERT[key]):
            raise ConfigError(
                f"[{key}] is only read by {' and '.join(models)}; model [{cfg.get('model')}] would ignore "
                f"{key}={cfg.get(key)!r}"
            )
    if cfg.get("pre_norm") is True and cfg.get("official_block") is True:
        raise ConfigError("[pre_norm] and [official_block] are two different block layouts; set one of them")
    if cfg.get("official_masks") is True and (cfg.get("official_block") is not True or cfg.get("pad_side") != "left"):
        raise ConfigError(
            "[official_masks] are the masks of the official code's block and layout: they need official_block: True "
            f"and pad_side: left (got official_block={cfg.get('official_block')!r}, pad_side={cfg.get('pad_side')!r})"
        )
    for key, choices in CHOICES.items():
        if key == "refine_mode":
            choices = REFINE_MODES_BY_MODEL.get(cfg.get("model"), choices)
        value = cfg.get(key)
        if value is not None and value not in choices:
            _fail(key, value, " | ".join(choices))
    for key in BOOLEANS:
        value = cfg.get(key)
        if value is not None and not isinstance(value, bool):
            _fail(key, value, "True | False")
    for key in POSITIVE_INTS:
        value = cfg.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            _fail(key, value, "a positive integer")
    for key in PROBABILITIES:
        value = cfg.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not 0.0 <= value < 1.0):
            _fail(key, value, "a number in [0, 1)")
    for key, minimum, allowed in (("learning_rate", 0.0, "a positive number"),
                                  ("weight_decay", None, "a number >= 0")):
        value = cfg.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (value <= minimum if minimum is not None else value < 0):
            _fail(key, value, allowed)
    hidden, heads = cfg.get("hidden_size"), cfg.get("n_heads")
    if hidden and heads and hidden % heads != 0:
        raise ConfigError(
            f"invalid value for [n_heads]: {heads}; it must divide hidden_size ({hidden})"
        )
    rank, n = cfg.get("fpa_rank"), cfg.get("MAX_ITEM_LIST_LENGTH")
    if rank is not None and n is not None and rank > n:
        raise ConfigError(
            f"invalid value for [fpa_rank]: {rank}; it must be at most MAX_ITEM_LIST_LENGTH ({n})"
        )


def validate_optimizer_config(cfg):
    """``adam_betas`` (read by the trainer of every model): two numbers in [0, 1), for Adam or AdamW."""
    betas = cfg.get("adam_betas")
    if betas is None:
        return
    if not isinstance(betas, (list, tuple)) or len(betas) != 2 or any(
            isinstance(b, bool) or not isinstance(b, (int, float)) or not 0.0 <= b < 1.0 for b in betas):
        _fail("adam_betas", betas, "two numbers in [0, 1), e.g. [0.9, 0.98]")
    learner = str(cfg.get("learner") or "adam").lower()
    if learner not in ("adam", "adamw"):
        raise ConfigError(f"[adam_betas] is only read by the adam and adamw learners; learner [{learner}] "
                          f"would ignore adam_betas={list(betas)!r}")
