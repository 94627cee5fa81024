"""Run files for the scorer check: the seed study's scorer next to peftsum's on an experiment's texts.

Two kinds of file, both recomputed at the end of every experiment (they only read texts that
are already on disk or bundled, and take seconds):

* ``seed_scorer/<language>.json``: for each evaluated language, every finished run's predictions
  (``runs/<id>/eval/<language>/predictions.jsonl``), LEAD-1 and the oracle, each scored with
  both scorers (:func:`peftsum.metrics.seed_scorer.side_by_side`);
* ``seed_scorer/all_languages.json``: LEAD-1 of every bundled language (all 45 of the bundled
  XL-Sum sample, each on its default evaluation split), scored both ways, so the report shows
  which scripts the seed scorer zeroes or distorts. No model is involved.

The report reads these files; it computes no score itself.
"""

from __future__ import annotations

from pathlib import Path

from peftsum.run_format import (PREDICTIONS_FILE, SEED_SCORER_ALL_FILE, SEED_SCORER_DIR, eval_dir, read_predictions,
                                write_record)

SEED_DIR = SEED_SCORER_DIR
"""Folder (in the experiment folder) of the per-language scorer-check files."""
ALL_LANGUAGES_FILE = f"{SEED_SCORER_DIR}/{SEED_SCORER_ALL_FILE}"
"""The all-languages LEAD-1 scorer check, relative to the experiment folder."""


def _lead_and_oracle(rows, language: str) -> tuple[list[str], dict[str, list[str]]]:
    """``(references, {"LEAD-1": [...], "oracle": [...]})`` in one pass over ``rows`` (a list or a stream)."""
    from peftsum.metrics.baselines import lead1, oracle_sentence
    from peftsum.metrics.rouge import MultilingualRouge

    scorer = MultilingualRouge(language)
    refs, systems = [], {"LEAD-1": [], "oracle": []}
    for r in rows:
        refs.append(r["summary"])
        systems["LEAD-1"].append(lead1(r["text"], scorer.language))
        systems["oracle"].append(oracle_sentence(r["text"], r["summary"], scorer))
    return refs, systems


def seed_check_for_language(exp_dir: Path, runs, language: str, split: str, rows) -> dict:
    """The scorer check of one evaluated language (the content of ``seed_scorer/<language>.json``).

    Args:
        exp_dir: the experiment folder.
        runs: the experiment's :class:`~peftsum.experiments.config.RunSpec` list; runs evaluated
            on ``language`` with a ``predictions.jsonl`` are included, under their run id.
        language, split: the evaluation.
        rows: the evaluated rows (for LEAD-1, the oracle and their references): a list or a stream
            (:meth:`peftsum.data.xlsum.LoadedSplit.iter_rows`), read once.

    Returns:
        :func:`~peftsum.metrics.seed_scorer.side_by_side`'s dict for LEAD-1 and the oracle, with
        ``split`` added and each run's entry (scored against the references stored in its own
        ``predictions.jsonl``) under ``systems[run_id]``, plus ``kind`` (``baseline``/``run``).
    """
    from peftsum.metrics.seed_scorer import side_by_side

    refs, systems = _lead_and_oracle(rows, language)
    out = side_by_side(systems, refs, language)
    for entry in out["systems"].values():
        entry["kind"] = "baseline"
    for run in runs:
        if language not in run.eval_languages:
            continue
        path = eval_dir(run.train.output_dir, language) / PREDICTIONS_FILE
        if not path.is_file():
            continue
        preds = read_predictions(path)
        if not preds:
            continue
        one = side_by_side({run.run_id: [str(p.get("prediction", "")) for p in preds]},
                           [str(p.get("reference", "")) for p in preds], language)
        entry = one["systems"][run.run_id]
        entry.update(kind="run", label=run.label, num_examples=len(preds))
        out["systems"][run.run_id] = entry
    out["split"] = split
    return out


def write_seed_scorer_files(cfg, exp_dir: str | Path, runs, languages: list[str]) -> list[Path]:
    """Write ``seed_scorer/<language>.json`` per evaluated language and ``seed_scorer/all_languages.json``.

    Args:
        cfg: the :class:`~peftsum.experiments.config.ExperimentConfig` (data, split, eval rows).
        exp_dir: the experiment folder.
        runs: its runs.
        languages: the evaluated languages.

    Returns:
        The paths written (replaced each time: they are derived from files already present).

    Raises:
        DataError: unreadable rows or predictions.
    """
    from peftsum.data.xlsum import eval_split, load_split

    exp_dir = Path(exp_dir)
    written = []
    for lang in languages:
        split = cfg.eval_split or eval_split(lang, cfg.data)
        rows = load_split(lang, split, cfg.data, cfg.eval_samples).iter_rows()
        path = exp_dir / SEED_DIR / f"{lang}.json"
        write_record(path, seed_check_for_language(exp_dir, runs, lang, split, rows))
        written.append(path)
    path = exp_dir / ALL_LANGUAGES_FILE
    write_record(path, all_languages_lead1())
    written.append(path)
    return written


def all_languages_lead1() -> dict:
    """LEAD-1 of every language of the bundled sample, scored with both scorers.

    Returns:
        ``{"data": "sample", "system": "LEAD-1", "scorers": {...}, "languages": {language:
        {"split", "num_examples", "script", "reference_token_share", "peftsum": {variant: F1},
        "seed": {...}, "difference": {...}}}}``; F1 on a 0-100 scale.
    """
    from peftsum.languages import LANGUAGES
    from peftsum.data.xlsum import eval_split, load_split
    from peftsum.metrics.baselines import lead1
    from peftsum.metrics.profiles import get_profile
    from peftsum.metrics.seed_scorer import PEFTSUM_SCORER, SEED_SCORER, side_by_side

    out: dict = {"data": "sample", "system": "LEAD-1",
                 "scorers": {"peftsum": PEFTSUM_SCORER, "seed": SEED_SCORER}, "languages": {}}
    for lang in LANGUAGES:
        split = eval_split(lang, "sample")
        rows = load_split(lang, split, "sample").rows
        res = side_by_side({"LEAD-1": [lead1(r["text"], lang) for r in rows]}, [r["summary"] for r in rows], lang)
        out["languages"][lang] = {"split": split, "num_examples": len(rows), "script": get_profile(lang).script,
                                  "reference_token_share": res["reference_token_share"], **res["systems"]["LEAD-1"]}
    return out
