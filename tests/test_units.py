"""Readable units: the loss registry is complete on its own, one ONNX runner serves every reader of an export,
kron eval speed is split by concern (its memory worker still runs as `python -m kroncli.evaluation.speed`), and the
training loop's checkpointing lives in a Checkpointer of its own."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import pytest
import torch

from conftest import REPO, require_module

PACKAGE = REPO / "kroncli"


def test_the_loss_registry_names_the_qa_terms_without_importing_a_stage():
    code = ("import sys; from kroncli.distill.losses import LOSSES; "
            "print(json.dumps([sorted(LOSSES), 'kroncli.stages.squad' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    names, stage_imported = json.loads(out.stdout.splitlines()[-1])
    assert {"qa_logit_kd", "qa_supervised", "logit_kd", "supervised"} <= set(names)
    assert stage_imported is False


def test_only_the_shared_runner_opens_onnxruntime_sessions():
    opened = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if "InferenceSession(" in p.read_text())
    assert opened == ["export/onnx_runtime.py"]


def _graph(path, inputs=("input_ids", "attention_mask", "token_type_ids")):
    """A tiny ONNX graph: logits = input_ids + 10 * token_type_ids (int64), over whichever inputs it is given."""
    onnx = require_module("onnx", 'pip install -c constraints.txt -e ".[export]"')
    require_module("onnxruntime", 'pip install -c constraints.txt -e ".[export]"')
    from onnx import TensorProto, helper

    ten = helper.make_tensor("ten", TensorProto.INT64, [], [10])
    nodes = [helper.make_node("Mul", ["token_type_ids", "ten"], ["scaled"]),
             helper.make_node("Add", ["input_ids", "scaled"], ["logits"])] if "token_type_ids" in inputs else \
        [helper.make_node("Identity", ["input_ids"], ["logits"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.INT64, ["b", "s"])
                                           for n in inputs],
                              [helper.make_tensor_value_info("logits", TensorProto.INT64, ["b", "s"])], [ten])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_the_runner_feeds_what_the_graph_names_and_token_types_as_zeros(tmp_path):
    from kroncli.export.onnx_runtime import OnnxRunner

    runner = OnnxRunner(_graph(tmp_path / "g.onnx"), threads=1)
    ids = torch.tensor([[1, 2, 3]])
    out = runner(input_ids=ids, attention_mask=torch.ones_like(ids))  # torch tensors, as kron eval speed feeds
    assert out.tolist() == [[1, 2, 3]]
    assert runner.run({"input_ids": [[1, 2]], "attention_mask": [[1, 1]], "token_type_ids": [[0, 1]]},
                       "logits").tolist() == [[1, 12]]
    mask = torch.ones_like(ids)
    first = runner.feed({"input_ids": ids, "attention_mask": mask})
    assert runner.feed({"input_ids": ids, "attention_mask": mask}) is first  # the same arrays again: nothing converted anew


def test_runner_errors_are_one_line_in_the_callers_words(tmp_path):
    from kroncli.errors import KronError
    from kroncli.export.onnx_runtime import OnnxRunner

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a graph")
    require_module("onnxruntime", 'pip install -c constraints.txt -e ".[export]"')
    with pytest.raises(KronError, match=r"^cannot load .*bad\.onnx \(.*\); re-run kron export$"):
        OnnxRunner(bad)
    with pytest.raises(KronError, match=r"^--onnx DIR: onnxruntime cannot load bad\.onnx \(.*\); expected X$"):
        OnnxRunner(bad, label="--onnx DIR", hint="expected X")
    runner = OnnxRunner(_graph(tmp_path / "g.onnx", ("input_ids",)), label="--onnx DIR", run_hint="check it")
    with pytest.raises(KronError, match=r"^--onnx DIR: onnxruntime failed on a 3 input \(.*\); check it$") as e:
        runner(input_ids=torch.tensor([1, 2, 3]))  # one dimension, the graph takes two
    assert "\n" not in str(e.value)


def test_predict_and_speed_load_exports_through_the_shared_runner(tmp_path):
    from kroncli.evaluation.speed.models import ModelRef, load_ref
    from kroncli.export.onnx_runtime import OnnxRunner
    from kroncli.predict import OnnxPredictor

    path = _graph(tmp_path / "model.onnx")
    ref = ModelRef("kronecker-onnx-fp32", "onnx", "onnx", str(path), str(tmp_path))
    assert isinstance(load_ref(ref), OnnxRunner)
    (tmp_path / "tokenizer.json").write_text(_word_level_tokenizer())
    predictor = OnnxPredictor(tmp_path, {"is_pair": False, "max_seq_len": 8, "pad_token": "[PAD]"})
    assert isinstance(predictor.runner, OnnxRunner)
    assert predictor.logits([("b a", None)]).tolist() == [[2, 1]]


def _word_level_tokenizer() -> str:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    tok = Tokenizer(WordLevel({"[PAD]": 0, "a": 1, "b": 2, "[UNK]": 3}, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    return tok.to_str()


def test_the_speed_memory_worker_still_runs_as_the_package():
    spec = {"ref": {"label": "teacher", "role": "teacher", "kind": "random", "path": None,
                    "requested": "random:tiny"}, "batches": [1, 2], "seq_len": 8, "vocab_size": 100, "threads": 1}
    out = subprocess.run([sys.executable, "-m", "kroncli.evaluation.speed", json.dumps(spec)], capture_output=True,
                         text=True, check=True, timeout=600)
    result = json.loads(out.stdout.splitlines()[-1])
    assert set(result["peak_mib"]) == {"1", "2"} and result["weights_mib"] > 0 and result["method"]


def test_units_fit_on_a_screen():
    from kroncli.train import train

    assert len(inspect.getsource(train).splitlines()) <= 90
    speed = sorted((PACKAGE / "evaluation" / "speed").glob("*.py"))
    assert {p.name for p in speed} >= {"__init__.py", "__main__.py", "models.py", "memory.py", "timing.py",
                                       "report.py"}
    assert not (PACKAGE / "evaluation" / "speed.py").exists()
    assert max(len(p.read_text().splitlines()) for p in speed) <= 350


def _accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=True)


def test_checkpointer_saves_prunes_and_resumes(tmp_path):
    """Saves are atomic folders with meta.json, pruned to `keep`; a resume refuses another student and loads the
    newest checkpoint's weights; a fresh start (--restart) removes the old checkpoints and their metrics rows."""
    from kroncli import metrics_csv as csvlog
    from kroncli.errors import KronError
    from kroncli.train import Checkpointer, TrainConfig, checkpoints

    stage_dir, csv = tmp_path / "ckpt", tmp_path / "m.csv"
    accelerator = _accelerator()
    model = accelerator.prepare(torch.nn.Linear(2, 2))
    cfg = TrainConfig(stage="s", keep=2)
    ckpt = Checkpointer(accelerator, cfg, stage_dir, csv, {"shape": [2, 2]}, lambda m: None)
    assert ckpt.find() is None and ckpt.start(None, total=5) == (0, 0.0)
    for step in (1, 2, 3):
        with torch.no_grad():
            model.weight.fill_(step)
        ckpt.save(step, elapsed=float(step))
        csvlog.append(csv, [{"step": step, "total": 0.5}])
    assert [s for s, _ in checkpoints(stage_dir)] == [2, 3] and not list(stage_dir.glob(".*"))
    meta = json.loads((stage_dir / "step_3" / "meta.json").read_text())
    assert (meta["step"], meta["total"], meta["elapsed"], meta["fingerprint"]) == (3, 5, 3.0, {"shape": [2, 2]})

    with pytest.raises(KronError, match="already has checkpoints; pass --resume"):
        Checkpointer(accelerator, cfg, stage_dir, csv, {"shape": [2, 2]}, print).find()
    resume = TrainConfig(stage="s", keep=2, resume=True)
    other = Checkpointer(accelerator, resume, stage_dir, csv, {"shape": [4, 4]}, lambda m: None)
    with pytest.raises(KronError, match="different student"):
        other.start(other.find(), total=5)
    with torch.no_grad():
        model.weight.fill_(0)
    again = Checkpointer(accelerator, resume, stage_dir, csv, {"shape": [2, 2]}, lambda m: None)
    point = again.find()
    assert again.start(point, total=5) == (3, 3.0) and (model.weight == 3).all()

    restart = Checkpointer(accelerator, TrainConfig(stage="s", restart=True), stage_dir, csv, {"shape": [2, 2]},
                           lambda m: None)
    assert restart.start(restart.find(), total=5) == (0, 0.0)
    assert checkpoints(stage_dir) == [] and (csvlog.read(csv) is None or len(csvlog.read(csv)) == 0)
