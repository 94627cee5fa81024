"""Hardening (#16): contained names, one writer per folder, input errors with file and line,
divergence, fast offline failures, a full disk, kills, resolved model paths, permissions."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from peftsum.cli import app
from peftsum.config import TrainConfig
from peftsum.errors import ConfigError, DataError, PeftsumError
from peftsum.data.xlsum import sample_dir

pytestmark = pytest.mark.usefixtures("one_thread")
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _env(**extra) -> dict:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra}
    return {k: v for k, v in env.items() if v is not None}


def tiny_cfg(model, out, **kw) -> TrainConfig:
    base = dict(model=str(model), method="lora", languages=["english"], output_dir=str(out), max_steps=2,
                batch_size=2, train_samples=4, val_samples=2, max_source_length=64, max_target_length=24,
                eval_steps=0, bf16=False)
    base.update(kw)
    return TrainConfig(**base)


def english_lines() -> list[bytes]:
    """Real bundled XL-Sum rows, as the bytes of their lines."""
    return (sample_dir() / "english" / "train.jsonl").read_bytes().splitlines(keepends=True)


def one_line(text: str) -> str:
    lines = [x for x in text.strip().splitlines() if x.strip()]
    assert len(lines) == 1, text
    return lines[0]


# --------------------------------------------------------------------------- 1. names are contained
@pytest.mark.parametrize("bad", ["../../escaped", "a/b", "", "..", "x\x00y", "tab\there", "a\\b", " lead"])
def test_bad_run_label_is_refused_before_anything_is_written(tmp_path, bad):
    from peftsum.experiments.config import load_experiment

    cfg = tmp_path / "exp.yaml"
    cfg.write_text(json.dumps({"name": "e", "methods": [{"method": "lora", "name": bad}], "languages": ["english"]}))
    with pytest.raises(ConfigError) as err:
        load_experiment(cfg)
    msg = str(err.value)
    assert "\n" not in msg and "methods: name" in msg and repr(bad) in msg


def test_bad_experiment_name_via_cli_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["experiment", "--set", "name=../../escaped"])
    assert res.exit_code == 2
    line = one_line(res.output)
    assert "name" in line and "'../../escaped'" in line and "folder name" in line
    assert list(tmp_path.iterdir()) == [] and not (tmp_path.parent.parent / "escaped").exists()


def test_every_run_folder_is_checked_to_stay_inside(tmp_path):
    from peftsum.names import ensure_inside

    assert ensure_inside(tmp_path, tmp_path / "runs" / "a") == tmp_path / "runs" / "a"
    (tmp_path / "link").symlink_to(tmp_path.parent)
    for escaped in (tmp_path / "runs" / ".." / ".." / "x", tmp_path / "link" / "x"):
        with pytest.raises(ConfigError, match="outside its output folder"):
            ensure_inside(tmp_path, escaped)


# --------------------------------------------------------------------------- 2. one writer per folder
HOLD = "import sys, time\nfrom peftsum.locking import folder_lock\nwith folder_lock(sys.argv[1], 'train'):\n" \
       "    print('held', flush=True)\n    time.sleep(120)\n"


def test_second_writer_stops_at_once_and_a_killed_holder_does_not_block(tiny_model_dir, tmp_path):
    from peftsum.locking import FolderLocked, lock_path
    from peftsum.training.trainer import train

    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.perf_counter()
        with pytest.raises(FolderLocked) as err:
            train(tiny_cfg(tiny_model_dir, out))
        assert time.perf_counter() - start < 2.0  # at once: before anything loads
        msg = str(err.value)
        assert "\n" not in msg and f"pid {holder.pid} on " in msg and "peftsum train" in msg
        assert not out.exists()  # nothing written into the held folder
        # the CLI: one line, exit 2
        res = CliRunner().invoke(app, ["report", str(out)])
        assert res.exit_code == 2 and f"pid {holder.pid}" in one_line(res.output)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock_path(out).exists()  # left behind by the kill, but no longer locked
    metrics = train(tiny_cfg(tiny_model_dir, out))
    assert metrics["global_step"] == 2 and not lock_path(out).exists()


def test_train_killed_mid_run_resumes_through_its_stale_lock(tiny_model_dir, tmp_path):
    from peftsum.locking import lock_path, read_holder
    from peftsum.training.trainer import COMPLETE_MARKER, train

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "peftsum", "train", "--model", str(tiny_model_dir), "--method", "lora", "-l", "english",
           "--output-dir", str(out), "--max-steps", "40", "--batch-size", "2", "--train-samples", "4",
           "--val-samples", "2", "--max-source-length", "64", "--max-target-length", "24", "--eval-steps", "0",
           "--save-steps", "1", "--no-bf16"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    deadline = time.monotonic() + 300
    while not (out / "checkpoints" / "checkpoint-2" / COMPLETE_MARKER).exists():
        assert proc.poll() is None and time.monotonic() < deadline, "training ended before the kill"
        time.sleep(0.05)
    assert read_holder(lock_path(out))["pid"] == proc.pid
    # the same command a second time, while the first runs: stopped at once, one line naming the holder
    second = CliRunner().invoke(app, cmd[3:])
    assert second.exit_code == 2 and f"pid {proc.pid} on " in one_line(second.output)
    assert proc.poll() is None  # the first goes on
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "metrics.json").exists()
    metrics = train(tiny_cfg(tiny_model_dir, out, max_steps=40, save_steps=1, resume=True))
    assert metrics["global_step"] == 40 and metrics["resumed_from_step"] >= 2


def test_lock_is_reentrant_in_one_process(tmp_path):
    from peftsum.locking import folder_lock

    with folder_lock(tmp_path / "exp", "experiment"):
        with folder_lock(tmp_path / "exp", "report"):
            pass
        code = "import sys\nfrom peftsum.locking import folder_lock\nwith folder_lock(sys.argv[1], 'x'): pass"
        res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "exp")], capture_output=True, text=True,
                             env=_env(), timeout=60)
        assert res.returncode != 0 and "FolderLocked" in res.stderr  # still held after the inner block


def test_without_flock_the_recorded_pid_and_host_decide(tmp_path, monkeypatch):
    import socket

    import peftsum.locking as locking

    monkeypatch.setattr(locking, "_try_flock", lambda fd: None)  # a file system without flock (ENOLCK)
    folder = tmp_path / "run"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path = locking.lock_path(folder)
        path.write_text(json.dumps({"pid": live.pid, "host": socket.gethostname(), "command": "train"}))
        with pytest.raises(locking.FolderLocked, match=f"pid {live.pid} on {socket.gethostname()}"):
            with locking.folder_lock(folder, "train"):
                pass
        path.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "command": "train"}))
        assert locking.holder_is_stale(locking.read_holder(path))
        with locking.folder_lock(folder, "train"):  # a dead holder on this host is stale
            assert locking.read_holder(path)["pid"] == os.getpid()
    finally:
        live.kill()
        live.wait()


# --------------------------------------------------------------------------- 3. input errors say where
CASES = {
    "not UTF-8": (lambda line: line[:20] + b"\xff\xfe" + line[20:], "not UTF-8 text"),
    "BOM": (lambda line: b"\xef\xbb\xbf" + line, "byte-order mark"),
    "NUL": (lambda line: line[:10] + b"\x00" + line[10:], "NUL byte"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_bytes_are_named_with_file_and_line(tmp_path, case):
    from peftsum.data.xlsum import load_split

    corrupt, words = CASES[case]
    lines = english_lines()
    lines[2] = corrupt(lines[2])
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"".join(lines))
    with pytest.raises(DataError) as err:
        load_split("english", "train", path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{path}: line 3: ") and words in msg


def test_bom_at_the_start_of_a_file_is_fine(tmp_path):
    from peftsum.data.xlsum import load_split

    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"".join(english_lines()))
    assert len(load_split("english", "train", path).rows) == len(english_lines())


def test_over_long_line_is_named_and_skipped_in_bytes(tmp_path, monkeypatch):
    import peftsum.io as pio
    from peftsum.data.xlsum import read_jsonl

    lines = english_lines()
    limit = max(len(x) for x in lines) + 10
    monkeypatch.setattr(pio, "MAX_LINE_BYTES", limit)
    lines.insert(1, b'{"text": "' + b"a" * (3 * limit) + b'"}\n')
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"".join(lines))
    rows = list(pio.scan_jsonl(path))
    assert [n for n, _, e in rows if e is not None] == [2] and len(rows) == len(lines)  # reading goes on after it
    with pytest.raises(DataError, match=rf"^{path}: line 2: line longer than {limit:,} bytes$"):
        read_jsonl(path)


def test_data_validate_lists_every_bad_line(tmp_path):
    lines = english_lines()
    lines[0] = lines[0][:5] + b"\x00" + lines[0][5:]
    lines[2] = b"\xef\xbb\xbf" + lines[2]
    lines[3] = lines[3][:-3] + b"\n"  # malformed JSON (the closing quote and brace cut)
    lines[4] = lines[4][:30] + b"\xc3(" + lines[4][30:]
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"".join(lines))
    res = CliRunner().invoke(app, ["data", "validate", str(path)], env={"COLUMNS": "400"})
    assert res.exit_code == 2
    out = res.output
    # every bad line with file:line:column (data validate's format), then the one-line verdict
    assert f"{path}:1:6: NUL byte" in out
    assert f"{path}:3:1: byte-order mark" in out
    assert f"{path}:4:" in out and "invalid JSON" in out
    assert f"{path}:5:31: not UTF-8 text" in out
    assert out.strip().splitlines()[-1].startswith("error: 4 malformed lines")


# --------------------------------------------------------------------------- 4. divergence is seen
def test_collapsed_run_is_flagged_and_a_normal_one_is_not(tiny_model_dir, tmp_path):
    from peftsum.training.trainer import train

    logged = []
    bad = train(tiny_cfg(tiny_model_dir, tmp_path / "collapsed", method="full", learning_rate=1e6, max_steps=4),
                log=logged.append)
    assert bad["diverged"] is True and "ln(" in bad["divergence_reason"]
    assert any(str(x).startswith("warning: training diverged") for x in logged)
    on_disk = json.loads((tmp_path / "collapsed" / "metrics.json").read_text())
    assert on_disk["diverged"] is True and on_disk["divergence_reason"] == bad["divergence_reason"]
    good = train(tiny_cfg(tiny_model_dir, tmp_path / "normal", method="full", max_steps=4), log=logged.append)
    assert good["diverged"] is False and good["divergence_reason"] is None


def test_divergence_rules():
    import math

    from peftsum.training.divergence import check_divergence

    assert check_divergence([9.6, 9.5, 9.4, 9.3], 8100, 9.3)["diverged"] is False  # random base, learning
    assert check_divergence([2.0, 2.2, 1.9], 250112, 2.1)["diverged"] is False
    up = check_divergence([3.0, 3.1, 50.0, 800.0, 900.0, 1000.0], 8100)
    assert up["diverged"] and "rose from" in up["divergence_reason"]
    flat = check_divergence([9.2, 9.0, math.log(8100)], 8100, math.log(8100) + 1e-4)
    assert flat["diverged"] and "collapsed" in flat["divergence_reason"]


def test_report_marks_a_diverged_run_and_keeps_it_out_of_the_recommendations(tmp_path):
    from test_report import make_experiment

    from peftsum.reporting import write_report

    root = make_experiment(tmp_path / "exp")
    for run in (root / "runs").glob("lora-*"):
        m = json.loads((run / "metrics.json").read_text())
        m.update(diverged=True, divergence_reason="training loss rose from 3.0 to 900.0")
        (run / "metrics.json").write_text(json.dumps(m))
    md = write_report(root)["markdown"].read_text(encoding="utf-8")
    section = md.split("## When to use which")[1].split("\n## ")[0]
    assert "Left out here because training diverged: lora-english-s0" in section
    assert "LoRA" not in section.split("Left out here")[0] + section.split("900.0).")[-1]
    assert "done (diverged)" in md


# --------------------------------------------------------------------------- 5. offline is fast
OFFLINE_PROBE = textwrap.dedent("""
    import json, time
    from peftsum.errors import PeftsumError
    from peftsum.data.xlsum import load_split
    from peftsum.modeling.load import load_tokenizer
    out = {}
    for name, call in (("data", lambda: load_split("english", "train", "hub")),
                       ("model", lambda: load_tokenizer("google/mt5-small"))):
        start = time.perf_counter()
        try:
            call()
            out[name] = ["loaded", 0]
        except PeftsumError as exc:
            out[name] = [str(exc), time.perf_counter() - start]
    print(json.dumps(out))
""")


@pytest.mark.parametrize("offline_env", ["1", None], ids=["HF_HUB_OFFLINE=1", "no-network"])
def test_hub_fails_fast_with_the_hint(offline_env, tmp_path):
    # HF_HOME in tmp: nothing cached, so nothing can load; the unset case really reaches for the network
    env = _env(HF_HUB_OFFLINE=offline_env, HF_HOME=str(tmp_path / "hf"), TRANSFORMERS_OFFLINE=None,
               HF_DATASETS_OFFLINE=None)
    res = subprocess.run([sys.executable, "-c", OFFLINE_PROBE], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for name, (msg, seconds) in out.items():
        assert seconds < 5.0, (name, seconds)
        assert "\n" not in msg and "Offline?" in msg, msg
        assert ("HF_HUB_OFFLINE is set" if offline_env else "huggingface.co cannot be reached") in msg, msg


@pytest.mark.parametrize("flags", [["--model", "google/mt5-small"], ["--data", "hub"]], ids=["hub-model", "hub-data"])
def test_train_without_network_fails_before_loading_anything(tiny_model_dir, tmp_path, flags):
    args = ["--model", str(tiny_model_dir), "--method", "lora", "-l", "english", "--output-dir", str(tmp_path / "run"),
            "--max-steps", "1", *flags]
    env = _env(HF_HUB_OFFLINE=None, HF_HOME=str(tmp_path / "hf"), TRANSFORMERS_OFFLINE=None, HF_DATASETS_OFFLINE=None)
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "peftsum", "train", *args], capture_output=True, text=True, env=env,
                         timeout=120)
    seconds = time.perf_counter() - start  # the whole command, interpreter start included
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Offline?" in one_line(res.stderr) and "cannot be reached" in res.stderr
    assert seconds < 15.0 and not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- 6. faults leave nothing broken
def _digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_disk_full_during_a_checkpoint_save_then_resume(tiny_model_dir, tmp_path, monkeypatch):
    import torch

    from peftsum.faults import DiskFull
    from peftsum.training.trainer import COMPLETE_MARKER, latest_complete_checkpoint, train

    out = tmp_path / "run"
    real_save = torch.save
    seen = {}

    def full_disk(obj, f, *a, **kw):  # the optimizer state of checkpoint-2 hits a full disk half-way
        if "checkpoint-2" in str(f):
            seen["before"] = _digest(out / "checkpoints" / "checkpoint-1")
            Path(f).write_bytes(b"\0" * 100)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", full_disk)
    cfg = tiny_cfg(tiny_model_dir, out, max_steps=3, save_steps=1, save_total_limit=None)
    with pytest.raises(DiskFull) as err:
        train(cfg)
    msg = str(err.value)
    assert "\n" not in msg and "No space left on device" in msg and "checkpoint-1 is intact" in msg
    ckpts = out / "checkpoints"
    assert latest_complete_checkpoint(ckpts) == ckpts / "checkpoint-1"
    assert (ckpts / "checkpoint-1" / COMPLETE_MARKER).exists() and not (ckpts / "checkpoint-2").exists()
    assert _digest(ckpts / "checkpoint-1") == seen["before"]
    monkeypatch.setattr(torch, "save", real_save)  # space is free again
    cfg.resume = True
    metrics = train(cfg)
    assert metrics["global_step"] == 3 and metrics["resumed_from_step"] == 1


EXPERIMENT = """
name: killed
model: {model}
methods: [lora, ia3]
languages: [english]
train: {{max_steps: 6, batch_size: 2, train_samples: 4, val_samples: 2, max_source_length: 64,
        max_target_length: 24, eval_steps: 0, save_steps: 1, bf16: false}}
generation: {{num_beams: 1, max_new_tokens: 8}}
eval_samples: 2
"""


def _modes(root: Path) -> list[tuple[str, str]]:
    """(path, octal mode) of every file and folder under root whose mode is not 0644/0755."""
    bad = []
    for p in [root, *root.rglob("*")]:
        want = 0o755 if p.is_dir() else 0o644
        mode = stat.S_IMODE(p.stat().st_mode)
        if mode != want:
            bad.append((str(p.relative_to(root)), oct(mode)))
    return bad


@pytest.mark.slow
def test_killed_experiment_rerun_finishes_with_umask_permissions_and_merge(tiny_model_dir, tmp_path):
    from peftsum.experiments.config import load_experiment
    from peftsum.experiments.runner import run_experiment
    from peftsum.modeling.merge import merge_adapter
    from peftsum.training.trainer import COMPLETE_MARKER

    cfg_file = tmp_path / "exp.yaml"
    cfg_file.write_text(EXPERIMENT.format(model=tiny_model_dir))
    exp = tmp_path / "exp"
    old = os.umask(0o022)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "peftsum", "experiment", str(cfg_file), "--output-dir", str(exp)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
        first = exp / "runs" / "lora-english-s42"
        deadline = time.monotonic() + 300
        while not (first / "checkpoints" / "checkpoint-2" / COMPLETE_MARKER).exists():
            assert proc.poll() is None and time.monotonic() < deadline, "experiment ended before the kill"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not (first / "metrics.json").exists() and not (exp / "report.md").exists()
        result = run_experiment(load_experiment(cfg_file), exp, log=lambda *a: None)
        assert {k: v["status"] for k, v in result["runs"].items()} == {"lora-english-s42": "done",
                                                                      "ia3-english-s42": "done"}
        assert (exp / "report.md").is_file() and (exp / "report.html").is_file()
        assert list((exp / "figures").glob("*.png"))
        merged = merge_adapter(first, tmp_path / "merged")
        assert (merged / "model.safetensors").is_file()
    finally:
        os.umask(old)
    assert _modes(exp) == [], _modes(exp)
    assert _modes(merged) == [], _modes(merged)


def test_atomic_writes_follow_a_strict_umask(tmp_path):
    from peftsum.io import atomic_dir, write_json_atomic

    old = os.umask(0o077)
    try:
        write_json_atomic(tmp_path / "a.json", {"x": 1})
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "f").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o700


# --------------------------------------------------------------------------- 7. resolved model paths
def test_relative_model_path_is_stored_absolute_and_a_moved_base_is_named(tiny_model_dir, tmp_path, monkeypatch):
    from peftsum.modeling.load import load_for_inference
    from peftsum.training.trainer import train

    base = tmp_path / "models" / "tiny"
    shutil.copytree(tiny_model_dir, base)
    monkeypatch.chdir(tmp_path / "models")
    metrics = train(tiny_cfg("tiny/", "run"))
    run = (tmp_path / "models" / "run").resolve()
    adapter = json.loads((run / "model" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(base.resolve())
    assert metrics["model"] == metrics["config"]["model"] == str(base.resolve())
    assert metrics["model_as_given"] == "tiny/"
    saved = json.loads((run / "peftsum_config.json").read_text())
    assert saved["model"] == str(base.resolve()) and saved["model_as_given"] == "tiny/"
    card = (run / "README.md").read_text()
    assert f"base_model: {base.resolve()}" in card and "(given as `tiny/`)" in card

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    model, _ = load_for_inference(str(run))
    assert model is not None

    base.rename(tmp_path / "models" / "moved")
    with pytest.raises(PeftsumError) as err:
        load_for_inference(str(run))
    msg = str(err.value)
    assert "\n" not in msg and str(base.resolve()) in msg and "does not exist" in msg and "hub" not in msg
