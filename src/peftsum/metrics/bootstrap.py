"""Bootstrap confidence intervals and the paired bootstrap test.

* :func:`bootstrap_ci`: percentile bootstrap interval of a mean (Efron & Tibshirani,
  1993): resample the examples with replacement, take the mean each time, report the
  2.5th and 97.5th percentiles of those means.
* :func:`paired_bootstrap`: Koehn (2004), "Statistical Significance Tests for Machine
  Translation Evaluation", EMNLP: resample the *same* example indices for both systems
  and look at the mean difference. The p-value is two-sided: twice the share of
  resamples whose mean difference is on the far side of zero (zero included), capped
  at 1; 0.0 means no resample crossed zero (p < 1 / n_resamples).

Seeded (NumPy ``default_rng``) so a run always reports the same interval.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from peftsum.errors import ConfigError, DataError

CONFIDENCE = 0.95
MIN_PAIRED_N = 30
"""Fewest paired examples for which peftsum calls a difference significant.

Below it the difference and its interval are still given, but no test result is called
significant: with few examples the percentile bootstrap's intervals are too narrow and its
p-values too small (the bootstrap distribution of a mean of n values has about
``sqrt((n - 1) / n)`` of the true spread and misses skewness; Hesterberg, 2015, "What Teachers
Should Know About the Bootstrap", The American Statistician 69(4), section 5, shows percentile
intervals under-covering badly for small n). 30 is the usual rule of thumb for a mean's
normal approximation that the percentile bootstrap also leans on; Koehn (2004) tested on
300-sentence samples. The threshold is a convention, not a theorem.
"""


def significance_called(n: int) -> bool:
    """Whether a paired test on ``n`` examples may be called significant (``n >= MIN_PAIRED_N``)."""
    return n >= MIN_PAIRED_N


def too_few_note(n: int) -> str:
    """Why nothing is called significant on ``n`` pairs (one clause)."""
    return (f"only {n} paired examples, fewer than {MIN_PAIRED_N}: difference and interval shown, "
            "nothing called significant")
_CHUNK = 100  # resamples drawn at a time, to bound memory for large test sets


def _resampled_means(values: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    if n_resamples < 1:
        raise ConfigError(f"n_resamples must be at least 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    n = len(values)
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, _CHUNK):
        size = min(_CHUNK, n_resamples - start)
        idx = rng.integers(0, n, size=(size, n))
        means[start : start + size] = values[idx].mean(axis=1)
    return means


def _as_array(values: Sequence[float], what: str) -> np.ndarray:
    array = np.asarray(list(values), dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise DataError(f"{what}: need a non-empty list of per-example scores")
    return array


def bootstrap_ci(
    values: Sequence[float], *, n_resamples: int = 1000, seed: int = 0, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean of ``values`` (same scale as the values).

    Raises:
        DataError: no values. ConfigError: ``n_resamples`` < 1.
    """
    means = _resampled_means(_as_array(values, "bootstrap"), n_resamples, seed)
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def paired_bootstrap(
    scores_a: Sequence[float], scores_b: Sequence[float], *, n_resamples: int = 1000, seed: int = 0
) -> dict:
    """Paired bootstrap test (Koehn, 2004) of system A against system B on the same references.

    Args:
        scores_a, scores_b: per-example scores (0-100), same examples in the same order.

    Returns:
        ``{"mean_diff", "ci_low", "ci_high", "p_value"}``: mean of A minus B, its 95%
        percentile interval, and the two-sided p-value (see the module doc).

    Raises:
        DataError: empty lists or lists of different lengths.
    """
    a, b = _as_array(scores_a, "system A"), _as_array(scores_b, "system B")
    if a.shape != b.shape:
        raise DataError(f"paired bootstrap: system A has {a.size} scores, system B has {b.size}")
    diff = a - b
    means = _resampled_means(diff, n_resamples, seed)
    alpha = (1.0 - CONFIDENCE) / 2
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    p_value = min(1.0, 2.0 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0))))
    return {"mean_diff": float(diff.mean()), "ci_low": float(low), "ci_high": float(high), "p_value": p_value}


def compare_systems(score_a: dict, score_b: dict, *, n_resamples: int = 1000, seed: int = 0) -> dict:
    """Paired bootstrap for every ROUGE variant of two score JSONs on the same references.

    Returns:
        ``{"rouge1": {mean_diff, ci_low, ci_high, p_value}, ..., "n_resamples", "seed", "n",
        "significance_called"}``; ``significance_called`` is false below :data:`MIN_PAIRED_N` pairs.

    Raises:
        DataError: different languages or example counts.
    """
    if score_a.get("language") != score_b.get("language") or score_a.get("num_examples") != score_b.get("num_examples"):
        raise DataError(
            "paired bootstrap needs two systems scored on the same references: got "
            f"{score_a.get('language')}/{score_a.get('num_examples')} vs "
            f"{score_b.get('language')}/{score_b.get('num_examples')} (language/examples)"
        )
    out: dict = {
        variant: paired_bootstrap(
            score_a["per_example"][variant], score_b["per_example"][variant], n_resamples=n_resamples, seed=seed
        )
        for variant in score_a["per_example"]
    }
    n = len(next(iter(score_a["per_example"].values()), []))
    out.update(n_resamples=n_resamples, seed=seed, n=n, significance_called=significance_called(n))
    return out
