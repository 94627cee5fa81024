"""Which word segmenter, stemmer and script each XL-Sum language gets.

Source: the XL-Sum scorer (Hasan et al., 2021; `multilingual_rouge_scoring` in the
csebuetnlp/xl-sum repository, on PyPI as ``multilingual-rouge``):

* word segmentation only for Chinese (both configs map to ``chinese``: jieba),
  Japanese (MeCab through fugashi), Thai (PyThaiNLP ``newmm``) and Burmese (a
  syllable breaker), its ``LANG2TOKENIZER``;
* stemming only for the languages its ``LANG2STEMMER`` knows: the NLTK Snowball
  languages (of XL-Sum's 45: Arabic, English, French, Portuguese, Russian, Spanish),
  Hindi, Bengali and Turkish. Every other language is scored without a stemmer.

XL-Sum's own evaluation runs with ``use_stemmer=True`` and ``lang=<language>``, so a
language's default here is "stem when a stemmer exists".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from peftsum.languages import get_language

SEGMENTERS: dict[str, str] = {
    "chinese_simplified": "jieba",
    "chinese_traditional": "jieba",
    "japanese": "mecab-unidic-lite",
    "thai": "pythainlp-newmm",
    "burmese": "burmese-syllables",
}
"""XL-Sum config name -> word segmenter (all others: Unicode punctuation + whitespace)."""

STEMMERS: dict[str, str] = {
    "arabic": "snowball-arabic",
    "english": "snowball-english",
    "french": "snowball-french",
    "portuguese": "snowball-portuguese",
    "russian": "snowball-russian",
    "spanish": "snowball-spanish",
    "hindi": "hindi-light",
    "bengali": "bengali-rules",
    "turkish": "turkishstemmer",
}
"""XL-Sum config name -> the stemmer the XL-Sum scorer uses for it (none for the rest)."""

UNICODE_SCRIPTS: dict[str, tuple[str, ...]] = {
    "Japanese": ("Han", "Hiragana", "Katakana"),
}
"""``Language.script`` values that are not one Unicode script name."""


@dataclass(frozen=True)
class Profile:
    """How one language is scored.

    Attributes:
        language: XL-Sum config name.
        segmenter: word segmenter name, or ``None`` (punctuation + whitespace split).
        default_stemmer: the stemmer XL-Sum uses, or ``None``.
        script: expected script (``peftsum.languages``), e.g. ``"Devanagari"``.
        unicode_scripts: the Unicode script names that count as that script.
    """

    language: str
    segmenter: Optional[str]
    default_stemmer: Optional[str]
    script: str
    unicode_scripts: tuple[str, ...]


def get_profile(language: str) -> Profile:
    """The :class:`Profile` of an XL-Sum language (name or ISO code).

    Raises:
        DataError: unknown language (from :func:`peftsum.languages.get_language`).
    """
    lang = get_language(language)
    return Profile(
        language=lang.name,
        segmenter=SEGMENTERS.get(lang.name),
        default_stemmer=STEMMERS.get(lang.name),
        script=lang.script,
        unicode_scripts=UNICODE_SCRIPTS.get(lang.script, (lang.script,)),
    )
