"""XL-Sum's 45 languages: hub config name, ISO code and writing script.

Source: the XL-Sum paper (Hasan et al., 2021, Findings of ACL, table 1) and the
`csebuetnlp/xlsum` dataset card on the Hugging Face hub, whose config names are the
``name`` column here. The script column is the script the BBC service writes in; it is
what ``peftsum.metrics`` checks predictions against.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from peftsum.errors import DataError


@dataclass(frozen=True)
class Language:
    """One XL-Sum language.

    Attributes:
        name: XL-Sum config name, e.g. ``"russian"`` (also the folder name of the sample).
        code: ISO 639 code, e.g. ``"ru"`` (``"zh-CN"`` / ``"zh-TW"`` for Chinese).
        script: the main writing script, e.g. ``"Cyrillic"``, ``"Han"``, ``"Japanese"``.
    """

    name: str
    code: str
    script: str


_TABLE = """\
amharic am Ethiopic
arabic ar Arabic
azerbaijani az Latin
bengali bn Bengali
burmese my Myanmar
chinese_simplified zh-CN Han
chinese_traditional zh-TW Han
english en Latin
french fr Latin
gujarati gu Gujarati
hausa ha Latin
hindi hi Devanagari
igbo ig Latin
indonesian id Latin
japanese ja Japanese
kirundi rn Latin
korean ko Hangul
kyrgyz ky Cyrillic
marathi mr Devanagari
nepali ne Devanagari
oromo om Latin
pashto ps Arabic
persian fa Arabic
pidgin pcm Latin
portuguese pt Latin
punjabi pa Gurmukhi
russian ru Cyrillic
scottish_gaelic gd Latin
serbian_cyrillic sr Cyrillic
serbian_latin sr Latin
sinhala si Sinhala
somali so Latin
spanish es Latin
swahili sw Latin
tamil ta Tamil
telugu te Telugu
thai th Thai
tigrinya ti Ethiopic
turkish tr Latin
ukrainian uk Cyrillic
urdu ur Arabic
uzbek uz Cyrillic
vietnamese vi Latin
welsh cy Latin
yoruba yo Latin
"""

LANGUAGES: dict[str, Language] = {
    name: Language(name, code, script)
    for name, code, script in (line.split() for line in _TABLE.splitlines())
}
"""All 45 XL-Sum languages keyed by config name, in alphabetical order."""


def get_language(name: str) -> Language:
    """Look up a language by XL-Sum config name (case-insensitive; ISO codes accepted too).

    Args:
        name: e.g. ``"russian"``, ``"Russian"`` or ``"ru"``.

    Returns:
        The :class:`Language`.

    Raises:
        DataError: the name is not one of the 45; the message lists the closest names.
    """
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    if key in LANGUAGES:
        return LANGUAGES[key]
    by_code = [lang for lang in LANGUAGES.values() if lang.code.lower().replace("-", "_") == key]
    if len(by_code) == 1:
        return by_code[0]
    close = difflib.get_close_matches(key, list(LANGUAGES), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise DataError(
        f"unknown language {name!r}{hint} (XL-Sum has 45: run `peftsum data languages` to list them)"
    )


def parse_languages(value: str | list[str] | tuple[str, ...]) -> list[str]:
    """Turn ``"english,russian"`` or ``["english", "ru"]`` into validated config names.

    Raises:
        DataError: an unknown name (see :func:`get_language`) or an empty list.
    """
    items = value.split(",") if isinstance(value, str) else [v for part in value for v in str(part).split(",")]
    names = [get_language(item).name for item in items if item.strip()]
    if not names:
        raise DataError("no language given")
    return list(dict.fromkeys(names))
