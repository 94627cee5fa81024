"""The experiment runner: failed runs are recorded and the rest go on; cross-lingual pairs; reruns."""

from __future__ import annotations

import json

import pytest

from peftsum.errors import PeftsumError
from peftsum.experiments.config import load_experiment
from peftsum.experiments.runner import run_experiment


def _config(tmp_path, tiny_model_dir, body: str):
    path = tmp_path / "exp.yaml"
    path.write_text(
        f"name: t\nmodel: {tiny_model_dir}\n"
        "train: {max_steps: 2, batch_size: 2, max_source_length: 48, max_target_length: 16, logging_steps: 1}\n"
        "generation: {num_beams: 1, max_new_tokens: 6, no_repeat_ngram_size: 0}\n"
        "eval_samples: 2\n" + body
    )
    return load_experiment(path)


def test_failed_run_is_recorded_and_the_rest_go_on(tiny_model_dir, tmp_path):
    cfg = _config(tmp_path, tiny_model_dir,
                  "methods: [lora, {method: lora, name: broken, target_modules: [no_such_layer]}]\n"
                  "languages: []\ncross_lingual: [{train: [english], eval: [hindi]}]\n")
    exp = tmp_path / "exp"
    result = run_experiment(cfg, exp, log=lambda *_: None)
    ok, bad = result["runs"]["lora-english-s42"], result["runs"]["broken-english-s42"]
    assert ok["status"] == "done" and bad["status"] == "failed"
    assert "no_such_layer" in bad["error"] and "\n" not in bad["error"]
    # cross-lingual: trained on English, evaluated on English and zero-shot on Hindi
    assert ok["eval_languages"] == ["english", "hindi"]
    hindi = json.loads((exp / "runs" / "lora-english-s42" / "eval" / "hindi" / "results.json").read_text())
    assert hindi["language"] == "hindi" and hindi["num_examples"] == 2
    metrics = json.loads((exp / "runs" / "lora-english-s42" / "metrics.json").read_text())
    assert metrics["train_languages"] == ["english"]
    assert (exp / "baselines" / "hindi.json").is_file()
    assert "no_such_layer" in (exp / "report.md").read_text(encoding="utf-8")
    # every JSON file of the record carries the schema version (peftsum.run_format)
    from peftsum.run_format import SCHEMA_VERSION, VERSION_KEY

    record = [*(exp / "runs").glob("*/status.json"), *(exp / "runs").glob("*/metrics.json"),
              *(exp / "runs").glob("*/eval/*/results.json"), *(exp / "baselines").glob("*.json"),
              *(exp / "seed_scorer").glob("*.json")]
    assert len(record) == 2 + 1 + 2 + 2 + 3, record  # status x2, metrics, results x2, baselines x2, seed_scorer x3
    assert all(json.loads(p.read_text())[VERSION_KEY] == SCHEMA_VERSION for p in record), record

    # a rerun retries only the failed run
    again = run_experiment(cfg, exp, log=lambda *_: None)
    assert again["runs"]["broken-english-s42"]["status"] == "failed"
    assert again["runs"]["lora-english-s42"]["seconds"] == ok["seconds"]


def test_a_different_experiment_in_the_same_folder_needs_overwrite(tiny_model_dir, tmp_path):
    cfg = _config(tmp_path, tiny_model_dir, "methods: [ia3]\nlanguages: [english]\nreport: false\nbaselines: false\n")
    exp = tmp_path / "exp"
    run_experiment(cfg, exp, log=lambda *_: None)
    cfg.seeds = [1]
    with pytest.raises(PeftsumError, match="different config .*seeds.*--overwrite"):
        run_experiment(cfg, exp, log=lambda *_: None)


@pytest.mark.slow
def test_memory_figures_do_not_depend_on_the_method_order(tiny_model_dir, tmp_path):
    """Each run trains in its own process, so its peak RSS is its own: swapping the order of the
    methods gives the same ordering of memory figures (in one process they rose run after run)."""
    figures = {}
    for order in (["full", "ia3"], ["ia3", "full"]):
        folder = tmp_path / "-".join(order)
        folder.mkdir()
        cfg = _config(folder, tiny_model_dir, f"methods: [{', '.join(order)}]\nlanguages: [english]\n"
                      "report: false\nbaselines: false\n")
        run_experiment(cfg, folder / "exp", log=lambda *_: None)
        figures[order[0]] = {
            m: json.loads((folder / "exp" / "runs" / f"{m}-english-s42" / "metrics.json").read_text())["peak_rss_mb"]
            for m in order
        }
        pids = {json.loads((folder / "exp" / "runs" / f"{m}-english-s42" / "status.json").read_text())["pid"]
                for m in order}
        assert len(pids) == 2
    a, b = figures["full"], figures["ia3"]
    # full fine-tuning keeps gradients and AdamW moments for every weight: more memory in both orders
    assert a["full"] > a["ia3"] and b["full"] > b["ia3"], figures
    for m in ("full", "ia3"):  # and the second run of a process no longer carries the first one's memory
        assert abs(a[m] - b[m]) < 30, figures
