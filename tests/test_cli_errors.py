"""The error contract: every mistake, the parser's or a value the command cannot use, is one `error:` line with exit
2 and the user's text verbatim; a reader that closes stdout early ends a command quietly."""

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from kroncli.cli import app

from conftest import one_line_error, require_module

runner = CliRunner()


@pytest.mark.parametrize("args, needle", [
    (["factorize", "--ratio", "abc"], "Invalid value for '--ratio'"),
    (["factorize", "--layers", "a,b", "-w", "never"], "not a comma list of layer indices"),
    (["factorise"], "Did you mean 'factorize'"),
    (["eval", "glu"], "Did you mean 'glue'"),
    (["distill", "-w", "never"], "Missing option '--corpus'"),
    (["finetune", "-w", "never", "--task", "mrpc", "--max-steps", "three"], "Invalid value for '--max-steps'"),
    (["--versions"], "No such option: --versions"),
    (["report", "--json", "--format", "csv"], "--json and --format csv"),
])
def test_parser_mistakes_are_one_line_errors(args, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, args)
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert lines[0].startswith("error: ") and needle in lines[0] and "Traceback" not in res.output
    assert "--help" in lines[0] or "--json" in lines[0]  # where to look next
    assert not (tmp_path / "never").exists()


def test_help_and_no_arguments_still_print_help():
    assert runner.invoke(app, ["factorize", "--help"]).exit_code == 0
    res = runner.invoke(app, [])
    assert res.exit_code == 2 and "Usage" in res.output


# ------------------------------------------------------------------------------------ values the commands refuse

@pytest.fixture(scope="module")
def teacher(tiny_teacher):
    """conftest's tiny 2-layer BERT (64 positions) with MiniLM's tokenizer."""
    return tiny_teacher


@pytest.fixture(scope="module")
def ws(teacher, tmp_path_factory):
    """A workspace factorized from `teacher`; every test below fails before writing into it."""
    path = tmp_path_factory.mktemp("ws") / "ws"
    res = runner.invoke(app, ["factorize", str(teacher), "--ratio", "5", "-w", str(path)])
    assert res.exit_code == 0, res.output
    return path


@pytest.fixture()
def text(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("the cat sat on the mat and the dog ran under the tree\n" * 40)
    return path


def last_line_error(res, *needles) -> str:
    """A command that said what it prepares (loading the teacher, ...) and then failed: one `error:` line, the last."""
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], res.output
    for needle in needles:
        assert needle in lines[-1], lines[-1]
    return lines[-1]


def kron(*args, **popen):
    """`python -m kroncli ARGS` in a child process (exit status, stderr and real file descriptors as a shell has)."""
    return subprocess.Popen([sys.executable, "-m", "kroncli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


@pytest.mark.parametrize("args, needle", [
    (["--ratio", "nan"], "--ratio nan is not a finite number"),
    (["--ratio", "inf"], "--ratio inf is not a finite number"),
    (["--max-layer-ratio", "0.1"], "--max-layer-ratio 0.1 leaves no shape"),
    (["--max-layer-ratio", "nan"], "--max-layer-ratio nan leaves no shape"),
])
def test_factorize_numbers_that_plan_nothing(args, needle):
    one_line_error(runner.invoke(app, ["factorize", "--random-init", "tiny", "--plan", *args]), needle)


def test_a_max_layer_ratio_that_is_given_is_kept_or_the_ratio_refused(teacher):
    one_line_error(runner.invoke(app, ["factorize", str(teacher), "--ratio", "19", "--max-layer-ratio", "4",
                                       "--plan"]), "--ratio 19 cannot be met with --max-layer-ratio 4")
    res = runner.invoke(app, ["factorize", str(teacher), "--ratio", "2", "--max-layer-ratio", "8", "--plan", "--json"])
    assert res.exit_code == 0, res.output
    for row in json.loads(res.stdout.splitlines()[-1])["by_type"]:
        assert row["dense_params"] / row["params"] <= 8 * row["count"]  # each matrix at most 8x


@pytest.mark.parametrize("ratio", [".nan", ".inf"])
def test_recipe_ratio_that_is_not_finite(tmp_path, ratio):
    rec = tmp_path / "r.yaml"
    rec.write_text(f"random_init: tiny\nfactorize:\n  ratio: {ratio}\n")
    one_line_error(runner.invoke(app, ["run", str(rec), "-w", str(tmp_path / "ws"), "--dry-run"]),
                   "is not a finite number")


def test_layer_map_beyond_the_teachers_layers_fails_before_training(ws, text):
    res = runner.invoke(app, ["distill", "-w", str(ws), "--corpus", str(text), "--layer-map", "9,9,9",
                              "--max-steps", "1", "--max-seq-len", "32"])
    last_line_error(res, "--layer-map 9,9,9 does not fit a 2-layer student and a 2-layer teacher")
    assert not (ws / "checkpoints" / "distill").exists()


def test_a_full_disk_while_writing_the_student_is_one_line(teacher, tmp_path):
    """A real failed write: the file-size limit (RLIMIT_FSIZE) is below the student's weights, as a full disk is."""
    limit = 100_000  # config.json fits; model.safetensors (~800 KB) does not

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = kron("factorize", teacher, "--ratio", "5", "-w", tmp_path / "ws", preexec_fn=small_files)
    _, err = proc.communicate(timeout=300)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"error: could not write {tmp_path / 'ws' / 'student'} (") and "File too large" in lines[0]
    assert not (tmp_path / "ws" / "student").exists()
    assert not list(tmp_path.rglob("*.tmp"))  # the partial folder is gone


def test_recipe_that_is_not_utf8(tmp_path):
    rec = tmp_path / "latin1.yaml"
    rec.write_bytes("description: café\n".encode("latin-1"))
    one_line_error(runner.invoke(app, ["run", str(rec), "-w", str(tmp_path / "ws")]),
                   f"recipe {rec} is not UTF-8 text (byte 0xe9")


@pytest.mark.parametrize("item", ["distill.corpus=[", "data_dir=[", "finetune.weights={a: "])
def test_set_value_that_is_not_yaml(tmp_path, item):
    rec = tmp_path / "r.yaml"
    rec.write_text("random_init: tiny\n")
    one_line_error(runner.invoke(app, ["run", str(rec), "-w", str(tmp_path / "ws"), "--set", item, "--dry-run"]),
                   f"--set {item!r}: the value is not YAML")


@pytest.mark.parametrize("content, needle", [
    ("", "is empty"),
    ("# all commented out\n", "is empty"),
    ("random_init: tiny\ndistill: []\n", "recipe key distill: expected a mapping of keys, got list"),
    ("random_init: tiny\neval: [glue]\n", "recipe key eval: expected a mapping of keys, got list"),
])
def test_recipes_that_say_nothing_are_refused(tmp_path, content, needle):
    rec = tmp_path / "r.yaml"
    rec.write_text(content)
    one_line_error(runner.invoke(app, ["run", str(rec), "-w", str(tmp_path / "ws"), "--dry-run"]), needle)


def test_an_empty_section_is_still_a_section(tmp_path):
    from kroncli.recipes import load_recipe

    rec = tmp_path / "r.yaml"
    rec.write_text("random_init: tiny\ndistill:\n")
    assert load_recipe(rec).distill.corpus == []


@pytest.mark.parametrize("args", [
    ["distill", "--corpus", "x.txt"],
    ["finetune", "--task", "mrpc"],
    ["eval", "glue"],
    ["eval", "speed"],
    ["export", "--task", "mrpc", "--out", "out"],
    ["run", "RECIPE", "--dry-run"],
    ["factorize", "--random-init", "tiny"],
])
def test_a_workspace_that_is_a_regular_file(tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    Path("RECIPE").write_text("random_init: tiny\n")
    Path("notes.txt").write_text("not a workspace\n")
    res = runner.invoke(app, [*args, "-w", "notes.txt"])
    one_line_error(res, "notes.txt is a file, not a folder")
    assert Path("notes.txt").read_text() == "not a workspace\n" and "pending" not in res.output


@pytest.mark.parametrize("args", [["report", "--paper"], ["env"], ["env", "--json"]])
def test_a_reader_that_closes_stdout_early_ends_the_command_quietly(args):
    """`kron ... | head -1`: the reader has gone before the first write. Exit 141 (128 + SIGPIPE, what the shell
    reports for a Unix tool such as `yes | head -1`), no message."""
    proc = kron(*args)
    proc.stdout.close()  # the only reader: every write of the child now fails with EPIPE
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 141, err
    assert err == ""


def test_the_fast_predict_entry_point_ends_quietly_on_a_closed_pipe(kron_task_ws, tmp_path):
    require_module("onnxruntime", 'pip install -c constraints.txt -e ".[export]"')
    out = tmp_path / "export"
    res = runner.invoke(app, ["export", "-w", str(kron_task_ws), "--task", "mrpc", "--out", str(out)])
    assert res.exit_code == 0, res.output
    stdin = "".join(f"sentence number {i}\tanother sentence {i}\n" for i in range(200))
    for cmd in ([sys.executable, "-m", "kroncli", "predict", str(out)], [sys.executable, "-m", "kroncli.predict", str(out)]):
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proc.stdout.close()
        _, err = proc.communicate(stdin, timeout=300)
        assert proc.returncode == 141 and "error" not in err.lower(), err


@pytest.mark.parametrize("targets", ["[/x]", "x[a-z]y", "[bold]q"])
def test_user_text_in_an_error_is_printed_verbatim(targets):
    res = runner.invoke(app, ["factorize", "--random-init", "tiny", "--targets", targets, "--plan"])
    one_line_error(res, f"--targets {targets!r}")


def test_error_messages_are_not_rich_markup():
    from kroncli.cli.common import handle_errors
    from kroncli.errors import KronError

    @handle_errors
    def needs_extra():
        raise KronError('ONNX export needs onnx and onnxruntime: pip install "kroncli[export]"')

    mini = typer.Typer()
    mini.command()(needs_extra)
    res = runner.invoke(mini, [])
    one_line_error(res, 'pip install "kroncli[export]"')


@pytest.mark.parametrize("weight", ["hidden_mse=-1", "hidden_mse=nan", "attention_mse=-0.5"])
def test_negative_or_nan_loss_weights_are_refused(weight):
    one_line_error(runner.invoke(app, ["distill", "-w", "never", "--corpus", "x.txt", "--weight", weight]),
                   f"weight of {weight.split('=')[0]!r}")
    one_line_error(runner.invoke(app, ["finetune", "-w", "never", "--task", "mrpc", "--weight", weight]),
                   f"weight of {weight.split('=')[0]!r}")


@pytest.mark.parametrize("task", ["mrpc", "squad"])
@pytest.mark.parametrize("temperature", ["nan", "inf", "0", "-1"])
def test_temperature_must_be_positive_and_finite(task, temperature):
    one_line_error(runner.invoke(app, ["finetune", "-w", "never", "--task", task, "--temperature", temperature]),
                   f"temperature {float(temperature)} must be > 0 and finite")


def test_teacher_only_refuses_the_students_loss_weights():
    one_line_error(runner.invoke(app, ["finetune", "-w", "never", "--task", "mrpc", "--teacher-only", "--weight",
                                       "logit_kd=1"]), "--weight logit_kd=1", "--teacher-only")


def test_teacher_only_max_seq_len_beyond_the_models_positions(ws):
    res = runner.invoke(app, ["finetune", "-w", str(ws), "--task", "mrpc", "--teacher-only", "--max-seq-len", "1000"])
    last_line_error(res, "--max-seq-len 1000", "64 positions")
    assert not (ws / "tasks").exists() and not (ws / "checkpoints" / "teacher-mrpc").exists()
