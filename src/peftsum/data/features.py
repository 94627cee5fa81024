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


def tokenize_batch(texts: list[str], summaries: list[str], tokenizer, max_source_length: int = 512,
                   max_target_length: int = 84, source_prefix: str = "") -> dict[str, list]:
    """Tokenize a batch of articles and summaries for seq2seq training (columns in, columns out).

    The one tokenization of peftsum: :func:`tokenize_rows` and the cached Arrow path
    (:func:`peftsum.data.arrow.tokenize_split`, a batched ``datasets.Dataset.map``) both call it.

    Args:
        texts: articles.
        summaries: reference summaries (same length as ``texts``).
        tokenizer: a Hugging Face tokenizer that appends EOS (T5/mT5 do).
        max_source_length: article tokens kept, EOS included.
        max_target_length: summary tokens kept, EOS included.
        source_prefix: task prefix prepended to each article (e.g. ``"summarize: "``).

    Returns:
        Columns ``input_ids``, ``attention_mask``, ``labels`` (one unpadded list of ints per row)
        and ``length`` (source tokens per row, for length grouping).
    """
    enc = tokenizer([source_prefix + text for text in texts], max_length=max_source_length, truncation=True)
    lab = tokenizer(text_target=list(summaries), max_length=max_target_length, truncation=True)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": lab["input_ids"],
            "length": [len(ids) for ids in enc["input_ids"]]}


def tokenize_rows(rows: list[dict], tokenizer, max_source_length: int = 512, max_target_length: int = 84,
                  source_prefix: str = "") -> list[dict]:
    """Tokenize a few XL-Sum rows for seq2seq training (:func:`tokenize_batch` on Python rows).

    Training goes through the cached Arrow path instead; this is for a handful of rows (tests,
    benchmarks of single steps).

    Args:
        rows: dicts with ``text`` and ``summary``.
        tokenizer, max_source_length, max_target_length, source_prefix: see :func:`tokenize_batch`.

    Returns:
        One dict per row: ``input_ids``, ``attention_mask``, ``labels`` (lists of ints, unpadded),
        ``length`` (source tokens, for length grouping).
    """
    cols = tokenize_batch([row["text"] for row in rows], [row["summary"] for row in rows], tokenizer,
                          max_source_length, max_target_length, source_prefix)
    return [dict(zip(cols, values)) for values in zip(*cols.values())]


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


def mix_indices(counts: dict[str, int], alpha: float = 0.5, seed: int = 0) -> tuple[list[int] | None, dict[str, int]]:
    """The exponent-smoothed language mix as indices into the languages' rows laid end to end.

    The mix has as many rows as all languages together; language i gets ``round(N * p_i)`` rows
    (at least 1), drawn without replacement while it has rows left and with replacement beyond
    that (small languages are upsampled), then everything is shuffled. Only indices are drawn, so
    this costs a few bytes per row whatever the rows hold.

    Args:
        counts: rows per language, in the order their rows are laid end to end (language k's
            row j has index ``sum(counts of the languages before k) + j``).
        alpha: smoothing exponent (see :func:`smoothing_probabilities`).
        seed: seeds the draw (``random.Random(seed)``); the same seed gives the same mix.

    Returns:
        ``(order, rows_per_language)``: ``order`` lists the mixed rows' indices, or is ``None``
        with a single language (its rows are used as they are); ``rows_per_language`` counts the
        mixed rows of each language.
    """
    if len(counts) == 1:
        return None, dict(counts)
    rng = random.Random(seed)
    total = sum(counts.values())
    probs = smoothing_probabilities(counts, alpha)
    mixed: list[int] = []
    per_language: dict[str, int] = {}
    offset = 0
    for lang, n in counts.items():
        want = max(1, round(total * probs[lang]))
        order = list(range(offset, offset + n))
        rng.shuffle(order)
        rows = range(offset, offset + n)
        picked = order[:want] + [rng.choice(rows) for _ in range(max(0, want - n))]
        mixed.extend(picked)
        per_language[lang] = len(picked)
        offset += n
    rng.shuffle(mixed)
    return mixed, per_language


def mix_languages(rows_by_language: dict[str, list[dict]], alpha: float = 0.5, seed: int = 0) -> list[dict]:
    """Mix languages into one training list with exponent-smoothed sampling (:func:`mix_indices` on rows).

    With one language the rows are returned unchanged (plus ``language``).

    Args:
        rows_by_language: rows per XL-Sum language.
        alpha: smoothing exponent (see :func:`smoothing_probabilities`).
        seed: seeds the draw; the same seed gives the same list.

    Returns:
        The mixed rows, shuffled; each gets ``language``.
    """
    tagged = [dict(r, language=lang) for lang, rows in rows_by_language.items() for r in rows]
    order, _ = mix_indices({lang: len(rows) for lang, rows in rows_by_language.items()}, alpha, seed)
    return tagged if order is None else [tagged[i] for i in order]
