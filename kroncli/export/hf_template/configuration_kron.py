"""Configuration of a Kronecker-factored BERT sequence classifier exported by `kron export --format hf`.

Self-contained: needs only transformers (no kroncli). `kron_layers` maps each factored module name to its
shape: {"kind": "linear", "m1", "n1", "m2", "n2", "rank", "bias"} or {"kind": "embedding", "f", "rank"}.
"""

from transformers import BertConfig


class KronBertConfig(BertConfig):
    model_type = "kron_bert"

    def __init__(self, kron_layers=None, **kwargs):
        super().__init__(**kwargs)
        self.kron_layers = dict(kron_layers or {})
