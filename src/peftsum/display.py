"""Rich tables for the terminal, all made by :func:`make_table` so they look alike and fit 80 columns.

Every column wraps (``overflow="fold"``): a value that does not fit goes on to the next line and
is never cut with an ellipsis. One renderer for score JSONs (:func:`score_table`) serves
``peftsum evaluate`` and ``peftsum score``; :func:`seed_score_table` shows ``score --compare-seed-scorer``.
"""

from __future__ import annotations

from rich.table import Table

from peftsum.run_format import ROUGE_KEYS

ROUGE_LABELS: dict[str, str] = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "rougeLsum": "ROUGE-Lsum"}
"""Display name of each ROUGE key, in the terminal and in the report."""


def make_table(*columns: str, title: str | None = None, caption: str | None = None, numeric: tuple[str, ...] = ()) -> Table:
    """A table in peftsum's one terminal style.

    Args:
        *columns: column headers, left to right.
        title: shown above (wraps like the cells).
        caption: shown below.
        numeric: headers of right-aligned (number) columns.

    Returns:
        A ``rich.table.Table`` whose cells wrap instead of being cut (``overflow="fold"``).
    """
    table = Table(title=title, caption=caption)
    for name in columns:
        table.add_column(name, justify="right" if name in numeric else "left", overflow="fold")
    return table


def score_table(result: dict) -> Table:
    """A score JSON (``docs/run_format.md``) as a table: F1 [95% CI], precision and recall on 0-100.

    With ``result["paired"]`` (``peftsum evaluate``: against LEAD-1; ``peftsum score
    --compare-predictions``: against the other file) two columns add the paired bootstrap's
    mean F1 difference and p-value. The caption holds the script check.
    """
    paired = result.get("paired")
    norm = result.get("normalization")
    title = (f"ROUGE, {result.get('language')} ({result.get('num_examples')} examples; stemmer "
             f"{result.get('stemmer')}" + (f"; normalization {norm}" if "normalization" in result else "") + ")")
    columns = ["metric", "F1", "95% CI", "precision", "recall"]
    if paired:
        columns += ["ΔF1", "p"]
    caption = None
    sanity = result.get("sanity")
    if sanity:
        caption = (f"{100 * sanity.get('script_share', 0):.0f}% of predictions mostly in {sanity.get('expected_script')} "
                   f"script; empty: {sanity.get('empty_predictions')}; with <extra_id_*> sentinels: "
                   f"{sanity.get('sentinel_predictions')}")
    called = not paired or paired.get("significance_called", True)
    if paired:
        against = "LEAD-1" if paired.get("against") == "lead1" else "the other predictions"
        caption = (caption + "\n" if caption else "") + f"ΔF1: F1 minus that of {against}; p: paired bootstrap p-value"
        if not called:
            from peftsum.metrics.bootstrap import MIN_PAIRED_N

            caption += (f"\npaired test: only {paired.get('n')} pairs, fewer than {MIN_PAIRED_N} (peftsum.metrics."
                        "bootstrap.MIN_PAIRED_N, after Hesterberg 2015): difference shown, nothing called significant")
    table = make_table(*columns, title=title, caption=caption, numeric=tuple(columns[1:]))
    for key in ROUGE_KEYS:
        s = result[key]
        ci = f"[{s['ci_low']:.2f}, {s['ci_high']:.2f}]" if s.get("ci_low") is not None else "-"
        row = [ROUGE_LABELS[key], f"{s['f1']:.2f}", ci, f"{s['precision']:.2f}", f"{s['recall']:.2f}"]
        if paired:
            row += [f"{paired[key]['mean_diff']:+.2f}", f"{paired[key]['p_value']:.3f}" + ("" if called else " (not called)")]
        table.add_row(*row)
    return table


def seed_score_table(result: dict) -> Table:
    """A score JSON's ``seed_scorer`` block (:func:`peftsum.metrics.io.add_seed_scorer`) as a table: each
    ROUGE variant's F1 (0-100) by peftsum's scorer, by the seed study's, and the difference."""
    block = result["seed_scorer"]
    share = block["reference_token_share"]
    caption = (f"seed scorer: {block['scorers']['seed']}; it keeps "
               + ("no" if share is None else f"{share:.0%} of the") + " reference tokens peftsum counts")
    table = make_table("variant", "peftsum F1", "seed scorer F1", "Δ (peftsum − seed)", caption=caption,
                       title=f"Same texts, two scorers ({result['language']}, {result['num_examples']} examples)")
    for variant in ROUGE_KEYS:
        table.add_row(variant, f"{block['peftsum'][variant]:.2f}", f"{block['seed'][variant]:.2f}",
                      f"{block['difference'][variant]:+.2f}")
    return table


def print_scores(console, result: dict, title: str | None = None) -> None:
    """Print a score JSON with :func:`score_table` (``title`` replaces the default one)."""
    table = score_table(result)
    if title:
        table.title = title
    console.print(table)
    precision = result.get("precision") or {}
    if precision.get("evaluated") or result.get("device"):
        trained = f" (trained in {precision['trained']})" if precision.get("trained") else ""
        console.print(f"decoded on {result.get('device') or 'unknown device'} in "
                      f"{precision.get('evaluated') or 'unknown precision'}{trained}")


def print_stats(console, stats: dict) -> None:
    """Print ``peftsum.data.stats.language_stats`` output as one table per measure."""
    splits = list(stats["splits"])
    table = make_table("measure", *splits, title=f"XL-Sum {stats['language']} ({stats['data']})", numeric=tuple(splits))
    table.add_row("rows", *[str(stats["splits"][s]["rows"]) for s in splits])
    table.add_row("dropped", *[str(sum(stats["dropped"][s].values())) for s in splits])
    for key in ("article_chars", "summary_chars", "article_tokens", "summary_tokens"):
        if key not in stats["splits"][splits[0]]:
            continue
        for p in ("p5", "p50", "p95"):
            table.add_row(f"{key.replace('_', ' ')} {p}", *[f"{stats['splits'][s][key].get(p, 0):,.0f}" for s in splits])
    table.add_row("compression ratio (median)", *[f"{stats['splits'][s]['compression_ratio']:.1f}" for s in splits])
    for key, label in (("novel_unigrams_pct", "novel unigrams %"), ("novel_bigrams_pct", "novel bigrams %")):
        table.add_row(label, *[
            "-" if stats["splits"][s][key] is None else f"{stats['splits'][s][key]:.1f}" for s in splits
        ])
    console.print(table)
