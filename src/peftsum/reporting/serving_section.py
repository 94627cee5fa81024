"""The report's "Serving every trained language" table: one base + k adapters against k merged models.

The numbers come from the run folders through :func:`peftsum.serving.cost.serving_cost` (weight
files and ``metrics.json``), like every other number of the report; ``benchmarks/serving.py``
measures the resident memory of real server processes.
"""

from __future__ import annotations

from pathlib import Path

from peftsum.errors import ConfigError
from peftsum.modeling.methods import REFERENCE_METHOD
from peftsum.reporting.formatting import fmt_mb, fmt_ratio, method_label
from peftsum.reporting.render import Para, Table


def serving_blocks(exp_root: Path) -> list:
    """Report blocks (a note and a table) for serving an experiment's trained runs, or ``[]`` without runs.

    Args:
        exp_root: the experiment (or single-run) folder.

    Returns:
        ``[Para, Table]``: per PEFT method, the trained languages, the base's size, the adapters' total,
        one base + every adapter (what ``peftsum serve`` keeps resident, MB of weights) against one merged
        model per language (what ``peftsum merge`` ships), and their ratio; full fine-tuning runs as
        one checkpoint each.
    """
    from peftsum.serving.cost import serving_cost

    try:
        cost = serving_cost(Path(exp_root))
    except ConfigError:
        return []
    rows = []
    for method, row in sorted(cost["methods"].items()):
        langs = ", ".join(sorted({lang or "?" for lang in row["languages"]}))
        rows.append([method_label(method), f"{row['runs']} ({langs})", fmt_mb(row["base_mb"]),
                     fmt_mb(row["adapter_mb_total"]), fmt_mb(row["adapters_disk_mb"]), fmt_mb(row["merged_disk_mb"]),
                     fmt_ratio(row["disk_ratio"])])
    full = cost["full"]
    if full["runs"]:
        langs = ", ".join(sorted({lang or "?" for lang in full["languages"]}))
        rows.append([method_label(REFERENCE_METHOD), f"{full['runs']} ({langs})", "-", "-", "-", fmt_mb(full["merged_disk_mb"]),
                     "-"])
    if not rows:
        return []
    note = Para("What serving every trained run costs: one base model plus every adapter in one process "
                "(`peftsum serve`) against one standalone model per run (`peftsum merge`, or full fine-tuning "
                "checkpoints). MB of weights, on disk and resident alike; activations and the process come on top "
                "(benchmarks/serving.py measures real server processes: mT5-small's base + 45 adapters takes "
                "1.08x the memory of the base alone).", small=True)
    table = Table(["method", "runs (languages)", "base", "adapters", "base + adapters (serve)",
                   "merged models (merge)", "merged / serve"], rows,
                  numeric=[False, False, True, True, True, True, True])
    return [note, table]
