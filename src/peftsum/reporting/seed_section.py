"""The report's scorer check: the seed study's scorer next to peftsum's, read from run files.

Reads ``seed_scorer/<language>.json`` and ``seed_scorer/all_languages.json`` (written by
:mod:`peftsum.experiments.seed_check`) and turns them into tables, a sentence per language and
a figure of all bundled languages sorted by the difference. Nothing is scored here.
"""

from __future__ import annotations

from pathlib import Path

from peftsum.errors import DataError
from peftsum.experiments.seed_check import ALL_LANGUAGES_FILE, SEED_DIR
from peftsum.io import read_json_object
from peftsum.display import ROUGE_LABELS
from peftsum.reporting.formatting import DASH, fmt_score
from peftsum.reporting.render import Block, Image, Para, Table

#: Metrics shown side by side.
SHOWN = ("rouge1", "rougeL")


def _num(entry: dict, side: str, metric: str, path: Path) -> float:
    try:
        value = entry[side][metric]
    except (KeyError, TypeError):
        raise DataError(f"{path}: missing '{side}.{metric}'") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"{path}: '{side}.{metric}' must be a number, found {value!r}")
    return float(value)


def _diff(x: float) -> str:
    return f"{x:+.2f}"


def _share(x) -> str:
    return DASH if not isinstance(x, (int, float)) else f"{100 * x:.0f}%"


def _row_cells(entry: dict, path: Path) -> list[str]:
    cells = []
    for m in SHOWN:
        ours, seed = _num(entry, "peftsum", m, path), _num(entry, "seed", m, path)
        cells += [fmt_score(ours), fmt_score(seed), _diff(ours - seed)]
    return cells


def _headers(first: list[str]) -> list[str]:
    out = list(first)
    for m in SHOWN:
        out += [f"{ROUGE_LABELS[m]} peftsum", f"{ROUGE_LABELS[m]} seed scorer", "Δ"]
    return out


def language_blocks(root: Path, language: str, run_labels: dict[str, str]) -> list[Block]:
    """The scorer-check table and sentence for one evaluated language.

    Args:
        root: the experiment folder.
        language: the evaluated language.
        run_labels: run id -> the label shown (e.g. ``"LoRA (run lora-russian-s42)"``).

    Returns:
        Blocks; a one-sentence note when ``seed_scorer/<language>.json`` is absent.

    Raises:
        DataError: the file is corrupt or lacks a score.
    """
    path = root / SEED_DIR / f"{language}.json"
    if not path.is_file():
        return [Para(f"No {SEED_DIR}/{language}.json (written by `peftsum experiment`); the seed study's "
                     "scorer is not shown for this language.", small=True)]
    data = read_json_object(path)
    systems = data.get("systems")
    if not isinstance(systems, dict):
        raise DataError(f"{path}: missing 'systems'")
    rows = []
    for name, entry in systems.items():
        label = run_labels.get(name, name + (" (baseline)" if entry.get("kind") == "baseline" else ""))
        rows.append([label] + _row_cells(entry, path))
    share = data.get("reference_token_share")
    lead = systems.get("LEAD-1")
    sentence = (
        f"The seed study's scorer (Google rouge_score's default tokenizer and Porter stemmer, as "
        f"evaluate's 'rouge' runs it) keeps {_share(share)} of the reference tokens peftsum counts in "
        f"{language}: it drops every character outside a-z and 0-9."
    )
    if lead is not None:
        d = _num(lead, "peftsum", "rouge1", path) - _num(lead, "seed", "rouge1", path)
        sentence += (
            f" On LEAD-1 it reports {fmt_score(_num(lead, 'seed', 'rouge1', path))} ROUGE-1 where peftsum's "
            f"multilingual scorer reports {fmt_score(_num(lead, 'peftsum', 'rouge1', path))} ({_diff(d)} points)."
        )
    return [
        Para(sentence),
        Table(_headers(["system"]), rows, numeric=[False] + [True] * (3 * len(SHOWN))),
        Para(f"From {SEED_DIR}/{language}.json: the same texts scored both ways (mean per-example F1, 0-100); "
             "Δ = peftsum − seed scorer.", small=True),
    ]


def all_languages(root: Path) -> list[tuple[str, dict]] | None:
    """``seed_scorer/all_languages.json``'s languages sorted by the ROUGE-1 difference (largest first).

    Returns:
        ``[(language, entry), ...]`` or ``None`` when the file is absent.

    Raises:
        DataError: the file is corrupt.
    """
    path = root / ALL_LANGUAGES_FILE
    if not path.is_file():
        return None
    data = read_json_object(path)
    langs = data.get("languages")
    if not isinstance(langs, dict) or not langs:
        raise DataError(f"{path}: missing 'languages'")
    items = list(langs.items())

    def key(item):
        _, e = item
        return -(_num(e, "peftsum", "rouge1", path) - _num(e, "seed", "rouge1", path))

    return sorted(items, key=key)


def all_languages_blocks(root: Path, fig_dir: Path, fig_rel_dir: str) -> tuple[list[Block], dict[str, Path]]:
    """The all-languages LEAD-1 table and figure (empty when the file is absent).

    Returns:
        ``(blocks, {"figures/seed_scorer_languages.png": path})``.
    """
    path = root / ALL_LANGUAGES_FILE
    items = all_languages(root)
    if items is None:
        return [Para(f"No {ALL_LANGUAGES_FILE} (written by `peftsum experiment`).", small=True)], {}
    rows = [[lang, str(e.get("script", DASH)), str(e.get("split", DASH)), str(e.get("num_examples", DASH)),
             _share(e.get("reference_token_share"))] + _row_cells(e, path) for lang, e in items]
    zeroed = [lang for lang, e in items if _num(e, "seed", "rouge1", path) == 0.0]
    close = [lang for lang, e in items
             if abs(_num(e, "peftsum", "rouge1", path) - _num(e, "seed", "rouge1", path)) < 2.0]
    from peftsum.reporting.seed_figure import plot_seed_scorer

    name = "seed_scorer_languages.png"
    fig = plot_seed_scorer(items, fig_dir / name)
    blocks: list[Block] = [
        Para(
            f"LEAD-1 (the article's first sentence) of every bundled language, scored with both scorers; no model "
            f"is involved. The seed study's scorer gives 0 ROUGE-1 in {len(zeroed)} of {len(items)} languages"
            + (f" ({', '.join(zeroed)})" if zeroed else "")
            + f", and is within 2 points of peftsum's in {len(close)}"
            + (f" ({', '.join(close)})" if close else "")
            + ". A model's score in a zeroed language says nothing about the model."
        ),
        Image(fig, f"{fig_rel_dir}/{name}", "seed scorer vs peftsum, all bundled languages",
              "ROUGE-1 of LEAD-1 per language with both scorers, sorted by the difference (peftsum − seed scorer)."),
        Table(_headers(["language", "script", "split", "examples", "seed tokens kept"]), rows,
              numeric=[False, False, False, True, True] + [True] * (3 * len(SHOWN))),
        Para(f"From {ALL_LANGUAGES_FILE}. 'seed tokens kept': tokens the seed scorer's tokenizer leaves in the "
             "references, as a share of peftsum's tokens.", small=True),
    ]
    return blocks, {f"{fig_rel_dir}/{name}": fig}
