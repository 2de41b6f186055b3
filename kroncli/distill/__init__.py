"""Knowledge-distillation building blocks: one-pass capture of intermediate tensors, and the losses.

    from kroncli.distill import Capture, DistillLoss
    loss = DistillLoss({"embedding_mse": 1, "attention_mse": 1, "hidden_mse": 1, "logit_kd": 1})
    with torch.inference_mode():
        t = Capture(teacher, attention=loss.attention)(**inputs)
    total, terms = loss(Capture(student, attention=loss.attention)(**inputs), t, batch)
"""

from .capture import IMPLEMENTATION, Capture, Captured, attention_modules, capture_attention_forward
from .losses import (
    LOSSES,
    DistillLoss,
    LossTerm,
    attention_kl,
    attention_mse,
    combine,
    embedding_mse,
    embedding_nmse,
    hidden_mse,
    hidden_nmse,
    layer_map,
    logit_kd,
    logit_mse,
    mlm,
    register_loss,
    supervised,
)

__all__ = [
    "IMPLEMENTATION", "Capture", "Captured", "attention_modules", "capture_attention_forward",
    "LOSSES", "DistillLoss", "LossTerm", "attention_kl", "attention_mse", "combine", "embedding_mse",
    "embedding_nmse", "hidden_mse", "hidden_nmse", "layer_map",
    "logit_kd", "logit_mse", "mlm", "register_loss", "supervised",
]
