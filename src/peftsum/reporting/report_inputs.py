"""What every report section reads: :class:`ReportInputs`, computed once per report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from peftsum.reporting.analysis import EfficiencyRow, LanguageSection, build_efficiency, build_sections
from peftsum.reporting.figures import method_colors
from peftsum.reporting.noise import noise_reasons
from peftsum.reporting.records import Experiment

#: Folder (under the experiment folder) and relative link prefix of the report's figures.
FIGURES = "figures"


@dataclass
class ReportInputs:
    """What every section reads, computed once per report.

    Attributes:
        exp: the loaded experiment.
        sections: one analysed section per (language, split) evaluated.
        noise: per section, the reasons it concludes nothing (``[]``: it may conclude).
        efficiency: one efficiency row per method group.
        colors: figure colour per method (or variant label).
        fig_dir: where figure files are written.
        n_samples: sample summaries per language.
        figures: ``{"figures/<name>.png": path}`` of the figures written so far.
    """

    exp: Experiment
    sections: list[LanguageSection]
    noise: list[list[str]]
    efficiency: list[EfficiencyRow]
    colors: dict[str, str]
    fig_dir: Path
    n_samples: int
    figures: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def of(cls, exp: Experiment, out_dir: Path, n_samples: int) -> "ReportInputs":
        """Analyse ``exp`` once; figures will go to ``out_dir/figures``."""
        sections = build_sections(exp)
        return cls(
            exp=exp,
            sections=sections,
            noise=[noise_reasons(sec) for sec in sections],
            efficiency=build_efficiency(exp),
            colors=method_colors([r.label or r.method for r in exp.ok_runs]),
            fig_dir=out_dir / FIGURES,
            n_samples=n_samples,
        )

    def figure(self, name: str) -> tuple[Path, str]:
        """``(file path, link relative to the report)`` of figure ``name`` (e.g. ``"loss_english.png"``)."""
        return self.fig_dir / name, f"{FIGURES}/{name}"
