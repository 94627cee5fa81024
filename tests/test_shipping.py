"""Shipped models carry their settings: ``peftsum merge`` and full fine-tuning write XL-Sum's decoding
settings into ``generation_config.json`` (plain ``generate`` then reproduces ``peftsum generate``) and a
model card with base, adapter, method, training data, licence and scores."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from peftsum.cli import app
from peftsum.config import TrainConfig
from peftsum.data.xlsum import load_split
from peftsum.generation.evaluate import evaluate_model
from peftsum.training.trainer import train

runner = CliRunner()
XLSUM = {"num_beams": 4, "length_penalty": 0.6, "no_repeat_ngram_size": 2, "max_new_tokens": 84}
N = 3


def _train(model_dir, method, out):
    train(TrainConfig(model=str(model_dir), method=method, languages=["english"], output_dir=str(out),
                      max_steps=3, batch_size=2, max_source_length=64, max_target_length=24, eval_steps=0,
                      learning_rate=5e-2, logging_steps=1, bf16=False), log=lambda *_: None)


def _plain_generate(folder, max_source_length):
    """What a user without peftsum does: from_pretrained + generate with no decoding arguments."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    model = AutoModelForSeq2SeqLM.from_pretrained(str(folder)).eval()
    tok = AutoTokenizer.from_pretrained(str(folder))
    out = []
    for row in load_split("english", "validation").rows[:N]:
        enc = tok(row["text"], max_length=max_source_length, truncation=True, return_tensors="pt")
        with torch.no_grad():
            out.append(tok.decode(model.generate(**enc)[0], skip_special_tokens=True).strip())
    return out


def _peftsum_generate(folder, tmp_path, *extra):
    out = tmp_path / f"samples-{folder.name}.txt"
    res = runner.invoke(app, ["generate", "--model-path", str(folder), "--language", "english", "--split", "validation",
                              "--num-samples", str(N), "--output-file", str(out), *extra])
    assert res.exit_code == 0, res.output
    return [line[len("PREDICTION: "):].strip() for line in out.read_text(encoding="utf-8").splitlines()
            if line.startswith("PREDICTION: ")]


def _generation_config(folder):
    return json.loads((folder / "generation_config.json").read_text())


def test_merged_model_carries_its_evaluation_settings_and_a_card(tiny_model_dir, tmp_path):
    from peftsum.generation.decode import GenerationSettings

    run = tmp_path / "lora"
    _train(tiny_model_dir, "lora", run)
    merged = tmp_path / "merged"
    res = runner.invoke(app, ["merge", "--adapter", str(run), "--output-dir", str(merged)])
    assert res.exit_code == 0, res.output
    gen = _generation_config(merged)  # not evaluated yet: XL-Sum's settings
    assert {k: gen.get(k) for k in XLSUM} == XLSUM and gen.get("early_stopping") is True
    assert "No evaluation results" in (merged / "README.md").read_text(encoding="utf-8")

    # evaluated with other settings (short summaries, to keep the test fast): the merged model carries those
    short = GenerationSettings(max_new_tokens=10)
    evaluate_model(str(run), "english", run / "eval" / "english" / "results.json", num_samples=2, settings=short,
                   progress=False, log=lambda *_: None)
    res = runner.invoke(app, ["merge", "--adapter", str(run), "--output-dir", str(merged), "--overwrite"])
    assert res.exit_code == 0, res.output
    gen = _generation_config(merged)
    assert {k: gen.get(k) for k in XLSUM} == {**XLSUM, "max_new_tokens": 10}
    assert _plain_generate(merged, 512) == _peftsum_generate(merged, tmp_path, "--max-new-tokens", "10")

    card = (merged / "README.md").read_text(encoding="utf-8")
    assert f"base_model: {tiny_model_dir}" in card and "license: cc-by-nc-sa-4.0" in card
    assert str(run / "model") in card and "lora adapter merged" in card
    assert "CC BY-NC-SA 4.0" in card and "bundled" in card
    scores = json.loads((run / "eval" / "english" / "results.json").read_text())
    assert f"| english | validation | 2 | {scores['rouge1']['f1']:.2f} |" in card


def test_full_fine_tune_checkpoint_carries_decoding_settings_and_a_card(tiny_model_dir, tmp_path):
    run = tmp_path / "full"
    _train(tiny_model_dir, "full", run)
    gen = _generation_config(run / "model")
    # XL-Sum's beam settings, up to the run's summary length (max_target_length 24; 84 by default)
    assert {k: gen.get(k) for k in XLSUM} == {**XLSUM, "max_new_tokens": 24}
    # peftsum generate on the run reads max_source_length (64) from the run's config: the plain call uses the same
    assert _plain_generate(run / "model", 64) == _peftsum_generate(run, tmp_path, "--max-new-tokens", "24")
    card = (run / "model" / "README.md").read_text(encoding="utf-8")
    assert "license: cc-by-nc-sa-4.0" in card and "full fine-tune of" in card


def test_merge_of_a_bare_adapter_says_the_data_is_unknown(tiny_model_dir, tmp_path):
    from peftsum.modeling.shipping import data_and_licence

    sentence, licence = data_and_licence(None)
    assert licence is None and "unknown" in sentence
    sentence, licence = data_and_licence("/data/my.jsonl")
    assert licence is None and "/data/my.jsonl" in sentence and "check its licence" in sentence
