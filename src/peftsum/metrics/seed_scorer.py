"""The seed study's scorer next to peftsum's, on the same texts.

The seed study scored with Hugging Face ``evaluate``'s ``rouge`` metric, which is Google's
``rouge_score`` package called as ``rouge_scorer.RougeScorer(rouge_types, use_stemmer=True)``
(the ``run_summarization.py`` call): its default tokenizer lowercases, replaces every character
outside ``[a-z0-9]`` by a space and applies the Porter stemmer to words of more than three
letters (``rouge_score/tokenize.py``). So Cyrillic, Devanagari, CJK and most other scripts are
deleted before counting: a Russian summary and a Russian reference both become zero tokens.
peftsum's scorer (:mod:`peftsum.metrics.rouge`) tokenizes each language the way the XL-Sum
authors do.

:func:`seed_rouge` reproduces the seed scorer directly with ``rouge_score`` (no ``evaluate``
download). ``evaluate`` with ``use_aggregator=True`` reports the ``mid`` of a bootstrap of
the per-example scores, which is their mean up to resampling noise; this module reports the
plain mean of per-example F1 (0-100), which is what that ``mid`` estimates.
:func:`side_by_side` scores several systems both ways and gives the difference.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from rouge_score import rouge_scorer
from rouge_score import tokenize as rs_tokenize

from peftsum.errors import DataError
from peftsum.metrics.rouge import VARIANTS, MultilingualRouge

SEED_SCORER = "rouge_score default tokenizer + Porter stemmer (evaluate's 'rouge', use_stemmer=True)"
"""How the seed study's scorer is described in files and tables."""
PEFTSUM_SCORER = "peftsum multilingual ROUGE (XL-Sum tokenization, per-language stemmer)"
"""How peftsum's scorer is described in files and tables."""


def _check(predictions: Sequence[str], references: Sequence[str]) -> None:
    if not references:
        raise DataError("seed scorer: no references to score")
    if len(predictions) != len(references):
        raise DataError(
            f"seed scorer: {len(predictions)} predictions but {len(references)} references; counts must match"
        )


def seed_rouge(predictions: Sequence[str], references: Sequence[str]) -> dict:
    """Score with the seed study's scorer (``rouge_score``, default tokenizer, Porter stemmer).

    Args:
        predictions, references: texts, same length and order.

    Returns:
        ``{"rouge1": F1, "rouge2": F1, "rougeL": F1, "rougeLsum": F1, "per_example": {variant:
        [F1, ...]}}``; F1 is the mean of per-example F1 on a 0-100 scale.

    Raises:
        DataError: no references, or counts that differ.
    """
    _check(predictions, references)
    scorer = rouge_scorer.RougeScorer(list(VARIANTS), use_stemmer=True)
    per = {v: [] for v in VARIANTS}
    for pred, ref in zip(predictions, references):
        scores = scorer.score(ref, pred)
        for v in VARIANTS:
            per[v].append(100.0 * scores[v].fmeasure)
    out: dict = {v: sum(per[v]) / len(per[v]) for v in VARIANTS}
    out["per_example"] = per
    return out


def seed_token_share(texts: Sequence[str], language: str) -> float | None:
    """Tokens the seed scorer keeps, as a share of peftsum's tokens, summed over ``texts``.

    Args:
        texts: e.g. the references.
        language: XL-Sum language (for peftsum's tokenizer, without stemming).

    Returns:
        ``sum(seed tokens) / sum(peftsum tokens)`` (0 when the seed scorer deletes every word;
        about 1 for English), or ``None`` when peftsum finds no token at all.
    """
    ours = MultilingualRouge(language, stemmer=False)
    n_ours = sum(len(ours.tokenizer.tokenize(t)) for t in texts)
    n_seed = sum(len(rs_tokenize.tokenize(t, None)) for t in texts)
    return n_seed / n_ours if n_ours else None


def side_by_side(systems: Mapping[str, Sequence[str]], references: Sequence[str], language: str) -> dict:
    """Score every system with peftsum's scorer and the seed study's, and take the difference.

    Args:
        systems: ``{name: predictions}``; each list aligned with ``references``.
        references: the reference summaries.
        language: XL-Sum language name or ISO code.

    Returns:
        ``{"language", "num_examples", "scorers": {"peftsum": ..., "seed": ...},
        "reference_token_share": float | None, "systems": {name: {"peftsum": {variant: F1},
        "seed": {variant: F1}, "difference": {variant: peftsum - seed}}}}``; F1 on a 0-100 scale,
        mean of per-example F1 both ways. peftsum's side uses its defaults (XL-Sum stemmer choice,
        NFKC normalization), as in the rest of a run.

    Raises:
        DataError: no references, a system whose length differs, unknown language.
    """
    scorer = MultilingualRouge(language)
    out_systems = {}
    for name, preds in systems.items():
        _check(preds, references)
        ours = {v: [] for v in VARIANTS}
        for pred, ref in zip(preds, references):
            scores = scorer.score(pred, ref)
            for v in VARIANTS:
                ours[v].append(100.0 * scores[v].fmeasure)
        mine = {v: sum(ours[v]) / len(ours[v]) for v in VARIANTS}
        seed = seed_rouge(preds, references)
        out_systems[name] = {
            "peftsum": mine,
            "seed": {v: seed[v] for v in VARIANTS},
            "difference": {v: mine[v] - seed[v] for v in VARIANTS},
        }
    return {
        "language": scorer.language,
        "num_examples": len(references),
        "scorers": {"peftsum": PEFTSUM_SCORER, "seed": SEED_SCORER},
        "reference_token_share": seed_token_share(references, scorer.language),
        "systems": out_systems,
    }
