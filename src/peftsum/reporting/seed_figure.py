"""The figure of the scorer check: LEAD-1's ROUGE-1 per language with both scorers."""

from __future__ import annotations

from pathlib import Path

from peftsum.reporting.figures import _new_figure, _save


def plot_seed_scorer(items: list[tuple[str, dict]], path: Path) -> Path:
    """Horizontal paired bars: peftsum's and the seed scorer's ROUGE-1 of LEAD-1 per language.

    Args:
        items: ``[(language, entry)]`` from ``seed_scorer/all_languages.json`` (entries with
            ``peftsum.rouge1`` and ``seed.rouge1``, 0-100), already sorted (largest difference first,
            drawn at the top).
        path: the PNG to write.

    Returns:
        ``path``.
    """
    n = len(items)
    fig = _new_figure(7.2, max(3.0, 0.6 + 0.19 * n))
    ax = fig.add_subplot()
    ys = list(range(n))[::-1]
    ours = [e["peftsum"]["rouge1"] for _, e in items]
    seed = [e["seed"]["rouge1"] for _, e in items]
    h = 0.4
    ax.barh([y + h / 2 for y in ys], ours, h, color="#1f77b4", label="peftsum multilingual ROUGE")
    ax.barh([y - h / 2 for y in ys], seed, h, color="#d62728",
            label="seed study's scorer (rouge_score default tokenizer)")
    ax.set_yticks(ys)
    ax.set_yticklabels([lang for lang, _ in items], fontsize=7)
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlabel("ROUGE-1 F1 of LEAD-1 (0-100)", fontsize=8)
    ax.set_title("Same texts, two scorers (sorted by the difference)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.045), ncols=2, frameon=False)
    return _save(fig, path)
