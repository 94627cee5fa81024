"""Sentence splitting for ROUGE-Lsum and the LEAD-1 / oracle baselines.

ROUGE-Lsum (Lin, 2004, section 3.2: summary-level LCS) needs sentences. rouge-score and
the XL-Sum scorer take them from newlines only, and XL-Sum's summaries are single lines,
so their ROUGE-Lsum is ROUGE-L over one "sentence". peftsum splits on newlines and then
after sentence-final punctuation of each script:

* ``.`` ``!`` ``?`` (and ``…``) when whitespace follows and the next word does not start
  with a lowercase letter (so "3.5", "e.g. this" and "U.S. officials" stay whole);
* without needing a space: ``。！？`` (CJK), ``।`` ``॥`` (Devanagari, Bengali, Gurmukhi
  ...), ``۔`` (Urdu), ``؟`` (Arabic script), ``။`` (Burmese), ``።`` ``፧`` ``፨``
  (Ethiopic), ``჻`` and the fullwidth/small forms NFKC maps to these;

closing quotes and brackets after the mark stay with the sentence. Thai has no sentence
punctuation; a space between two Thai characters ends a sentence (the orthographic rule:
Thai writes no spaces between words, a space marks a sentence or clause end), except
before the repetition mark ``ๆ``.
"""

from __future__ import annotations

import re

from peftsum.metrics.profiles import get_profile

_CLOSERS = "\"'”’»›」』）)］\\]】〉》\u0f3b\u0f3d"
_NO_SPACE_ENDS = "。！？｡।॥۔؟။።፧፨჻"
_BOUNDARY = re.compile(
    rf"(?:[{_NO_SPACE_ENDS}]+[{_CLOSERS}]*\s*)"  # script-specific sentence ends
    rf"|(?:(?:[.!?]+|…)[{_CLOSERS}]*\s+(?=[^\s]))"  # Latin-style ends: whitespace must follow
)


def _next_is_lowercase(text: str, pos: int) -> bool:
    return pos < len(text) and text[pos].islower()


def _split_line(line: str) -> list[str]:
    sentences, start = [], 0
    for match in _BOUNDARY.finditer(line):
        end = match.end()
        if match.group(0)[0] in ".!?…" and _next_is_lowercase(line, end):
            continue
        piece = line[start:end].strip()
        if piece:
            sentences.append(piece)
        start = end
    rest = line[start:].strip()
    if rest:
        sentences.append(rest)
    return sentences


_THAI_BOUNDARY = re.compile(r"(?<=[\u0e01-\u0e5b])\s+(?=[\u0e01-\u0e45\u0e47-\u0e5b])")


def split_sentences(text: str, language: str) -> list[str]:
    """Split ``text`` into sentences (see the module doc for the rules).

    Args:
        text: any text; newlines always end a sentence.
        language: XL-Sum config name or ISO code.

    Returns:
        Non-empty, stripped sentences in order; ``[]`` for blank text.

    Raises:
        DataError: unknown language.
    """
    profile = get_profile(language)
    lines = [line.strip() for line in text.splitlines()]
    if profile.language == "thai":
        return [s for line in lines if line for s in _THAI_BOUNDARY.split(line)]
    return [s for line in lines if line for s in _split_line(line)]
