"""`peftsum train`'s options come from TrainConfig: every field is a documented flag, `--set` works."""

from __future__ import annotations

import dataclasses
import json

import typer
from typer.testing import CliRunner

from peftsum.cli import app
from peftsum.config import TrainConfig, field_docs, train_config_from
from peftsum.options import TRAIN_FLAGS, config_options, help_text

FLAGS_BEFORE = {  # the flags `peftsum train` had when it listed them by hand (README and tests use them)
    "--config", "--method", "--model", "--language", "-l", "--data", "--output-dir", "--num-epochs", "--max-steps",
    "--batch-size", "--gradient-accumulation-steps", "--learning-rate", "--lr", "--weight-decay", "--optimizer",
    "--lr-scheduler", "--warmup-ratio", "--label-smoothing", "--max-grad-norm", "--train-samples", "--val-samples",
    "--max-source-length", "--max-target-length", "--source-prefix", "--lora-r", "--lora-alpha", "--lora-dropout",
    "--target-modules", "--num-virtual-tokens", "--language-sampling-alpha", "--seed", "--bf16", "--no-bf16",
    "--fp16", "--gradient-checkpointing", "--group-by-length", "--no-group-by-length", "--logging-steps",
    "--eval-steps", "--eval-rouge", "--eval-rouge-samples", "--save-steps", "--save-total-limit", "--load-best",
    "--early-stopping-patience", "--tensorboard", "--resume", "--overwrite", "--dry-run",
}


def _train_command():
    return typer.main.get_command(app).commands["train"]


def test_every_field_is_a_documented_option_and_the_old_flags_stay():
    params = {p.name: p for p in _train_command().params}
    docs = field_docs(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        assert field.name in params, field.name
        assert docs[field.name] and params[field.name].help.startswith(help_text(docs[field.name], set(docs), field.name))
        assert params[field.name].default is None  # not given = the config file's value or the field default
    flags = {flag for p in params.values() for flag in [*p.opts, *p.secondary_opts]}
    assert FLAGS_BEFORE <= flags, FLAGS_BEFORE - flags
    assert "--set" in flags and "--no-fp16" not in flags  # a field defaulting to false is a plain switch


def test_a_new_field_becomes_an_option():
    @dataclasses.dataclass
    class Grown(TrainConfig):
        warmup_steps: int = 0
        """Linear warmup in optimizer steps."""

    new = [p for p in config_options(Grown, TRAIN_FLAGS) if p.name == "warmup_steps"]
    assert len(new) == 1 and new[0].default.param_decls == ("--warmup-steps",)
    assert new[0].default.help == "Linear warmup in optimizer steps. (default: 0)"


def test_set_fills_the_config_under_the_flags():
    cfg = train_config_from(None, {"batch_size": 2, "seed": None, "max_steps": 5},
                            ["seed=7", "max_steps=12", "languages=[hindi, urdu]", "target_modules=q,v"])
    assert (cfg.seed, cfg.batch_size, cfg.max_steps) == (7, 2, 5)  # the flag (max_steps 5) wins over --set
    assert cfg.languages == ["hindi", "urdu"] and cfg.target_modules == ["q", "v"]


def test_exponent_floats_read_as_numbers_in_set_and_in_yaml(tmp_path):
    """PyYAML (YAML 1.1) reads ``1e-3`` as a string; peftsum's loader reads it as the float 0.001 (YAML 1.2),
    which a float field takes and an int field still refuses."""
    import pytest

    from peftsum.errors import ConfigError

    config = tmp_path / "c.yaml"
    config.write_text("learning_rate: 1e-3\nwarmup_ratio: 5E-2\n", encoding="utf-8")
    cfg = train_config_from(config, {}, ["label_smoothing=1e-1"])
    assert (cfg.learning_rate, cfg.warmup_ratio, cfg.label_smoothing) == (0.001, 0.05, 0.1)
    with pytest.raises(ConfigError, match=r"max_steps must be int, got 1000\.0"):
        train_config_from(None, {}, ["max_steps=1e3"])


def test_train_set_errors_are_one_line_naming_the_key(tmp_path):
    runner = CliRunner()
    bad_key = runner.invoke(app, ["train", "--set", "max_stepz=3", "--output-dir", str(tmp_path / "r")])
    assert bad_key.exit_code == 2
    assert "--set: unknown key 'max_stepz' (did you mean 'max_steps'?)" in bad_key.output
    assert len(bad_key.output.strip().splitlines()) == 1 and "Traceback" not in bad_key.output
    reached = runner.invoke(app, ["train", "--set", "max_steps=-7", "--output-dir", str(tmp_path / "r")])
    assert reached.exit_code == 2 and "max_steps (--max-steps)" in reached.output and "-7" in reached.output
    assert not (tmp_path / "r").exists()


def test_train_set_max_steps_trains_that_many_steps(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", "--model", str(tiny_model_dir), "--set", "max_steps=2", "--eval-steps", "0",
                                   "--train-samples", "8", "--val-samples", "2", "--max-source-length", "32",
                                   "--max-target-length", "8", "--batch-size", "2", "--output-dir", str(out)])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 2 and metrics["config"]["max_steps"] == 2
