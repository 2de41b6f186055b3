"""The model-family table (kroncli/families.py): every family runs end to end on a tiny random config, its entry
names every matrix of its models, and a model type the table lacks is a one-line error (`--targets` still works).

The end-to-end case per family: kron factorize --random-init <family's tiny config>, kron distill, kron finetune
(teacher, then student) on a tiny synthetic MRPC folder, kron eval glue, kron export --format onnx (onnxruntime's
logits checked against PyTorch's by the export itself) and --format hf, reloaded with trust_remote_code.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from kroncli import families
from kroncli.cli import app
from kroncli.errors import KronError

from conftest import PAIRS, one_line_error, require_module

runner = CliRunner()
FAMILIES = sorted(families.FAMILIES)
ENCODERS = sorted(t for t, f in families.FAMILIES.items() if not f.is_decoder)  # decoders: tests/test_decoders.py
WORDS = "the a cat dog sat ran on under mat tree big small red blue house river sings reads word token".split()


def tiny_name(family: families.Family) -> str:
    """The family's tiny --random-init config (MiniLM's vocabulary, so the teacher has a tokenizer)."""
    return next(name for name in family.random_configs if "tiny" in name)


def invoke(*args) -> dict:
    res = runner.invoke(app, [*map(str, args), "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    g = torch.Generator().manual_seed(0)
    lines = [" ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (10,), generator=g)) for _ in range(60)]
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def glue(tmp_path_factory):
    """A GLUE folder with a tiny MRPC (train and dev) in the original layout."""
    root = tmp_path_factory.mktemp("glue")
    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
    rows = lambda n, shift: [f"{i % 2}\t{i}\t{i + 100}\t{a}\t{b}"  # noqa: E731
                             for i, (a, b) in enumerate((PAIRS * 4)[shift:shift + n])]
    (root / "MRPC").mkdir()
    (root / "MRPC" / "train.tsv").write_text("\n".join([header, *rows(16, 0)]) + "\n")
    (root / "MRPC" / "dev.tsv").write_text("\n".join([header, *rows(6, 2)]) + "\n")
    return root


@pytest.mark.parametrize("model_type", ENCODERS)
def test_each_family_runs_end_to_end(model_type, tmp_path, corpus, glue, minilm_path):
    require_module("onnxruntime", 'pip install -c constraints.txt -e ".[export]"')
    import kroncli
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    family = families.FAMILIES[model_type]
    ws = tmp_path / "ws"
    made = invoke("factorize", "--random-init", tiny_name(family), "--ratio", 3, "-w", ws)
    assert made["compression"] > 2.5
    assert {row["layer_type"] for row in made["by_type"]} == set(family.default_targets)
    assert json.loads((ws / "student" / "config.json").read_text())["model_type"] == model_type
    tokens = AutoTokenizer.from_pretrained(ws / "student").model_input_names
    assert ("token_type_ids" in tokens) == family.block.token_types  # only the inputs the model takes

    common = ("-w", ws, "--batch-size", 4, "--max-seq-len", 32, "--max-steps", 2)
    stage1 = invoke("distill", *common, "--corpus", corpus)
    assert stage1["steps"] == 2
    tune = (*common, "--task", "mrpc", "--data-dir", glue)
    assert invoke("finetune", *tune, "--teacher-only")["model"] == "teacher"
    assert invoke("finetune", *tune)["steps"] == 2
    scores = invoke("eval", "glue", "-w", ws, "--task", "mrpc", "--data-dir", glue)
    assert {("student", 6), ("teacher", 6)} <= {(r["model"], r["n"]) for r in scores["results"]}

    student = kroncli.load_student(ws / "tasks" / "mrpc" / "student").eval()
    assert type(student) is family.head_model_class("classification", student.config)
    onnx = invoke("export", "-w", ws, "--task", "mrpc", "--format", "onnx", "--out", tmp_path / "onnx")
    assert onnx["parity"]["max_abs_diff"] <= onnx["parity"]["tolerance"]
    out = tmp_path / f"hf-{model_type}"  # remote code is cached by folder name: one per family
    hf = invoke("export", "-w", ws, "--task", "mrpc", "--format", "hf", "--out", out)
    assert hf["kron_layers"] > 0
    shipped = AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True).eval()
    assert type(shipped).__name__ == f"Kron{type(student).__name__}"
    assert json.loads((out / "config.json").read_text())["model_type"] == f"kron_{model_type}"
    tok = AutoTokenizer.from_pretrained(out)
    a, b = zip(*PAIRS)
    batch = tok(list(a), list(b), padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(shipped(**batch).logits, student(**batch).logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("model_type", FAMILIES)
def test_the_entry_names_every_matrix_of_its_models(model_type):
    """Each Linear / Embedding of the family's base, classification, QA and masked-LM models has a layer type."""
    import transformers

    family = families.FAMILIES[model_type]
    config = family.random_config(tiny_name(family))
    config.vocab_size = 50
    autos = {"AutoModel", *family.heads.values()} | (set() if family.is_decoder else {"AutoModelForMaskedLM"})
    for auto in sorted(autos):
        model = getattr(transformers, auto).from_config(config)
        unnamed = [name for name, m in model.named_modules()
                   if families.module_kind(m, family.module_kinds) and family.layer_type(name) == "other"]
        assert unnamed == [], (auto, unnamed)
        assert len(family.attention_modules(model)) == families.num_layers(config)
    kind = next(iter(family.heads))
    head = family.head_class(kind).from_config(config)
    assert type(head) is family.head_model_class(kind, config)


def test_random_init_names_are_unique_across_families():
    names = [n for f in families.FAMILIES.values() for n in f.random_configs]
    assert len(names) == len(set(names)) == len(families.random_inits())
    assert families.random_config("bert-base").to_dict() == __import__("transformers").BertConfig().to_dict()


def tiny_gpt_neo(path):
    """A family the table lacks (GPT-Neo)."""
    from transformers import GPTNeoConfig, GPTNeoModel

    torch.manual_seed(0)
    GPTNeoModel(GPTNeoConfig(vocab_size=64, max_position_embeddings=32, hidden_size=32, num_layers=1,
                             num_heads=4, attention_types=[[["global"], 1]])).save_pretrained(path)
    return path


def test_a_model_type_the_table_lacks_is_one_line_naming_the_known(tmp_path):
    teacher = tiny_gpt_neo(tmp_path / "gpt-neo")
    res = runner.invoke(app, ["factorize", str(teacher), "--ratio", "2", "-w", str(tmp_path / "ws")])
    one_line_error(res, "'gpt_neo'", f"known: {families.known()}", "--targets")
    assert not (tmp_path / "ws").exists()
    with pytest.raises(KronError, match="not in kron's model-family table"):
        families.family_of(teacher)


def test_targets_factor_a_model_the_table_lacks(tmp_path):
    """--targets factors the Linear layers of a family the table lacks, and the student reloads."""
    import kroncli

    teacher = tiny_gpt_neo(tmp_path / "gpt-neo")
    ws = tmp_path / "ws"
    out = invoke("factorize", teacher, "--ratio", "1.2", "--targets", r".*\.(c_fc|c_proj)", "-w", ws)
    assert sum(r["count"] for r in out["by_type"]) == 2 and out["layers"] >= 1
    assert {r["layer_type"] for r in out["by_type"]} == {"other"}  # no entry to name them
    student = kroncli.load_student(ws)
    assert sum(type(m).__name__ == "KroneckerLinear" for m in student.modules()) == out["layers"]
    ids = torch.tensor([[1, 5, 9, 2]])
    with torch.no_grad():
        assert student(input_ids=ids).last_hidden_state.shape == (1, 4, 32)


def test_conv1d_is_factored_as_its_transpose():
    """A Conv1D whose in x out weight is exactly (A (x) B)^T becomes a KroneckerLinear computing the same map."""
    from transformers.pytorch_utils import Conv1D

    from kroncli.kron.search import Choice
    from kroncli.surgery import apply_choices, find_targets

    torch.manual_seed(0)
    a, b = torch.randn(4, 2), torch.randn(3, 4)  # A (x) B: 12 x 8, out x in
    model = nn.Sequential()
    model.add_module("proj", Conv1D(12, 8))
    with torch.no_grad():
        model.proj.weight.copy_(torch.kron(a, b).t())
    (target,) = find_targets(model, targets="proj")
    assert target.kind == "linear" and target.shape == (12, 8)
    x = torch.randn(5, 8)
    want = model(x)
    apply_choices(model, [Choice("proj", "linear", "other", 12, 8, 4, 2, 1, 20, 96, 0, 0.0)])
    assert type(model.proj).__name__ == "KroneckerLinear" and model.proj.init_rel_error < 1e-6
    torch.testing.assert_close(model(x), want, rtol=1e-5, atol=1e-5)


def test_a_family_without_pair_blocks_is_refused_by_stage_1():
    family = families.Family("Decoder", "decoder", {"embedding": "wte"}, {}, (), default_targets=("embedding",),
                             block=families.Block("causal", token_types=False))
    with pytest.raises(KronError, match="causal blocks"):
        family.require_block("pairs")


def test_teacher_and_student_of_two_families_are_refused():
    from transformers import BertConfig, DistilBertConfig

    from kroncli.stages.common import check_same_architecture

    with pytest.raises(KronError, match="the teacher is a bert model, the student a distilbert one"):
        check_same_architecture(BertConfig(), DistilBertConfig())
    with pytest.raises(KronError, match="differ in n_layers"):
        check_same_architecture(DistilBertConfig(n_layers=6), DistilBertConfig(n_layers=3))
    check_same_architecture(DistilBertConfig(n_layers=6), DistilBertConfig(n_layers=3), allow_shallower=True)


def test_roberta_positions_start_after_the_padding_id():
    from transformers import RobertaConfig

    assert families.max_positions(RobertaConfig(max_position_embeddings=514, pad_token_id=1)) == 512
    assert families.max_positions(families.random_config("tiny")) == 128


def test_electra_keeps_its_embedding_projection_dense_and_matches_embedding_size():
    """ELECTRA's word table is V x embedding_size (32 here, hidden 64), projected up by embeddings_project."""
    import copy

    from transformers import AutoModel

    from kroncli.stages.common import check_same_architecture
    from kroncli.surgery import find_targets

    family = families.FAMILIES["electra"]
    config = family.random_config("electra-tiny")
    assert (config.embedding_size, config.hidden_size) == (32, 64)
    targets = {t.name: t for t in find_targets(AutoModel.from_config(config))}
    assert targets["embeddings.word_embeddings"].shape == (30522, 32)
    assert "embeddings_project" not in targets and family.layer_type("embeddings_project") == "embedding_project"
    other = copy.deepcopy(config)
    other.embedding_size = 16
    with pytest.raises(KronError, match="differ in embedding_size"):
        check_same_architecture(other, config)
