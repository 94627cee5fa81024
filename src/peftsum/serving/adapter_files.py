"""What an adapter folder says, before it is loaded: its method, whether PEFT can mix it with other
adapters in one batch, whether it was trained on the served base, its size and parameter count;
and the run folders of an experiment that can be served.

:class:`UnknownAdapter` and :class:`AdapterConflict` are the registry's two refusals. Everything here
is importable from :mod:`peftsum.serving.registry` as well.
"""

from __future__ import annotations

from pathlib import Path

from peftsum.errors import ConfigError, PeftsumError
from peftsum.run_format import read_optional as read_json, run_files  # noqa: F401  (re-exported)

ARCH_FIELDS = ("model_type", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads",
               "vocab_size", "feed_forward_proj", "is_gated_act", "relative_attention_num_buckets")
"""``config.json`` fields an adapter's base must share with the served base (T5/mT5 names; fields a
config lacks are skipped)."""

FINGERPRINT_TENSOR = "shared.weight"
"""Tensor whose first rows identify a T5-family checkpoint when two bases have different names."""


class UnknownAdapter(PeftsumError):
    """An ``adapter_id`` the server does not hold (HTTP 404)."""


class AdapterConflict(PeftsumError):
    """An adapter that cannot join this server: trained on another base, or its name is taken (HTTP 409)."""


def model_dir(path: str | Path) -> Path:
    """The folder holding the weights: ``path/model`` for a run folder, else ``path``."""
    path = Path(path)
    return path / "model" if (path / "model").is_dir() else path


def adapter_method(adapter_config: dict, run_config: dict) -> str:
    """The peftsum method of an adapter: the run's ``method``, else inferred from ``adapter_config.json``
    (:func:`peftsum.modeling.methods.method_of_adapter`).

    Returns:
        A method name; ``peft_type`` lower-cased when peftsum has no row for it.
    """
    from peftsum.modeling.methods import method_of_adapter

    if run_config.get("method"):
        return str(run_config["method"])
    row = method_of_adapter(adapter_config)
    return row.name if row else (str(adapter_config.get("peft_type", "")).lower() or "unknown")


def can_mix(method: str, adapter_config: dict) -> bool:
    """True when PEFT can decode this adapter's rows in a batch with other adapters: the registry's
    :attr:`~peftsum.modeling.methods.Method.mixed_batch` holds for the run's method and for the method
    the adapter's own ``adapter_config.json`` shows (a DoRA file is never mixed, whatever the run says)."""
    from peftsum.modeling.methods import METHODS, method_of_adapter

    row, saved = METHODS.get(method), method_of_adapter(adapter_config)
    return bool(row and row.mixed_batch and saved and saved.mixed_batch)


def _arch(config: dict) -> dict:
    return {k: config[k] for k in ARCH_FIELDS if k in config}


def check_adapter_base(adapter_config: dict, base_name: str, base_config: dict, label: str) -> None:
    """Refuse an adapter trained on another base than the one served.

    Same name (or the same folder) passes. A different name passes only when that base can be read
    locally and has the same architecture (:data:`ARCH_FIELDS`) and the same first rows of
    :data:`FINGERPRINT_TENSOR` (a copy of the base in another folder); otherwise the adapter would
    produce wrong summaries.

    Args:
        adapter_config: the adapter's ``adapter_config.json``.
        base_name: the served base (hub id or folder).
        base_config: the served base's ``config.json`` as a dict.
        label: adapter name for the message.

    Raises:
        AdapterConflict: a different or unverifiable base, naming both.
    """
    import torch

    from peftsum.modeling.load import _checkpoint_dir, _stored_rows

    trained_on = adapter_config.get("base_model_name_or_path")
    if not trained_on:
        raise AdapterConflict(f"adapter {label}: adapter_config.json names no base_model_name_or_path")
    if trained_on == base_name:
        return
    a, b = Path(trained_on), Path(base_name)
    if a.exists() and b.exists() and a.resolve() == b.resolve():
        return
    other = _checkpoint_dir(trained_on)
    if other is None:
        raise AdapterConflict(f"adapter {label} was trained on {trained_on}, this server's base is {base_name}")
    theirs, ours = _arch(read_json(other / "config.json")), _arch(base_config)
    diff = [f"{k} {theirs.get(k)} vs {ours.get(k)}" for k in sorted(set(theirs) | set(ours))
            if theirs.get(k) != ours.get(k)]
    if diff:
        raise AdapterConflict(f"adapter {label} was trained on {trained_on}, whose architecture differs from the "
                              f"base {base_name}: {', '.join(diff)}")
    rows_a, rows_b = _stored_rows(str(other), FINGERPRINT_TENSOR, 4), _stored_rows(base_name, FINGERPRINT_TENSOR, 4)
    if rows_a is None or rows_b is None or not torch.equal(rows_a, rows_b):
        raise AdapterConflict(f"adapter {label} was trained on {trained_on}, whose weights differ from the base "
                              f"{base_name}")


def weights_mb(path: Path) -> float:
    """Size of the weight files (``*.safetensors``, ``*.bin``) in ``path``, MB (10^6 bytes)."""
    return sum(f.stat().st_size for f in path.glob("*") if f.suffix in (".safetensors", ".bin")) / 1e6


def count_params(path: Path) -> int | None:
    """Parameters stored in ``path``'s safetensors files (read from their headers), ``None`` without any."""
    files = list(path.glob("*.safetensors"))
    if not files:
        return None
    from safetensors import safe_open

    total = 0
    for file in files:
        with safe_open(str(file), "pt") as fh:
            for key in fh.keys():
                shape = fh.get_slice(key).get_shape()
                n = 1
                for d in shape:
                    n *= d
                total += n
    return total


def experiment_adapters(exp_dir: str | Path, include_full: bool = False) -> list[tuple[str, Path]]:
    """Every trained run of an experiment folder, named by its run id (``<label>-<languages>-s<seed>``).

    Args:
        exp_dir: an experiment folder (``runs/<run_id>/model``) or a folder of run folders.
        include_full: also list full fine-tuning checkpoints (each is a whole model in memory).

    Returns:
        ``[(name, run_folder)]`` sorted by name: PEFT runs (and full ones when asked).

    Raises:
        ConfigError: the folder does not exist or holds no trained run.
    """
    from peftsum.modeling.load import is_adapter_dir

    root = Path(exp_dir)
    if not root.is_dir():
        raise ConfigError(f"--adapters-from: {root} is not a folder")
    runs_dir = root / "runs" if (root / "runs").is_dir() else root
    found = []
    for run in sorted(p for p in runs_dir.iterdir() if (p / "model").is_dir()):
        if is_adapter_dir(run / "model") or (include_full and (run / "model" / "config.json").is_file()):
            found.append((run.name, run))
    if not found:
        raise ConfigError(f"--adapters-from: no trained PEFT run under {runs_dir} (runs/<run_id>/model/)")
    return found
