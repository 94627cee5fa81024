"""What a model folder meant to be shared carries: its decoding settings and a model card.

A merged model (``peftsum merge``) and a full fine-tuning checkpoint (a run's ``model/``) are
loaded elsewhere with plain ``transformers``, which decodes with ``generation_config.json``.
Without XL-Sum's settings in it, ``AutoModelForSeq2SeqLM.generate`` decodes greedily and the
summaries are not the ones the model was scored with. The card names the base model, the
adapter and method, the training data and its licence (XL-Sum: CC BY-NC-SA 4.0, which carries
over to models trained on it; ``peftsum/data/sample/NOTICE.md``) and the scores, if any.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from peftsum.errors import PeftsumError
from peftsum.generation.decode import GenerationSettings
from peftsum.run_format import ROUGE_KEYS

XLSUM_LICENCE = "CC BY-NC-SA 4.0"
"""XL-Sum's licence (Hasan et al., 2021); it applies to models trained on it when shared."""


def set_generation_settings(generation_config, settings: GenerationSettings = GenerationSettings()) -> None:
    """Write ``settings`` into a ``transformers.GenerationConfig`` in place.

    Afterwards ``model.generate(input_ids, attention_mask)`` with no decoding arguments decodes
    exactly as ``peftsum generate``/``evaluate`` with ``settings`` (same keyword arguments as
    :meth:`GenerationSettings.to_kwargs`; ``max_length`` is cleared so ``max_new_tokens`` rules).

    Args:
        generation_config: the model's ``generation_config``.
        settings: decoding settings (default: XL-Sum's, 4 beams, length_penalty 0.6,
            no_repeat_ngram_size 2, 84 new tokens).
    """
    kwargs = settings.to_kwargs()
    generation_config.max_length = None
    generation_config.min_new_tokens = kwargs.pop("min_new_tokens", None)
    generation_config.length_penalty = kwargs.pop("length_penalty", 1.0)
    for key, value in kwargs.items():
        setattr(generation_config, key, value)
    generation_config.do_sample = False


def evaluation_results(run_dir: Path | None) -> list[dict]:
    """The score files of a run folder (``eval/<language>/results.json``, as experiments write them).

    Returns:
        The results dicts, by language name; ``[]`` when there are none (or no run folder).
    """
    if run_dir is None:
        return []
    out = []
    for path in sorted(Path(run_dir).glob("eval/*/results.json")):
        try:
            out.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue  # an unreadable score file is left out of the card, not fatal for shipping
    return out


def settings_evaluated_with(results: list[dict]) -> GenerationSettings:
    """The decoding settings the scores were made with, when every result used the same ones.

    Returns:
        Those settings, else XL-Sum's defaults (also when there are no results).
    """
    seen = {json.dumps(r.get("generation"), sort_keys=True) for r in results if r.get("generation")}
    if len(seen) == 1:
        try:
            return GenerationSettings(**json.loads(seen.pop()))
        except (TypeError, PeftsumError):
            pass
    return GenerationSettings()


def data_and_licence(data: str | None) -> tuple[str, str | None]:
    """A sentence on the training data and its licence, and the card's ``license:`` value.

    Args:
        data: the run's ``data`` setting (``sample``, ``hub`` or a path), or ``None`` if unknown.

    Returns:
        ``(sentence, licence id or None)``: XL-Sum data (bundled sample or hub) is CC BY-NC-SA 4.0.
    """
    if data in ("sample", "hub"):
        what = "the XL-Sum sample bundled with peftsum" if data == "sample" else "XL-Sum (csebuetnlp/xlsum)"
        return (f"Trained on {what} (Hasan et al., 2021), licensed {XLSUM_LICENCE}: non-commercial research use "
                "only; this model, trained on it, is shared under the same licence."), "cc-by-nc-sa-4.0"
    if data:
        return (f"Trained on local data ({data}); check its licence before sharing (XL-Sum itself is "
                f"{XLSUM_LICENCE}, non-commercial)."), None
    return f"Training data unknown (no run record found); XL-Sum is {XLSUM_LICENCE}, non-commercial.", None


def scores_table(results: list[dict]) -> str:
    """Markdown table of ROUGE F1 (0-100) per evaluated language and the precision and device decoding
    ran in, or a sentence saying there are none. The one table of ``results.json`` scores in both model
    cards (a run's, :func:`peftsum.training.record.model_card`, and a merged model's)."""
    if not results:
        return "No evaluation results were found with the run (`eval/<language>/results.json`)."
    lines = ["| language | split | rows | ROUGE-1 | ROUGE-2 | ROUGE-L | ROUGE-Lsum | decoded in |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in results:
        f1 = [f"{r[k]['f1']:.2f}" if isinstance(r.get(k), dict) and r[k].get("f1") is not None else "-"
              for k in ROUGE_KEYS]
        decoded = f"{(r.get('precision') or {}).get('evaluated') or 'n/a'} on {r.get('device') or 'n/a'}"
        lines.append(f"| {r.get('language')} | {r.get('split')} | {r.get('num_examples')} | {' | '.join(f1)} "
                     f"| {decoded} |")
    return "\n".join(lines)


def merged_model_card(*, base: str, adapter: str, method: str, metrics: dict | None, results: list[dict],
                      settings: GenerationSettings, max_source_length: int, source_prefix: str) -> str:
    """The ``README.md`` of a merged model folder.

    Args:
        base: the base model the adapter was trained on (hub id or folder).
        adapter: the adapter folder that was merged.
        method: peftsum method name (``lora``) or PEFT type when no run record exists.
        metrics: the run's ``metrics.json`` (``None`` when the adapter has no run folder).
        results: :func:`evaluation_results` of the run.
        settings: the decoding settings written to ``generation_config.json``.
        max_source_length, source_prefix: how articles were encoded in training.

    Returns:
        Markdown with a Hugging Face metadata header.
    """
    metrics = metrics or {}
    sentence, licence = data_and_licence(metrics.get("data"))
    languages = metrics.get("train_languages") or []
    decoding = ", ".join(f"{k}={v}" for k, v in asdict(settings).items() if not (k == "min_new_tokens" and not v))
    prefix = f"{source_prefix!r} + " if source_prefix else ""
    header = [f"base_model: {base}", "library_name: transformers"]
    if licence:
        header.append(f"license: {licence}")
    if metrics.get("data") in ("sample", "hub"):
        header.append("datasets: [csebuetnlp/xlsum]")
    if languages:
        header.append(f"language: [{', '.join(languages)}]")
    header.append(f"tags: [summarization, xlsum, peftsum, {method}, merged]")
    return "\n".join(["---", *header, "---", ""]) + f"""
# {method} adapter merged into {base}

A standalone model: the adapter `{adapter}` ({method}) was merged into the weights of `{base}`
(`peft`'s `merge_and_unload`); it loads without peft.
{f"Training languages: {', '.join(languages)}; {metrics.get('global_step')} optimizer steps." if languages else ""}

## Training data and licence

{sentence}

## Scores

{scores_table(results)}

## Decoding

`generation_config.json` holds the settings the scores were made with ({decoding}), so a plain
`generate` reproduces `peftsum generate`:

```python
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

model = AutoModelForSeq2SeqLM.from_pretrained("<this folder>")
tokenizer = AutoTokenizer.from_pretrained("<this folder>")
inputs = tokenizer({prefix}article, max_length={max_source_length}, truncation=True, return_tensors="pt")
summary = tokenizer.decode(model.generate(**inputs)[0], skip_special_tokens=True)
```
"""
