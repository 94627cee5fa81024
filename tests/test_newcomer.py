"""A newcomer's first hour (issue 17): ambiguous names, range checks, quiet choices made loud,
validation that locates every problem, and terminal output that fits and reads naturally.

Real bundled rows and the tiny mT5; the CLI through typer's runner (one process, no mocks)."""

from __future__ import annotations

import json

import pytest
from rich.console import Console
from typer.testing import CliRunner

from peftsum.cli import app
from peftsum.data.xlsum import sample_dir

runner = CliRunner()
WIDE = {"COLUMNS": "400"}


def invoke(*args, env=WIDE):
    return runner.invoke(app, [str(a) for a in args], env=env)


# --------------------------------------------------------------------------- names
def test_tiny_next_to_a_local_tiny_folder_is_an_error_that_asks_which(tmp_path, monkeypatch):
    from peftsum.errors import ConfigError
    from peftsum.experiments.config import ExperimentConfig
    from peftsum.experiments.runner import resolve_base_model

    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").mkdir()
    res = invoke("train", "--model", "tiny", "--method", "lora", "--output-dir", tmp_path / "run", "--max-steps", 1)
    assert res.exit_code == 2, res.output
    assert "both the built-in" in res.output and "./tiny" in res.output and "which one is meant" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="which one is meant"):
        resolve_base_model(ExperimentConfig(model="tiny"), log=lambda *_: None)


# --------------------------------------------------------------------------- ranges
@pytest.mark.parametrize("flag,value,message", [
    ("--max-steps", -5, "(--max-steps) must be >= 1"),
    ("--num-epochs", -1, "(--num-epochs) must be >= 0"),
    ("--batch-size", 0, "(--batch-size) must be >= 1"),
    ("--lr", -1e-3, "(--learning-rate) must be > 0"),  # --lr is --learning-rate's short name
    ("--lora-r", 0, "(--lora-r) must be >= 1"),
    ("--lora-dropout", 1.5, "(--lora-dropout) must be in [0, 1)"),
    ("--max-source-length", 0, "(--max-source-length) must be >= 1"),
    ("--warmup-ratio", 2, "(--warmup-ratio) must be in [0, 1)"),
    ("--language-sampling-alpha", 3, "(--language-sampling-alpha) must be in [0, 1]"),
])
def test_training_numbers_are_range_checked_before_anything_loads(tmp_path, flag, value, message):
    res = invoke("train", "--model", tmp_path / "no-model", "--output-dir", tmp_path / "run", flag, value)
    assert res.exit_code == 2 and message in res.output, res.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args,message", [
    (["--split", "train"], "'train' is not one of 'test', 'validation'"),
    (["--num-beams", "0"], "--num-beams"),
    (["--max-new-tokens", "0"], "--max-new-tokens"),
    (["--batch-size", "0"], "--batch-size"),
    (["--test-samples", "0"], "--test-samples"),
])
def test_evaluate_options_are_checked_at_parse_time(tmp_path, args, message):
    res = invoke("evaluate", "--model-path", tmp_path, "-l", "english", "--output-file", tmp_path / "r.json", *args)
    assert res.exit_code == 2 and message in res.output, res.output


def test_experiment_generation_settings_are_checked(tmp_path):
    from peftsum.errors import ConfigError
    from peftsum.experiments.config import load_experiment

    path = tmp_path / "exp.yaml"
    path.write_text("methods: [lora]\nlanguages: [english]\ngeneration: {num_beams: 0}\n")
    with pytest.raises(ConfigError, match="generation.*num_beams must be an integer >= 1"):
        load_experiment(path)
    path.write_text("methods: [lora, {method: full, lora_dropout: 2}]\nlanguages: [english]\ntrain: {max_steps: 5}\n")
    with pytest.raises(ConfigError, match=r"\(methods: full\): lora_dropout \(--lora-dropout\) must be in \[0, 1\), got 2"):
        load_experiment(path)
    path.write_text("methods: [lora]\nlanguages: [english]\ntrain: {max_steps: -5}\n")
    with pytest.raises(ConfigError, match=r"max_steps \(--max-steps\) must be >= 1"):
        load_experiment(path)
    load_experiment(None)  # the embedded demo passes


def test_option_a_method_does_not_read_is_named_as_ignored(tiny_model_dir, tmp_path):
    from peftsum.config import TrainConfig
    from peftsum.training.trainer import build_trainer

    lines = []
    build_trainer(TrainConfig(model=str(tiny_model_dir), method="full", lora_r=16, num_virtual_tokens=5, max_steps=1,
                              output_dir=str(tmp_path / "run"), train_samples=2, val_samples=1), log=lines.append)
    assert "warning: --lora-r does not apply to full; ignored" in lines
    assert "warning: --num-virtual-tokens does not apply to full; ignored" in lines
    lines.clear()
    build_trainer(TrainConfig(model=str(tiny_model_dir), method="lora", lora_r=16, max_steps=1,
                              output_dir=str(tmp_path / "run2"), train_samples=2, val_samples=1), log=lines.append)
    assert not [line for line in lines if line.startswith("warning: --lora-r")]


def test_split_fallback_is_said_on_the_console(tiny_model_dir, tmp_path):
    res = invoke("evaluate", "--model-path", tiny_model_dir, "-l", "russian", "--output-file", tmp_path / "r.json",
                 "--test-samples", 1, "--num-beams", 1, "--max-new-tokens", 3)
    assert res.exit_code == 0, res.output
    assert "note: russian has no test rows in --data sample; using the validation split" in res.output
    assert json.loads((tmp_path / "r.json").read_text())["split"] == "validation"


def test_data_stats_names_its_tokenizer(tiny_model_dir):
    res = invoke("data", "stats", "-l", "hindi", "--tokenizer", tiny_model_dir)
    assert res.exit_code == 0, res.output
    assert f"token counts use the tokenizer of {tiny_model_dir}" in res.output


# --------------------------------------------------------------------------- data validate
def test_validate_locates_every_problem_on_real_rows(tmp_path):
    rows = [json.loads(line) for line in (sample_dir() / "english" / "train.jsonl").read_text().splitlines()]
    lines = [json.dumps(rows[0]),                                      # 1 fine
             json.dumps(dict(rows[1], text=None)),                      # 2 null text
             json.dumps(rows[2])[:-1],                                  # 3 cut off: error at the line's end
             json.dumps({k: v for k, v in rows[3].items() if k != "summary"}),  # 4 missing summary
             json.dumps(dict(rows[4], text=" ")),                       # 5 empty text
             json.dumps(dict(rows[0], text=None, id="x"))]              # 6 null text again
    path = tmp_path / "english_train.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    res = invoke("data", "validate", path)
    out = res.output
    assert res.exit_code == 2, out
    assert f"{path}: 1 valid row, 4 dropped, 1 malformed line" in out
    assert f"{path}:3:{len(lines[2]) + 1}: invalid JSON: Expecting ',' delimiter" in out  # not column 1
    assert "dropped 2 rows: null text (lines 2, 6)" in out  # null is null, not "missing field"
    assert "dropped 1 row: missing field 'summary' (line 4)" in out
    assert "dropped 1 row: empty text (line 5)" in out
    assert out.strip().splitlines()[-1].startswith("error: 1 malformed line")
    # a load names the same column
    from peftsum.data.xlsum import load_split
    from peftsum.errors import DataError

    with pytest.raises(DataError, match=f"line 3, column {len(lines[2]) + 1}:"):
        load_split("english", "train", tmp_path)


def test_validate_exits_nonzero_on_drops_unless_allowed(tmp_path):
    rows = (sample_dir() / "english" / "train.jsonl").read_text().splitlines()
    path = tmp_path / "x.jsonl"
    path.write_text("\n".join(rows[:2] + [json.dumps(dict(json.loads(rows[2]), summary=""))]) + "\n")
    assert invoke("data", "validate", path).exit_code == 2
    res = invoke("data", "validate", path, "--allow-drops")
    assert res.exit_code == 0 and "dropped 1 row: empty summary (line 3)" in res.output
    assert invoke("data", "validate", sample_dir() / "english").exit_code == 0


# --------------------------------------------------------------------------- tables and sentences
def _lines_at_80(*args):
    res = invoke(*args, env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    return res.output.splitlines()


@pytest.mark.parametrize("args", [["methods"], ["data", "languages"]])
def test_tables_fit_80_columns_without_cutting_values(args):
    lines = _lines_at_80(*args)
    table = [line for line in lines if line[:1] in "┏┃┡│└"]
    assert table and max(len(line) for line in table) <= 80
    assert "…" not in "\n".join(lines)
    if args == ["methods"]:
        assert any("target_modules" in line for line in table)
        assert any("q,k,v,o,wi_0,wi_1,wo" in line for line in table)  # adalora's targets, whole


def test_score_and_evaluate_print_one_score_table_that_fits():
    from peftsum.display import print_scores, score_table
    from peftsum.metrics import score_texts

    rows = [json.loads(line) for line in (sample_dir() / "english" / "validation.jsonl").read_text().splitlines()]
    other = score_texts([r["text"][:100] for r in rows], [r["summary"] for r in rows], "english", n_resamples=50)
    result = score_texts([r["title"] for r in rows], [r["summary"] for r in rows], "english", n_resamples=50)
    from peftsum.metrics.bootstrap import compare_systems

    result["paired"] = compare_systems(result, other, n_resamples=50, seed=0)
    a, b = Console(width=80, record=True), Console(width=80, record=True)
    print_scores(a, result)  # peftsum evaluate
    b.print(score_table(result))  # peftsum score
    text = a.export_text()
    assert text == b.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80 and "…" not in text
    assert "ROUGE-Lsum" in text and "ΔF1" in text


@pytest.mark.parametrize("counts,expected", [
    ((1, 0, 0, 1), "Run: 1, a single training run (metrics.json, no experiment status.json)."),
    ((1, 1, 0, 0), "Run: 1, done."),
    ((4, 4, 0, 0), "Runs: 4, all done."),
    ((3, 2, 1, 0), "Runs: 3 (2 done, 1 failed)."),
])
def test_run_counts_read_naturally(counts, expected):
    from peftsum.reporting.report import run_counts

    assert run_counts(*counts) == expected


def test_cost_sentence_never_says_one_times_slower():
    from peftsum.reporting.analysis import EfficiencyRow
    from peftsum.reporting.summary import efficiency_sentence

    full = EfficiencyRow("full", ("english",), [], {"train_runtime_s": [0.93], "trainable_params": [1000],
                                                    "checkpoint_size_mb": [4.0], "tokens_per_second": [100.0]})
    lora = EfficiencyRow("lora", ("english",), [], {"train_runtime_s": [0.90], "trainable_params": [10],
                                                    "checkpoint_size_mb": [3.9], "tokens_per_second": [104.0]})
    text = efficiency_sentence(lora, full)
    assert "1.0×" not in text and "about as fast to train" in text and "about the same size on disk" in text
    slow = EfficiencyRow("lora", ("english",), [], {"train_runtime_s": [1.9]})
    assert "2.0× slower to train" in efficiency_sentence(slow, full)
