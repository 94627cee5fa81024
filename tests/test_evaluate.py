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


class _CountingTokenizer:
    """The real tokenizer, recording how many articles each encoding call gets."""

    def __init__(self, tokenizer):
        self.tokenizer, self.calls = tokenizer, []

    def __call__(self, texts, **kwargs):
        self.calls.append(len(texts))
        return self.tokenizer(texts, **kwargs)


def test_planned_batches_read_articles_a_chunk_at_a_time(tiny_tokenizer):
    from peftsum.generation.decode import planned_batches

    texts = [r["text"] for r in load_split("english", "train").rows + load_split("english", "validation").rows]
    counting = _CountingTokenizer(tiny_tokenizer)
    batches = list(planned_batches(counting, iter(texts), max_source_length=64, batch_size=2, chunk_rows=4))
    assert counting.calls == [4, 4, 2]  # 10 articles streamed 4 at a time: never all at once
    for idx, feats in batches:  # a batch never mixes chunks; every article once, in a batch of <= 2
        assert len({i // 4 for i in idx}) == 1 and len(idx) == len(feats["input_ids"]) <= 2
    assert sorted(i for idx, _ in batches for i in idx) == list(range(10))
    for idx, feats in batches:  # the features are the article's own tokens (EOS last)
        assert feats["input_ids"][0] == tiny_tokenizer(texts[idx[0]], max_length=64, truncation=True)["input_ids"]


def test_evaluation_streams_rows_and_chunking_changes_no_prediction(tiny_model_dir, tmp_path, monkeypatch):
    """Evaluation reads articles from the Arrow table in chunks (never every row as dicts), and the chunk
    size changes no prediction (batch size 1: no padding, so batches are independent)."""
    from peftsum.data import xlsum
    from peftsum.generation import decode
    from peftsum.generation.decode import GenerationSettings
    from peftsum.generation.evaluate import evaluate_model

    data = _rows_file(tmp_path / "english_val.jsonl", 7)
    kw = dict(split="validation", data=str(data), batch_size=1, progress=False, log=lambda *a: None,
              settings=GenerationSettings(num_beams=1, max_new_tokens=6, no_repeat_ngram_size=0), n_resamples=50)
    whole = evaluate_model(str(tiny_model_dir), "english", tmp_path / "a" / "results.json", **kw)
    monkeypatch.setattr(xlsum.LoadedSplit, "rows", property(lambda self: pytest.fail("evaluation read every row")))
    monkeypatch.setattr(xlsum, "STREAM_ROWS", 3)
    monkeypatch.setattr(decode, "STREAM_ROWS", 3)
    chunked = evaluate_model(str(tiny_model_dir), "english", tmp_path / "b" / "results.json", **kw)
    assert chunked["ids"] == whole["ids"] == [f"row-{i}" for i in range(7)]
    assert chunked["per_example"] == whole["per_example"] and chunked["paired"] == whole["paired"]
    read = lambda p: sorted(p.read_text(encoding="utf-8").splitlines())  # noqa: E731
    assert read(tmp_path / "a" / "predictions.jsonl") == read(tmp_path / "b" / "predictions.jsonl")
