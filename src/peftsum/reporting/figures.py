"""The report's matplotlib figures (Agg canvas, no pyplot state, no display needed)."""

from __future__ import annotations

from pathlib import Path

from peftsum.io import write_with_atomic as atomic_write_with
from peftsum.reporting.analysis import (
    PRIMARY,
    EfficiencyRow,
    LanguageSection,
    efficiency_lookup,
)
from peftsum.display import ROUGE_LABELS
from peftsum.reporting.formatting import method_label, method_sort_key
from peftsum.reporting.records import ROUGE_KEYS, RunRecord
from peftsum.reporting.summary import group_label

_MARKERS = "osD^vP*Xph<>"
DPI = 110


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    # Deterministic PNGs: no software/date metadata.
    return atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png", metadata={"Software": None}))


def method_colors(methods: list[str]) -> dict[str, str]:
    """A fixed colour per method or variant label (tab10 order, full fine-tuning first)."""
    palette = [
        "#1f77b4",
        "#ff7f0e",
        "#2ca02c",
        "#d62728",
        "#9467bd",
        "#8c564b",
        "#e377c2",
        "#7f7f7f",
        "#bcbd22",
        "#17becf",
    ]
    return {m: palette[i % len(palette)] for i, m in enumerate(sorted(set(methods), key=method_sort_key))}


def plot_loss_curves(
    runs: list[RunRecord], path: Path, colors: dict[str, str], title: str
) -> tuple[Path | None, list[str]]:
    """Training (solid) and validation (dashed, dots) loss against step, one line per run,
    coloured by method, for runs that share their training languages (the curves read from
    each run's ``training_log.jsonl`` by :func:`~peftsum.reporting.records.load_run`).

    Args:
        runs: the runs to draw (seeds of the same method share a colour).
        path: the PNG to write.
        colors: method -> colour (see :func:`method_colors`).
        title: the axes title.

    Returns:
        ``(path or None, run ids without loss rows)``; ``None`` when no run has loss rows.
    """
    from matplotlib.lines import Line2D

    curves, missing = [], []
    for run in runs:
        train, val = run.train_curve, run.val_curve
        if not train and not val:
            missing.append(run.run_id)
        else:
            curves.append((run, train, val))
    if not curves:
        return None, missing
    fig = _new_figure(6.4, 3.6)
    ax = fig.add_subplot()
    for run, train, val in curves:
        c = colors.get(run.label or run.method, "#888888")
        if train:
            ax.plot([s for s, _ in train], [v for _, v in train], color=c, lw=1.2, alpha=0.85)
        if val:
            ax.plot([s for s, _ in val], [v for _, v in val], color=c, lw=1.2, ls="--", marker="o", ms=3)
    methods = sorted({run.label or run.method for run, _, _ in curves}, key=method_sort_key)
    handles = [Line2D([], [], color=colors.get(m, "#888888"), lw=2, label=method_label(m)) for m in methods]
    handles += [
        Line2D([], [], color="#444444", lw=1.2, label="training loss"),
        Line2D([], [], color="#444444", lw=1.2, ls="--", marker="o", ms=3, label="validation loss"),
    ]
    ax.legend(handles=handles, fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    n_seeds = max(sum(1 for r, _, _ in curves if (r.label or r.method) == m) for m in methods)
    ax.set_title(title + (f" (one line per seed, {n_seeds} seeds)" if n_seeds > 1 else ""), fontsize=10)
    ax.grid(alpha=0.3)
    return _save(fig, path), missing


def plot_rouge_bars(section: LanguageSection, path: Path, colors: dict[str, str]) -> Path:
    """Grouped bars of ROUGE-1/2/L/Lsum F1 per method for one language, with error bars
    (95% CI for a single run, ± std across seeds otherwise) and LEAD-1/oracle as horizontal
    lines over each metric.

    Args:
        section: the language's groups and baseline.
        path: the PNG to write.
        colors: method -> colour (see :func:`method_colors`).

    Returns:
        ``path``.
    """
    groups = section.groups
    n = max(len(groups), 1)
    width = 0.8 / n
    fig = _new_figure(max(6.0, 1.6 + 1.4 * len(ROUGE_KEYS) * max(1, n / 3)), 3.8)
    ax = fig.add_subplot()
    for i, g in enumerate(groups):
        xs, ys, lo, hi = [], [], [], []
        for j, m in enumerate(ROUGE_KEYS):
            xs.append(j - 0.4 + width * (i + 0.5))
            if len(g.runs) == 1:
                sc = g.runs[0].evals[g.language].score
                y = sc.f1[m]
                lo.append(max(0.0, y - sc.ci_low[m]))
                hi.append(max(0.0, sc.ci_high[m] - y))
            else:
                y = g.mean(m)
                s = g.std(m) or 0.0
                lo.append(s)
                hi.append(s)
            ys.append(y)
        err = "95% CI" if len(g.runs) == 1 else f"± std, {len(g.runs)} seeds"
        ax.bar(
            xs,
            ys,
            width * 0.92,
            yerr=[lo, hi],
            capsize=3,
            color=colors.get(g.label or g.method, "#888888"),
            hatch="//" if g.zero_shot else None,
            edgecolor="white" if not g.zero_shot else "#333333",
            label=f"{group_label(g)} ({err})",
            error_kw={"elinewidth": 1, "ecolor": "#222222"},
        )
    if section.baseline is not None:
        lines = ((section.baseline.lead1, "LEAD-1", "#444444", "--", 1.3),
                 (section.baseline.oracle, "oracle", "#000000", ":", 1.6))
        for j, m in enumerate(ROUGE_KEYS):
            for scores, name, color, style, width in lines:
                ax.hlines(scores.f1[m], j - 0.45, j + 0.45, colors=color, linestyles=style, lw=width,
                          label=name if j == 0 else None)
    ax.set_xticks(range(len(ROUGE_KEYS)), [ROUGE_LABELS[m] for m in ROUGE_KEYS])
    ax.set_ylabel("F1 (0-100)")
    title = section.language + (f" ({section.split})" if section.split else "")
    ax.set_title(title, fontsize=11)
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return _save(fig, path)


_FRONTIER_PANELS = (
    ("trainable_params", "trainable parameters (log scale)"),
    ("checkpoint_size_mb", "checkpoint / adapter size, MB (log scale)"),
)


def _frontier_panel(ax, key: str, xlabel: str, points: list, markers: dict[str, str], colors: dict[str, str]) -> None:
    """One panel of the frontier: a point (with its seed std) per ``(section, group, efficiency row)``."""
    for s, g, row in points:
        x = row.mean(key)
        if not x or x <= 0:
            continue
        y = g.mean(PRIMARY)
        c = colors.get(g.label or g.method, "#888888")
        ax.scatter(
            [x],
            [y],
            s=46,
            marker=markers[s.language],
            facecolors="none" if g.zero_shot else c,
            edgecolors=c,
            linewidths=1.5,
            zorder=3,
        )
        if len(g.runs) > 1 and g.std(PRIMARY):
            ax.errorbar([x], [y], yerr=[g.std(PRIMARY)], color=c, lw=1, capsize=2, zorder=2)
        ax.annotate(
            g.name,
            (x, y),
            textcoords="offset points",
            xytext=(5, 4),
            fontsize=7,
            color="#333333",
        )
    ax.set_xscale("log")
    ax.margins(x=0.12, y=0.08)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{ROUGE_LABELS[PRIMARY]} F1")
    ax.grid(alpha=0.3, which="both")


def _frontier_legend(ax, points: list, markers: dict[str, str], colors: dict[str, str]) -> None:
    """Methods by colour, evaluated languages by marker, and hollow = zero-shot when there is one."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color=c, label=method_label(m)) for m, c in colors.items()]
    handles += [Line2D([], [], marker=mk, ls="", color="#555555", label=lang) for lang, mk in markers.items()]
    if any(g.zero_shot for _, g, _ in points):
        handles.append(
            Line2D(
                [], [], marker="o", ls="", markerfacecolor="none", color="#555555", label="zero-shot (hollow)"
            )
        )
    ax.legend(
        handles=handles, fontsize=7.5, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0
    )


def plot_frontier(
    sections: list[LanguageSection], efficiency: list[EfficiencyRow], path: Path, colors: dict[str, str]
) -> Path | None:
    """The efficiency frontier: ROUGE-L (mean over seeds) against trainable parameters and
    against checkpoint size (MB), log x-axes; one point per method, training languages and
    evaluated language (hollow markers for zero-shot).

    Returns:
        ``path``, or ``None`` when no run records trainable parameters or checkpoint size.
    """
    eff = efficiency_lookup(efficiency)
    langs = sorted({s.language for s in sections})
    markers = {lang: _MARKERS[i % len(_MARKERS)] for i, lang in enumerate(langs)}
    points = [(s, g, eff[g.key]) for s in sections for g in s.groups if eff.get(g.key) is not None]
    if not any(row.mean(k) for _, _, row in points for k, _ in _FRONTIER_PANELS):
        return None
    fig = _new_figure(10.5, 3.9)
    axes = fig.subplots(1, 2)
    for ax, (key, xlabel) in zip(axes, _FRONTIER_PANELS):
        _frontier_panel(ax, key, xlabel, points, markers, colors)
    _frontier_legend(axes[1], points, markers, colors)
    fig.suptitle(f"Efficiency frontier: {ROUGE_LABELS[PRIMARY]} vs training cost", fontsize=11)
    return _save(fig, path)
