"""Rich tables for the terminal: score summaries and data statistics."""

from __future__ import annotations

from rich.table import Table

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")
ROUGE_NAMES = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "rougeLsum": "ROUGE-Lsum"}


def print_scores(console, result: dict, title: str | None = None) -> None:
    """Print a score JSON (see ``docs/run_format.md``) as a table: F1 [95% CI], P, R on 0-100."""
    table = Table(title=title or f"{result.get('language')} ({result.get('num_examples')} examples, "
                                 f"stemmer: {result.get('stemmer')})")
    for col in ("metric", "F1", "95% CI", "precision", "recall"):
        table.add_column(col, justify="right" if col != "metric" else "left")
    for key in ROUGE_KEYS:
        s = result[key]
        ci = f"[{s['ci_low']:.2f}, {s['ci_high']:.2f}]" if s.get("ci_low") is not None else "-"
        table.add_row(ROUGE_NAMES[key], f"{s['f1']:.2f}", ci, f"{s['precision']:.2f}", f"{s['recall']:.2f}")
    console.print(table)
    precision = result.get("precision") or {}
    if precision.get("evaluated") or result.get("device"):
        trained = f" (trained in {precision['trained']})" if precision.get("trained") else ""
        console.print(f"decoded on {result.get('device') or 'unknown device'} in "
                      f"{precision.get('evaluated') or 'unknown precision'}{trained}")
    sanity = result.get("sanity")
    if sanity:
        console.print(
            f"script check: {100 * sanity.get('script_share', 0):.0f}% of predictions mostly in "
            f"{sanity.get('expected_script')}; empty: {sanity.get('empty_predictions')}; "
            f"with <extra_id_*> sentinels: {sanity.get('sentinel_predictions')}"
        )


def print_stats(console, stats: dict) -> None:
    """Print ``peftsum.data.stats.language_stats`` output as one table per measure."""
    splits = list(stats["splits"])
    table = Table(title=f"XL-Sum {stats['language']} ({stats['data']})")
    table.add_column("measure")
    for split in splits:
        table.add_column(split, justify="right")
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
