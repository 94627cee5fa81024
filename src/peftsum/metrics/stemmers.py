"""Stemmers for the languages XL-Sum stems, and the token-length rule it stems by.

Source of each rule (the XL-Sum scorer, ``multilingual_rouge_scoring/stemmers.py`` and
``rouge_scorer.MultiStemmer``, Hasan et al., 2021):

* a token is stemmed only when it is longer than 3 characters (``min_char_length=3``);
* Snowball languages use NLTK's ``SnowballStemmer``. XL-Sum builds it with
  ``ignore_stopwords=True``, which needs NLTK's ``stopwords`` corpus (a data download,
  not on PyPI); peftsum stems stopwords too (``ignore_stopwords=False``). Both sides of
  a pair are stemmed alike, so this only matters where a stopword's stem collides with
  another word's; the English and Russian tests pin hand-checked values;
* Hindi: the lightweight suffix stripper of Ramanathan & Rao (2003), "A Lightweight
  Stemmer for Hindi", the suffix table XL-Sum's ``HindiStemmer`` uses (longest suffix
  first; a suffix of length L is removed only from a token longer than L + 1);
* Turkish: the ``TurkishStemmer`` package (PyPI), as XL-Sum;
* Bengali: XL-Sum uses a rule-file stemmer (Rafi Kamal's rule format: passes of
  suffix groups, the first matching suffix of a group is removed if a stem with at least
  one non-vowel-sign character remains). The ``multilingual-rouge`` wheel on PyPI ships
  without its rules file, so its Bengali stemming cannot run; the suffix groups below
  are peftsum's own, written from Bengali inflection (emphatic clitics, verb endings,
  case endings, classifiers and plurals), and recorded as ``bengali-rules``.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

from peftsum.errors import ConfigError

MIN_STEM_LENGTH = 3
"""Tokens of at most this many characters are never stemmed (XL-Sum ``min_char_length``)."""

# Ramanathan & Rao (2003), table 1, grouped by suffix length (as XL-Sum's HindiStemmer).
_HINDI_SUFFIXES: dict[int, tuple[str, ...]] = {
    1: ("ो", "े", "ू", "ु", "ी", "ि", "ा"),
    2: ("कर", "ाओ", "िए", "ाई", "ाए", "ने", "नी", "ना", "ते", "ीं", "ती", "ता", "ाँ", "ां", "ों", "ें"),
    3: ("ाकर", "ाइए", "ाईं", "ाया", "ेगी", "ेगा", "ोगी", "ोगे", "ाने", "ाना", "ाते", "ाती", "ाता",
        "तीं", "ाओं", "ाएं", "ुओं", "ुएं", "ुआं"),
    4: ("ाएगी", "ाएगा", "ाओगी", "ाओगे", "एंगी", "ेंगी", "एंगे", "ेंगे", "ूंगी", "ूंगा", "ातीं", "नाओं",
        "नाएं", "ताओं", "ताएं", "ियाँ", "ियों", "ियां"),
    5: ("ाएंगी", "ाएंगे", "ाऊंगी", "ाऊंगा", "ाइयाँ", "ाइयों", "ाइयां"),
}


def stem_hindi(token: str) -> str:
    """Remove the longest Hindi suffix (Ramanathan & Rao, 2003) that leaves 2+ characters."""
    for length in (5, 4, 3, 2, 1):
        if len(token) > length + 1:
            for suffix in _HINDI_SUFFIXES[length]:
                if token.endswith(suffix):
                    return token[:-length]
    return token


# Bengali: passes applied in order; within a pass the first (longest) matching suffix wins.
_BENGALI_PASSES: tuple[tuple[str, ...], ...] = (
    ("ই", "ও", "তো"),  # emphatic clitics: এটাই, সেটাও, হয়তো
    (  # verb endings (progressive, perfect, past, future, imperative)
        "চ্ছিলেন", "চ্ছিলাম", "েছিলেন", "েছিলাম", "চ্ছিলে", "চ্ছিল", "চ্ছিস", "চ্ছেন", "েছিল",
        "ছিলেন", "ছিলাম", "চ্ছে", "চ্ছি", "েছেন", "ছিলে", "ছিল", "ছেন", "েছে", "েছি", "বেন",
        "লেন", "লাম", "চ্ছ", "ছে", "ছি", "েছ", "বে", "লে", "েন", "িস",
    ),
    ("দের", "ের", "কে", "তে", "েতে", "য়"),  # case endings: রহিমের, আমাকে, হাসতে
    ("গুলোর", "গুলির", "গুলো", "গুলি", "টির", "টার", "টি", "টা", "রা"),  # classifiers, plurals
)
_BENGALI_VOWEL_SIGNS = frozenset("ািীুূেো")


def stem_bengali(token: str) -> str:
    """Strip Bengali suffixes pass by pass, keeping a stem with a non-vowel-sign character."""
    for suffixes in _BENGALI_PASSES:
        for suffix in suffixes:
            if token.endswith(suffix):
                stem = token[: len(token) - len(suffix)]
                if any(ch not in _BENGALI_VOWEL_SIGNS for ch in stem):
                    token = stem
                break
    return token


def _snowball(language: str) -> Callable[[str], str]:
    from nltk.stem.snowball import SnowballStemmer

    return SnowballStemmer(language, ignore_stopwords=False).stem


def _turkish() -> Callable[[str], str]:
    from TurkishStemmer import TurkishStemmer

    return TurkishStemmer().stem


_FACTORIES: dict[str, Callable[[], Callable[[str], str]]] = {
    **{f"snowball-{lang}": functools.partial(_snowball, lang)
       for lang in ("arabic", "english", "french", "portuguese", "russian", "spanish")},
    "hindi-light": lambda: stem_hindi,
    "bengali-rules": lambda: stem_bengali,
    "turkishstemmer": _turkish,
}
"""Stemmer name (the values of :data:`peftsum.metrics.profiles.STEMMERS`) -> factory of a token -> stem
function; libraries are imported on first use."""


@functools.lru_cache(maxsize=None)
def _base_stemmer(name: str) -> Callable[[str], str]:
    if name not in _FACTORIES:
        raise ConfigError(f"unknown stemmer {name!r}; choose one of: {', '.join(_FACTORIES)}")
    return _FACTORIES[name]()


def get_stemmer(name: Optional[str]) -> Optional[Callable[[str], str]]:
    """A token -> stem function for a stemmer name of :data:`~peftsum.metrics.profiles.STEMMERS`.

    The function applies XL-Sum's length rule: tokens of at most
    :data:`MIN_STEM_LENGTH` characters come back unchanged. ``None`` gives ``None``.

    Raises:
        ConfigError: a name that is not in the stemmer registry (the message lists the known ones).
    """
    if name is None:
        return None
    base = _base_stemmer(name)

    @functools.lru_cache(maxsize=200_000)
    def stem(token: str) -> str:
        return base(token) if len(token) > MIN_STEM_LENGTH else token

    return stem
