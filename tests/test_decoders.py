"""Decoder families (issue 29): GPT-2 and the Llama family (Llama, Mistral, Qwen2, Qwen3) on tiny random configs.

Kronecker layers against the dense weights they stand for (GPT-2's Conv1D in its in x out layout, grouped-query
k/v), the LM head tied to the Kronecker word embedding, causal stage 1, perplexity, export and bad input.
"""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from kroncli import families
from kroncli.cli import app

from conftest import one_line_error

runner = CliRunner()
DECODERS = ("gpt2", "llama", "qwen2")  # tiny configs: GPT-2 (tied, Conv1D), Llama (untied, GQA), Qwen2 (tied, GQA)


def tiny(model_type: str, vocab: int = 96):
    family = families.FAMILIES[model_type]
    config = family.random_config(f"{model_type}-tiny")
    config.vocab_size = vocab
    torch.manual_seed(0)
    return family.base_model_class().from_config(config).eval()


def invoke(*args) -> dict:
    res = runner.invoke(app, [*map(str, args), "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout.strip().splitlines()[-1])


def exact_kronecker(model, seed: int = 1):
    """Give every default target an exact Kronecker weight (in the module's own layout) and return the choices that
    reproduce it: the factored model must then compute what the dense one does."""
    from kroncli.kron.search import Choice
    from kroncli.surgery import find_targets

    g = torch.Generator().manual_seed(seed)
    choices = []
    for t in find_targets(model):
        m, n = t.shape
        module = model.get_submodule(t.name)
        if t.kind == "embedding":  # V x d = (V x d/f) (x) (1 x f)
            m1, n1 = m, n // 4
        else:
            m1, n1 = 2, 4
        a = torch.randn(m1, n1, generator=g)
        b = torch.randn(m // m1, n // n1, generator=g) / (n ** 0.5)
        weight = torch.kron(a, b)
        kind = families.module_kind(module)
        with torch.no_grad():
            module.weight.copy_(weight.t() if kind.weight == "in_out" else weight)
        choices.append(Choice(t.name, t.kind, t.layer_type, m, n, m1, n1, 1, 0, m * n, 0, 0.0))
    return choices


@pytest.mark.parametrize("model_type", DECODERS)
def test_kronecker_layers_compute_the_dense_weights_they_factor(model_type):
    """Conv1D (in x out) and Linear (out x in, k/v narrower under GQA) targets with exact Kronecker weights: the
    factored model's logits equal the dense model's, and every factor reproduces its module's matrix."""
    from kroncli.kron.layers import KroneckerLinear
    from kroncli.surgery import apply_choices

    model = tiny(model_type)
    choices = exact_kronecker(model)
    types = {c.layer_type for c in choices}
    assert types == set(families.FAMILIES[model_type].default_targets)
    dense = {c.name: families.module_kind(model.get_submodule(c.name)).matrix(model.get_submodule(c.name)).clone()
             for c in choices}
    ids = torch.tensor([[3, 17, 42, 5, 88, 9], [1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        want = model(input_ids=ids).logits
        apply_choices(model, choices)
        got = model(input_ids=ids).logits
    for c in choices:
        layer = model.get_submodule(c.name)
        assert layer.init_rel_error < 1e-5, c.name
        if isinstance(layer, KroneckerLinear):
            torch.testing.assert_close(layer.dense_weight(), dense[c.name], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_gpt2_attention_is_factored_as_one_fused_qkv_matrix():
    model = tiny("gpt2")
    from kroncli.surgery import find_targets

    qkv = [t for t in find_targets(model) if t.layer_type == "attn_qkv"]
    assert [t.shape for t in qkv] == [(192, 64)] * 2  # 3d x d: c_attn's in x out weight, transposed


@pytest.mark.parametrize("model_type", ("gpt2", "qwen2"))
def test_the_tied_lm_head_reads_the_kronecker_embedding_without_a_dense_table(model_type):
    from kroncli.kron.layers import KroneckerEmbedding, KroneckerTiedDecoder
    from kroncli.surgery import apply_choices

    model = tiny(model_type, vocab=120)
    apply_choices(model, exact_kronecker(model))
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    assert isinstance(emb, KroneckerEmbedding) and isinstance(head, KroneckerTiedDecoder)
    assert not any(p.shape == (120, 64) for p in model.parameters())  # no V x d parameter is left
    ids = torch.tensor([[4, 8, 15, 16, 23, 42]])
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
        torch.testing.assert_close(out.logits, out.hidden_states[-1] @ emb.dense_weight().t(), rtol=1e-4, atol=1e-5)


def test_an_untied_llama_head_stays_a_dense_linear():
    from torch import nn

    from kroncli.surgery import apply_choices

    model = tiny("llama")
    apply_choices(model, exact_kronecker(model))
    assert type(model.get_output_embeddings()) is nn.Linear


@pytest.mark.parametrize("name", ("gpt2-tiny", "llama-tiny", "qwen2-tiny"))
def test_kron_factorize_a_tiny_decoder(name, tmp_path):
    import kroncli

    ws = tmp_path / "ws"
    made = invoke("factorize", "--random-init", name, "--ratio", 1.5, "-w", ws)
    assert made["compression"] >= 1.5
    student = kroncli.load_student(ws)
    assert type(student).__name__.endswith(("LMHeadModel", "ForCausalLM"))
    with torch.no_grad():
        assert student(input_ids=torch.tensor([[5, 6, 7]])).logits.shape == (1, 3, student.config.vocab_size)


def test_a_saved_gpt2_model_loads_as_a_language_model(tmp_path):
    """A GPT2Model folder (no head) is a teacher with the LM head tied to wte: decoders always get their head."""
    from transformers import GPT2Config, GPT2Model

    from kroncli import sources

    torch.manual_seed(0)
    GPT2Model(GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=1, n_head=4)).save_pretrained(tmp_path)
    model, _ = sources.load_model(sources.resolve(str(tmp_path)))
    assert type(model).__name__ == "GPT2LMHeadModel"
    assert model.lm_head.weight is model.transformer.wte.weight


def test_random_configs_by_name_have_the_published_shapes():
    gpt2, llama = families.random_config("gpt2"), families.random_config("llama-1b")
    assert (gpt2.n_embd, gpt2.n_layer, gpt2.vocab_size) == (768, 12, 50257)
    assert (llama.hidden_size, llama.num_hidden_layers, llama.num_key_value_heads, llama.vocab_size) == \
        (2048, 16, 8, 128256) and llama.tie_word_embeddings


# ------------------------------------------------------------------------------------------- causal stage 1

WORDS = "the a cat dog sat ran on under mat tree big small red blue house river sings reads word token".split()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    g = torch.Generator().manual_seed(0)
    lines = [" ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (12,), generator=g)) for _ in range(120)]
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def gpt2_ws(tmp_path_factory):
    """kron factorize --random-init gpt2-tiny (read-only: tests copy it)."""
    ws = tmp_path_factory.mktemp("gpt2") / "ws"
    invoke("factorize", "--random-init", "gpt2-tiny", "--ratio", 2, "-w", ws)
    return ws


def test_causal_blocks_are_the_running_text_without_special_tokens():
    from kroncli.data.corpus import pack_causal

    lines = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    assert pack_causal(lines, 4).tolist() == [[5, 6, 7, 8], [9, 10, 11, 12]]
    assert pack_causal(lines, 4, eos_id=0).tolist() == [[5, 6, 7, 0], [8, 9, 0, 10], [11, 12, 13, 0]]


def test_attention_losses_leave_out_the_keys_after_each_query():
    """Scores above the diagonal are hidden by the causal mask: a difference there is no loss, one below is."""
    from kroncli.distill.losses import attention_kl, attention_mse

    torch.manual_seed(0)
    t = torch.randn(2, 4, 5, 5)
    future = t + torch.ones(5, 5).triu(1) * 3.0
    assert float(attention_mse(future, t, causal=True)) == 0.0
    assert float(attention_kl(future, t, causal=True)) < 1e-6
    assert float(attention_mse(future, t)) > 0.0  # an encoder's loss counts them
    past = t + torch.eye(5) * 3.0
    assert float(attention_mse(past, t, causal=True)) == pytest.approx(9.0 * 5 / 15)  # 5 of 15 visible pairs
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    # with padding: batch 1 sees 6 real pairs (3 on the diagonal), batch 2 the 15 (5 on it)
    assert float(attention_mse(past, t, mask, causal=True)) == pytest.approx(9.0 * (3 + 5) / (6 + 15))


def test_capture_of_a_grouped_query_decoder_gives_every_query_head_and_the_same_output():
    from kroncli.distill import Capture

    model = tiny("llama")
    assert model.config.num_key_value_heads < model.config.num_attention_heads
    ids = torch.tensor([[3, 17, 42, 5, 88, 9]])
    with torch.no_grad():
        want = model(input_ids=ids).logits
        got = Capture(model)(input_ids=ids, attention_mask=torch.ones_like(ids))
    assert got.causal and [a.shape for a in got.attentions] == [(1, 4, 6, 6)] * 2
    torch.testing.assert_close(got.logits, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model_type", DECODERS)
def test_a_causal_distill_step_lowers_the_loss(model_type):
    import copy

    from kroncli.stages.distill import CAUSAL_WEIGHTS, DEFAULT_WEIGHTS, make_step
    from kroncli.surgery import apply_choices
    from kroncli.kron.search import Choice
    from kroncli.surgery import find_targets

    teacher = tiny(model_type)
    student = copy.deepcopy(teacher)
    choices = [Choice(t.name, t.kind, t.layer_type, *t.shape, *((t.shape[0], t.shape[1] // 4) if t.kind == "embedding"
                                                              else (2, 4)), 1, 0, 0, 0, 0.0)
               for t in find_targets(student)]
    apply_choices(student, choices)
    student.train()
    step = make_step(teacher, {**DEFAULT_WEIGHTS, **CAUSAL_WEIGHTS}, "scores", None, temperature=2.0)
    ids = torch.randint(0, 96, (4, 16), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    opt = torch.optim.Adam(student.parameters(), lr=1e-3)
    torch.manual_seed(0)
    before, terms = step(student, batch)
    first = float(before.detach())
    assert set(terms) == {"embedding_mse", "attention_mse", "hidden_mse", "logit_kd", "total"}
    before.backward()
    opt.step()
    torch.manual_seed(0)
    after, _ = step(student, batch)
    assert float(after.detach()) < first


def test_kron_distill_on_a_decoder_resumes_as_one_run(gpt2_ws, corpus, tmp_path):
    """Causal stage 1 through the CLI (logit KD on by default), interrupted after 4 of 8 steps and resumed: the
    weights are those of the uninterrupted run, bit for bit."""
    import shutil

    from safetensors.torch import load_file

    from conftest import own_copy

    run = ("--corpus", corpus, "--batch-size", 4, "--max-seq-len", 16, "--lr", "3e-3", "--max-steps", 8,
           "--save-every", 4, "--keep", 5)
    full, part = own_copy(gpt2_ws, tmp_path / "full"), own_copy(gpt2_ws, tmp_path / "part")
    done = invoke("distill", "-w", full, *run)
    assert done["steps"] == 8 and "logit_kd" in done["terms"]
    invoke("distill", "-w", part, *run)
    shutil.rmtree(part / "checkpoints" / "distill" / "step_8")
    assert invoke("distill", "-w", part, *run, "--resume")["steps"] == 8
    a, b = load_file(full / "student" / "model.safetensors"), load_file(part / "student" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    manifest = json.loads((full / "manifest.json").read_text())
    assert manifest["stages"]["distill"]["pairs"] is False


# ------------------------------------------------------------------------------------------------ perplexity

def test_perplexity_matches_a_hand_computed_value():
    import math

    import torch.nn.functional as F

    from kroncli.evaluation.perplexity import perplexity

    model = tiny("gpt2")
    ids = torch.randint(0, 96, (20,), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        def nll(chunk):  # summed next-token loss of one forward over `chunk`
            return float(F.cross_entropy(model(input_ids=chunk[None]).logits[0, :-1], chunk[1:], reduction="sum"))

        whole = perplexity(model, ids, max_length=32, stride=16)
        assert whole["tokens"] == 19 and whole["perplexity"] == pytest.approx(math.exp(nll(ids) / 19), rel=1e-5)
        chunks = perplexity(model, ids, max_length=8, stride=8)  # disjoint windows 0:8, 8:16, 16:20
        want = (nll(ids[0:8]) + nll(ids[8:16]) + nll(ids[16:20])) / 17
        assert chunks["tokens"] == 17 and chunks["perplexity"] == pytest.approx(math.exp(want), rel=1e-5)
        # stride 4, window 8: windows 0:8 (scores 1..7), 4:12 (8..11), 8:16 (12..15), 12:20 (16..19)
        logits = [model(input_ids=ids[b:b + 8][None]).logits[0] for b in (0, 4, 8, 12)]
        total = float(F.cross_entropy(logits[0][:-1], ids[1:8], reduction="sum"))
        for w, b in zip(logits[1:], (4, 8, 12)):
            total += float(F.cross_entropy(w[3:-1], ids[b + 4:b + 8], reduction="sum"))
        slid = perplexity(model, ids, max_length=8, stride=4)
        assert slid["tokens"] == 19 and slid["perplexity"] == pytest.approx(math.exp(total / 19), rel=1e-5)


def test_kron_eval_ppl_writes_both_models_and_the_report_shows_them(gpt2_ws, corpus, tmp_path):
    import pandas as pd

    from conftest import own_copy

    ws = own_copy(gpt2_ws, tmp_path)
    out = invoke("eval", "ppl", "-w", ws, "--data", corpus, "--max-length", 32, "--stride", 16,
                 "--max-new-tokens", 4, "--prompt", "the cat sat")
    assert [r["model"] for r in out["results"]] == ["teacher", "student"]
    for r in out["results"]:
        assert r["perplexity"] > 1 and r["tokens"] > 100
        assert [g["prompt"] for g in r["generations"]] == ["the cat sat"] and len(r["generations"][0]["tokens"]) == 4
    rows = pd.read_csv(ws / "metrics" / "eval.csv")
    assert set(zip(rows.model, rows.task, rows.metric)) >= {("student", "ppl", "perplexity"),
                                                             ("teacher", "ppl", "perplexity")}
    res = runner.invoke(app, ["report", str(ws), "--format", "csv"])
    assert res.exit_code == 0 and f"ppl {corpus.name}" in res.stdout


# ---------------------------------------------------------------------------------------------------- export

def every_layer_factored(model_type: str, ws):
    """A workspace (kron factorize --random-init <tiny>) whose student has every default target factored, rank 1,
    nearest-Kronecker initialised (the shape search of a tiny model factors little but its vocabulary table)."""
    from kroncli import sources
    from kroncli.kron.search import Choice
    from kroncli.student import save_student
    from kroncli.surgery import apply_choices, find_targets

    invoke("factorize", "--random-init", f"{model_type}-tiny", "--ratio", 1.5, "-w", ws)
    model, tok = sources.load_model(sources.ModelSource(f"random:{model_type}-tiny", None, "random"))
    choices = [Choice(t.name, t.kind, t.layer_type, *t.shape, *((t.shape[0], t.shape[1] // 4) if t.kind == "embedding"
                                                              else (2, 4)), 1, 0, 0, 0, 0.0)
               for t in find_targets(model)]
    save_student(apply_choices(model, choices), choices, ws / "student", tok)
    return ws


@pytest.mark.parametrize("model_type", DECODERS)
def test_hf_export_loads_with_kronecker_layers_and_generates_as_kron_does(model_type, tmp_path):
    """AutoModelForCausalLM(trust_remote_code) gets Kronecker modules (and the tied Kronecker head) and generate()
    matches kron's model token for token; the dense export and ONNX (GPT-2) match too."""
    import kroncli
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ws = every_layer_factored(model_type, tmp_path / "ws")
    student = kroncli.load_student(ws).eval()
    out = tmp_path / f"hf-{model_type}"  # remote code is cached by folder name: one per family
    hf = invoke("export", "-w", ws, "--format", "hf", "--out", out)
    assert hf["kron_layers"] > 0 and hf["parity"]["generation_equal"]
    shipped = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    assert type(shipped).__name__ == f"Kron{type(student).__name__}"
    kinds = {type(m).__name__ for m in shipped.modules()}
    assert {"KroneckerLinear", "KroneckerEmbedding"} <= kinds
    assert ("KroneckerTiedDecoder" in kinds) == bool(student.config.tie_word_embeddings)
    tok = AutoTokenizer.from_pretrained(out, trust_remote_code=True)
    ids = tok("the cat sat on the", add_special_tokens=False, return_tensors="pt")["input_ids"]
    gen = dict(attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=8, pad_token_id=0)
    with torch.no_grad():
        assert shipped.generate(ids, **gen).tolist() == student.generate(ids, **gen).tolist()
    if model_type != "gpt2":
        return
    dense = invoke("export", "-w", ws, "--format", "hf", "--dense", "--out", tmp_path / "dense")
    assert dense["parity"]["max_abs_diff"] <= 1e-4
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "dense").eval()
    assert type(plain) is type(student) and plain.lm_head.weight is plain.transformer.wte.weight
    with torch.no_grad():
        assert plain.generate(ids, **gen).tolist() == student.generate(ids, **gen).tolist()
    onnx = invoke("export", "-w", ws, "--format", "onnx", "--out", tmp_path / "onnx")
    assert onnx["parity"]["max_abs_diff"] <= onnx["parity"]["tolerance"]
    res = runner.invoke(app, ["predict", str(tmp_path / "onnx"), "hello"])
    one_line_error(res, "language model", "AutoModelForCausalLM")


# ------------------------------------------------------------------------------------------------ eval speed

def test_eval_speed_of_a_decoder_times_prefill_and_generation(gpt2_ws, tmp_path):
    import pandas as pd

    from conftest import own_copy

    ws = own_copy(gpt2_ws, tmp_path)
    out = invoke("eval", "speed", "-w", ws, "--batch", "1,2", "--seq-len", 16, "--repeats", 2, "--warmup", 1,
                 "--new-tokens", 4, "--device", "cpu")
    rows = {(r["role"], r["batch"], r["phase"]): r for r in out["results"]}
    assert set(rows) == {(m, b, p) for m in ("teacher", "student") for b in (1, 2) for p in ("prefill", "generate")}
    for (role, b, phase), r in rows.items():
        assert r["latency_ms"] > 0 and r["new_tokens"] == (4 if phase == "generate" else 0)
        want = b * (4 if phase == "generate" else 16) / (r["latency_ms"] / 1e3)
        assert r["tokens_s"] == pytest.approx(want)
        assert (r["peak_mem_mib"] is None) == (phase == "generate")
    assert "generate" in out["method"]
    csv = pd.read_csv(ws / "metrics" / "speed.csv")
    assert set(csv.phase) == {"prefill", "generate"}
    res = runner.invoke(app, ["report", str(ws), "--format", "csv"])
    assert "gen speedup b2x16" in res.stdout and "speedup b2x16" in res.stdout


def test_the_generate_wrapper_adds_exactly_the_asked_tokens():
    from kroncli.evaluation.speed.timing import Generating

    model = tiny("llama")
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert Generating(model, 5)(input_ids=ids, attention_mask=torch.ones_like(ids)).shape == (1, 8)


# ------------------------------------------------------------------------------------------------- bad input

@pytest.fixture(scope="module")
def bert_ws(tmp_path_factory):
    ws = tmp_path_factory.mktemp("bert") / "ws"
    invoke("factorize", "--random-init", "tiny", "--ratio", 3, "-w", ws)
    return ws


def snapshot(ws) -> dict:
    """Every file of the workspace with its bytes: what a refused command must leave as it was."""
    return {p.relative_to(ws): p.read_bytes() for p in sorted(ws.rglob("*")) if p.is_file() and p.name != ".lock"}


BAD = [
    ("gpt2", ["finetune", "--task", "mrpc", "--max-steps", "1"], "no classification head"),
    ("gpt2", ["finetune", "--task", "mrpc", "--teacher-only", "--max-steps", "1"], "is a decoder"),
    ("gpt2", ["finetune", "--task", "squad", "--teacher-only", "--max-steps", "1"], "no question_answering head"),
    ("gpt2", ["eval", "glue", "--task", "mrpc"], "kron eval ppl"),
    ("gpt2", ["distill", "--corpus", "CORPUS", "--weight", "mlm=1", "--max-steps", "1"], "no loss 'mlm' (GPT-2 is a decoder)"),
    ("gpt2", ["export", "--task", "mrpc", "--format", "hf", "--out", "OUT"], "a language model with no task; drop --task"),
    ("gpt2", ["eval", "ppl", "--data", "CORPUS", "--max-length", "32", "--stride", "64"], "--stride 64"),
    ("gpt2", ["eval", "ppl", "--data", "CORPUS", "--max-length", "4096"], "exceeds the model's 128 positions"),
    ("bert", ["eval", "ppl", "--data", "CORPUS"], "needs a decoder family"),
    ("bert", ["distill", "--corpus", "CORPUS", "--weight", "logit_kd=1", "--max-steps", "1"], "stage 1 has no loss 'logit_kd'"),
    ("bert", ["export", "--format", "hf", "--out", "OUT"], "--task TASK is required"),
]


@pytest.mark.parametrize("which,args,needle", BAD, ids=[f"{w}-{' '.join(a[:2])}-{n[:12]}" for w, a, n in BAD])
def test_bad_input_is_one_line_and_leaves_the_workspace_as_it_was(which, args, needle, gpt2_ws, bert_ws, corpus,
                                                                   tmp_path, request):
    from conftest import own_copy

    ws = own_copy(gpt2_ws if which == "gpt2" else bert_ws, tmp_path)
    before = snapshot(ws)
    args = [str(corpus) if a == "CORPUS" else str(tmp_path / "out") if a == "OUT" else a for a in args]
    res = runner.invoke(app, [*args[:2], "-w", str(ws), *args[2:]] if args[0] == "eval" else
                        [args[0], "-w", str(ws), *args[1:]])
    one_line_error(res, needle)
    assert snapshot(ws) == before and not (tmp_path / "out").exists()


def test_a_corpus_shorter_than_one_block_is_refused_and_nothing_is_lost(gpt2_ws, tmp_path):
    from conftest import own_copy

    ws = own_copy(gpt2_ws, tmp_path)
    short = tmp_path / "short.txt"
    short.write_text("only a few words here\n")
    before = snapshot(ws)
    res = runner.invoke(app, ["distill", "-w", str(ws), "--corpus", str(short), "--max-seq-len", "32",
                              "--max-steps", "2"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert [ln for ln in res.output.splitlines() if ln.startswith("error:")] == [
        next(ln for ln in res.output.splitlines() if "fewer than one block of --max-seq-len 32" in ln)]
    assert snapshot(ws) == before


def test_generation_is_cut_to_the_positions_left_after_the_prompt():
    from kroncli.evaluation.speed import SpeedOptions, fit_new_tokens

    configs = {"student": families.random_config("gpt2-tiny"), "teacher": families.random_config("gpt2-tiny")}
    opts = SpeedOptions(seq_len=120, new_tokens=32)
    (warning,) = fit_new_tokens(opts, configs)
    assert opts.new_tokens == 8 and "128 positions" in warning
    opts = SpeedOptions(seq_len=64, new_tokens=32)
    assert fit_new_tokens(opts, configs) == [] and opts.new_tokens == 32


def test_a_decoder_recipe_takes_logit_kd_and_refuses_mlm_before_any_stage(tmp_path):
    """kron run checks stage 1's losses against the teacher's family: logit_kd is a decoder's, mlm is not."""
    from kroncli import sources

    teacher = tmp_path / "gpt2"
    model, tok = sources.load_model(sources.ModelSource("random:gpt2-tiny", None, "random"))
    model.save_pretrained(teacher)
    tok.save_pretrained(teacher)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"teacher: {teacher}\nfactorize:\n  ratio: 2\ndistill:\n  corpus: [{tmp_path}/none.txt]\n"
                      "  weights: {logit_kd: 2, mlm: 1}\n")
    res = runner.invoke(app, ["run", str(recipe), "-w", str(tmp_path / "ws")])
    one_line_error(res, "recipe key distill.weights: stage 1 has no loss 'mlm' (GPT-2 is a decoder)")
    assert not (tmp_path / "ws").exists()
