"""The run-record schema (``peftsum.run_format``): generated docs, old runs, one-line errors.

Pure Python: the files are written here as peftsum writes them (scores from the real scorer on
real bundled rows); the check that a real tiny run stamps every file is in ``test_experiment.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from peftsum import run_format as rf
from peftsum.errors import DataError
from peftsum.reporting.records import load_experiment

ROOT = Path(__file__).resolve().parent.parent


def test_docs_are_generated_from_the_module():
    from peftsum.run_format.docs import render_docs

    committed = (ROOT / "docs" / "run_format.md").read_text(encoding="utf-8")
    assert committed == render_docs(), "docs/run_format.md is stale: run python scripts/gen_run_format_doc.py"
    for schema in rf.SCHEMAS:  # every key of every table is documented
        assert all(f"| `{f.name}` |" in committed for f in schema.fields), schema.title
    assert "base_model/" not in committed and "<label>-<train languages joined by +>-s<seed>" in committed


def _old_run(root: Path) -> Path:
    """A run folder as peftsum wrote it before ``schema_version`` (keys copied from the writers)."""
    from peftsum.data.xlsum import load_split
    from peftsum.metrics import score_texts

    rows = load_split("english", "validation", "sample", 3).rows
    preds = [r["text"].split(".")[0] for r in rows]
    run = root / "runs" / "lora-r4-english-s7"
    (run / "eval" / "english").mkdir(parents=True)
    status = {"status": "done", "error": None, "seconds": 12.3, "pid": 4242, "run_id": run.name, "label": "lora-r4",
              "train_languages": ["english"], "eval_languages": ["english"]}
    metrics = {"method": "lora", "model": "/abs/tiny", "model_as_given": "tiny", "data": "sample",
               "train_languages": ["english"], "language_sampling": {"alpha": 0.5, "rows_per_language": {"english": 8}},
               "train_rows": 8, "val_rows": 3, "dropped_rows": {}, "trainable_params": 100, "total_params": 1000,
               "trainable_pct": 10.0, "checkpoint_size_mb": 0.4, "train_runtime_s": 3.2, "global_step": 2,
               "resumed_from_step": None, "best_checkpoint_step": None, "best_metric": None, "precision": "fp32",
               "device": "cpu", "peak_rss_mb": 900.0, "peak_gpu_mb": None, "train_loss": 9.1, "eval_loss": 9.0,
               "eval_rouge1": None, "eval_rouge2": None, "eval_rougeL": None, "eval_rougeLsum": None,
               "tokens_seen": 400, "examples_seen": 8, "tokens_per_second": 125.0, "examples_per_second": 2.5,
               "lm_head": {"lm_head_tied": False}, "hyperparameters": {"r": 4, "learning_rate": 0.001},
               "config": {"seed": 7, "method": "lora"}, "versions": {"torch": "2"}, "git_commit": None,
               "diverged": False, "divergence_reason": None}
    result = score_texts(preds, [r["summary"] for r in rows], "english", n_resamples=20)
    result.update({"model_path": str(run / "model"), "split": "validation", "data": "sample", "source": "sample",
                   "dropped_rows": {}, "generation": {"num_beams": 1}, "max_source_length": 64,
                   "precision": {"trained": "fp32", "evaluated": "fp32"}, "device": "cpu",
                   "ids": [r["id"] for r in rows]})
    for name, obj in ((run / "status.json", status), (run / "metrics.json", metrics),
                      (run / "eval" / "english" / "results.json", result)):
        name.write_text(json.dumps(obj, indent=2), encoding="utf-8")
    (run / "eval" / "english" / "predictions.jsonl").write_text(
        "".join(json.dumps({"id": r["id"], "reference": r["summary"], "prediction": p}) + "\n"
                for r, p in zip(rows, preds)), encoding="utf-8")
    return run


def test_a_run_written_before_the_schema_version_still_loads(tmp_path):
    run = _old_run(tmp_path)
    exp = load_experiment(tmp_path)
    (rec,) = exp.runs
    assert rec.ok and rec.label == "lora-r4" and rec.method == "lora" and rec.seed == 7
    assert rec.train_languages == ("english",) and rec.seconds == 12.3
    assert rec.evals["english"].score.num_examples == 3 and rec.evals["english"].precision == "fp32"
    assert rf.version_of(rec.metrics) == 1
    assert [p["id"] for p in rf.read_predictions(run / "eval" / "english" / "predictions.jsonl")] == \
        rf.read_results(run / "eval" / "english" / "results.json")["ids"]


def test_a_results_file_missing_a_required_key_is_named_in_one_line(tmp_path):
    run = _old_run(tmp_path)
    path = run / "eval" / "english" / "results.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    del data["rouge2"], data["per_example"]
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_experiment(tmp_path)
    assert str(err.value) == f"{path}: missing required keys 'rouge2', 'per_example'"


def test_wrong_types_and_newer_versions_are_refused(tmp_path):
    run = _old_run(tmp_path)
    status = run / "status.json"
    status.write_text(json.dumps({"status": "done", "seconds": "12"}), encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(f"{status}: 'seconds' must be a number or null, found '12'")):
        load_experiment(tmp_path)
    status.write_text(json.dumps({"schema_version": rf.SCHEMA_VERSION + 1, "status": "done"}), encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(f"{status}: written by a newer peftsum")):
        load_experiment(tmp_path)
    preds = run / "eval" / "english" / "predictions.jsonl"
    preds.write_text('{"id": "a", "reference": "r"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(f"{preds}: line 1: missing required key 'prediction'")):
        rf.read_predictions(preds)


def test_writers_stamp_the_version_and_readers_take_it(tmp_path):
    written = rf.write_status(tmp_path, {"status": "failed", "error": "x", "seconds": None})
    assert next(iter(written)) == rf.VERSION_KEY and written[rf.VERSION_KEY] == rf.SCHEMA_VERSION
    assert rf.read_status(tmp_path / rf.STATUS_FILE) == written
    assert rf.run_id("lora-r16", ["english", "hindi"], 42) == "lora-r16-english+hindi-s42"
