"""Rows -> tokenized features -> padded batches.

* Source truncated to ``max_source_length`` and target to ``max_target_length`` tokens; the
  tokenizer's post-processor appends EOS *after* truncation, so a truncated sequence still ends
  in EOS (the model learns where summaries stop).
* Labels are padded with -100 by ``transformers.DataCollatorForSeq2Seq`` (dynamic padding to the
  longest sequence of each batch), so padding never contributes to the loss.
* Multilingual training mixes languages with exponent smoothing, p_i ~ n_i^alpha
  (Conneau & Lample, 2019; XL-Sum, Hasan et al., 2021, use alpha = 0.5).
"""

from __future__ import annotations

import random

LABEL_PAD = -100
"""Label id ignored by the cross-entropy loss (``torch.nn.CrossEntropyLoss(ignore_index=-100)``)."""


def tokenize_rows(rows: list[dict], tokenizer, max_source_length: int = 512, max_target_length: int = 84,
                  source_prefix: str = "") -> list[dict]:
    """Tokenize XL-Sum rows for seq2seq training.

    Args:
        rows: dicts with ``text`` and ``summary`` (and ``id``, ``language`` if present).
        tokenizer: a Hugging Face tokenizer that appends EOS (T5/mT5 do).
        max_source_length: article tokens kept, EOS included.
        max_target_length: summary tokens kept, EOS included.
        source_prefix: task prefix prepended to each article (e.g. ``"summarize: "``).

    Returns:
        One dict per row: ``input_ids``, ``attention_mask``, ``labels`` (lists of ints, unpadded),
        ``length`` (source tokens, for length grouping), plus ``id`` and ``language`` if given.
    """
    sources = [source_prefix + row["text"] for row in rows]
    enc = tokenizer(sources, max_length=max_source_length, truncation=True)
    lab = tokenizer(text_target=[row["summary"] for row in rows], max_length=max_target_length, truncation=True)
    out = []
    for i, row in enumerate(rows):
        feat = {
            "input_ids": enc["input_ids"][i],
            "attention_mask": enc["attention_mask"][i],
            "labels": lab["input_ids"][i],
            "length": len(enc["input_ids"][i]),
        }
        out.append(feat)
    return out


def make_collator(tokenizer, model=None):
    """Dynamic-padding collator: pads inputs with the pad id and labels with -100 per batch.

    Returns ``transformers.DataCollatorForSeq2Seq``; with ``model`` given it also builds
    ``decoder_input_ids`` (labels shifted right), as the model would itself.
    """
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=LABEL_PAD, padding="longest",
                                  return_tensors="pt")


def smoothing_probabilities(counts: dict[str, int], alpha: float = 0.5) -> dict[str, float]:
    """Exponent-smoothed sampling probabilities p_i = n_i^alpha / sum_j n_j^alpha.

    Args:
        counts: rows per language.
        alpha: 1 = proportional to size, 0 = uniform; XL-Sum uses 0.5.

    Returns:
        Probability per language (sums to 1).
    """
    weights = {lang: float(n) ** alpha for lang, n in counts.items() if n > 0}
    total = sum(weights.values())
    return {lang: w / total for lang, w in weights.items()}


def mix_languages(rows_by_language: dict[str, list[dict]], alpha: float = 0.5, seed: int = 0) -> list[dict]:
    """Mix languages into one training list with exponent-smoothed sampling.

    The mixed list has as many rows as all languages together; language i gets
    ``round(N * p_i)`` rows, drawn without replacement while it has rows left and with
    replacement beyond that (small languages are upsampled). Each row gets ``language``.
    With one language the rows are returned unchanged (plus ``language``).

    Args:
        rows_by_language: rows per XL-Sum language.
        alpha: smoothing exponent (see :func:`smoothing_probabilities`).
        seed: seeds the draw; the same seed gives the same list.

    Returns:
        The mixed rows, shuffled.
    """
    tagged = {lang: [dict(r, language=lang) for r in rows] for lang, rows in rows_by_language.items()}
    if len(tagged) == 1:
        return next(iter(tagged.values()))
    rng = random.Random(seed)
    total = sum(len(r) for r in tagged.values())
    probs = smoothing_probabilities({k: len(v) for k, v in tagged.items()}, alpha)
    mixed: list[dict] = []
    for lang, rows in tagged.items():
        want = max(1, round(total * probs[lang]))
        order = rows[:]
        rng.shuffle(order)
        picked = order[:want] + [rng.choice(rows) for _ in range(max(0, want - len(rows)))]
        mixed.extend(picked)
    rng.shuffle(mixed)
    return mixed
