"""Write ``report.md``, ``report.html`` and ``figures/*.png`` for an experiment folder."""

from __future__ import annotations

import re
from pathlib import Path

from peftsum.display import ROUGE_LABELS
from peftsum.io import write_text_atomic as atomic_write_text
from peftsum.modeling.methods import REFERENCE_METHOD
from peftsum.reporting.analysis import (
    ALPHA,
    PRIMARY,
    EfficiencyRow,
    Group,
    LanguageSection,
    build_efficiency,
    build_sections,
)
from peftsum.reporting.figures import (
    method_colors,
    plot_frontier,
    plot_loss_curves,
    plot_rouge_bars,
)
from peftsum.reporting.formatting import (
    DASH,
    fmt_ci,
    fmt_count,
    fmt_diff,
    fmt_loss,
    fmt_mb,
    fmt_mean_std,
    fmt_p,
    fmt_p_eq,
    fmt_pct,
    fmt_rate,
    fmt_score_ci,
    fmt_seconds,
    fmt_share_pct,
    method_label,
    method_sort_key,
    variant_label,
)
from peftsum.reporting.records import (
    ROUGE_KEYS,
    Experiment,
    RunRecord,
    load_experiment,
    read_predictions,
)
from peftsum.reporting.render import (
    Block,
    Bullets,
    Heading,
    Image,
    ImageGrid,
    Para,
    Table,
    render_html,
    render_markdown,
)
from peftsum.reporting.summary import (
    group_label,
    train_label,
    when_to_use,
)
from peftsum.metrics.bootstrap import MIN_PAIRED_N, too_few_note
from peftsum.reporting.noise import noise_reasons, noise_sentence
from peftsum.reporting import seed_section

#: Number of sample summaries shown per language.
N_SAMPLES = 3
#: Sample texts longer than this many characters are cut (with "…") in the sample table.
SAMPLE_CHARS = 600
FIGURES = "figures"
_FIGURE_PREFIXES = ("rouge_", "loss_", "efficiency_", "seed_scorer_")


def _table_or(table: Table, empty: str) -> Block:
    """The table, or a sentence when it has no rows."""
    return table if table.rows else Para(empty)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _trained_on(g: Group) -> str:
    return train_label(g.train_languages) + (" (zero-shot)" if g.zero_shot else "")


def _with_std(mean: float | None, std: float | None, fmt) -> str:
    if mean is None:
        return DASH
    return fmt(mean) + (f" ± {fmt(std)}" if std is not None else "")


def _cut(text: str, limit: int = SAMPLE_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _hyper_summary(run: RunRecord) -> str:
    hp = run.metric("hyperparameters")
    if not isinstance(hp, dict) or not hp:
        return DASH
    parts = []
    for k, v in hp.items():
        if isinstance(v, (list, tuple)):
            v = "+".join(map(str, v))
        elif isinstance(v, float):
            v = f"{v:g}"
        parts.append(f"{k}={v}")
    return ", ".join(parts)


# --------------------------------------------------------------------------- sections
def run_counts(total: int, done: int, failed: int, unrecorded: int) -> str:
    """The overview's run line, as a person would write it.

    ``"Runs: 4, all done."``, ``"Runs: 3 (2 done, 1 failed)."``, ``"Run: 1, trained (it has
    metrics.json but no status.json)."``: zero counts are left out.

    Args:
        total: runs found.
        done: runs whose status.json says done.
        failed: failed runs.
        unrecorded: runs with metrics.json but no status.json (a single ``peftsum train`` run).
    """
    noun = "Run" if total == 1 else "Runs"
    if total == 0:
        return "Runs: none."
    if done == total:
        return f"{noun}: {total}, {'done' if total == 1 else 'all done'}."
    if failed == total:
        return f"{noun}: {total}, {'failed' if total == 1 else 'all failed'}."
    if unrecorded == total:
        what = "a single training run (metrics.json, no experiment status.json)" if total == 1 else \
            "training runs (metrics.json, no experiment status.json)"
        return f"{noun}: {total}, {what}."
    parts = [f"{n} {label}" for n, label in ((done, "done"), (failed, "failed"),
                                             (unrecorded, "trained outside an experiment (no status.json)")) if n]
    return f"{noun}: {total} ({', '.join(parts)})."


def _overview(exp: Experiment, sections: list[LanguageSection]) -> list[Block]:
    ok, failed = exp.ok_runs, exp.failed_runs
    done = sum(1 for r in ok if r.status == "done")
    unknown = len(ok) - done
    models = sorted({str(r.metric("model")) for r in ok if r.metric("model")})
    methods = sorted({r.method for r in ok}, key=method_sort_key)
    items = [
        run_counts(len(exp.runs), done, len(failed), unknown),
        "Methods: " + (", ".join(f"{method_label(m)} ({m})" for m in methods) or DASH) + ".",
        "Base model: " + (", ".join(models) or DASH) + ".",
        "Evaluated: "
        + (
            ", ".join(
                s.language
                + (f" ({s.split}, " if s.split else " (")
                + "/".join(map(str, s.num_examples))
                + " examples)"
                for s in sections
            )
            or DASH
        )
        + ".",
    ]
    rouge: dict[str, set] = {}
    boot: set = set()
    for s in sections:
        for g in s.groups:
            for r in g.runs:
                sc = r.evals[s.language].score
                rouge.setdefault(s.language, set()).add(
                    f"stemmer {sc.stemmer}, normalization {sc.normalization}"
                )
                boot.add((sc.bootstrap.get("n_resamples", DASH), sc.bootstrap.get("confidence", DASH)))
    if rouge:
        items.append(
            "ROUGE settings: "
            + "; ".join(f"{lang}: {' / '.join(sorted(v))}" for lang, v in rouge.items())
            + "."
        )
    for n_res, conf in sorted(boot, key=str):
        items.append(f"Confidence intervals: bootstrap with {n_res} resamples at confidence {conf}.")
    return [
        Para(
            f"Generated by peftsum from {exp.root}. Every number is read from the run files in this folder: "
            "runs/<run_id>/metrics.json, status.json, training_log.jsonl, eval/<language>/results.json and "
            "predictions.jsonl, and baselines/<language>.json. ROUGE scores are F1 on a 0-100 scale."
        ),
        Bullets(items),
    ]


def _results_table(sec: LanguageSection, noisy: bool = False) -> Table:
    headers = (
        ["method", "trained on", "seeds"]
        + [ROUGE_LABELS[m] for m in ROUGE_KEYS]
        + [
            f"{ROUGE_LABELS[PRIMARY]} % of full",
            f"{ROUGE_LABELS[PRIMARY]} Δ vs full [95% CI]",
            "p",
        ]
    )
    rows: list[list[str]] = []
    if sec.baseline is not None:
        for name, sc in (
            ("LEAD-1 (baseline)", sec.baseline.lead1),
            ("oracle (baseline)", sec.baseline.oracle),
        ):
            rows.append(
                [name, DASH, DASH]
                + [fmt_score_ci(sc.f1[m], sc.ci_low[m], sc.ci_high[m]) for m in ROUGE_KEYS]
                + [DASH, DASH, DASH]
            )
    for g in sec.groups:
        if len(g.runs) == 1:
            sc = g.runs[0].evals[g.language].score
            cells = [fmt_score_ci(sc.f1[m], sc.ci_low[m], sc.ci_high[m]) for m in ROUGE_KEYS]
        else:
            cells = [fmt_mean_std(g.mean(m), g.std(m)) for m in ROUGE_KEYS]
        seeds = ", ".join(DASH if s is None else str(s) for s in g.seeds)
        rel = (
            ("not stated (noise)" if noisy else fmt_pct(sec.relative(g, PRIMARY)))
            if g.key in sec.reference
            else ("reference" if g.method == REFERENCE_METHOD else DASH)
        )
        tests = [t for t in sec.tests_for(g, PRIMARY) if t.p_value is not None]
        if len(tests) == 1:
            t = tests[0]
            diff = f"{fmt_diff(t.mean_diff)} {fmt_ci(t.ci_low, t.ci_high)}"
            p = fmt_p(t.p_value) + (f" (n={t.n}<{MIN_PAIRED_N}: not called)" if t.too_few else "")
        elif tests:
            diffs = [t.mean_diff for t in tests]
            diff = f"{fmt_diff(sum(diffs) / len(diffs))} (mean of {len(tests)} seeds)"
            if any(t.too_few for t in tests):
                p = f"n={min(t.n for t in tests)}<{MIN_PAIRED_N}: not called"
            else:
                p = f"{sum(1 for t in tests if t.significant)}/{len(tests)} seeds p<{ALPHA:g}"
        else:
            diff, p = DASH, DASH
        rows.append([g.name, _trained_on(g), seeds] + cells + [rel, diff, p])
    return Table(headers, rows, numeric=[False, False, False] + [True] * (len(headers) - 3))


def _tests_table(sec: LanguageSection) -> Table | None:
    rows = []
    for g in sec.groups:
        if g.key not in sec.reference:
            continue
        for seed in g.seeds:
            row = [g.name, _trained_on(g), DASH if seed is None else str(seed)]
            reason = None
            for m in ROUGE_KEYS:
                t = next((t for t in sec.tests_for(g, m) if t.seed == seed), None)
                if t is None or t.p_value is None:
                    reason = t.reason if t else "no test"
                    row.append(DASH)
                else:
                    row.append(
                        f"{fmt_diff(t.mean_diff)} {fmt_ci(t.ci_low, t.ci_high)}, {fmt_p_eq(t.p_value)}"
                        + (" (not called)" if t.too_few else "")
                    )
            t0 = next(
                (t for t in sec.tests_for(g, PRIMARY) if t.seed == seed and t.p_value is not None), None
            )
            row.append(
                reason
                or (
                    f"{t0.n} pairs, {t0.n_resamples} resamples, bootstrap seed {t0.bootstrap_seed}"
                    + (f"; {too_few_note(t0.n)}" if t0.too_few else "")
                    if t0
                    else ""
                )
            )
            rows.append(row)
    if not rows:
        return None
    headers = (
        ["method", "trained on", "seed"] + [f"{ROUGE_LABELS[m]} Δ [95% CI], p" for m in ROUGE_KEYS] + ["note"]
    )
    return Table(headers, rows, numeric=[False, False, False, True, True, True, True, False])


def _per_run_table(exp: Experiment) -> Table:
    headers = (
        ["run", "seed", "evaluated on", "split", "examples", "precision (train / eval, device)"]
        + [ROUGE_LABELS[m] for m in ROUGE_KEYS]
        + ["script share", "empty preds", "sentinel preds"]
    )
    rows = []
    for r in exp.ok_runs:
        for lang, ev in sorted(r.evals.items()):
            sc = ev.score
            zs = " (zero-shot)" if lang not in r.train_languages else ""
            san = sc.sanity
            share = san.get("script_share")
            rows.append(
                [
                    r.run_id,
                    DASH if r.seed is None else str(r.seed),
                    lang + zs,
                    sc.split or DASH,
                    fmt_count(
                        sc.num_examples if sc.num_examples is not None else len(sc.per_example[PRIMARY])
                    ),
                    f"{r.precision or DASH} / {ev.precision or DASH}" + (f", {ev.device}" if ev.device else ""),
                ]
                + [fmt_score_ci(sc.f1[m], sc.ci_low[m], sc.ci_high[m]) for m in ROUGE_KEYS]
                + [
                    f"{share:.3f}" if isinstance(share, (int, float)) else DASH,
                    str(san.get("empty_predictions", DASH)),
                    str(san.get("sentinel_predictions", DASH)),
                ]
            )
    return Table(headers, rows, numeric=[False, True, False, False, True, False] + [True] * 7)


def _efficiency_table(rows: list[EfficiencyRow]) -> Table:
    headers = [
        "method",
        "trained on",
        "runs",
        "trainable params",
        "trainable %",
        "total params",
        "checkpoint size",
        "train time",
        "peak RSS",
        "peak GPU",
        "tokens/s",
        "examples/s",
        "final train loss",
        "final eval loss",
    ]
    out = []
    for r in rows:
        out.append(
            [
                r.name,
                train_label(r.train_languages),
                str(len(r.runs)),
                fmt_count(r.mean("trainable_params")),
                fmt_share_pct(r.mean("trainable_pct")),
                fmt_count(r.mean("total_params")),
                fmt_mb(r.mean("checkpoint_size_mb")),
                _with_std(r.mean("train_runtime_s"), r.std("train_runtime_s"), fmt_seconds),
                _with_std(r.mean("peak_rss_mb"), r.std("peak_rss_mb"), fmt_mb),
                _with_std(r.mean("peak_gpu_mb"), r.std("peak_gpu_mb"), fmt_mb),
                _with_std(r.mean("tokens_per_second"), r.std("tokens_per_second"), fmt_rate),
                _with_std(r.mean("examples_per_second"), r.std("examples_per_second"), fmt_rate),
                _with_std(r.mean("train_loss"), r.std("train_loss"), fmt_loss),
                _with_std(r.mean("eval_loss"), r.std("eval_loss"), fmt_loss),
            ]
        )
    return Table(headers, out, numeric=[False, False] + [True] * (len(headers) - 2))


def _samples(sec: LanguageSection, n: int) -> Table | None:
    """Reference vs each group's prediction (lowest-seed run) for the first ``n`` examples."""
    cols: list[tuple[str, dict]] = []
    order: list[str] | None = None
    refs: dict[str, str] = {}
    for g in sec.groups:
        run = g.runs[0]
        path = run.evals[g.language].predictions_path
        if path is None:
            continue
        rows = read_predictions(path)
        by_id = {str(row.get("id", i)): row for i, row in enumerate(rows)}
        if order is None:
            order = [str(row.get("id", i)) for i, row in enumerate(rows[:n])]
        for rid in order:
            if rid in by_id and rid not in refs:
                refs[rid] = str(by_id[rid].get("reference", ""))
        label = group_label(g) + (f" (seed {run.seed})" if len(g.runs) > 1 and run.seed is not None else "")
        cols.append((label, by_id))
    if not cols or not order:
        return None
    headers = ["id", "reference"] + [c for c, _ in cols]
    rows_out = []
    for rid in order:
        rows_out.append(
            [rid, _cut(refs.get(rid, ""))]
            + [_cut(str(d[rid].get("prediction", ""))) if rid in d else DASH for _, d in cols]
        )
    return Table(headers, rows_out, css="samples")


def _runs_table(exp: Experiment) -> Table:
    headers = ["run", "status", "method", "trained on", "seed", "model", "precision", "hyperparameters"]
    rows = []
    for r in exp.runs:
        device = r.metric("device")
        rows.append(
            [
                r.run_id,
                r.status + (" (diverged)" if r.metric("diverged") else ""),
                variant_label(r.method, r.label),
                train_label(r.train_languages) or DASH,
                DASH if r.seed is None else str(r.seed),
                str(r.metric("model") or DASH),
                (r.precision or DASH) + (f" on {device}" if device else ""),
                _hyper_summary(r),
            ]
        )
    return Table(headers, rows)


# --------------------------------------------------------------------------- main entry
def build_report(
    exp: Experiment, out_dir: Path, *, n_samples: int = N_SAMPLES
) -> tuple[list[Block], dict[str, Path]]:
    """Compute the report's blocks and write its figures.

    Args:
        exp: the loaded experiment.
        out_dir: where ``figures/`` goes (normally ``exp.root``).
        n_samples: sample summaries per language.

    Returns:
        ``(blocks, figures)``: the document blocks and ``{"figures/<name>.png": path}``.
    """
    fig_dir = out_dir / FIGURES
    figures: dict[str, Path] = {}

    def fig_path(name: str) -> tuple[Path, str]:
        rel = f"{FIGURES}/{name}"
        return fig_dir / name, rel

    sections = build_sections(exp)
    noise = [noise_reasons(sec) for sec in sections]
    efficiency = build_efficiency(exp)
    colors = method_colors([r.label or r.method for r in exp.ok_runs])
    blocks: list[Block] = _overview(exp, sections)

    # when to use which
    blocks.append(Heading(2, "When to use which"))
    if sections:
        blocks.append(
            Para(
                f"Generated from the tables below; it restates their numbers only. Comparisons are against full fine-tuning "
                f"trained on the same languages; significance is a paired bootstrap at p<{ALPHA:g} on {ROUGE_LABELS[PRIMARY]}, "
                f"called only on at least {MIN_PAIRED_N} paired examples (fewer: difference and interval only). A language "
                f"whose methods all score below LEAD-1, or whose predictions are mostly empty, in another script or one "
                f"repeated text, gets no conclusion."
            )
        )
        # diverged runs (metrics.json "diverged", peftsum.training.divergence) recommend nothing
        diverged = [r for r in exp.ok_runs if r.metric("diverged")]
        if diverged:
            kept = Experiment(exp.root, [r for r in exp.runs if not r.metric("diverged")], exp.baselines)
            q_sections = build_sections(kept)
            quality, cost = when_to_use(q_sections, build_efficiency(kept))
            blocks.append(Para("Left out here because training diverged: " + "; ".join(
                f"{r.run_id} ({r.metric('divergence_reason')})" for r in diverged) + "."))
        else:
            q_sections = sections
            quality, cost = when_to_use(sections, efficiency)
        # noise (every method below LEAD-1, empty / wrong-script / identical predictions) concludes nothing
        quality = [noise_sentence(sec, why) if why else q
                   for sec, q, why in zip(q_sections, quality, (noise_reasons(x) for x in q_sections))]
        blocks.append(Heading(3, "Quality"))
        blocks.append(Bullets(quality))
        if cost:
            blocks.append(Heading(3, "Cost"))
            blocks.append(Bullets(cost))
    else:
        blocks.append(Para("No finished run with evaluation results; nothing to compare."))

    # the seed study's scorer on every bundled language
    blocks.append(Heading(2, "Scorer check: the seed study's ROUGE on every bundled language"))
    seed_blocks, seed_figs = seed_section.all_languages_blocks(exp.root, fig_dir, FIGURES)
    blocks += seed_blocks
    figures.update(seed_figs)

    # results per language
    blocks.append(Heading(2, "Results per language"))
    if not sections:
        blocks.append(Para("No evaluation results (runs/<run_id>/eval/<language>/results.json)."))
    else:
        blocks.append(
            Para(
                "Single runs: F1 with its 95% bootstrap confidence interval from results.json. Several seeds: mean ± "
                "sample standard deviation across seeds (per-seed values in 'Per-run scores'). '% of full' divides the "
                "method's mean F1 by full fine-tuning's (same training languages); Δ is the paired-bootstrap mean "
                "difference method − full on per-example F1 of the same examples and seed.",
                small=True,
            )
        )
    run_labels = {r.run_id: f"{method_label(r.method)} (run {r.run_id})" for r in exp.runs}
    for sec, why in zip(sections, noise):
        title = (
            sec.language
            + (f" — {sec.split} split" if sec.split else "")
            + f", {'/'.join(map(str, sec.num_examples))} examples"
        )
        blocks.append(Heading(3, title))
        if why:
            blocks.append(Para(noise_sentence(sec, why)))
        blocks.append(_results_table(sec, noisy=bool(why)))
        if sec.baseline_note:
            blocks.append(Para(sec.baseline_note, small=True))
        elif sec.baseline is None:
            blocks.append(Para(f"No baselines/{sec.language}.json; LEAD-1 and oracle not shown.", small=True))
        tt = _tests_table(sec)
        if tt is not None:
            blocks.append(
                Para(
                    "Paired bootstrap against full fine-tuning, per seed and metric (Δ = method − full, ROUGE points):",
                    small=True,
                )
            )
            blocks.append(tt)
        name = f"rouge_{_safe(sec.language)}" + (f"_{_safe(sec.split)}" if sec.split else "") + ".png"
        path, rel = fig_path(name)
        plot_rouge_bars(sec, path, colors)
        figures[rel] = path
        blocks.append(
            Image(
                path,
                rel,
                f"ROUGE F1 on {sec.language}",
                "Bars: F1 with 95% CI (single run) or ± std across seeds; hatched = zero-shot; dashed = LEAD-1, dotted = oracle.",
            )
        )
        blocks.append(Heading(4, f"Scorer check: {sec.language}"))
        blocks += seed_section.language_blocks(exp.root, sec.language, run_labels)

    blocks.append(Heading(2, "Per-run scores"))
    blocks.append(
        _table_or(_per_run_table(exp), "No evaluation results (runs/<run_id>/eval/<language>/results.json).")
    )

    # efficiency
    blocks.append(Heading(2, "Efficiency"))
    blocks.append(
        Para(
            "From metrics.json; mean (± std) over seeds. Sizes are MB (10^6 bytes) of the files in model/ "
            "(full checkpoint or adapter); peak RSS is process memory; tokens/s counts non-padding source+target tokens.",
            small=True,
        )
    )
    blocks.append(_table_or(_efficiency_table(efficiency), "No finished run with metrics.json."))
    from peftsum.reporting.serving_section import serving_blocks

    serving = serving_blocks(exp.root)
    if serving:
        blocks.append(Heading(3, "Serving every trained language"))
        blocks += serving
    path, rel = fig_path("efficiency_frontier.png")
    if sections and plot_frontier(sections, efficiency, path, colors) is not None:
        figures[rel] = path
        blocks.append(
            Image(
                path,
                rel,
                "efficiency frontier",
                f"{ROUGE_LABELS[PRIMARY]} (mean over seeds) against trainable parameters and checkpoint size; log x-axes.",
            )
        )

    # loss curves: one figure per training-language set, one line per run
    blocks.append(Heading(2, "Training curves"))
    by_train: dict[tuple, list[RunRecord]] = {}
    for r in exp.ok_runs:
        by_train.setdefault(r.train_languages, []).append(r)
    grid, missing = [], []
    for langs, runs in sorted(by_train.items()):
        runs = sorted(runs, key=lambda r: (method_sort_key(r.method), r.seed or 0))
        path, rel = fig_path(f"loss_{_safe(train_label(langs))}.png")
        title = f"trained on {train_label(langs)}"
        written, no_rows = plot_loss_curves(runs, path, colors, title)
        missing += no_rows
        if written is not None:
            figures[rel] = path
            grid.append(
                Image(
                    path,
                    rel,
                    f"loss curves, {title}",
                    ", ".join(r.run_id for r in runs if r.run_id not in no_rows),
                )
            )
    if grid:
        blocks.append(
            Para(
                "From training_log.jsonl: training loss (solid) and validation loss (dashed) against step.",
                small=True,
            )
        )
        blocks.append(ImageGrid(grid))
    if missing:
        blocks.append(Para("No loss rows in training_log.jsonl for: " + ", ".join(missing) + ".", small=True))

    # samples
    blocks.append(Heading(2, "Sample summaries"))
    blocks.append(
        Para(
            f"The first {n_samples} examples of each evaluation's predictions.jsonl, reference next to each "
            f"method's prediction (lowest seed); texts over {SAMPLE_CHARS} characters are cut.",
            small=True,
        )
    )
    any_samples = False
    for sec in sections:
        t = _samples(sec, n_samples)
        if t is not None:
            any_samples = True
            blocks.append(Heading(3, f"Samples: {sec.language}"))
            blocks.append(t)
    if not any_samples:
        blocks.append(Para("No predictions.jsonl found."))

    # failures and run list
    blocks.append(Heading(2, "Failed runs"))
    if exp.failed_runs:
        blocks.append(
            Table(
                ["run", "seconds", "error"],
                [[r.run_id, fmt_seconds(r.seconds), (r.error or DASH)] for r in exp.failed_runs],
                numeric=[False, True, False],
            )
        )
    else:
        blocks.append(Para("None: every run with a status.json finished."))
    if exp.skipped:
        blocks.append(
            Para(
                "Run folders without status.json or metrics.json (not started or still running): "
                + ", ".join(p.name for p in exp.skipped)
                + ".",
                small=True,
            )
        )
    blocks.append(Heading(2, "Runs"))
    blocks.append(_runs_table(exp))
    return blocks, figures


def _remove_stale_figures(fig_dir: Path, keep: set[Path]) -> None:
    if not fig_dir.is_dir():
        return
    for p in fig_dir.glob("*.png"):
        if p.name.startswith(_FIGURE_PREFIXES) and p not in keep:
            p.unlink()


def write_report(exp_dir: Path, *, n_samples: int = N_SAMPLES) -> dict[str, Path]:
    """Write ``report.md``, a self-contained ``report.html`` and ``figures/*.png`` into ``exp_dir``.

    Every number comes from the run files described in ``docs/run_format.md``. Files are
    written atomically (temp file + ``os.replace``); figures from an earlier report that no
    longer apply are removed.

    Args:
        exp_dir: an experiment folder (with ``runs/<run_id>/``) or a single run folder.
        n_samples: sample summaries shown per language (default 3).

    Returns:
        ``{"markdown": report.md, "html": report.html, "figures/<name>.png": path, ...}``.

    Raises:
        PeftsumError: the folder is missing or holds no runs.
        DataError: a run file is corrupt or lacks a required key (the file is named).
        ImportError: ``peftsum.metrics.paired_bootstrap`` is unavailable (needed when a PEFT
            run has a full fine-tuning counterpart).
    """
    root = Path(exp_dir)
    exp = load_experiment(root)
    blocks, figures = build_report(exp, root, n_samples=n_samples)
    title = f"peftsum report: {root.resolve().name}"
    md_path = atomic_write_text(root / "report.md", render_markdown(title, blocks))
    html_path = atomic_write_text(root / "report.html", render_html(title, blocks))
    _remove_stale_figures(root / FIGURES, set(figures.values()))
    return {"markdown": md_path, "html": html_path, **figures}
