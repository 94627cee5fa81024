"""When a language's comparison is noise, say so instead of drawing conclusions.

A comparison of methods means something only when the methods produced summaries. It does not
when every method scores below LEAD-1 (copying the article's first sentence beats all of them),
or when a method's predictions are mostly empty, mostly in another script, or mostly one and the
same text whatever the article (the sanity figures of :mod:`peftsum.metrics.sanity`, recorded
in each ``results.json``, and the ``predictions.jsonl`` next to it). The report then replaces the
"% of full" figures and the "when to use which" sentence of that language with the reasons and
with what would make the comparison informative; the paired tests stay in the tables.
"""

from __future__ import annotations

from collections import Counter

from peftsum.reporting.analysis import PRIMARY, LanguageSection
from peftsum.display import ROUGE_LABELS
from peftsum.reporting.formatting import fmt_score
from peftsum.reporting.records import read_predictions
from peftsum.reporting.summary import group_label

#: A method whose share of empty predictions, or of predictions equal to its most common one,
#: is above this is "mostly" empty / identical.
MOSTLY = 0.5
#: A method with a smaller share of predictions in the language's script is "mostly in the wrong script".
MIN_SCRIPT_SHARE = 0.5

REMEDY = (
    "It becomes informative with more training rows (the bundled sample has 5 per language; "
    "--data hub loads XL-Sum), a pretrained base (e.g. --model google/mt5-small) and more training "
    "steps, evaluated on more examples."
)


def most_common_share(predictions: list[str]) -> float:
    """Share (0-1) of predictions equal to the most common non-empty prediction (0 for none)."""
    texts = [" ".join(p.split()) for p in predictions if p.strip()]
    if not texts or not predictions:
        return 0.0
    return Counter(texts).most_common(1)[0][1] / len(predictions)


def _run_problems(section: LanguageSection) -> list[str]:
    out = []
    for g in section.groups:
        for run in g.runs:
            ev = run.evals[section.language]
            san = ev.score.sanity or {}
            n = ev.score.num_examples or len(ev.score.per_example[PRIMARY]) or 0
            name = group_label(g) + (f" (seed {run.seed})" if len(g.runs) > 1 else "")
            bits = []
            empty = san.get("empty_predictions")
            if n and isinstance(empty, (int, float)) and empty / n > MOSTLY:
                bits.append(f"{int(empty)} of {n} predictions empty")
            share = san.get("script_share")
            if isinstance(share, (int, float)) and share < MIN_SCRIPT_SHARE and not (
                n and isinstance(empty, (int, float)) and empty / n > MOSTLY
            ):
                bits.append(f"only {100 * share:.0f}% of predictions in the {san.get('expected_script', 'expected')} script")
            if ev.predictions_path is not None and n >= 2:
                preds = [str(r.get("prediction", "")) for r in read_predictions(ev.predictions_path)]
                same = most_common_share(preds)
                if same > MOSTLY:
                    bits.append(f"{round(same * len(preds))} of {len(preds)} predictions are the same text")
            if bits:
                out.append(f"{name}: " + ", ".join(bits))
    return out


def noise_reasons(section: LanguageSection) -> list[str]:
    """Why the language's comparison is noise, one clause each; empty when it is not.

    Checks: every method's mean F1 below LEAD-1's on the primary metric (when the baseline is
    known); per run, more than half the predictions empty, fewer than half in the language's
    script, or more than half equal to one text.
    """
    reasons = []
    if section.baseline is not None and section.groups:
        lead = section.baseline.lead1.f1[PRIMARY]
        if all((g.mean(PRIMARY) or 0.0) < lead for g in section.groups):
            top = max(g.mean(PRIMARY) or 0.0 for g in section.groups)
            reasons.append(
                f"every method scores below LEAD-1 on {ROUGE_LABELS[PRIMARY]} (best {fmt_score(top)} vs "
                f"LEAD-1 {fmt_score(lead)})"
            )
    reasons += _run_problems(section)
    return reasons


def noise_sentence(section: LanguageSection, reasons: list[str]) -> str:
    """The sentence that replaces the language's "when to use which" conclusions."""
    head = section.language + (f" ({section.split})" if section.split else "")
    return (
        f"{head}: no conclusion is drawn; the comparison is noise: " + "; ".join(reasons) + ". "
        "The scores and paired tests are in the tables below, but neither '% of full' nor a winner is stated. "
        + REMEDY
    )
