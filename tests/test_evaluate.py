"""Evaluation: streamed predictions (flat memory), resume after a kill, same results either way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from peftsum.data.xlsum import load_split

EVAL_ARGS = ["--num-beams", "1", "--max-new-tokens", "6", "--no-repeat-ngram-size", "0", "--batch-size", "1"]


def _rows_file(path, n):
    """``n`` real English rows (the bundled 10, repeated with distinct ids) as a local JSONL file."""
    base = load_split("english", "train").rows + load_split("english", "validation").rows
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            row = dict(base[i % len(base)], id=f"row-{i}")
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def _evaluate(model, data, out, extra=(), **popen):
    cmd = [sys.executable, "-m", "peftsum", "evaluate", "--model-path", str(model), "-l", "english",
           "--split", "validation", "--data", str(data), "--output-file", str(out), *EVAL_ARGS, *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def test_killed_evaluation_continues_and_matches_an_uninterrupted_one(tiny_model_dir, tmp_path):
    data = _rows_file(tmp_path / "english_val.jsonl", 12)
    full = _evaluate(tiny_model_dir, data, tmp_path / "a" / "results.json")
    assert full.wait(timeout=600) == 0, full.stderr.read()[-2000:]

    out = tmp_path / "b" / "results.json"
    proc = _evaluate(tiny_model_dir, data, out)
    preds = out.parent / "predictions.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not preds.exists() or len(preds.read_text().splitlines()) < 4):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    written = len(preds.read_text().splitlines())
    assert 4 <= written < 12 and not out.exists()

    again = _evaluate(tiny_model_dir, data, out)
    stdout, stderr = again.communicate(timeout=600)
    assert again.returncode == 0, stderr[-2000:]
    assert f"continuing: {written} of 12 predictions already" in stdout
    a = json.loads((tmp_path / "a" / "results.json").read_text())
    b = json.loads(out.read_text())
    assert a["per_example"] == b["per_example"] and a["ids"] == b["ids"]
    read = lambda p: sorted(p.read_text(encoding="utf-8").splitlines())  # noqa: E731
    assert read(tmp_path / "a" / "predictions.jsonl") == read(preds)


def _peak_rss_mb(tiny_model_dir, tmp_path, n):
    data = _rows_file(tmp_path / f"english_{n}.jsonl", n)
    code = (
        "import resource, sys\n"
        "from peftsum.cli import main\n"
        "sys.argv = ['peftsum'] + sys.argv[1:]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
    )
    args = ["evaluate", "--model-path", str(tiny_model_dir), "-l", "english", "--split", "validation",
            "--data", str(data), "--output-file", str(tmp_path / f"r{n}" / "results.json"), *EVAL_ARGS,
            "--batch-size", "8"]
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    return float(res.stdout.rsplit("PEAK", 1)[1])


@pytest.mark.slow
def test_peak_memory_is_flat_from_50_to_200_examples(tiny_model_dir, tmp_path):
    small = _peak_rss_mb(tiny_model_dir, tmp_path, 50)
    large = _peak_rss_mb(tiny_model_dir, tmp_path, 200)
    assert large <= small * 1.10, (small, large)
