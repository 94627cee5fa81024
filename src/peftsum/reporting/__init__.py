"""Reports comparing full fine-tuning with PEFT methods, built only from run files.

Public API:

- :func:`write_report` — write ``report.md``, ``report.html`` and ``figures/*.png``.
- :func:`load_experiment` — read an experiment folder into records (see ``docs/run_format.md``).
"""

from __future__ import annotations

from peftsum.reporting.records import Experiment, RunRecord, load_experiment
from peftsum.reporting.report import write_report

__all__ = ["Experiment", "RunRecord", "load_experiment", "write_report"]
