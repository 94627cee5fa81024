"""Brief pretraining of the tiny model on the bundled multilingual *training* rows.

LoRA adapts a *pretrained* base; a randomly initialised base would make the offline demo compare
methods on a model that knows nothing. The default recipe is lead bias (Zhu et al., 2021,
"Leveraging Lead Bias for Zero-shot Abstractive News Summarization", SIGIR): the target is an
article's first sentence, the input the rest of the article, over the articles of the ``train``
split of all 45 bundled languages (no validation or test row is ever trained on). It uses no
reference summary, and it teaches the base to write a sentence in the article's language and
script, which is what fine-tuning then adapts.

Measured on the 2-core demo machine (1500 steps, batch 8, learning rate 1e-2): the lead-bias base
writes in the script of English and Russian validation articles (script share 1.0 on both), but
its outputs barely depend on the article (it mostly recalls training leads). Mixed with mT5's span
corruption (Raffel et al., 2020, section 3.1.4; Xue et al., 2021), the same budget left the tiny
base writing only blanks and punctuation (loss 6.8 after 1500 steps; 5.9 after 400 steps at 3e-3),
so span corruption is kept here (:func:`span_corruption_examples`) but not used by default.

The span sampling follows ``random_spans_noise_mask`` of Hugging Face's
``examples/flax/language-modeling/run_t5_mlm_flax.py`` (itself from the T5 codebase).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from peftsum.io import atomic_dir


def random_spans_noise_mask(length: int, noise_density: float = 0.15, mean_span: float = 3.0,
                            rng: np.random.Generator | None = None) -> np.ndarray:
    """Boolean mask of ``length`` tokens with noise spans (T5's span corruption).

    Args:
        length: tokens in the sequence.
        noise_density: share of tokens masked.
        mean_span: mean length of a masked span in tokens.
        rng: numpy generator (seeded by the caller).

    Returns:
        ``bool`` array of shape ``(length,)``; ``round(length * noise_density)`` entries are True
        (at least 1), in ``round(num_noise / mean_span)`` spans (at least 1).
    """
    rng = rng or np.random.default_rng(0)
    num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
    num_spans = max(int(round(num_noise / mean_span)), 1)
    num_nonnoise = length - num_noise

    def segment(total: int, parts: int) -> np.ndarray:
        marks = np.arange(total - 1) < (parts - 1)
        rng.shuffle(marks)
        marks = np.pad(marks, [[1, 0]])
        ids = np.cumsum(marks)
        return np.bincount(ids, minlength=parts)

    noise_lens = segment(num_noise, num_spans)
    keep_lens = segment(num_nonnoise, num_spans)
    interleaved = np.reshape(np.stack([keep_lens, noise_lens], axis=1), [num_spans * 2])
    starts = np.cumsum(interleaved)[:-1]
    start_flags = np.zeros(length, dtype=np.int8)
    start_flags[starts] = 1
    span_num = np.cumsum(start_flags)
    return (span_num % 2 == 1)


def corrupt(ids: list[int], mask: np.ndarray, sentinel_ids: list[int], eos_id: int) -> tuple[list[int], list[int]]:
    """Apply a noise mask: ``(input_ids, labels)`` with one sentinel per span, both ending in EOS.

    Example: ids ``[a b c d e]``, mask ``[F T T F T]`` -> input ``[a s0 d s1 </s>]``,
    labels ``[s0 b c s1 e </s>]`` (s_k = ``<extra_id_k>``).
    """
    inp, lab = [], []
    k = -1
    prev = False
    for tok, noisy in zip(ids, mask):
        if noisy:
            if not prev:
                k += 1
                inp.append(sentinel_ids[k])
                lab.append(sentinel_ids[k])
            lab.append(tok)
        else:
            inp.append(tok)
        prev = noisy
    return inp + [eos_id], lab + [eos_id]


PRETRAIN_SPLIT = "train"
"""The only bundled split the base is pretrained on (evaluation rows are never trained on)."""
LEAD_REPEATS = 4
"""Lead-bias examples are repeated this often per pass (one per article: 222 articles)."""
RECIPE = "lead"
"""Name of the pretraining recipe, part of the cache folder name (``tiny-mt5-pt<steps>-lead-s<seed>``)."""


def pretraining_rows() -> list[tuple[str, dict]]:
    """``(language, row)`` for every bundled row of the ``train`` split, all 45 languages."""
    from peftsum.languages import LANGUAGES
    from peftsum.data.xlsum import read_jsonl, sample_dir

    rows = []
    for language in LANGUAGES:
        path = sample_dir() / language / f"{PRETRAIN_SPLIT}.jsonl"
        if path.is_file():
            rows += [(language, row) for row in read_jsonl(path)]
    return rows


def lead_bias_examples(tokenizer, max_source: int = 128, max_target: int = 48) -> list[dict]:
    """Lead-bias examples (Zhu et al., 2021): first sentence as target, the rest as input.

    Args:
        tokenizer: the tiny model's tokenizer.
        max_source, max_target: token limits (the source is truncated, both end in EOS).

    Returns:
        Dicts with ``input_ids``, ``attention_mask`` and ``labels``; articles with fewer than
        three sentences are skipped.
    """
    from peftsum.metrics.sentences import split_sentences

    examples = []
    for language, row in pretraining_rows():
        sentences = split_sentences(row["text"], language)
        if len(sentences) < 3:
            continue
        src = tokenizer(" ".join(sentences[1:]), max_length=max_source, truncation=True)["input_ids"]
        tgt = tokenizer(sentences[0], max_length=max_target, truncation=True)["input_ids"]
        examples.append({"input_ids": src, "attention_mask": [1] * len(src), "labels": tgt})
    return examples


def pretraining_examples(tokenizer, seed: int = 0) -> list[dict]:
    """The default pretraining data: :data:`LEAD_REPEATS` copies of the lead-bias examples.

    Args:
        tokenizer: the tiny model's tokenizer.
        seed: unused (the examples are deterministic; the trainer's seed orders them).

    Returns:
        Dicts with ``input_ids``, ``attention_mask`` and ``labels``.
    """
    return lead_bias_examples(tokenizer) * LEAD_REPEATS


def span_corruption_examples(tokenizer, chunk_tokens: int = 128, seed: int = 0) -> list[dict]:
    """Span-corrupted chunks of every ``train`` row's title, summary and text (all 45 languages).

    Args:
        tokenizer: the tiny model's tokenizer (needs ``<extra_id_0..99>``).
        chunk_tokens: tokens per example before corruption.
        seed: seeds the masks.

    Returns:
        Dicts with ``input_ids`` and ``labels`` (lists of ints).
    """
    from peftsum.modeling.tiny import TOKENIZER_TEXT_CHARS

    rng = np.random.default_rng(seed)
    sentinels = tokenizer.convert_tokens_to_ids([f"<extra_id_{i}>" for i in range(100)])
    examples = []
    texts = [t for _, row in pretraining_rows()
             for t in (row["title"], row["summary"], row["text"][:TOKENIZER_TEXT_CHARS])]
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        for start in range(0, len(ids), chunk_tokens):
            chunk = ids[start:start + chunk_tokens]
            if len(chunk) < 8:
                continue
            inp, lab = corrupt(chunk, random_spans_noise_mask(len(chunk), rng=rng), sentinels,
                               tokenizer.eos_token_id)
            examples.append({"input_ids": inp, "attention_mask": [1] * len(inp), "labels": lab})
    return examples


def pretrain_tiny(base_dir: str | Path, output_dir: str | Path, steps: int = 1500, batch_size: int = 8,
                  learning_rate: float = 1e-2, seed: int = 0, overwrite: bool = False) -> Path:
    """Pretrain a tiny model with span corruption and save it as a standard HF folder.

    Args:
        base_dir: a folder from :func:`peftsum.modeling.tiny.build_tiny_model`.
        output_dir: where the pretrained model goes (written atomically).
        steps: optimizer steps (AdamW, linear decay, 5% warmup).
        batch_size: examples per step.
        learning_rate: peak learning rate.
        seed: seeds masks, order and dropout.
        overwrite: replace an existing folder.

    Returns:
        ``output_dir``; it also holds ``peftsum_pretrain.json`` with the settings and final loss.
    """
    import torch
    from datasets import Dataset
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, set_seed
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from peftsum.data.features import make_collator
    from peftsum.modeling.load import load_model, load_tokenizer
    from peftsum.callbacks import NanGuardCallback, ProgressBarCallback

    output_dir = Path(output_dir)
    set_seed(seed)
    tokenizer = load_tokenizer(str(base_dir))
    model, _ = load_model(str(base_dir))
    data = Dataset.from_list(pretraining_examples(tokenizer, seed=seed))
    with atomic_dir(output_dir, overwrite=overwrite) as tmp:
        args = Seq2SeqTrainingArguments(
            output_dir=str(tmp / "_trainer"), per_device_train_batch_size=batch_size, max_steps=steps,
            learning_rate=learning_rate, warmup_steps=max(1, steps // 20), lr_scheduler_type="linear",
            logging_steps=10, logging_nan_inf_filter=False, save_strategy="no", report_to=[], seed=seed,
            use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
            train_sampling_strategy="group_by_length",
        )
        trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=data,
                                 data_collator=make_collator(tokenizer, model), processing_class=tokenizer,
                                 callbacks=[NanGuardCallback()])
        trainer.remove_callback(ProgressCallback)
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(ProgressBarCallback("pretraining tiny base (lead bias)"))
        result = trainer.train()
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        import shutil

        shutil.rmtree(tmp / "_trainer", ignore_errors=True)
        losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
        (tmp / "peftsum_pretrain.json").write_text(json.dumps({
            "objective": "lead bias (first sentence from the rest, Zhu et al. 2021)",
            "split": PRETRAIN_SPLIT, "steps": steps,
            "batch_size": batch_size, "learning_rate": learning_rate, "seed": seed, "examples": len(data),
            "first_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None,
            "train_loss": result.training_loss, "base": str(base_dir),
        }, indent=2))
    return output_dir


def pretrained_tiny_name(steps: int, seed: int = 0) -> str:
    """Folder name of the cached pretrained tiny base: ``tiny-mt5-pt<steps>-lead-s<seed>``."""
    return f"tiny-mt5-pt{steps}-{RECIPE}-s{seed}"


def ensure_pretrained_tiny(steps: int = 1500, seed: int = 0) -> Path:
    """The cached pretrained tiny base (``$PEFTSUM_HOME/tiny-mt5-pt<steps>-lead-s<seed>``), built if missing."""
    from peftsum.modeling.tiny import default_tiny_dir, ensure_tiny_model, is_model_dir

    base = ensure_tiny_model()
    out = default_tiny_dir().with_name(pretrained_tiny_name(steps, seed))
    if not is_model_dir(out):
        pretrain_tiny(base, out, steps=steps, seed=seed, overwrite=out.exists())
    return out
