"""`kron export` of a decoder: the workspace's student (a language model, no task) as a transformers folder (Kronecker
remote code or dense) or an ONNX forward pass (input_ids, attention_mask -> logits, no KV cache).

    kron export -w runs/g8 --format hf --out deploy/g8          # AutoModelForCausalLM(..., trust_remote_code=True)
    kron export -w runs/g8 --format hf --dense --out deploy/g8d # an ordinary GPT2LMHeadModel / LlamaForCausalLM
    kron export -w runs/g8 --format onnx --out deploy/g8-onnx   # logits checked against PyTorch's

The hf export is checked before it is kept: the folder, loaded back with transformers, must give kron's logits and
the same greedy generation token for token.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import KronError

# Prompts of different lengths for the parity checks (tokenised with the model's own tokenizer).
PARITY_TEXTS = ["The cat sat on the mat.", "Stocks fell 3% on Monday after the report was published.",
                "Plain words here."]
GENERATE_TOKENS = 12
LOGITS_TOL = 1e-4


def _encode(tokenizer, texts: list[str]) -> dict:
    enc = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def _greedy(model, tokenizer, text: str) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=GENERATE_TOKENS, pad_token_id=tokenizer.pad_token_id or 0)
    return out[0, ids.shape[1]:].tolist()


def check_hf(folder: Path, model, tokenizer, remote: bool) -> dict:
    """The written folder loaded by AutoModelForCausalLM against kron's model: logits and greedy generations."""
    import transformers

    shipped = transformers.AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=remote).eval()
    feed = _encode(tokenizer, PARITY_TEXTS)
    with torch.no_grad():
        diff = float((shipped(**feed).logits - model(**feed).logits).abs().max())
    same = all(_greedy(shipped, tokenizer, t) == _greedy(model, tokenizer, t) for t in PARITY_TEXTS)
    if diff > LOGITS_TOL or not same:
        raise KronError(f"the exported folder, loaded by AutoModelForCausalLM, differs from kron's model (max |logit "
                        f"diff| {diff:.3g}, greedy generations {'equal' if same else 'differ'}); nothing was written")
    return {"max_abs_diff": diff, "tolerance": LOGITS_TOL, "generation_equal": same, "prompts": len(PARITY_TEXTS)}


def onnx_parity(path: Path, model, tokenizer) -> dict:
    """Max |logits onnxruntime - logits PyTorch| on PARITY_TEXTS (one padded batch, then one text alone)."""
    from .onnx_export import PARITY_TOL, session

    sess = session(path)
    diffs = []
    for texts in (PARITY_TEXTS, PARITY_TEXTS[1:2]):
        feed = _encode(tokenizer, texts)
        with torch.no_grad():
            ref = model(**feed, use_cache=False).logits.float().numpy()
        got = sess.run(["logits"], {k: v.numpy() for k, v in feed.items()})[0]
        diffs.append(float(abs(got - ref).max()))
    return {"max_abs_diff": max(diffs), "tolerance": PARITY_TOL, "texts": len(PARITY_TEXTS)}


def write_decoder(opts, model, tokenizer, tmp: Path, meta: dict, log) -> dict:
    """Fill `tmp` with the decoder export `opts` asks for; returns the summary fields."""
    from .hf_export import densify, write_dense, write_hf

    result: dict = {}
    if opts.format == "hf":
        if opts.dense:
            result.update(write_dense(model, tokenizer, tmp))
        else:
            result.update(write_hf(model, tokenizer, tmp))
        log("checking the folder against kron's model (logits, greedy generation)")
        result["parity"] = check_hf(tmp, model, tokenizer, remote=not opts.dense)
        return result
    from .onnx_export import PARITY_TOL, export_onnx

    if opts.dense:
        model = densify(model)
    tokenizer.save_pretrained(tmp)
    path = tmp / "model.onnx"
    log("exporting the decoder's forward pass to ONNX")
    meta["input_names"] = export_onnx(model, tokenizer, path, is_pair=False, max_seq_len=meta["max_seq_len"],
                                      causal=True)
    meta["model_file"] = path.name
    result["parity"] = check = onnx_parity(path, model, tokenizer)
    if check["max_abs_diff"] > PARITY_TOL:
        raise KronError(f"onnxruntime's logits differ from PyTorch's by {check['max_abs_diff']:.3g} (> {PARITY_TOL}); "
                        "the export was not written")
    result["bytes"] = {"fp32_bytes": path.stat().st_size}
    return result
