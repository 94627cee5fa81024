"""Output sanity checks that ROUGE alone hides.

A model can score some ROUGE while writing the wrong language (zero-shot transfer often
answers in the training language), nothing at all, or T5 sentinel tokens left over
from span-corruption pretraining. For every evaluation peftsum counts:

* ``script_share``: the share (0-1) of predictions whose letters are mostly (more than
  half) in the language's expected script (``peftsum.languages``; Japanese counts
  Han, Hiragana and Katakana). Letters are characters of Unicode category L; a
  prediction without letters does not count as in-script;
* ``empty_predictions``: predictions that are empty or whitespace only;
* ``sentinel_predictions``: predictions containing ``<extra_id_``.
"""

from __future__ import annotations

import functools
from typing import Iterable

import regex

from peftsum.metrics.profiles import get_profile

SENTINEL = "<extra_id_"
_LETTER = regex.compile(r"\p{L}")


@functools.lru_cache(maxsize=None)
def _script_letters(scripts: tuple[str, ...]) -> regex.Pattern:
    union = "".join(f"\\p{{Script={name}}}" for name in scripts)
    return regex.compile(rf"[\p{{L}}&&[{union}]]", regex.V1)


def in_script(text: str, language: str) -> bool:
    """Whether more than half of the letters of ``text`` are in the language's script."""
    letters = len(_LETTER.findall(text))
    if not letters:
        return False
    expected = _script_letters(get_profile(language).unicode_scripts)
    return len(expected.findall(text)) * 2 > letters


def script_share(texts: Iterable[str], language: str) -> float:
    """Share (0-1) of ``texts`` that are mostly in the language's script; 0.0 for no texts."""
    texts = list(texts)
    if not texts:
        return 0.0
    return sum(in_script(text, language) for text in texts) / len(texts)


def output_sanity(predictions: list[str], language: str) -> dict:
    """The ``sanity`` block of the score JSON (see the module doc)."""
    return {
        "expected_script": get_profile(language).script,
        "script_share": script_share(predictions, language),
        "empty_predictions": sum(1 for p in predictions if not p.strip()),
        "sentinel_predictions": sum(1 for p in predictions if SENTINEL in p),
    }
