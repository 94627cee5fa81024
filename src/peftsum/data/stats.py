"""``peftsum data stats``: what the seed study's exploration notebook showed, for any language.

Per split: rows; article and summary length percentiles in characters and in model tokens;
compression ratio (article tokens / summary tokens, per row, median); and abstractiveness as
the share of summary n-grams (n = 1, 2) absent from the article (Narayan et al., 2018, used
novel n-grams to characterise XSum; XL-Sum reports the same statistic). Words are ROUGE tokens
(``peftsum.metrics``' language-aware tokenizer, no stemming), so Chinese, Japanese, Thai and
Burmese are segmented into words rather than split on spaces.
"""

from __future__ import annotations

import statistics

PERCENTILES = (5, 25, 50, 75, 95)


def percentiles(values: list[float], points=PERCENTILES) -> dict[str, float]:
    """Percentiles by linear interpolation between closest ranks (numpy's default method).

    Returns:
        ``{"p5": ..., "p50": ..., ...}``; empty input gives an empty dict.
    """
    import numpy as np

    if not values:
        return {}
    arr = np.asarray(values, dtype=float)
    return {f"p{p}": float(np.percentile(arr, p)) for p in points}


def _ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def novel_ngram_share(summary_tokens: list[str], article_tokens: list[str], n: int) -> float | None:
    """Share (0-100) of the summary's n-grams that never occur in the article, or ``None`` if it has none.

    Example: summary ``a b c``, article ``a b d``: unigrams {a,b,c} -> c is novel -> 33.3;
    bigrams (a b),(b c) -> (b c) novel -> 50.0.
    """
    grams = _ngrams(summary_tokens, n)
    if not grams:
        return None
    seen = set(_ngrams(article_tokens, n))
    return 100.0 * sum(g not in seen for g in grams) / len(grams)


def split_stats(rows: list[dict], language: str, tokenizer=None) -> dict:
    """Statistics of one split.

    Args:
        rows: validated rows (``text``, ``summary``).
        language: XL-Sum language (for word tokenization).
        tokenizer: a Hugging Face tokenizer for token lengths, or ``None`` to skip them.

    Returns:
        ``{"rows", "article_chars", "summary_chars", "article_tokens", "summary_tokens",
        "compression_ratio", "novel_unigrams_pct", "novel_bigrams_pct"}`` (percentile dicts and
        medians; token entries only with a tokenizer).
    """
    from peftsum.metrics.tokenize import XLSumTokenizer

    words = XLSumTokenizer(language, None)
    out: dict = {
        "rows": len(rows),
        "article_chars": percentiles([len(r["text"]) for r in rows]),
        "summary_chars": percentiles([len(r["summary"]) for r in rows]),
    }
    if tokenizer is not None:
        art = [len(ids) for ids in tokenizer([r["text"] for r in rows])["input_ids"]]
        summ = [len(ids) for ids in tokenizer([r["summary"] for r in rows])["input_ids"]]
        out["article_tokens"] = percentiles(art)
        out["summary_tokens"] = percentiles(summ)
        out["compression_ratio"] = statistics.median(a / s for a, s in zip(art, summ))
    else:
        out["compression_ratio"] = statistics.median(len(r["text"]) / len(r["summary"]) for r in rows)
    for n, key in ((1, "novel_unigrams_pct"), (2, "novel_bigrams_pct")):
        shares = [novel_ngram_share(words.tokenize(r["summary"]), words.tokenize(r["text"]), n) for r in rows]
        shares = [s for s in shares if s is not None]
        out[key] = statistics.mean(shares) if shares else None
    return out


def language_stats(language: str, data: str = "sample", tokenizer=None) -> dict:
    """:func:`split_stats` for every split that exists, plus drop counts.

    Returns:
        ``{"language", "data", "splits": {split: stats}, "dropped": {split: {reason: n}}}``.
    """
    from peftsum.data.xlsum import available_splits, load_split

    result = {"language": language, "data": str(data), "splits": {}, "dropped": {}}
    splits = available_splits(language, data)
    if not splits:
        from peftsum.errors import DataError

        raise DataError(f"{data}: no train/validation/test file for {language}")
    for split in splits:
        loaded = load_split(language, split, data)
        result["language"] = loaded.language
        result["splits"][split] = split_stats(loaded.rows, loaded.language, tokenizer)
        result["dropped"][split] = dict(loaded.dropped)
    return result
