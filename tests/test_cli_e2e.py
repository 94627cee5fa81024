"""The CLI end to end on the tiny model and the bundled rows: train, evaluate, generate, experiment."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

PEFTSUM = [sys.executable, "-m", "peftsum"]


def run_cli(*args, env=None, timeout=900):
    """Run ``python -m peftsum ARGS`` and return the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*PEFTSUM, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=full_env)


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "lora-en"
    res = run_cli("train", "--method", "lora", "--model", tiny_model_dir, "-l", "english", "--output-dir", out,
                  "--max-steps", 3, "--batch-size", 2, "--max-source-length", 64, "--max-target-length", 24,
                  "--learning-rate", 5e-3)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def test_train_writes_adapter_and_run_record(lora_run):
    metrics = json.loads((lora_run / "metrics.json").read_text())
    assert (lora_run / "model" / "adapter_config.json").is_file()
    assert (lora_run / "model" / "adapter_model.safetensors").is_file()
    # the size on disk is read from the files written
    size = (lora_run / "model" / "adapter_model.safetensors").stat().st_size / 1e6
    assert metrics["checkpoint_size_mb"] == pytest.approx(size)
    assert 0 < metrics["trainable_params"] < metrics["total_params"]
    assert metrics["trainable_pct"] == pytest.approx(100 * metrics["trainable_params"] / metrics["total_params"])
    for key in ("train_runtime_s", "peak_rss_mb", "train_loss", "eval_loss"):
        assert metrics[key] > 0, key
    log = [json.loads(line) for line in (lora_run / "training_log.jsonl").read_text().splitlines()]
    steps = [row for row in log if "loss" in row]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert all({"loss", "learning_rate", "elapsed_s"} <= set(r) for r in steps)


def test_train_refuses_to_overwrite_and_errors_are_one_line(lora_run, tiny_model_dir):
    before = (lora_run / "metrics.json").read_text()
    res = run_cli("train", "--method", "lora", "--model", tiny_model_dir, "-l", "english", "--output-dir", lora_run)
    assert res.returncode == 2 and "--overwrite" in res.stderr and "Traceback" not in res.stderr
    assert (lora_run / "metrics.json").read_text() == before
    res = run_cli("train", "--method", "lora", "--model", tiny_model_dir, "-l", "klingon", "--output-dir",
                  lora_run.parent / "x")
    assert res.returncode == 2 and "unknown language 'klingon'" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_evaluate_writes_scores_and_predictions(lora_run, tmp_path):
    out = tmp_path / "eval" / "results.json"
    res = run_cli("evaluate", "--model-path", lora_run, "-l", "english", "--output-file", out, "--test-samples", 3,
                  "--num-beams", 2, "--max-new-tokens", 12)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(out.read_text())
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert set(result[key]) >= {"f1", "precision", "recall", "ci_low", "ci_high"}
        assert 0 <= result[key]["f1"] <= 100
    assert result["split"] == "validation" and result["num_examples"] == 3
    assert result["generation"]["max_new_tokens"] == 12
    preds = [json.loads(line) for line in (out.parent / "predictions.jsonl").read_text().splitlines()]
    assert [set(p) for p in preds] == [{"id", "reference", "prediction"}] * 3
    # an existing result is not overwritten without --overwrite
    res = run_cli("evaluate", "--model-path", lora_run, "-l", "english", "--output-file", out)
    assert res.returncode == 2 and "--overwrite" in res.stderr


def test_generate_writes_article_reference_prediction(lora_run, tmp_path):
    out = tmp_path / "samples.txt"
    res = run_cli("generate", "--model-path", lora_run, "-l", "russian", "--num-samples", 2, "--output-file", out,
                  "--num-beams", 1, "--max-new-tokens", 8)
    assert res.returncode == 0, res.stderr[-3000:]
    text = out.read_text(encoding="utf-8")
    assert text.count("ARTICLE:") == 2 and text.count("REFERENCE:") == 2 and text.count("PREDICTION:") == 2


def test_default_experiment_end_to_end_at_reduced_size(tiny_model_dir, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copytree(tiny_model_dir, home / "tiny-mt5")  # the default experiment builds it if missing
    exp = tmp_path / "exp"
    reduced = ["--set", "pretrain_steps=4", "--set", "train.max_steps=3", "--set", "train.eval_steps=3",
               "--set", "train.max_source_length=64", "--set", "eval_samples=2",
               "--set", "generation.max_new_tokens=8", "--set", "generation.num_beams=2"]
    res = run_cli("experiment", "--output-dir", exp, *reduced, env={"PEFTSUM_HOME": str(home)})
    assert res.returncode == 0, res.stderr[-3000:]
    runs = sorted(p.name for p in (exp / "runs").iterdir())
    assert runs == [f"{m}-{lang}-s42" for m in ("full", "ia3", "lora") for lang in ("english", "russian")]
    for run in runs:
        assert json.loads((exp / "runs" / run / "status.json").read_text())["status"] == "done"
    report = (exp / "report.md").read_text(encoding="utf-8")
    assert "| method |" in report and "russian" in report and "english" in report
    pngs = list((exp / "figures").glob("*.png"))
    assert any("loss" in p.name for p in pngs) and any("rouge" in p.name for p in pngs)
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert (home / "tiny-mt5-pt4-lead-s0" / "peftsum_pretrain.json").is_file()
    # the scorer check: run files for both languages and all 45 bundled ones, shown in the report
    ru = json.loads((exp / "seed_scorer" / "russian.json").read_text(encoding="utf-8"))
    assert {"LEAD-1", "oracle", "full-russian-s42", "lora-russian-s42", "ia3-russian-s42"} <= set(ru["systems"])
    assert len(json.loads((exp / "seed_scorer" / "all_languages.json").read_text(encoding="utf-8"))["languages"]) == 45
    assert "Scorer check: russian" in report and "seed_scorer_languages.png" in report
    # each run trained in its own process: its peak RSS is its own
    pids = {json.loads((exp / "runs" / r / "status.json").read_text()).get("pid") for r in runs}
    assert len(pids) == 6 and os.getpid() not in pids
    # running it again skips every finished run
    again = run_cli("experiment", "--output-dir", exp, *reduced, env={"PEFTSUM_HOME": str(home)})
    assert again.returncode == 0 and again.stdout.count("done already, skipped") == 6
