"""FPARec (Luo et al., "Learning Positional Attention for Sequential Recommendation", eq. 7).

PARec with each positional matrix factorised as ``R = R1 R2^T``, ``R1, R2`` of shape ``n x k``
(``fpa_rank``): ``d^2 + 2kn`` attention parameters per layer and head instead of ``d^2 + n^2``.
"""

from recbole_attn.model.parec import PARec


class FPARec(PARec):
    def __init__(self, config, dataset):
        self.fpa_rank = config["fpa_rank"]
        super().__init__(config, dataset)

    def positional_rank(self):
        return self.fpa_rank
