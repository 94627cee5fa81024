"""Files in and out for ``peftsum score``: read texts, score two files, print, write JSON.

Input files hold one text per line, or JSON lines with a ``prediction`` field
(predictions) / ``reference`` or ``summary`` field (references); an
``eval/<language>/predictions.jsonl`` file serves as both. A file is read as JSON lines
when its name ends in ``.jsonl`` or its first line is a JSON object with such a field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from peftsum.errors import DataError
from peftsum.metrics.bootstrap import compare_systems
from peftsum.metrics.rouge import score_texts

PREDICTION_FIELDS = ("prediction",)
REFERENCE_FIELDS = ("reference", "summary")


def _json_object(line: str) -> Optional[dict]:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def read_texts(path: Path, fields: tuple[str, ...], *, allow_empty: bool = True) -> list[str]:
    """Texts of a file, one per line or one per JSON line (first of ``fields`` present).

    Raises:
        DataError: missing/unreadable/empty file; a bad JSON line, a missing field or (with
        ``allow_empty=False``) a blank text, each with file and line number.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not content.strip():
        raise DataError(f"{path}: empty file")
    lines = content.split("\n")
    if lines[-1] == "":
        lines.pop()
    lines = [line.removesuffix("\r") for line in lines]
    first = _json_object(lines[0].strip())
    as_json = path.suffix.lower() == ".jsonl" or (first is not None and any(f in first for f in fields))
    texts = []
    for lineno, line in enumerate(lines, start=1):
        if as_json:
            if not line.strip():
                continue
            obj = _json_object(line)
            if obj is None:
                raise DataError(f"{path}:{lineno}: not a JSON object")
            field = next((f for f in fields if f in obj), None)
            if field is None or not isinstance(obj[field], str):
                raise DataError(f"{path}:{lineno}: no text field {' or '.join(map(repr, fields))}")
            text = obj[field]
        else:
            text = line
        if not allow_empty and not text.strip():
            raise DataError(f"{path}:{lineno}: empty text")
        texts.append(text)
    return texts


def score_files(
    language: str,
    predictions: Path,
    references: Path,
    *,
    compare_predictions: Optional[Path] = None,
    **score_kwargs,
) -> dict:
    """Score a predictions file against a references file (the ``peftsum score`` command).

    With ``compare_predictions`` (a second system on the same references) the result also
    holds ``"paired": {"against": path, "rouge1": {mean_diff, ci_low, ci_high, p_value},
    ...}``, this system minus that one (Koehn, 2004).

    Raises:
        DataError: see :func:`read_texts`; line counts that differ (both files named).
    """
    refs = read_texts(references, REFERENCE_FIELDS, allow_empty=False)
    preds = read_texts(predictions, PREDICTION_FIELDS)
    if len(preds) != len(refs):
        raise DataError(f"{predictions} has {len(preds)} texts but {references} has {len(refs)}: counts must match")
    result = score_texts(preds, refs, language, **score_kwargs)
    if compare_predictions is not None:
        other = read_texts(compare_predictions, PREDICTION_FIELDS)
        if len(other) != len(refs):
            raise DataError(
                f"{compare_predictions} has {len(other)} texts but {references} has {len(refs)}: counts must match"
            )
        other_score = score_texts(other, refs, language, **score_kwargs)
        boot = result["bootstrap"]
        result["paired"] = {
            "against": str(compare_predictions),
            **compare_systems(result, other_score, n_resamples=boot["n_resamples"], seed=boot["seed"]),
        }
    return result


def check_score_target(path: Path | None, overwrite: bool) -> None:
    """Refuse to replace an existing score file unless ``overwrite`` (nothing to check without a ``path``).

    Raises:
        PeftsumError: ``path`` exists and ``overwrite`` is false, or it is a folder peftsum would not
            replace (:func:`peftsum.io.ensure_writable_target`).
    """
    if path is not None:
        from peftsum.io import ensure_writable_target

        ensure_writable_target(path, overwrite, alternative=None)


def write_json(result: dict, path: Path) -> None:
    """Write a score JSON (UTF-8, indented) atomically, creating the parent folder
    (:func:`peftsum.io.write_json_atomic`)."""
    from peftsum.io import write_json_atomic

    write_json_atomic(path, result)


def add_seed_scorer(result: dict, predictions: Path, references: Path) -> dict:
    """Add ``result["seed_scorer"]``: the same files scored with the seed study's scorer.

    The block is :func:`peftsum.metrics.seed_scorer.side_by_side`'s entry for the predictions
    (``peftsum``, ``seed`` and ``difference`` F1 per variant, 0-100) plus ``scorers`` and
    ``reference_token_share``.

    Raises:
        DataError: see :func:`read_texts`; counts that differ.
    """
    from peftsum.metrics.seed_scorer import side_by_side

    refs = read_texts(references, REFERENCE_FIELDS, allow_empty=False)
    preds = read_texts(predictions, PREDICTION_FIELDS)
    res = side_by_side({"predictions": preds}, refs, result["language"])
    result["seed_scorer"] = {"scorers": res["scorers"], "reference_token_share": res["reference_token_share"],
                             **res["systems"]["predictions"]}
    return result
