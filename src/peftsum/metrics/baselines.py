"""Extractive baselines every model is read against, per language.

* LEAD-1: the article's first sentence (the "lead" baseline of news summarization;
  XL-Sum, Hasan et al., 2021, table 4 reports LEAD and extractive oracle the same way).
* Oracle: the single article sentence with the best ROUGE-L F1 against the reference
  summary (ties go to the earlier sentence): the best any one-sentence extract can do.

Sentences come from :func:`peftsum.metrics.sentences.split_sentences`; both baselines
are scored with :func:`peftsum.metrics.rouge.score_texts`, so their JSON is the same
score JSON as a model's.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from rouge_score import rouge_scorer

from peftsum.errors import DataError
from peftsum.metrics.bootstrap import compare_systems
from peftsum.metrics.rouge import MultilingualRouge, score_texts
from peftsum.metrics.sentences import split_sentences

__all__ = ["baseline_scores", "compare_to_lead1", "lead1", "oracle_sentence", "split_sentences"]


def lead1(text: str, language: str) -> str:
    """The first sentence of ``text`` (``""`` for a blank article)."""
    sentences = split_sentences(text, language)
    return sentences[0] if sentences else ""


def oracle_sentence(text: str, summary: str, scorer: MultilingualRouge) -> str:
    """The sentence of ``text`` with the highest ROUGE-L F1 against ``summary``."""
    reference = scorer.tokenizer.tokenize(summary)
    best, best_f1 = "", -1.0
    for sentence in split_sentences(text, scorer.language):
        f1 = rouge_scorer._score_lcs(reference, scorer.tokenizer.tokenize(sentence)).fmeasure
        if f1 > best_f1:
            best, best_f1 = sentence, f1
    return best


def _checked(rows: Iterable[dict]) -> Iterator[dict]:
    """``rows`` as they pass, each checked for ``text`` and ``summary`` (one pass: a stream is fine)."""
    n = 0
    for n, row in enumerate(rows, 1):
        for key in ("text", "summary"):
            if not isinstance(row.get(key), str):
                raise DataError(f"baselines: row {n} (id {row.get('id', '?')}) has no text field {key!r}")
        yield row
    if not n:
        raise DataError("baselines: no rows to score")


def baseline_scores(rows: Iterable[dict], language: str, **score_kwargs) -> dict:
    """LEAD-1 and oracle score JSONs for rows with ``text`` and ``summary``.

    Args:
        rows: XL-Sum rows (``text`` = article, ``summary`` = reference): a list or a stream
            (:meth:`peftsum.data.xlsum.LoadedSplit.iter_rows`), read once.
        language: XL-Sum config name or ISO code.
        **score_kwargs: passed to :func:`~peftsum.metrics.rouge.score_texts`
            (``stemmer``, ``normalize``, ``n_resamples``, ``seed``); the oracle picks its
            sentence with the same stemmer and normalization.

    Returns:
        ``{"lead1": <score JSON>, "oracle": <score JSON>}``.

    Raises:
        DataError: no rows, a row without text/summary, unknown language.
    """
    scorer = MultilingualRouge(
        language, stemmer=score_kwargs.get("stemmer"), normalize=score_kwargs.get("normalize", True)
    )
    references, leads, oracles = [], [], []
    for row in _checked(rows):
        references.append(row["summary"])
        leads.append(lead1(row["text"], scorer.language))
        oracles.append(oracle_sentence(row["text"], row["summary"], scorer))
    return {
        "lead1": score_texts(leads, references, scorer.language, **score_kwargs),
        "oracle": score_texts(oracles, references, scorer.language, **score_kwargs),
    }


def compare_to_lead1(score: dict, rows: Iterable[dict], **score_kwargs) -> dict:
    """Paired bootstrap (Koehn, 2004) of a model's score JSON against LEAD-1 on the same rows.

    Args:
        score: the model's score JSON (:func:`~peftsum.metrics.rouge.score_texts`) on ``rows``.
        rows: the evaluated XL-Sum rows, same order (``text``, ``summary``): a list or a stream, read once.
        **score_kwargs: the settings the model was scored with (``stemmer``, ``normalize``,
            ``n_resamples``, ``seed``); defaults are taken from ``score`` where recorded.

    Returns:
        ``{"against": "lead1", "rouge1": {mean_diff, ci_low, ci_high, p_value}, ...,
        "n_resamples", "seed"}``: model minus LEAD-1, ready to store as ``score["paired"]``.

    Raises:
        DataError: rows that do not match the score (count), or without text/summary.
    """
    boot = score.get("bootstrap", {})
    score_kwargs.setdefault("n_resamples", boot.get("n_resamples", 1000))
    score_kwargs.setdefault("seed", boot.get("seed", 0))
    score_kwargs.setdefault("normalize", score.get("normalization") is not None)
    score_kwargs.setdefault("stemmer", score.get("stemmer") not in (None, "none"))
    leads, references = [], []
    for row in _checked(rows):
        leads.append(lead1(row["text"], score["language"]))
        references.append(row["summary"])
    lead_score = score_texts(leads, references, score["language"], **score_kwargs)
    paired = compare_systems(
        score, lead_score, n_resamples=score_kwargs["n_resamples"], seed=score_kwargs["seed"]
    )
    return {"against": "lead1", **paired}
