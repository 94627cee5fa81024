"""Text -> ROUGE tokens, the way the XL-Sum scorer tokenizes, as a rouge-score tokenizer.

Rules and their source (the XL-Sum scorer, ``multilingual_rouge_scoring``: ``tokenize``,
``MultiTokenizer`` and ``BasicTokenizer``; Hasan et al., 2021):

1. lowercase (``str.lower``);
2. remove control and format characters (Unicode category C*, keeping tab/newline/CR),
   NUL and U+FFFD; treat every punctuation character (category P*, plus all ASCII
   non-alphanumerics) as a space; split on whitespace;
3. Chinese, Japanese, Thai, Burmese: segment the space-joined words
   (:mod:`peftsum.metrics.segmenters`). Other languages, and a segmenter that returns
   nothing: OpenNMT's ``aggressive`` tokenizer (``pyonmttok``: splits letters from
   digits and symbols), then every CJK ideograph becomes its own token;
4. stem tokens longer than 3 characters when a stemmer is on
   (:mod:`peftsum.metrics.stemmers`); drop empty tokens.

peftsum adds step 0, on by default: Unicode NFKC normalization, so a composed and a
decomposed spelling (Vietnamese often comes both ways) give the same tokens.
SentencePiece-based models emit NFKC text; XL-Sum references are not always NFKC.

Category tables come from Python's :mod:`unicodedata`, as XL-Sum's, so the two agree on
any Python version. Like XL-Sum, jieba and PyThaiNLP return spaces as tokens where
punctuation or spaces separated words; they are kept (they are part of XL-Sum's scores).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Optional

from rouge_score.tokenizers import Tokenizer

from peftsum.metrics.profiles import get_profile
from peftsum.metrics.segmenters import get_segmenter
from peftsum.metrics.stemmers import get_stemmer

_CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)  # BERT's "Chinese character" blocks, as XL-Sum's tokenize_chinese_chars
_ASCII_PUNCT = [*range(33, 48), *range(58, 65), *range(91, 97), *range(123, 127)]


def _char_class(codepoints: list[int]) -> str:
    """A regex character class for a sorted list of code points, as ranges."""
    parts, start, prev = [], None, None
    for cp in codepoints:
        if start is None:
            start = prev = cp
        elif cp == prev + 1:
            prev = cp
        else:
            parts.append((start, prev))
            start = prev = cp
    if start is not None:
        parts.append((start, prev))
    body = "".join(
        f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in parts
    )
    return f"[{body}]+"


_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


@functools.lru_cache(maxsize=None)
def _patterns() -> dict[str, re.Pattern]:
    """Regexes for characters to drop, punctuation and CJK ideographs, from :mod:`unicodedata`.

    ``drop``/``punct`` cover all of Unicode; ``drop_bmp``/``punct_bmp`` only the Basic
    Multilingual Plane, which :mod:`re` matches in constant time per character (it scans
    astral ranges one by one), so they serve texts without astral characters.
    """
    drop, punct = [0, 0xFFFD], list(_ASCII_PUNCT)
    category = unicodedata.category
    for cp in range(0x110000):
        cat = category(chr(cp))
        if cat[0] == "C" and cp not in (9, 10, 13):
            drop.append(cp)
        elif cat[0] == "P":
            punct.append(cp)
    drop, punct = sorted(set(drop)), sorted(set(punct))
    cjk = [cp for lo, hi in _CJK_RANGES for cp in range(lo, hi + 1)]
    return {
        "drop": re.compile(_char_class(drop)),
        "punct": re.compile(_char_class(punct)),
        "drop_bmp": re.compile(_char_class([cp for cp in drop if cp <= 0xFFFF])),
        "punct_bmp": re.compile(_char_class([cp for cp in punct if cp <= 0xFFFF])),
        "cjk": re.compile(_char_class(cjk).removesuffix("+")),
    }


def basic_words(text: str) -> list[str]:
    """Step 2 of the module doc: drop control characters, split on punctuation and spaces."""
    patterns = _patterns()
    suffix = "" if _ASTRAL.search(text) else "_bmp"
    if not text.isprintable() or "\ufffd" in text:  # printable text has no category C character
        text = patterns["drop" + suffix].sub("", text)
    return patterns["punct" + suffix].sub(" ", text).split()


@functools.lru_cache(maxsize=None)
def _onmt():
    import pyonmttok

    return pyonmttok.Tokenizer("aggressive")


def default_split(text: str) -> list[str]:
    """XL-Sum's tokenization for languages without a segmenter (step 3, second half)."""
    joined = " ".join(_onmt().tokenize(text)[0])
    return _patterns()["cjk"].sub(lambda m: f" {m.group(0)} ", joined).split()


class XLSumTokenizer(Tokenizer):
    """A rouge-score ``Tokenizer`` for one XL-Sum language.

    Args:
        language: XL-Sum config name or ISO code.
        stemmer: a stemmer name (:data:`~peftsum.metrics.profiles.STEMMERS` values) or
            ``None`` for no stemming.
        normalize: apply Unicode NFKC first (peftsum's default; XL-Sum does not).
        cache_size: how many texts' tokens to remember (a text scored for ROUGE-1/2/L and
            again as its single sentence for ROUGE-Lsum is tokenized once).
    """

    def __init__(
        self, language: str, stemmer: Optional[str] = None, *, normalize: bool = True, cache_size: int = 50_000
    ):
        self.profile = get_profile(language)
        self.stemmer_name = stemmer
        self.normalize = normalize
        self._segment = get_segmenter(self.profile.segmenter) if self.profile.segmenter else None
        self._stem = get_stemmer(stemmer)
        self.tokenize = functools.lru_cache(maxsize=cache_size)(self._tokenize)

    def _tokenize(self, text: str) -> list[str]:
        if self.normalize:
            text = unicodedata.normalize("NFKC", text)
        words = " ".join(basic_words(text.lower().strip()))
        tokens = self._segment(words) if self._segment is not None else []
        if not tokens and words:
            tokens = default_split(words)
        if self._stem is not None:
            tokens = [self._stem(tok) for tok in tokens]
        return [tok for tok in tokens if tok]

    def tokenize(self, text: str) -> list[str]:  # replaced per instance by a cached version
        return self._tokenize(text)
