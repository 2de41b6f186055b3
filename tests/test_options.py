"""One definition per option: every field of a stage's options dataclass is a CLI option and a recipe key of the
same name and default (or is listed below with the reason it is not), and a recipe's knobs reach the stage."""

from __future__ import annotations

import dataclasses

import pytest
import typer.main
from typer.testing import CliRunner

from kroncli.cli import app
from kroncli.factorize import FactorizeOptions
from kroncli.recipes import DistillSection, FactorizeSection, FinetuneSection, Recipe, _build
from kroncli.stages.distill import DistillOptions
from kroncli.stages.finetune import FinetuneOptions
from kroncli.stages.squad import SquadOptions
from kroncli.train import TrainConfig

from conftest import one_line_error

runner = CliRunner()

# (command, section): the training fields it leaves out, and the defaults it resolves per stage (None on the CLI)
TRAIN_SKIP = {"distill": ("eval_every",), "finetune": ()}
CLI_RESOLVED = {"finetune": {"lr": None, "epochs": None}, "distill": {"epochs": None}}
RECIPE_DEFAULTS = {"distill": {"lr": 1e-4}, "finetune": {"lr": 1e-4, "epochs": 3.0}}
# stage fields that are no option: set by the command itself, parsed from another spelling, or internal
NOT_OPTIONS = {"weights": "--weight NAME=VALUE / recipe weights", "task": "a recipe lists finetune.tasks",
               "teacher_only": "kron run has a teacher stage per task", "extra": "internal",
               "version": "from --task squad|squad_v2", "model": "kron factorize's argument / recipe teacher",
               "random_init": "recipe top-level key", "n_best": "SQuAD decoding: candidate spans per window"}
NOT_IN_RECIPE = {"distill": {"teacher": "the recipe's teacher is factorize's"},
                 "finetune": {"data_dir": "recipe top-level key", "teacher": "the recipe's teacher is factorize's",
                              "eval_batch_size": "scoring only", "max_seq_len": None},
                 "factorize": {}}
PER_TASK = ("init_from", "unlabelled_from")  # e.g. finetune.init_from: {mrpc: stsb}
SQUAD_ONLY = ("doc_stride", "train_file", "dev_file", "null_threshold", "n_best", "max_answer_len")
EVAL_SQUAD = ("null_threshold", "max_answer_len")  # decoding knobs: kron eval squad


def cli_params(*command: str) -> dict[str, object]:
    """name -> default of each option of a kron subcommand, as click sees it (what --help shows)."""
    click = typer.main.get_command(app)
    for name in command:
        click = click.commands[name]
    return {p.name: (p.default if not callable(p.default) else p.default()) for p in click.params}


def section_defaults(section) -> dict[str, object]:
    out = {}
    for f in dataclasses.fields(section):
        out[f.name] = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return out


def field_defaults(cls) -> dict[str, object]:
    return {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
            for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("command,section", [("distill", DistillSection), ("finetune", FinetuneSection)])
def test_every_training_field_is_an_option_and_a_recipe_key(command, section):
    cli, recipe = cli_params(command), section_defaults(section)
    for f in dataclasses.fields(TrainConfig):
        if "help" not in f.metadata or f.name in TRAIN_SKIP[command]:
            continue
        assert f.name in cli, f"kron {command} lacks --{f.name.replace('_', '-')}"
        want = CLI_RESOLVED[command].get(f.name, RECIPE_DEFAULTS[command].get(f.name, f.default))
        assert cli[f.name] == want, f"kron {command} --{f.name}: default {cli[f.name]!r}, TrainConfig {want!r}"
        if f.metadata["recipe"]:
            assert f.name in recipe, f"recipe section {command} lacks {f.name}"
            want = RECIPE_DEFAULTS[command].get(f.name, f.default)
            assert recipe[f.name] == want, f"recipe key {command}.{f.name}: {recipe[f.name]!r}, TrainConfig {want!r}"


@pytest.mark.parametrize("command,cls,section", [("distill", DistillOptions, DistillSection),
                                                 ("finetune", SquadOptions, FinetuneSection),
                                                 ("factorize", FactorizeOptions, FactorizeSection)])
def test_every_stage_field_is_an_option_and_a_recipe_key(command, cls, section):
    cli, recipe = cli_params(command), section_defaults(section)
    for name, default in field_defaults(cls).items():
        if name in NOT_OPTIONS:
            continue
        if name in EVAL_SQUAD:  # decoding, not training: an option of kron eval squad
            assert name in cli_params("eval", "squad"), f"kron eval squad lacks --{name.replace('_', '-')}"
            continue
        assert name in cli, f"kron {command} lacks --{name.replace('_', '-')}"
        if cli[name] is not None and name != "layers":  # None on the CLI: resolved per task kind (max_seq_len)
            assert cli[name] == default, f"kron {command} --{name}: default {cli[name]!r}, {cls.__name__} {default!r}"
        if name in NOT_IN_RECIPE[command] or name in SQUAD_ONLY:
            continue
        assert name in recipe, f"recipe section {command} lacks {name}"
        if name in PER_TASK:  # the recipe holds one value per task
            assert recipe[name] == {}, f"recipe key {command}.{name} is no per-task mapping"
            continue
        assert recipe[name] == default or name in ("corpus", "max_seq_len"), \
            f"recipe key {command}.{name}: {recipe[name]!r}, {cls.__name__} {default!r}"


def test_old_recipe_without_the_new_keys_loads_with_the_old_behaviour():
    r = _build(Recipe, {"distill": {"corpus": ["a.txt"], "max_steps": 3}, "finetune": {"tasks": ["mrpc"]}}, "")
    assert (r.distill.grad_accum, r.distill.weight_decay, r.distill.keep, r.distill.layer_map) == (1, 0.01, 2, None)
    assert (r.finetune.eval_every, r.finetune.warmup_ratio, r.finetune.max_grad_norm) == (None, 0.1, 1.0)


def test_recipe_knobs_reach_train_config_and_stage_options(monkeypatch, tmp_path):
    """kron run builds TrainConfig and the options from the section by field name: a knob set in the recipe arrives."""
    import kroncli.run as run
    import kroncli.stages.distill as sd
    import kroncli.stages.finetune as sf

    seen = {}
    monkeypatch.setattr(sd, "run_distill", lambda ws, opts, cfg, *a: seen.update(d=(opts, cfg)) or
                        {"steps": 0, "final_loss": None})
    monkeypatch.setattr(sf, "finetune_student", lambda ws, opts, cfg, *a: seen.update(f=(opts, cfg)) or
                        {"steps": 0, "eval": {}})
    knobs = {"weight_decay": 0.0, "warmup_ratio": 0.25, "max_grad_norm": 0.5, "grad_accum": 4, "keep": 5,
             "log_every": 3, "layer_map": "uniform"}
    r = _build(Recipe, {"distill": {"corpus": ["a.txt"], "attention": "probs", **knobs},
                        "finetune": {"tasks": ["mrpc"], "eval_every": 7, **knobs}}, "")
    stage = next(s for s in run.stages(r) if s.kind == "finetune")
    run._distill(r, None, run.Stage("distill", "distill"), False, False, print, [])
    run._finetune(r, None, stage, False, False, print, [])
    for key in ("d", "f"):
        opts, cfg = seen[key]
        assert {k: getattr(cfg, k) for k in knobs if k != "layer_map"} == {k: v for k, v in knobs.items()
                                                                           if k != "layer_map"}
        assert opts.layer_map == "uniform"
    assert seen["d"][0].attention == "probs" and seen["f"][1].eval_every == 7 and seen["f"][1].lr == 1e-4


def test_cli_passes_the_new_knobs_to_train_config(monkeypatch, tmp_path):
    import kroncli.stages.distill as sd

    seen = {}
    monkeypatch.setattr(sd, "run_distill", lambda ws, opts, cfg, *a: seen.update(cfg=cfg) or
                        {"steps": 0, "final_loss": None, "is_main": False})
    res = runner.invoke(app, ["distill", "-w", str(tmp_path / "ws"), "--corpus", "x.txt", "--weight-decay", "0",
                              "--warmup-ratio", "0.2", "--max-grad-norm", "0", "--grad-accum", "2", "--keep", "3"])
    assert res.exit_code == 0, res.output
    cfg = seen["cfg"]
    assert (cfg.weight_decay, cfg.warmup_ratio, cfg.max_grad_norm, cfg.grad_accum, cfg.keep, cfg.lr, cfg.epochs) == \
        (0.0, 0.2, 0.0, 2, 3, 1e-4, 1.0)


@pytest.mark.parametrize("args,needle", [(["--warmup-ratio", "1.5"], "--warmup-ratio 1.5 must be below 1"),
                                         (["--weight-decay", "-1"], "--weight-decay -1 must be at least 0")])
def test_new_knobs_out_of_range_are_one_line_errors(tmp_path, args, needle):
    res = runner.invoke(app, ["distill", "-w", str(tmp_path / "ws"), "--corpus", "x.txt", *args])
    one_line_error(res, needle)


@pytest.mark.parametrize("command", ["distill", "finetune", "factorize"])
def test_help_keeps_its_example(command):
    res = runner.invoke(app, [command, "--help"])
    assert res.exit_code == 0 and "Example: kron " + command in res.output
