"""`peftsum merge`: a standalone model equal to base + adapter (logits within 1e-4, same greedy summaries)."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from peftsum.cli import app
from peftsum.config import TrainConfig
from peftsum.data.xlsum import load_split
from peftsum.generation.decode import GenerationSettings, generate_summaries
from peftsum.modeling.load import load_for_inference
from peftsum.training.trainer import train

runner = CliRunner()


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_merged_model_matches_adapter(tiny_model_dir, tmp_path, method):
    run = tmp_path / method
    train(TrainConfig(model=str(tiny_model_dir), method=method, languages=["english"], output_dir=str(run),
                      max_steps=4, batch_size=2, max_source_length=64, max_target_length=24,
                      learning_rate=5e-2, logging_steps=2), log=lambda *_: None)
    merged_dir = tmp_path / f"{method}-merged"
    res = runner.invoke(app, ["merge", "--adapter", str(run), "--output-dir", str(merged_dir)])
    assert res.exit_code == 0, res.output
    assert not (merged_dir / "adapter_config.json").exists()

    adapted, tok = load_for_inference(str(run))
    merged, _ = load_for_inference(str(merged_dir))
    base, _ = load_for_inference(str(tiny_model_dir))
    rows = load_split("english", "validation").rows
    enc = tok([r["text"] for r in rows], max_length=64, truncation=True, padding=True, return_tensors="pt")
    dec = torch.zeros((len(rows), 1), dtype=torch.long)
    with torch.no_grad():
        la = adapted(**enc, decoder_input_ids=dec).logits
        lm = merged(**enc, decoder_input_ids=dec).logits
        lb = base(**enc, decoder_input_ids=dec).logits
    assert (la - lm).abs().max().item() < 1e-4
    assert (la - lb).abs().max().item() > 1e-3  # the adapter changed something
    greedy = GenerationSettings(num_beams=1, no_repeat_ngram_size=0, max_new_tokens=12)
    texts = [r["text"] for r in rows]
    assert len(texts) == 5
    assert generate_summaries(adapted, tok, texts, greedy, 64, progress=False) == \
        generate_summaries(merged, tok, texts, greedy, 64, progress=False)

    # merging again into the same folder needs --overwrite
    res = runner.invoke(app, ["merge", "--adapter", str(run), "--output-dir", str(merged_dir)])
    assert res.exit_code == 2 and "--overwrite" in res.output


def test_merge_refuses_a_full_checkpoint(tiny_model_dir, tmp_path):
    res = runner.invoke(app, ["merge", "--adapter", str(tiny_model_dir), "--output-dir", str(tmp_path / "m")])
    assert res.exit_code == 2 and "not a PEFT adapter" in res.output
