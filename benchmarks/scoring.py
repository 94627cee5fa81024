"""Scoring speed: peftsum's multilingual ROUGE against the XL-Sum reference scorer.

Usage (from the repository root; the reference scorer is the test-only dependency
``multilingual-rouge`` plus ``unidic-lite`` for Japanese):

    .venv/bin/python benchmarks/scoring.py [--pairs 10000] [--repeats 3]

Pairs come from the bundled XL-Sum sample (all 45 languages): each row's title against
its summary, then consecutive article sentences paired up (sentence 2k as reference,
2k+1 as prediction), so every text in the set is distinct and summary-sized (mean
reference ~150 characters). Both scorers compute ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum
for every pair, stemming off (the reference cannot stem Snowball languages offline).
Scorer construction (dictionary loading) is done before the clock starts; each repeat
builds fresh scorers (peftsum's tokenizer cache starts empty). The two scorers take turns
language by language, and both process CPU time and wall time are reported: on a shared
machine CPU time is the steadier figure. Prints pairs per second for each scorer, per
repeat and the median, and the ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "src" / "peftsum" / "data" / "sample" / "xlsum"
TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]


def load_pairs(n_pairs: int) -> list[tuple[str, str, str]]:
    """(language, prediction, reference) triples; distinct texts, interleaved by kind."""
    from peftsum.languages import LANGUAGES
    from peftsum.metrics import split_sentences

    titles, sentences = [], []
    for lang in LANGUAGES:
        for path in sorted((SAMPLE / lang).glob("*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines():
                row = json.loads(line)
                titles.append((lang, row["title"], row["summary"]))
                sents = split_sentences(row["text"], lang)
                sentences += [(lang, sents[i + 1], sents[i]) for i in range(0, len(sents) - 1, 2)]
    pairs = (titles + sentences)[:n_pairs]
    if len(pairs) < n_pairs:
        sys.exit(f"only {len(pairs)} distinct pairs in the sample; ask for fewer")
    return pairs


def reference_scorers(languages: set[str]) -> dict:
    """The XL-Sum scorer per language; Japanese with the unidic-lite dictionary."""
    import fugashi
    import unidic_lite

    class LiteTagger(fugashi.Tagger):
        def __init__(self, arg: str = ""):
            super().__init__(f'-d "{unidic_lite.DICDIR}" -r "{unidic_lite.DICDIR}/mecabrc" {arg}')

    fugashi.Tagger = LiteTagger
    from multilingual_rouge import rouge_scorer

    return {lang: rouge_scorer.RougeScorer(TYPES, lang=lang, use_stemmer=False) for lang in languages}


def _clock() -> tuple[float, float]:
    return time.process_time(), time.perf_counter()


def time_repeat(by_lang: dict, makers: dict, order: list[str]) -> dict[str, list[float]]:
    """CPU and wall seconds per scorer for one pass over every pair.

    Scorers take turns language by language (in ``order``), so load from other processes
    on a shared machine falls on both alike; ``makers[name](lang)`` returns a
    ``(prediction, reference) -> scores`` function, built before its clock starts.
    """
    spent = {name: [0.0, 0.0] for name in makers}
    for lang, items in by_lang.items():
        for name in order:
            score = makers[name](lang)
            cpu, wall = _clock()
            for prediction, reference in items:
                score(prediction, reference)
            cpu2, wall2 = _clock()
            spent[name][0] += cpu2 - cpu
            spent[name][1] += wall2 - wall
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    from peftsum.metrics import MultilingualRouge

    pairs = load_pairs(args.pairs)
    by_lang: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for lang, prediction, reference in pairs:
        by_lang[lang].append((prediction, reference))
    refs = reference_scorers(set(by_lang))
    for lang in by_lang:  # load segmenters and Unicode tables before timing
        MultilingualRouge(lang, stemmer=False).score("a", "a")

    def ours(lang):
        return MultilingualRouge(lang, stemmer=False, normalize=True).score

    def xlsum(lang):
        return lambda prediction, ref: refs[lang].score(ref, prediction)

    makers = {"peftsum": ours, "xlsum": xlsum}
    cpu_rates: dict[str, list[float]] = {name: [] for name in makers}
    wall_rates: dict[str, list[float]] = {name: [] for name in makers}
    for rep in range(args.repeats):
        order = list(makers) if rep % 2 == 0 else list(reversed(makers))
        spent = time_repeat(by_lang, makers, order)
        for name, (cpu, wall) in spent.items():
            cpu_rates[name].append(len(pairs) / cpu)
            wall_rates[name].append(len(pairs) / wall)
            print(f"repeat {rep + 1}: {name:8s} {len(pairs)} pairs: "
                  f"CPU {cpu:6.2f} s = {cpu_rates[name][-1]:7.1f} pairs/s; "
                  f"wall {wall:6.2f} s = {wall_rates[name][-1]:7.1f} pairs/s", flush=True)
    cpu_med = {name: statistics.median(v) for name, v in cpu_rates.items()}
    wall_med = {name: statistics.median(v) for name, v in wall_rates.items()}
    print(f"median of {args.repeats} repeats, {len(pairs)} pairs, {len(by_lang)} languages:")
    print(f"  CPU time:  peftsum {cpu_med['peftsum']:.1f} pairs/s, XL-Sum scorer {cpu_med['xlsum']:.1f} pairs/s, "
          f"ratio {cpu_med['peftsum'] / cpu_med['xlsum']:.2f}x")
    print(f"  wall time: peftsum {wall_med['peftsum']:.1f} pairs/s, XL-Sum scorer {wall_med['xlsum']:.1f} pairs/s, "
          f"ratio {wall_med['peftsum'] / wall_med['xlsum']:.2f}x")


if __name__ == "__main__":
    main()
