"""What serving every trained language costs: one base + k adapters against k merged models.

Computed from run folders alone (``metrics.json``, ``peftsum_config.json``, the weight files), so
the report can show it without a server. Memory here is the weights a server keeps resident
(parameters in their stored precision); activations, the tokenizer and the Python process come on
top and are the same for both layouts per process (``benchmarks/serving.py`` measures resident
memory of real processes).
"""

from __future__ import annotations

from pathlib import Path

from peftsum.errors import ConfigError
from peftsum.run_format import METRICS_FILE, run_files


def _weights_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.suffix in (".safetensors", ".bin")) / 1e6


def _base_mb(base: str, metrics: dict) -> float:
    """Size of the base's weights: its files where they are on disk, else its parameters x 4 bytes."""
    from peftsum.modeling.load import _checkpoint_dir

    folder = _checkpoint_dir(base) if base else None
    if folder is not None:
        size = sum(f.stat().st_size for f in folder.glob("*") if f.suffix in (".safetensors", ".bin")) / 1e6
        if size:
            return size
    total, trainable = metrics.get("total_params"), metrics.get("trainable_params") or 0
    return (total - trainable) * 4 / 1e6 if total else 0.0


def serving_cost(runs: str | Path | list[str | Path]) -> dict:
    """Disk and memory of serving the trained languages with adapters vs one merged model per language.

    For each PEFT method with k finished runs on base B: adapters = ``B + sum(adapter_i)``
    (one base in memory, every adapter beside it); merged = ``k x B`` (``peftsum merge`` writes a
    standalone model of the base's size per adapter). Full fine-tuning runs are listed with
    their own checkpoint sizes (``k x checkpoint``).

    Args:
        runs: an experiment folder (``runs/<run_id>/``), a folder of run folders, one run folder,
            or a list of run folders.

    Returns:
        ``{"methods": {method: {"base", "base_mb", "runs", "languages", "adapter_mb_total",
        "adapters_disk_mb", "merged_disk_mb", "adapters_memory_mb", "merged_memory_mb",
        "disk_ratio", "memory_ratio", "per_run": [{"run", "language", "adapter_mb", "merged_mb"}]}},
        "full": {...same keys for full fine-tuning, adapters_* absent...}}``; MB are 10^6 bytes,
        ratios are merged / adapters.

    Raises:
        ConfigError: no finished run (a ``model/`` folder with ``metrics.json``) was found.
    """
    folders = _run_folders(runs)
    methods: dict[str, dict] = {}
    full: dict = {"runs": 0, "languages": [], "merged_disk_mb": 0.0, "merged_memory_mb": 0.0, "per_run": []}
    for run in folders:
        cfg, metrics = run_files(run)
        method = str(metrics.get("method") or cfg.get("method") or "unknown")
        language = "+".join(metrics.get("train_languages") or cfg.get("languages") or []) or None
        size = _weights_mb(run / "model")
        if not (run / "model" / "adapter_config.json").is_file():
            full["runs"] += 1
            full["languages"].append(language)
            full["merged_disk_mb"] += size
            full["merged_memory_mb"] += size
            full["per_run"].append({"run": run.name, "language": language, "merged_mb": round(size, 3)})
            continue
        base = str(metrics.get("model") or cfg.get("model") or "")
        row = methods.setdefault(method, {"base": base, "base_mb": _base_mb(base, metrics), "runs": 0,
                                          "languages": [], "adapter_mb_total": 0.0, "per_run": []})
        row["runs"] += 1
        row["languages"].append(language)
        row["adapter_mb_total"] += size
        row["per_run"].append({"run": run.name, "language": language, "adapter_mb": round(size, 3),
                               "merged_mb": round(row["base_mb"], 3)})
    for row in methods.values():
        k, base_mb = row["runs"], row["base_mb"]
        row["adapters_disk_mb"] = row["adapters_memory_mb"] = round(base_mb + row["adapter_mb_total"], 3)
        row["merged_disk_mb"] = row["merged_memory_mb"] = round(k * base_mb, 3)
        row["disk_ratio"] = row["memory_ratio"] = (round(row["merged_disk_mb"] / row["adapters_disk_mb"], 3)
                                                   if row["adapters_disk_mb"] else None)
        row["adapter_mb_total"], row["base_mb"] = round(row["adapter_mb_total"], 3), round(base_mb, 3)
    full["merged_disk_mb"], full["merged_memory_mb"] = round(full["merged_disk_mb"], 3), round(full["merged_memory_mb"], 3)
    return {"methods": methods, "full": full}


def _run_folders(runs) -> list[Path]:
    items = runs if isinstance(runs, (list, tuple)) else [runs]
    found: list[Path] = []
    for item in items:
        path = Path(item)
        if (path / "model").is_dir():
            found.append(path)
            continue
        root = path / "runs" if (path / "runs").is_dir() else path
        if root.is_dir():
            found.extend(sorted(p for p in root.iterdir() if (p / "model").is_dir()))
    found = [p for p in found if (p / METRICS_FILE).is_file()]
    if not found:
        raise ConfigError(f"no finished run (model/ and metrics.json) under {', '.join(str(i) for i in items)}")
    return found
