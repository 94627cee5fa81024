"""Multilingual ROUGE: per-pair scores and the score JSON of ``docs/run_format.md``.

ROUGE-N (n-gram overlap), ROUGE-L (longest common subsequence) and ROUGE-Lsum
(summary-level LCS: the union LCS of each reference sentence against all predicted
sentences) are Lin (2004), "ROUGE: A Package for Automatic Evaluation of Summaries",
sections 2-3, as implemented by Google's ``rouge-score`` (its n-gram, LCS and
summary-level LCS functions, on tokens of
:class:`~peftsum.metrics.tokenize.XLSumTokenizer`). Tokenization, segmentation and
stemming follow the XL-Sum scorer (Hasan et al., 2021); see
:mod:`peftsum.metrics.tokenize`. Differences from the XL-Sum scorer, on purpose:

* NFKC normalization of both sides (``normalize=True``; ``normalize=False`` gives the
  XL-Sum scorer's numbers to within 1e-6 on the bundled sample, the parity tests);
* ROUGE-Lsum sentences come from :func:`~peftsum.metrics.sentences.split_sentences`
  and each is tokenized with the language's full tokenizer. XL-Sum splits on newlines
  only and tokenizes Lsum sentences without the segmenter or the pyonmttok step, so its
  Lsum for Chinese/Japanese/Thai/Burmese compares whole unsegmented lines.

The corpus score of a variant is the mean of per-example F1 (and precision, recall) on
a 0-100 scale, with a seeded bootstrap 95% interval (:mod:`peftsum.metrics.bootstrap`).
"""

from __future__ import annotations

from typing import Optional, Sequence

from rouge_score import rouge_scorer

from peftsum.errors import DataError
from peftsum.metrics.bootstrap import CONFIDENCE, bootstrap_ci
from peftsum.metrics.profiles import get_profile
from peftsum.metrics.sanity import output_sanity
from peftsum.metrics.sentences import split_sentences
from peftsum.metrics.tokenize import XLSumTokenizer
from peftsum.run_format import ROUGE_KEYS

VARIANTS: tuple[str, ...] = ROUGE_KEYS
"""The four ROUGE variants scored (:data:`peftsum.run_format.ROUGE_KEYS`)."""


class MultilingualRouge:
    """Scores prediction/reference pairs of one language.

    Scoring is rouge-score's: ``_create_ngrams``/``_score_ngrams`` (ROUGE-N),
    ``_score_lcs`` (ROUGE-L) and ``_summary_level_lcs`` (ROUGE-Lsum), on tokens from
    :class:`~peftsum.metrics.tokenize.XLSumTokenizer` (a rouge-score ``Tokenizer``, so
    ``rouge_scorer.RougeScorer(..., tokenizer=scorer.tokenizer)`` gives the same numbers).
    Each text is tokenized once; when both sides are one sentence whose tokens are the
    whole text's, ROUGE-Lsum is ROUGE-L (the summary-level LCS of one sentence pair is
    their LCS), so the LCS table is not built twice.

    Args:
        language: XL-Sum config name or ISO code.
        stemmer: ``True`` stem (with the language's XL-Sum stemmer; languages XL-Sum does
            not stem stay unstemmed, as in XL-Sum), ``False`` never, ``None`` the XL-Sum
            default (stem where a stemmer exists).
        normalize: NFKC-normalize both sides first.

    Attributes:
        stemmer_name: the stemmer used, or ``None``.
        tokenizer: the :class:`~peftsum.metrics.tokenize.XLSumTokenizer`.
    """

    def __init__(self, language: str, *, stemmer: Optional[bool] = None, normalize: bool = True):
        self.profile = get_profile(language)
        self.language = self.profile.language
        use = True if stemmer is None else bool(stemmer)
        self.stemmer_name = self.profile.default_stemmer if use else None
        self.normalize = normalize
        self.tokenizer = XLSumTokenizer(self.language, self.stemmer_name, normalize=normalize)

    def sentence_tokens(self, text: str) -> list[list[str]]:
        """Tokens of each sentence of ``text`` (:func:`~peftsum.metrics.sentences.split_sentences`)."""
        return [self.tokenizer.tokenize(s) for s in split_sentences(text, self.language)]

    def score(self, prediction: str, reference: str) -> dict:
        """rouge-score ``Score`` tuples (precision, recall, fmeasure; 0-1) per variant."""
        ref, pred = self.tokenizer.tokenize(reference), self.tokenizer.tokenize(prediction)
        ngrams = rouge_scorer._create_ngrams
        result = {f"rouge{n}": rouge_scorer._score_ngrams(ngrams(ref, n), ngrams(pred, n)) for n in (1, 2)}
        result["rougeL"] = rouge_scorer._score_lcs(ref, pred)
        ref_sents, pred_sents = self.sentence_tokens(reference), self.sentence_tokens(prediction)
        if ref_sents == [ref] and pred_sents == [pred]:
            result["rougeLsum"] = result["rougeL"]
        else:
            result["rougeLsum"] = rouge_scorer._summary_level_lcs(ref_sents, pred_sents)
        return result


def _check_inputs(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise DataError(f"{len(predictions)} predictions but {len(references)} references: counts must match")
    if not references:
        raise DataError("nothing to score: no predictions and no references")
    for name, texts in (("prediction", predictions), ("reference", references)):
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise DataError(f"{name} {i + 1} is {type(text).__name__}, not text")


def score_texts(
    predictions: list[str],
    references: list[str],
    language: str,
    *,
    stemmer: Optional[bool] = None,
    normalize: bool = True,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """Score predictions against references: the score JSON of ``docs/run_format.md``.

    Args:
        predictions, references: one text per example, same order.
        language: XL-Sum config name or ISO code.
        stemmer: ``None`` for the language's XL-Sum default, ``True``/``False`` to force.
        normalize: NFKC-normalize both sides (``False`` reproduces the XL-Sum scorer).
        n_resamples, seed: bootstrap settings for the 95% intervals (``n_resamples=0``: no
            intervals, ``ci_low``/``ci_high`` are ``None``).

    Returns:
        ``{"language", "stemmer", "normalization", "num_examples", "rouge1", "rouge2",
        "rougeL", "rougeLsum", "per_example", "sanity", "bootstrap"}``; every score is
        0-100, each variant holds ``f1, precision, recall, ci_low, ci_high``.

    Raises:
        DataError: mismatched lengths, no examples, non-text items, unknown language.
    """
    get_profile(language)
    _check_inputs(predictions, references)
    scorer = MultilingualRouge(language, stemmer=stemmer, normalize=normalize)
    parts = {v: {"precision": [], "recall": [], "f1": []} for v in VARIANTS}
    for prediction, reference in zip(predictions, references):
        scores = scorer.score(prediction, reference)
        for variant in VARIANTS:
            s = scores[variant]
            parts[variant]["precision"].append(100.0 * s.precision)
            parts[variant]["recall"].append(100.0 * s.recall)
            parts[variant]["f1"].append(100.0 * s.fmeasure)
    n = len(references)
    result: dict = {
        "language": scorer.language,
        "stemmer": scorer.stemmer_name or "none",
        "normalization": "NFKC" if normalize else None,
        "num_examples": n,
    }
    for variant in VARIANTS:
        # n_resamples=0 skips the intervals (in-training ROUGE needs only the means)
        low, high = (bootstrap_ci(parts[variant]["f1"], n_resamples=n_resamples, seed=seed)
                     if n_resamples else (None, None))
        result[variant] = {
            "f1": sum(parts[variant]["f1"]) / n,
            "precision": sum(parts[variant]["precision"]) / n,
            "recall": sum(parts[variant]["recall"]) / n,
            "ci_low": low,
            "ci_high": high,
        }
    result["per_example"] = {variant: parts[variant]["f1"] for variant in VARIANTS}
    result["sanity"] = output_sanity(list(predictions), scorer.language)
    result["bootstrap"] = {"n_resamples": n_resamples, "seed": seed, "confidence": CONFIDENCE}
    return result
