"""``peftsum.training.memory``: the estimate against the measured peak of live tensors, and ``--dry-run``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from peftsum.config import TrainConfig


@pytest.mark.parametrize("method", ["full", "lora"])
def test_estimate_is_within_25_percent_of_the_measured_peak(tiny_model_dir, tmp_path, method):
    from peftsum.training.memory import measure_training_step

    # bundled articles and summaries are all longer than 64 / 16 tiny-tokenizer tokens: full-length batches
    cfg = TrainConfig(model=str(tiny_model_dir), method=method, output_dir=str(tmp_path / method), max_steps=1,
                      batch_size=4, max_source_length=64, max_target_length=16, train_samples=4, val_samples=1,
                      bf16=False, eval_steps=0)
    measured, est = measure_training_step(cfg)
    assert est.peak == pytest.approx(measured, rel=0.25), (est, measured)
    if method == "lora":
        assert est.gradients < 0.02 * est.params and est.optimizer < 0.05 * est.params
    else:
        assert est.gradients == est.params and est.optimizer == 2 * est.params  # fp32 grads, AdamW's 2 states


def _cli(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "peftsum", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def test_train_dry_run_prints_each_world_size_and_touches_nothing(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    res = _cli("train", "--dry-run", "--model", tiny_model_dir, "--method", "full", "--output-dir", out,
               "--batch-size", 4, "--max-source-length", 64, "--max-target-length", 16, "--no-bf16")
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [line.split() for line in res.stdout.splitlines() if line.startswith("full ")]
    assert [(r[1], r[2]) for r in rows] == [("1", "-"), ("2", "DDP"), ("4", "DDP"), ("8", "DDP"),
                                            ("2", "FSDP"), ("4", "FSDP"), ("8", "FSDP")]
    assert all("fits (cpu" in line for line in res.stdout.splitlines() if line.startswith("full "))
    assert "batch 4 per device, 64/16 tokens, fp32, adamw" in res.stdout
    assert not out.exists()


def test_experiment_dry_run_lists_every_method(tmp_path):
    res = _cli("experiment", "--dry-run", "--output-dir", tmp_path / "exp")
    assert res.returncode == 0, res.stderr[-2000:]
    methods = {line.split()[0] for line in res.stdout.splitlines() if line.split()[:1] and line.split()[-1:] != []
               and " fits " in f" {line} "}
    assert {"full", "lora", "ia3"} <= methods
    assert not (tmp_path / "exp").exists()
