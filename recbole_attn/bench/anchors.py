"""Paper values that ``python -m recbole_attn.bench quality`` puts beside our numbers.

Every value is copied from the papers' tables (texts in ``../shared/papers/``); metric keys are
RecBole's lower-case result keys. Leave-one-out leaves one test item per user, so RecBole's
``recall@K`` equals ``hit@K`` (the papers' HR@K and Rec@K).

* FPARec: Luo, Zhang, Xu, "Learning Positional Attention for Sequential Recommendation"
  (arXiv 2407.02793). Table 3 (main comparison), Table 4 (ablation with fixed attention
  patterns) and the two HR@10 values of §4.7 (maximum sequence length 200). Full ranking
  against all items, leave-one-out, median of 3 runs (§4.1-4.2).
* AWRSR: Liu, Liu, Liu, "Pay Attention to Attention for Sequential Recommendation"
  (RecSys '24). Table 2, ML-1M columns; one attention layer (§3.3); test values at the best
  validation NDCG@5, early stopping with patience 20 (§3.1).

Left out on purpose (see :data:`NOT_COMPARABLE`): AWRSR's Beauty columns, because the paper's
Beauty (Table 1: 52.0k users, 57.2k items, 0.4M interactions) is another preprocessing than
the Beauty file of this project (22,363 users, 12,101 items, 198,502 interactions); and the
datasets we do not have (FPARec's Sports, Toys, Yelp; AWRSR's Anime).
"""

FPAREC_PAPER = "FPARec (Luo et al., arXiv 2407.02793)"
AWRSR_PAPER = "AWRSR (Liu et al., RecSys '24)"

# table id -> (paper, caption, metric keys in the paper's column order)
TABLES = {
    "fparec-t3": (FPAREC_PAPER, "FPARec Table 3", ("hit@10", "ndcg@10")),
    "fparec-t4": (FPAREC_PAPER, "FPARec Table 4", ("hit@10", "ndcg@10")),
    "fparec-s4.7": (FPAREC_PAPER, "FPARec §4.7 (n=200)", ("hit@10",)),
    "awrsr-t2": (AWRSR_PAPER, "AWRSR Table 2", ("recall@1", "recall@5", "ndcg@5")),
}

# table id -> dataset -> row label -> metric -> value
ANCHORS = {
    "fparec-t3": {
        "ml-1m": {
            "SASRec": {"hit@10": 0.2346, "ndcg@10": 0.1186},
            "Linear Attention": {"hit@10": 0.2235, "ndcg@10": 0.1089},
            "Token Mixing": {"hit@10": 0.2296, "ndcg@10": 0.1149},
            "PARec": {"hit@10": 0.2255, "ndcg@10": 0.1130},
            "FPARec": {"hit@10": 0.2419, "ndcg@10": 0.1232},
        },
        "beauty": {
            "SASRec": {"hit@10": 0.0813, "ndcg@10": 0.0405},
            "Linear Attention": {"hit@10": 0.0785, "ndcg@10": 0.0379},
            "Token Mixing": {"hit@10": 0.0798, "ndcg@10": 0.0398},
            "PARec": {"hit@10": 0.0806, "ndcg@10": 0.0395},
            "FPARec": {"hit@10": 0.0821, "ndcg@10": 0.0402},
        },
    },
    "fparec-t4": {
        "ml-1m": {
            "FPARec": {"hit@10": 0.2419, "ndcg@10": 0.1232},
            "PARec": {"hit@10": 0.2255, "ndcg@10": 0.1130},
            "SASRec": {"hit@10": 0.2346, "ndcg@10": 0.1186},
            "+Average": {"hit@10": 0.2025, "ndcg@10": 0.0986},
            "+Linear Annealing": {"hit@10": 0.2056, "ndcg@10": 0.0997},
            "+Exponential Annealing": {"hit@10": 0.2386, "ndcg@10": 0.1283},
        },
    },
    # §4.7: "FPARec with an input sequence length capped at 200 yielded an HR@10 score of
    # 0.2351. In comparison, PARec, under the same conditions, scored 0.2243."
    "fparec-s4.7": {
        "ml-1m": {
            "FPARec (n=200)": {"hit@10": 0.2351},
            "PARec (n=200)": {"hit@10": 0.2243},
        },
    },
    "awrsr-t2": {
        "ml-1m": {
            "SASRec Original": {"recall@1": 0.0265, "recall@5": 0.0959, "ndcg@5": 0.0616},
            "SASRec M_simp": {"recall@1": 0.0291, "recall@5": 0.1004, "ndcg@5": 0.0649},
            "SASRec M_value": {"recall@1": 0.0267, "recall@5": 0.0976, "ndcg@5": 0.0642},
            "SASRec M_add": {"recall@1": 0.0289, "recall@5": 0.1013, "ndcg@5": 0.0654},
            "STOSA Original": {"recall@1": 0.0218, "recall@5": 0.0720, "ndcg@5": 0.0475},
            "STOSA M_simp": {"recall@1": 0.0221, "recall@5": 0.0756, "ndcg@5": 0.0489},
            "STOSA M_value": {"recall@1": 0.0246, "recall@5": 0.0789, "ndcg@5": 0.0516},
            "STOSA M_add": {"recall@1": 0.0223, "recall@5": 0.0750, "ndcg@5": 0.0481},
            "STOSA M_stoc": {"recall@1": 0.0225, "recall@5": 0.0733, "ndcg@5": 0.0478},
        },
    },
}

# table id -> dataset -> why the paper's values for that dataset are not used
NOT_COMPARABLE = {
    "awrsr-t2": {
        "beauty": (
            "AWRSR Table 2's Beauty columns are left out: the paper's Beauty (its Table 1: 52.0k users, "
            "57.2k items, 0.4M interactions) is not this project's Beauty.txt (22,363 users, 12,101 items, "
            "198,502 interactions), so the numbers are not comparable."
        ),
    },
}

# table id -> dataset -> users the paper's own code scores per evaluation, where that is a sample.
# The official FPARec code (util.py, exact_evaluate with sample_user_num=10000) scores a random
# 10,000 users, drawn anew for validation and for test, when a dataset has more; the paper does
# not say so. ML-1m (6,040 users) is scored whole; Beauty (22,363) is not.
EVAL_USER_SAMPLE = {
    "fparec-t3": {"beauty": 10000},
}

# table id -> (what the paper says, (row, base row) pairs it claims are ordered row > base), which
# the quality command tests like AWRSR's refinements (paired t-test over seeds).
CLAIMS = {
    # §4.3: FPARec tops Table 3 and "FPARec's performance surpasses that of PARec"
    "fparec-t3": ("FPARec above SASRec and above PARec (FPARec Table 3, §4.3)",
                  (("FPARec", "SASRec"), ("FPARec", "PARec"))),
    # §4.4: "FPARec consistently outperforms the fixed attention patterns in terms of HR@10" (on
    # ML-1m the paper's Exponential Annealing is above FPARec in NDCG@10)
    "fparec-t4": ("FPARec above each fixed pattern in HR@10 (FPARec Table 4, §4.4)",
                  (("FPARec", "+Average"), ("FPARec", "+Linear Annealing"), ("FPARec", "+Exponential Annealing"))),
    # §4.7: at n = 200, FPARec's HR@10 0.2351 against PARec's 0.2243
    "fparec-s4.7": ("FPARec above PARec at n = 200 (FPARec §4.7)", (("FPARec (n=200)", "PARec (n=200)"),)),
}

# the papers' names for RecBole's result keys
METRIC_NAMES = {
    "hit@10": "HR@10",
    "ndcg@10": "NDCG@10",
    "recall@1": "Recall@1",
    "recall@5": "Recall@5",
    "ndcg@5": "NDCG@5",
}


def anchor(table, dataset, row):
    """The paper's ``{metric: value}`` for one row, or ``None`` when the paper has none."""
    return ANCHORS.get(table, {}).get(dataset, {}).get(row)


def datasets_with_anchors():
    """Datasets that at least one paper table reports (sorted)."""
    return sorted({dataset for by_dataset in ANCHORS.values() for dataset in by_dataset})
