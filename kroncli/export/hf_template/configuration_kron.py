"""Configuration of a Kronecker-factored model (task classifier or decoder) exported by `kron export --format hf`.

Self-contained: needs only transformers (no kroncli). The configuration is the model family's own (BertConfig,
DistilBertConfig, ...: BASE_CONFIG, written by kron export) plus `kron_layers`, which maps each factored module
name to its shape: {"kind": "linear", "m1", "n1", "m2", "n2", "rank", "bias"} or {"kind": "embedding", "f", "rank"}.
"""

import transformers

BASE_CONFIG = "BertConfig"  # kron export writes the family's configuration class here
MODEL_TYPE = "kron_bert"  # and "kron_" + its model_type here


class KronConfig(getattr(transformers, BASE_CONFIG)):
    model_type = MODEL_TYPE

    def __init__(self, kron_layers=None, kron_tied_head=False, **kwargs):
        super().__init__(**kwargs)
        self.kron_layers = dict(kron_layers or {})
        self.kron_tied_head = bool(kron_tied_head)  # the LM head reads the Kronecker word embedding


KronConfig.__name__ = KronConfig.__qualname__ = "Kron" + BASE_CONFIG  # e.g. KronBertConfig
globals()[KronConfig.__name__] = KronConfig
