"""The report's sections, in document order: one function per section, each returning its blocks.

Every section takes the same :class:`~peftsum.reporting.report_inputs.ReportInputs` (the experiment,
its analysis, figure colours and where figures go); sections that draw a figure add it to
``inputs.figures``. The opening sections are in :mod:`peftsum.reporting.overview`, the tables in
:mod:`peftsum.reporting.tables`. :data:`SECTIONS` is the document's order;
:func:`peftsum.reporting.report.build_report` runs it.
"""

from __future__ import annotations

import re
from typing import Callable

from peftsum.display import ROUGE_LABELS
from peftsum.reporting import seed_section
from peftsum.reporting.analysis import PRIMARY, LanguageSection
from peftsum.reporting.figures import plot_frontier, plot_loss_curves, plot_rouge_bars
from peftsum.reporting.formatting import method_label, method_sort_key
from peftsum.reporting.noise import noise_sentence
from peftsum.reporting.overview import overview_blocks, when_to_use_blocks
from peftsum.reporting.records import RunRecord
from peftsum.reporting.render import Block, Heading, Image, ImageGrid, Para
from peftsum.reporting.report_inputs import FIGURES, ReportInputs
from peftsum.reporting.serving_section import serving_blocks
from peftsum.reporting.summary import train_label
from peftsum.reporting.tables import (
    SAMPLE_CHARS,
    efficiency_table,
    failed_runs_table,
    per_run_table,
    results_table,
    runs_table,
    samples_table,
    table_or,
    tests_table,
)

_NO_RESULTS = "No evaluation results (runs/<run_id>/eval/<language>/results.json)."


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def scorer_check_blocks(inputs: ReportInputs) -> list[Block]:
    """The seed study's scorer on every bundled language (and its figure)."""
    blocks: list[Block] = [Heading(2, "Scorer check: the seed study's ROUGE on every bundled language")]
    seed_blocks, seed_figs = seed_section.all_languages_blocks(inputs.exp.root, inputs.fig_dir, FIGURES)
    inputs.figures.update(seed_figs)
    return blocks + seed_blocks


def _language_blocks(inputs: ReportInputs, sec: LanguageSection, why: list[str],
                     run_labels: dict[str, str]) -> list[Block]:
    """One language's results: noise note, results table, baseline note, paired tests, bar chart, scorer check."""
    title = (
        sec.language
        + (f" — {sec.split} split" if sec.split else "")
        + f", {'/'.join(map(str, sec.num_examples))} examples"
    )
    blocks: list[Block] = [Heading(3, title)]
    if why:
        blocks.append(Para(noise_sentence(sec, why)))
    blocks.append(results_table(sec, noisy=bool(why)))
    if sec.baseline_note:
        blocks.append(Para(sec.baseline_note, small=True))
    elif sec.baseline is None:
        blocks.append(Para(f"No baselines/{sec.language}.json; LEAD-1 and oracle not shown.", small=True))
    tt = tests_table(sec)
    if tt is not None:
        blocks.append(
            Para(
                "Paired bootstrap against full fine-tuning, per seed and metric (Δ = method − full, ROUGE points):",
                small=True,
            )
        )
        blocks.append(tt)
    name = f"rouge_{_safe(sec.language)}" + (f"_{_safe(sec.split)}" if sec.split else "") + ".png"
    path, rel = inputs.figure(name)
    plot_rouge_bars(sec, path, inputs.colors)
    inputs.figures[rel] = path
    blocks.append(
        Image(
            path,
            rel,
            f"ROUGE F1 on {sec.language}",
            "Bars: F1 with 95% CI (single run) or ± std across seeds; hatched = zero-shot; dashed = LEAD-1, dotted = oracle.",
        )
    )
    blocks.append(Heading(4, f"Scorer check: {sec.language}"))
    return blocks + seed_section.language_blocks(inputs.exp.root, sec.language, run_labels)


def results_blocks(inputs: ReportInputs) -> list[Block]:
    """"Results per language": how to read the tables, then one subsection per evaluated language."""
    blocks: list[Block] = [Heading(2, "Results per language")]
    if not inputs.sections:
        blocks.append(Para(_NO_RESULTS))
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
    run_labels = {r.run_id: f"{method_label(r.method)} (run {r.run_id})" for r in inputs.exp.runs}
    for sec, why in zip(inputs.sections, inputs.noise):
        blocks += _language_blocks(inputs, sec, why, run_labels)
    return blocks


def per_run_blocks(inputs: ReportInputs) -> list[Block]:
    """"Per-run scores": every run's scores on every language it was evaluated on."""
    return [Heading(2, "Per-run scores"), table_or(per_run_table(inputs.exp), _NO_RESULTS)]


def efficiency_blocks(inputs: ReportInputs) -> list[Block]:
    """"Efficiency": the cost table, serving cost and the quality-against-size frontier figure."""
    blocks: list[Block] = [
        Heading(2, "Efficiency"),
        Para(
            "From metrics.json; mean (± std) over seeds. Sizes are MB (10^6 bytes) of the files in model/ "
            "(full checkpoint or adapter); peak RSS is process memory; tokens/s counts non-padding source+target tokens.",
            small=True,
        ),
        table_or(efficiency_table(inputs.efficiency), "No finished run with metrics.json."),
    ]
    serving = serving_blocks(inputs.exp.root)
    if serving:
        blocks.append(Heading(3, "Serving every trained language"))
        blocks += serving
    path, rel = inputs.figure("efficiency_frontier.png")
    if inputs.sections and plot_frontier(inputs.sections, inputs.efficiency, path, inputs.colors) is not None:
        inputs.figures[rel] = path
        blocks.append(
            Image(
                path,
                rel,
                "efficiency frontier",
                f"{ROUGE_LABELS[PRIMARY]} (mean over seeds) against trainable parameters and checkpoint size; log x-axes.",
            )
        )
    return blocks


def training_curves_blocks(inputs: ReportInputs) -> list[Block]:
    """"Training curves": one loss figure per training-language set, one line per run."""
    by_train: dict[tuple, list[RunRecord]] = {}
    for r in inputs.exp.ok_runs:
        by_train.setdefault(r.train_languages, []).append(r)
    grid, missing = [], []
    for langs, runs in sorted(by_train.items()):
        runs = sorted(runs, key=lambda r: (method_sort_key(r.method), r.seed or 0))
        path, rel = inputs.figure(f"loss_{_safe(train_label(langs))}.png")
        title = f"trained on {train_label(langs)}"
        written, no_rows = plot_loss_curves(runs, path, inputs.colors, title)
        missing += no_rows
        if written is not None:
            inputs.figures[rel] = path
            grid.append(
                Image(
                    path,
                    rel,
                    f"loss curves, {title}",
                    ", ".join(r.run_id for r in runs if r.run_id not in no_rows),
                )
            )
    blocks: list[Block] = [Heading(2, "Training curves")]
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
    return blocks


def sample_blocks(inputs: ReportInputs) -> list[Block]:
    """"Sample summaries": reference next to each method's prediction, per language."""
    blocks: list[Block] = [
        Heading(2, "Sample summaries"),
        Para(
            f"The first {inputs.n_samples} examples of each evaluation's predictions.jsonl, reference next to each "
            f"method's prediction (lowest seed); texts over {SAMPLE_CHARS} characters are cut.",
            small=True,
        ),
    ]
    any_samples = False
    for sec in inputs.sections:
        t = samples_table(sec, inputs.n_samples)
        if t is not None:
            any_samples = True
            blocks += [Heading(3, f"Samples: {sec.language}"), t]
    if not any_samples:
        blocks.append(Para("No predictions.jsonl found."))
    return blocks


def failed_runs_blocks(inputs: ReportInputs) -> list[Block]:
    """"Failed runs": their errors, and the run folders that have neither status nor metrics."""
    exp = inputs.exp
    blocks: list[Block] = [Heading(2, "Failed runs")]
    if exp.failed_runs:
        blocks.append(failed_runs_table(exp))
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
    return blocks


def runs_blocks(inputs: ReportInputs) -> list[Block]:
    """"Runs": every run folder with its settings."""
    return [Heading(2, "Runs"), runs_table(inputs.exp)]


#: The report's sections in document order.
SECTIONS: tuple[Callable[[ReportInputs], list[Block]], ...] = (
    overview_blocks,
    when_to_use_blocks,
    scorer_check_blocks,
    results_blocks,
    per_run_blocks,
    efficiency_blocks,
    training_curves_blocks,
    sample_blocks,
    failed_runs_blocks,
    runs_blocks,
)
