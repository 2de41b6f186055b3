"""A model whose matrices are sums of Kronecker products, as written by `kron export`.

The model family's own transformers class (BertForSequenceClassification, GPT2LMHeadModel, LlamaForCausalLM, ...:
BASE_MODEL, written by kron export) with the modules named in `config.kron_layers` swapped for Kronecker ones; with
`config.kron_tied_head` the LM head reads the Kronecker word embedding (no dense V x d table is built).
Self-contained (torch + transformers only): load it with
    AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)   # a task model
    AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)                 # a decoder
Row-major convention: kron(A, B)[i1*m2 + i2, j1*n2 + j2] = A[i1, j1] * B[i2, j2], so for x with n1*n2
features, X = x.view(n1, n2) and (A (x) B) x = vec(A @ X @ B^T). The dense A (x) B is never built in forward.
"""

import torch
import torch.nn.functional as F
from torch import nn
import transformers

from .configuration_kron import KronConfig

BASE_MODEL = "BertForSequenceClassification"  # kron export writes the family's task class here


def choose_order(m1, n1, m2, n2):
    """Contract the side with fewer multiply-adds first; batched products only for wide matrices."""
    a_side = n2 * n1 * m1 + n2 * m1 * m2
    b_side = n1 * n2 * m2 + n1 * m2 * m1
    if a_side < b_side:
        return "a_bmm" if n2 >= 16 else "a_flat"
    return "b_bmm" if m2 >= 16 else "b_flat"


class KroneckerLinear(nn.Module):
    """y = sum_k (A_k (x) B_k) x + b, with A (rank, m1, n1) and B (rank, m2, n2)."""

    def __init__(self, m1, n1, m2, n2, rank=1, bias=True):
        super().__init__()
        self.m1, self.n1, self.m2, self.n2, self.rank = m1, n1, m2, n2, rank
        self.in_features, self.out_features = n1 * n2, m1 * m2
        self.a = nn.Parameter(torch.zeros(rank, m1, n1))
        self.b = nn.Parameter(torch.zeros(rank, m2, n2))
        self.bias = nn.Parameter(torch.zeros(m1 * m2)) if bias else None
        self.order = choose_order(m1, n1, m2, n2)

    def forward(self, x):
        lead = x.shape[:-1]
        r, m1, n1, m2, n2 = self.rank, self.m1, self.n1, self.m2, self.n2
        x3 = x.reshape(-1, n1, n2)
        tokens = x3.shape[0]
        if self.order.startswith("b"):
            z = (x3.reshape(-1, n2) @ self.b.reshape(r * m2, n2).t()).view(tokens, n1, r, m2)
            if self.order == "b_bmm":
                z = z.transpose(1, 2).reshape(tokens, r * n1, m2)
                y = self.a.transpose(0, 1).reshape(m1, r * n1) @ z
            else:
                z = z.permute(0, 3, 2, 1).reshape(tokens * m2, r * n1)
                y = (z @ self.a.permute(0, 2, 1).reshape(r * n1, m1)).view(tokens, m2, m1).transpose(1, 2)
        else:
            if self.order == "a_bmm":
                z = (self.a.reshape(r * m1, n1) @ x3).view(tokens, r, m1, n2)
            else:
                z = x3.transpose(1, 2).reshape(-1, n1) @ self.a.permute(2, 0, 1).reshape(n1, r * m1)
                z = z.view(tokens, n2, r, m1).permute(0, 2, 3, 1)
            z = z.permute(0, 2, 1, 3).reshape(tokens * m1, r * n2) if r > 1 or self.order == "a_flat" \
                else z.reshape(tokens * m1, n2)
            y = (z @ self.b.permute(0, 2, 1).reshape(r * n2, m2)).view(tokens, m1, m2)
        y = y.reshape(*lead, m1 * m2)
        return y + self.bias if self.bias is not None else y

    def dense_weight(self):
        return torch.einsum("kac,kbd->abcd", self.a, self.b).reshape(self.out_features, self.in_features)


class KroneckerEmbedding(nn.Module):
    """Row i = sum_k A[i, k] (x) B[k]: A a V x (rank*d/f) table, B (rank, f) shared by all tokens."""

    def __init__(self, num_embeddings, embedding_dim, f, rank=1, padding_idx=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.f, self.rank = num_embeddings, embedding_dim, f, rank
        self.padding_idx = padding_idx
        self.a = nn.Parameter(torch.zeros(num_embeddings, rank * (embedding_dim // f)))
        self.b = nn.Parameter(torch.zeros(rank, f))

    def dense_weight(self):
        a = self.a.view(self.num_embeddings, self.rank, self.embedding_dim // self.f)
        return torch.einsum("vkp,kq->vpq", a, self.b).reshape(self.num_embeddings, self.embedding_dim)

    @property
    def weight(self):
        return self.dense_weight()

    def forward(self, ids):
        rows = F.embedding(ids, self.a, padding_idx=self.padding_idx)
        rows = rows.view(*ids.shape, self.rank, self.embedding_dim // self.f)
        if self.rank == 1:
            out = rows.squeeze(-2).unsqueeze(-1) * self.b[0]
        else:
            out = torch.einsum("...kp,kq->...pq", rows, self.b)
        return out.reshape(*ids.shape, self.embedding_dim)


class KroneckerTiedDecoder(nn.Module):
    """logits = h E^T for E the KroneckerEmbedding: with H = h.view(d/f, f), logits_v = sum_k A[v, k] . (H B_k^T)."""

    def __init__(self, embedding):
        super().__init__()
        self.embedding = [embedding]  # a list keeps it out of this module's parameters (it is tied)

    def forward(self, hidden):
        emb = self.embedding[0]
        h = hidden.reshape(*hidden.shape[:-1], emb.embedding_dim // emb.f, emb.f)
        proj = torch.einsum("...pq,kq->...kp", h, emb.b).reshape(*hidden.shape[:-1], -1)
        return proj @ emb.a.t()


def _swap(model, name, new):
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, new)


class KronModel(getattr(transformers, BASE_MODEL)):
    config_class = KronConfig
    _tied_weights_keys = None  # a tied head reads the Kronecker factors itself (KroneckerTiedDecoder)

    def __init__(self, config):
        super().__init__(config)
        for name, spec in config.kron_layers.items():
            old = self.get_submodule(name)
            if spec["kind"] == "embedding":
                new = KroneckerEmbedding(old.num_embeddings, old.embedding_dim, spec["f"], spec["rank"],
                                         padding_idx=old.padding_idx)
            else:
                new = KroneckerLinear(spec["m1"], spec["n1"], spec["m2"], spec["n2"], spec["rank"],
                                      bias=spec.get("bias", True))
            _swap(self, name, new)
        if getattr(config, "kron_tied_head", False):
            self.set_output_embeddings(KroneckerTiedDecoder(self.get_input_embeddings()))

    def _init_weights(self, module):
        if isinstance(module, (KroneckerLinear, KroneckerEmbedding)):
            return  # the factors always come from the checkpoint
        super()._init_weights(module)


KronModel.__name__ = KronModel.__qualname__ = "Kron" + BASE_MODEL  # e.g. KronBertForSequenceClassification
globals()[KronModel.__name__] = KronModel
