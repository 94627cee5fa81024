"""Experiment YAMLs: every shipped config loads and expands to the runs it promises; bad keys are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from peftsum.errors import ConfigError
from peftsum.experiments.config import expand_runs, load_experiment

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load_and_start_with_the_command(path):
    cfg = load_experiment(path)
    assert path.read_text().startswith("#") and f"peftsum experiment configs/{path.name}" in path.read_text()
    assert expand_runs(cfg, Path("/tmp/x"), cfg.model)


def test_seed_config_is_the_seed_study(tmp_path):
    cfg = load_experiment(Path(__file__).parents[1] / "configs" / "seed_mt5_small.yaml")
    runs = {r.run_id: r.train for r in expand_runs(cfg, tmp_path, cfg.model)}
    assert set(runs) == {"full-english-s42", "full-russian-s42", "lora-english-s42", "lora-russian-s42"}
    assert runs["lora-russian-s42"].num_epochs == 5 and runs["lora-english-s42"].num_epochs == 3
    lora = runs["lora-english-s42"]
    assert (lora.lora_r, lora.lora_alpha, lora.lora_dropout, lora.target_modules) == (8, 16, 0.1, ["q", "v"])
    assert (lora.learning_rate, runs["full-english-s42"].learning_rate) == (1e-4, 5e-5)
    assert (lora.batch_size, lora.max_source_length, lora.max_target_length) == (4, 512, 128)


def test_rank_sweep_has_equal_budgets(tmp_path):
    cfg = load_experiment(Path(__file__).parents[1] / "configs" / "lora_rank_sweep.yaml")
    runs = expand_runs(cfg, tmp_path, cfg.model)
    assert sorted({r.train.lora_r for r in runs if r.train.method == "lora"}) == [4, 8, 16, 32, 64]
    assert len({(r.train.num_epochs, r.train.train_samples, r.train.batch_size) for r in runs}) == 1


def test_cross_lingual_runs_evaluate_on_other_scripts(tmp_path):
    cfg = load_experiment(Path(__file__).parents[1] / "configs" / "cross_lingual.yaml")
    run = expand_runs(cfg, tmp_path, cfg.model)[0]
    assert run.train.languages == ["english"]
    assert run.eval_languages == ["english", "russian", "hindi", "arabic", "chinese_simplified", "amharic", "thai"]


def test_unknown_keys_are_named_with_the_valid_ones(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nlanguages: [english]\nmethds: [lora]\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown key 'methds' \(did you mean 'methods'\?\); valid keys: name"):
        load_experiment(bad)
    bad.write_text("name: x\nlanguages: [english]\ntrain: {lerning_rate: 1}\n")
    with pytest.raises(ConfigError, match="unknown key 'lerning_rate'"):
        load_experiment(bad)
    bad.write_text("name: x\nlanguages: [english]\nmethods: [{method: lora, rank: 4}]\n")
    with pytest.raises(ConfigError, match="unknown key 'rank'"):
        load_experiment(bad)
    bad.write_text("name: [x\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: invalid YAML"):
        load_experiment(bad)


def test_overrides_apply_on_top_of_the_default():
    cfg = load_experiment(None, ["train.max_steps=7", "languages=[hindi]"])
    assert cfg.train["max_steps"] == 7 and cfg.languages == ["hindi"]
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_experiment(None, ["train.max_steps"])
