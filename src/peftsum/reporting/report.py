"""Write ``report.md``, ``report.html`` and ``figures/*.png`` for an experiment folder.

The sections are in :mod:`peftsum.reporting.sections` (one function each, in document order), the
opening ones in :mod:`peftsum.reporting.overview` and the tables in :mod:`peftsum.reporting.tables`;
this module runs them and writes the files.
"""

from __future__ import annotations

from pathlib import Path

from peftsum.io import write_text_atomic as atomic_write_text
from peftsum.reporting.records import Experiment, load_experiment
from peftsum.reporting.render import Block, render_html, render_markdown
from peftsum.reporting.overview import run_counts
from peftsum.reporting.report_inputs import FIGURES, ReportInputs
from peftsum.reporting.sections import SECTIONS
from peftsum.reporting.tables import SAMPLE_CHARS

__all__ = ["FIGURES", "N_SAMPLES", "SAMPLE_CHARS", "build_report", "run_counts", "write_report"]

#: Number of sample summaries shown per language.
N_SAMPLES = 3
_FIGURE_PREFIXES = ("rouge_", "loss_", "efficiency_", "seed_scorer_")


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
    inputs = ReportInputs.of(exp, out_dir, n_samples)
    blocks: list[Block] = []
    for section in SECTIONS:
        blocks += section(inputs)
    return blocks, inputs.figures


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
