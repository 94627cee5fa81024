"""Multilingual ROUGE as the XL-Sum scorer computes it, with intervals and sanity checks.

Public API:

* :func:`score_texts` -> the score JSON of ``docs/run_format.md`` (ROUGE-1/2/L/Lsum;
  F1, precision, recall 0-100; bootstrap 95% intervals; per-example F1; output sanity);
* :func:`paired_bootstrap`, :func:`compare_systems` (Koehn, 2004), :func:`bootstrap_ci`;
* :func:`script_share`, :func:`output_sanity`;
* :func:`split_sentences`, :class:`MultilingualRouge`, :class:`XLSumTokenizer`;
* :mod:`peftsum.metrics.baselines`: LEAD-1 and the one-sentence extractive oracle
  (``baseline_scores``), and a model's paired test against LEAD-1 (``compare_to_lead1``);
* :mod:`peftsum.metrics.io`: reading prediction/reference files, ``peftsum score``.
"""

from __future__ import annotations

from peftsum.metrics.bootstrap import bootstrap_ci, compare_systems, paired_bootstrap
from peftsum.metrics.rouge import VARIANTS, MultilingualRouge, score_texts
from peftsum.metrics.sanity import output_sanity, script_share
from peftsum.metrics.sentences import split_sentences
from peftsum.metrics.tokenize import XLSumTokenizer

__all__ = [
    "VARIANTS",
    "MultilingualRouge",
    "XLSumTokenizer",
    "bootstrap_ci",
    "compare_systems",
    "output_sanity",
    "paired_bootstrap",
    "score_texts",
    "script_share",
    "split_sentences",
]
