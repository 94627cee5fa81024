"""An experiment killed mid-run (SIGKILL) and run again resumes the run from its last complete checkpoint.

Two real ``python -m peftsum.cli experiment`` processes on the tiny mT5 and the bundled English
rows: one runs through, one is killed once its first checkpoint is complete and is then started
again with the same command (what the interrupt message tells the user to do). The resumed run
must say it resumed, and its final weights must equal the uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from peftsum.training.trainer import COMPLETE_MARKER

pytestmark = pytest.mark.slow

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
STEPS, SAVE_AT = 12, 3
RUN = "lora-english-s42"


def _weights(run):
    files = sorted((run / "model").glob("*.safetensors"))
    assert len(files) == 1
    return load_file(str(files[0]))


def test_rerun_of_a_killed_experiment_resumes_the_interrupted_run(tiny_model_dir, tmp_path):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(
        f"name: t\nmodel: {tiny_model_dir}\nmethods: [lora]\nlanguages: [english]\n"
        f"train: {{max_steps: {STEPS}, save_steps: {SAVE_AT}, eval_steps: 0, batch_size: 2, train_samples: 5,\n"
        "        val_samples: 2, max_source_length: 64, max_target_length: 16, logging_steps: 1}\n"
        "generation: {num_beams: 1, max_new_tokens: 4, no_repeat_ngram_size: 0}\n"
        "eval_samples: 2\nbaselines: false\nreport: false\n"
    )

    def cmd(out):
        return [sys.executable, "-m", "peftsum.cli", "experiment", str(cfg), "--output-dir", str(out)]

    ref_dir, killed_dir = tmp_path / "ref", tmp_path / "killed"
    ref = subprocess.Popen(cmd(ref_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=ENV, text=True)
    killed = subprocess.Popen(cmd(killed_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    run = killed_dir / "runs" / RUN
    marker = run / "checkpoints" / f"checkpoint-{SAVE_AT}" / COMPLETE_MARKER
    deadline = time.monotonic() + 300
    while not marker.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    assert marker.exists() and not (run / "metrics.json").exists()  # killed mid-training
    out, _ = ref.communicate(timeout=300)
    assert ref.returncode == 0, out[-3000:]

    again = subprocess.run(cmd(killed_dir), capture_output=True, text=True, env=ENV, timeout=300)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert "resuming from checkpoint-" in again.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["resumed_from_step"] is not None and metrics["resumed_from_step"] >= SAVE_AT
    assert metrics["global_step"] == STEPS
    wa, wb = _weights(ref_dir / "runs" / RUN), _weights(run)
    assert wa.keys() == wb.keys()
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) <= 1e-5
    assert json.loads((run / "status.json").read_text())["status"] == "done"
    assert (run / "eval" / "english" / "results.json").is_file()


def test_interrupt_message_names_what_to_type():
    from peftsum.cli import _INTERRUPTED

    assert "--resume" in _INTERRUPTED["train_cmd"]
    assert "same command again" in _INTERRUPTED["experiment_cmd"] and "--resume" not in _INTERRUPTED["experiment_cmd"]
