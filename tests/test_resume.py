"""``peftsum train --resume`` after a SIGKILL, incomplete checkpoints, and determinism across processes.

Every run here is a real ``python -m peftsum.cli train`` process on the tiny mT5 and the bundled
English rows (5 rows, batch 2: 3 steps per epoch, so the kill after step 5 lands mid-epoch and
the resumed run must replay the data order, dropout RNG, optimizer and LR schedule). The
processes that do not depend on each other run side by side to keep the wall time down.

Precision: these runs follow ``PEFTSUM_BF16`` (CI runs this file with 0 and with 1). The tolerance is
1e-5 in both: a resumed run replays the same operations in the same order on the same machine, and
bf16 rounding is deterministic, so the only slack needed is for fp32 state re-read from disk (the
measured differences are 0 in both precisions; docs/precision.md).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from peftsum.training.trainer import COMPLETE_MARKER, latest_complete_checkpoint

STEPS, SAVE_AT = 10, 5
ARGS = ["--language", "english", "--data", "sample", "--max-steps", STEPS, "--save-steps", SAVE_AT,
        "--batch-size", 2, "--train-samples", 5, "--val-samples", 2, "--max-source-length", 192,
        "--max-target-length", 32, "--eval-steps", 0]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}


def command(model_dir, method, out, *extra) -> list[str]:
    return [sys.executable, "-m", "peftsum.cli", "train", "--model", str(model_dir), "--method", method,
            "--output-dir", str(out), *map(str, ARGS), *map(str, extra)]


def start(cmd, log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=ENV)


def finish(proc: subprocess.Popen, log: Path, timeout: float = 600) -> None:
    assert proc.wait(timeout=timeout) == 0, log.read_text()[-3000:]


def step_rows(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "training_log.jsonl").read_text().splitlines()) if "loss" in r]


def model_weights(run: Path) -> dict:
    files = sorted((run / "model").glob("*.safetensors"))
    assert len(files) == 1
    return load_file(str(files[0]))


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory):
    """Reference runs, a twin of the LoRA reference, and LoRA/full runs SIGKILLed after checkpoint 5 then resumed."""
    root = tmp_path_factory.mktemp("resume")
    ref = {m: root / f"ref-{m}" for m in ("lora", "full")}
    killed = {m: root / f"killed-{m}" for m in ("lora", "full")}
    twin = root / "twin-lora"
    procs = {name: start(command(tiny_model_dir, name.split("-")[1], out), root / f"{name}.log")
             for name, out in [("ref-lora", ref["lora"]), ("ref-full", ref["full"]), ("twin-lora", twin),
                               ("killed-lora", killed["lora"]), ("killed-full", killed["full"])]}
    at_kill = {}
    deadline = time.monotonic() + 600
    while len(at_kill) < 2 and time.monotonic() < deadline:
        for method, out in killed.items():
            proc = procs[f"killed-{method}"]
            if method in at_kill:
                continue
            if (out / "checkpoints" / f"checkpoint-{SAVE_AT}" / COMPLETE_MARKER).exists():
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                at_kill[method] = {
                    "returncode": proc.returncode,
                    "final_checkpoint_complete": (out / "checkpoints" / f"checkpoint-{STEPS}" / COMPLETE_MARKER).exists(),
                    "metrics": (out / "metrics.json").exists(),
                    "logged_steps": [r["step"] for r in step_rows(out)],
                }
            elif proc.poll() is not None:
                at_kill[method] = {"returncode": proc.returncode, "error": (root / f"killed-{method}.log").read_text()}
        time.sleep(0.005)
    for name in ("ref-lora", "ref-full", "twin-lora"):
        finish(procs[name], root / f"{name}.log")

    # A save that was killed half-way: a newer checkpoint folder with truncated files and no marker.
    partial = killed["lora"] / "checkpoints" / "checkpoint-9"
    partial.mkdir()
    for f in (killed["lora"] / "checkpoints" / f"checkpoint-{SAVE_AT}").iterdir():
        if f.name != COMPLETE_MARKER:
            data = f.read_bytes()
            (partial / f.name).write_bytes(data[: len(data) // 2])
    latest_before_resume = latest_complete_checkpoint(killed["lora"] / "checkpoints")

    resumed = {m: start(command(tiny_model_dir, m, out, "--resume"), root / f"resumed-{m}.log")
               for m, out in killed.items() if at_kill.get(m, {}).get("returncode") == -signal.SIGKILL}
    for m, proc in resumed.items():
        finish(proc, root / f"resumed-{m}.log")
    return {"ref": ref, "killed": killed, "twin": twin, "at_kill": at_kill, "root": root,
            "latest_before_resume": latest_before_resume}


@pytest.mark.parametrize("method", ["lora", "full"])
def test_resume_after_sigkill_matches_an_uninterrupted_run(runs, method):
    at_kill = runs["at_kill"][method]
    assert at_kill["returncode"] == -signal.SIGKILL, at_kill.get("error", "")[-3000:]
    # the kill really interrupted training: after checkpoint 5, before the end
    assert not at_kill["final_checkpoint_complete"] and not at_kill["metrics"]
    assert at_kill["logged_steps"][:SAVE_AT] == list(range(1, SAVE_AT + 1))
    assert max(at_kill["logged_steps"]) < STEPS
    ref, resumed = runs["ref"][method], runs["killed"][method]
    ref_rows, res_rows = step_rows(ref), step_rows(resumed)
    assert [r["step"] for r in ref_rows] == [r["step"] for r in res_rows] == list(range(1, STEPS + 1))
    for a, b in zip(ref_rows, res_rows):
        assert abs(a["loss"] - b["loss"]) <= 1e-5, (a, b)
        assert a["learning_rate"] == pytest.approx(b["learning_rate"], rel=1e-12, abs=0), (a, b)  # same schedule
    assert len({round(r["loss"], 6) for r in ref_rows}) > 5  # losses vary: the comparison is not vacuous
    wa, wb = model_weights(ref), model_weights(resumed)
    assert wa.keys() == wb.keys()
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) <= 1e-5
    metrics = json.loads((resumed / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == SAVE_AT and metrics["global_step"] == STEPS
    ref_metrics = json.loads((ref / "metrics.json").read_text())
    assert metrics["tokens_seen"] == ref_metrics["tokens_seen"] and metrics["examples_seen"] == STEPS * 2 - 3


def test_incomplete_newer_checkpoint_is_ignored_and_removed(runs):
    ckpts = runs["killed"]["lora"] / "checkpoints"
    assert runs["latest_before_resume"].name == f"checkpoint-{SAVE_AT}"  # not the newer, unmarked checkpoint-9
    assert "removing incomplete checkpoint" in (runs["root"] / "resumed-lora.log").read_text()
    assert not (ckpts / "checkpoint-9").exists()
    assert (ckpts / f"checkpoint-{STEPS}" / COMPLETE_MARKER).is_file()


def test_latest_complete_checkpoint(tmp_path):
    assert latest_complete_checkpoint(tmp_path / "missing") is None
    for step, done in ((3, True), (12, True), (20, False)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if done:
            (tmp_path / f"checkpoint-{step}" / COMPLETE_MARKER).write_text("ok\n")
    (tmp_path / "checkpoint-x").mkdir()
    assert latest_complete_checkpoint(tmp_path).name == "checkpoint-12"  # numeric order, not text order


def test_same_seed_and_config_in_two_processes_give_identical_losses(runs):
    a, b = step_rows(runs["ref"]["lora"]), step_rows(runs["twin"])
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    assert [r["grad_norm"] for r in a] == [r["grad_norm"] for r in b]
    wa, wb = model_weights(runs["ref"]["lora"]), model_weights(runs["twin"])
    assert all((wa[k] == wb[k]).all() for k in wa)


def test_resume_with_a_changed_config_says_what_differs(runs, tiny_model_dir):
    from typer.testing import CliRunner

    from peftsum.cli import app

    run = runs["ref"]["lora"]
    before = (run / "training_log.jsonl").read_text()
    args = command(tiny_model_dir, "lora", run, "--resume")[3:]
    res = CliRunner().invoke(app, [*args, "--learning-rate", "0.001", "--max-steps", "20"], env={"COLUMNS": "400"})
    assert res.exit_code == 2
    out = " ".join(res.output.split())
    assert "--resume with a changed config" in out
    assert "learning_rate: 0.0005 -> 0.001" in out and "max_steps: 10 -> 20" in out
    assert (run / "training_log.jsonl").read_text() == before  # nothing was touched


def test_resume_without_a_run_or_a_checkpoint(tiny_model_dir, tmp_path):
    from peftsum.config import TrainConfig
    from peftsum.errors import ConfigError
    from peftsum.training.trainer import CONFIG_FILE, build_trainer, resolve

    cfg = TrainConfig(model=str(tiny_model_dir), output_dir=str(tmp_path / "run"), resume=True, max_steps=3)
    with pytest.raises(ConfigError, match="nothing to resume"):
        build_trainer(cfg)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / CONFIG_FILE).write_text(json.dumps(resolve(cfg).to_dict()))
    with pytest.raises(ConfigError, match="no complete checkpoint to resume from"):
        build_trainer(cfg)


def test_resume_of_a_finished_run_changes_nothing(runs, tiny_model_dir):
    from typer.testing import CliRunner

    from peftsum.cli import app

    run = runs["ref"]["lora"]
    files = {name: (run / name).read_bytes() for name in ("metrics.json", "README.md", "training_log.jsonl")}
    args = command(tiny_model_dir, "lora", run, "--resume")[3:]
    res = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    assert res.exit_code == 0, res.output
    assert "is finished" in res.output and "nothing to resume" in res.output
    assert {name: (run / name).read_bytes() for name in files} == files


def test_resume_and_overwrite_together_is_one_line_error(runs, tiny_model_dir):
    from typer.testing import CliRunner

    from peftsum.cli import app

    run = runs["ref"]["lora"]
    before = (run / "metrics.json").read_bytes()
    res = CliRunner().invoke(app, [*command(tiny_model_dir, "lora", run, "--resume", "--overwrite")[3:]],
                             env={"COLUMNS": "400"})
    assert res.exit_code == 2
    assert "--resume continues" in res.output and "--overwrite replaces" in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert (run / "metrics.json").read_bytes() == before
