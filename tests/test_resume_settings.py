"""--resume continues a stage only with the settings it started with: a changed learning rate, seed, loss weight,
temperature ... is refused naming the change (a longer budget is allowed); --resume with --restart is refused, and
--resume with nothing to resume says so."""

import json

import pytest
import torch
from typer.testing import CliRunner

from kroncli.cli import app
from kroncli.errors import KronError
from kroncli.train import TrainConfig, train

from conftest import glue_dir, one_line_error
from test_distill import corpus, distill, factorized, teacher_dir  # noqa: F401 (fixtures)

runner = CliRunner()


def refused(res, *needles) -> None:
    """Exit 2 with one `error:` line holding every needle (the stage's progress lines before it may stay)."""
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert res.exit_code == 2 and "Traceback" not in res.output and len(errors) == 1, res.output
    assert all(n in errors[0] for n in needles), errors[0]


class Points(torch.utils.data.Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(32, 4, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i]


def _collate(rows):
    return {"x": torch.stack(rows)}


def _step(model, batch):
    x = batch["x"]
    loss = (model(x) - x.sum(dim=1, keepdim=True)).pow(2).mean()
    return loss, {"mse": float(loss.detach())}


def _train(tmp_path, settings=None, log=lambda msg: None, **cfg):
    """A tiny linear regression through the real loop; `settings` is what a stage passes in its fingerprint."""
    torch.manual_seed(0)
    config = TrainConfig(**{"stage": "s", "batch_size": 8, "lr": 1e-2, "save_every": 2, "log_every": 1, "max_steps": 2,
                            **cfg})
    fingerprint = {"shapes": "x", **({"settings": settings} if settings is not None else {})}
    return train(config, torch.nn.Linear(4, 1), Points(), _collate, _step, tmp_path / "ckpt",
                 tmp_path / "s.csv", fingerprint, log=log)


@pytest.mark.parametrize("change,needle", [
    ({"lr": 2e-2}, "--lr was 0.01, now 0.02"),
    ({"seed": 1}, "--seed was 0, now 1"),
    ({"weight_decay": 0.1}, "--weight-decay was 0.01, now 0.1"),
    ({"warmup_ratio": 0.0}, "--warmup-ratio was 0.1, now 0.0"),
    ({"max_grad_norm": 0.5}, "--max-grad-norm was 1.0, now 0.5"),
    ({"batch_size": 4}, "--batch-size was 8, now 4"),
])
def test_a_changed_training_value_is_refused_naming_it(tmp_path, change, needle):
    _train(tmp_path)
    with pytest.raises(KronError, match="cannot resume s from .*step_2") as e:
        _train(tmp_path, resume=True, max_steps=4, **change)
    assert needle in str(e.value) and "--restart" in str(e.value)


@pytest.mark.parametrize("now,needle", [
    ({"weight": {"a": 1.0, "b": 0.5}, "temperature": 1.0}, "--weight b was 1.0, now 0.5"),
    ({"weight": {"a": 1.0, "b": 1.0, "mlm": 1.0}, "temperature": 1.0}, "--weight mlm was unset, now 1.0"),
    ({"weight": {"a": 1.0, "b": 1.0}, "temperature": 2.0}, "--temperature was 1.0, now 2.0"),
    ({"weight": {"a": 1.0, "b": 1.0}, "temperature": 1.0, "layer_map": [0, 2]}, None),  # not recorded: not compared
])
def test_a_changed_stage_setting_is_refused_naming_it(tmp_path, now, needle):
    _train(tmp_path, {"weight": {"a": 1.0, "b": 1.0}, "temperature": 1.0})
    if needle is None:
        assert _train(tmp_path, now, resume=True, max_steps=3)["steps"] == 3
        return
    with pytest.raises(KronError, match=needle):
        _train(tmp_path, now, resume=True, max_steps=4)


def test_a_longer_budget_and_other_bookkeeping_resume(tmp_path):
    settings = {"weight": {"a": 1.0}}
    _train(tmp_path, settings)
    out = _train(tmp_path, settings, resume=True, max_steps=5, save_every=1, log_every=2, keep=3)
    assert out["steps"] == 5


def test_a_stage_begun_in_bf16_may_finish_in_full_precision(tmp_path):
    """The precision is the arithmetic's, not the run's: a bf16 stage of a GPU lease continues on a CPU (as kron run
    allows)."""
    from accelerate.state import AcceleratorState

    try:
        AcceleratorState._reset_state(reset_partial_state=True)  # each CLI run is a process of its own
        _train(tmp_path, mixed_precision="bf16")
        AcceleratorState._reset_state(reset_partial_state=True)
        assert _train(tmp_path, resume=True, max_steps=3, mixed_precision="no")["steps"] == 3
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def test_a_checkpoint_of_an_older_version_still_resumes(tmp_path):
    """Its meta.json records neither the training values nor the stage's settings: nothing to compare."""
    _train(tmp_path)
    meta_path = tmp_path / "ckpt" / "step_2" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["config"]
    meta_path.write_text(json.dumps(meta))
    assert _train(tmp_path, {"weight": {"a": 2.0}}, resume=True, max_steps=3, lr=5e-3)["steps"] == 3


def test_resume_without_a_checkpoint_says_it_starts_from_step_0(tmp_path):
    lines = []
    assert _train(tmp_path, log=lines.append, resume=True)["steps"] == 2
    assert any("--resume: s has no checkpoint in" in line and "starting from step 0" in line for line in lines), lines


def test_resume_and_restart_together_are_refused():
    with pytest.raises(KronError, match="--resume .* --restart .*pass one of them"):
        TrainConfig(stage="s", resume=True, restart=True)


# ------------------------------------------------------------------------------------------ through the commands

def test_distill_resume_refuses_a_changed_lr_seed_or_weight(teacher_dir, corpus, tmp_path):
    ws = factorized(teacher_dir, tmp_path)
    assert distill(ws, corpus, "--max-steps", "2").exit_code == 0
    before = (ws / "manifest.json").read_text()
    for args, needle in ((["--lr", "1e-3"], "--lr was 0.003, now 0.001"), (["--seed", "1"], "--seed was 0, now 1"),
                         (["--weight", "attention_mse=0.02"], "--weight attention_mse was 1.0, now 0.02"),
                         (["--attention", "probs"], "--attention was 'scores', now 'probs'")):
        res = distill(ws, corpus, "--max-steps", "4", "--resume", *args)
        refused(res, "cannot resume distill from", needle, "--restart")
    assert (ws / "manifest.json").read_text() == before  # nothing recorded for a run that did not happen
    res = distill(ws, corpus, "--max-steps", "4", "--resume")  # a longer budget with the same settings
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["steps"] == 4


def test_distill_resume_and_restart_together_are_one_line(teacher_dir, corpus, tmp_path):
    ws = factorized(teacher_dir, tmp_path)
    one_line_error(distill(ws, corpus, "--max-steps", "2", "--resume", "--restart"), "--resume", "--restart")
    assert not (ws / "checkpoints").exists()


def test_distill_resume_without_a_checkpoint_says_so(teacher_dir, corpus, tmp_path):
    ws = factorized(teacher_dir, tmp_path)
    res = distill(ws, corpus, "--max-steps", "2", "--resume")
    assert res.exit_code == 0, res.output
    assert "--resume: distill has no checkpoint in" in res.stderr and "starting from step 0" in res.stderr


def test_finetune_resume_refuses_a_changed_temperature(teacher_dir, tmp_path):
    glue = glue_dir()
    assert (glue / "MRPC" / "train.tsv").is_file(), f"GLUE's MRPC not found in {glue} (set KRON_GLUE_DIR)"
    ws = factorized(teacher_dir, tmp_path)

    def finetune(*extra):
        return runner.invoke(app, ["finetune", "-w", str(ws), "--task", "mrpc", "--data-dir", str(glue), "--limit",
                                   "32", "--batch-size", "8", "--max-seq-len", "32", "--json", *extra])

    assert finetune("--teacher-only", "--max-steps", "2").exit_code == 0
    assert finetune("--max-steps", "2").exit_code == 0
    refused(finetune("--max-steps", "4", "--resume", "--temperature", "2"),
                   "cannot resume finetune-mrpc", "--temperature was 1.0, now 2.0")
    res = finetune("--max-steps", "4", "--resume")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["steps"] == 4
