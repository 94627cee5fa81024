"""Old home of :mod:`peftsum.languages` (the XL-Sum language table moved there so that ``metrics``
need not import ``data``); kept only for ``training/trainer.py``'s import until that file's split lands."""

from peftsum.languages import LANGUAGES, Language, get_language, parse_languages

__all__ = ["LANGUAGES", "Language", "get_language", "parse_languages"]
