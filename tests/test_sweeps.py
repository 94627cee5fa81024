"""Sweeps report each variant: the shipped rank and target sweeps, run offline at tiny size.

``configs/lora_rank_sweep.yaml`` names its variants ``lora-r4`` ... ``lora-r64`` and
``configs/lora_targets.yaml`` ``lora-qv`` / ``lora-all-linear`` (two seeds). Each label must be a row
of its own in the report, with that label's own numbers (read back from its runs' results.json);
seeds of one label are pooled with each other only, and every label is compared with full fine-tuning.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from peftsum.experiments.config import load_experiment
from peftsum.experiments.runner import run_experiment

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = ["data=sample", "languages=[english]", "eval_samples=3", "train.max_steps=2", "train.batch_size=2",
        "train.train_samples=4", "train.val_samples=2", "train.max_source_length=48", "train.max_target_length=16",
        "train.bf16=false", "generation.num_beams=1", "generation.max_new_tokens=6",
        "generation.no_repeat_ngram_size=0"]


def _rougeL(run_dir: Path) -> float:
    return json.loads((run_dir / "eval" / "english" / "results.json").read_text())["rougeL"]["f1"]


@pytest.mark.slow
@pytest.mark.parametrize("config, labels, seeds", [
    ("lora_rank_sweep.yaml", ["lora-r4", "lora-r8", "lora-r16", "lora-r32", "lora-r64"], [42]),
    ("lora_targets.yaml", ["lora-all-linear", "lora-qv"], [42, 43]),
])
def test_each_label_is_its_own_row_with_its_own_numbers(tiny_model_dir, tmp_path, config, labels, seeds):
    from peftsum.reporting.analysis import build_efficiency, build_sections
    from peftsum.reporting.records import load_experiment as read_experiment

    cfg = load_experiment(CONFIGS / config, [f"model={tiny_model_dir}", *TINY])
    exp_dir = tmp_path / "exp"
    result = run_experiment(cfg, exp_dir, log=lambda *_: None)
    assert all(st["status"] == "done" for st in result["runs"].values()), result["runs"]

    exp = read_experiment(exp_dir)
    assert {r.label for r in exp.runs} == {"full", *labels}
    (section,) = build_sections(exp)
    by_label = {g.label: g for g in section.groups}
    assert sorted(by_label) == sorted(["full", *labels])  # one group per label, nothing pooled across labels
    assert [g.label for g in section.groups] == ["full", *labels]  # natural order: r4 before r16 (labels listed so)
    for label in labels:
        g = by_label[label]
        assert g.method == "lora" and g.seeds == seeds
        own = [_rougeL(exp_dir / "runs" / f"{label}-english-s{s}") for s in seeds]
        assert g.values("rougeL") == pytest.approx(own)  # that label's own runs, and only those
        assert section.reference[g.key].label == "full"  # each label is compared with full fine-tuning
        assert len(section.tests[g.key]) == 4 * len(seeds)  # a paired test per seed and ROUGE key
    eff = {r.label: r for r in build_efficiency(exp)}
    assert sorted(eff) == sorted(["full", *labels])
    if config == "lora_rank_sweep.yaml":  # the rank shows in the parameter counts, one row per rank
        params = [eff[label].mean("trainable_params") for label in labels]
        assert params == sorted(params) and len(set(params)) == len(labels)

    report = (exp_dir / "report.md").read_text(encoding="utf-8")
    for label in labels:
        assert f"{label} (LoRA)" in report
        mean = statistics.fmean(_rougeL(exp_dir / "runs" / f"{label}-english-s{s}") for s in seeds)
        row = next(line for line in report.splitlines() if line.startswith(f"| {label} (LoRA) |"))
        assert f"{mean:.2f}" in row, (label, mean, row)
