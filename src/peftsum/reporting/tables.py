"""The report's tables: one function per table, each taking analysed rows and returning a :class:`Table`.

Cells are formatted with :mod:`peftsum.reporting.formatting`; the sections that place these tables
in the document are in :mod:`peftsum.reporting.sections`.
"""

from __future__ import annotations

from peftsum.display import ROUGE_LABELS
from peftsum.modeling.methods import REFERENCE_METHOD
from peftsum.metrics.bootstrap import MIN_PAIRED_N, too_few_note
from peftsum.reporting.analysis import ALPHA, PRIMARY, EfficiencyRow, Group, LanguageSection
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
    variant_label,
)
from peftsum.reporting.records import ROUGE_KEYS, Experiment, RunRecord, read_predictions
from peftsum.reporting.render import Block, Para, Table
from peftsum.reporting.summary import group_label, train_label

#: Sample texts longer than this many characters are cut (with "…") in the sample table.
SAMPLE_CHARS = 600


def table_or(table: Table, empty: str) -> Block:
    """The table, or a sentence when it has no rows."""
    return table if table.rows else Para(empty)


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


def results_table(sec: LanguageSection, noisy: bool = False) -> Table:
    """One language's scores: baselines, then one row per method group with % of full, Δ and p.

    Args:
        sec: the analysed language section.
        noisy: the language concludes nothing (its "% of full" reads "not stated (noise)").
    """
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


def tests_table(sec: LanguageSection) -> Table | None:
    """Paired bootstrap against full fine-tuning per seed and metric; ``None`` when no group has a reference."""
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


def per_run_table(exp: Experiment) -> Table:
    """One row per (run, evaluated language): scores with CI, precision, script share, empty/sentinel predictions."""
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


def efficiency_table(rows: list[EfficiencyRow]) -> Table:
    """Parameters, checkpoint size (MB), time (s), memory (MB), throughput and final losses per method group."""
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


def samples_table(sec: LanguageSection, n: int) -> Table | None:
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


def runs_table(exp: Experiment) -> Table:
    """Every run folder: status, method, training languages, seed, model, precision and hyperparameters."""
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


def failed_runs_table(exp: Experiment) -> Table:
    """Every failed run: its id, seconds before it failed and its one-line error."""
    return Table(
        ["run", "seconds", "error"],
        [[r.run_id, fmt_seconds(r.seconds), (r.error or DASH)] for r in exp.failed_runs],
        numeric=[False, True, False],
    )
