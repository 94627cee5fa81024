"""The adapters a server holds: one base model loaded once, adapters checked against it, an LRU capped in MB.

Three kinds of entry, chosen from the method registry (:attr:`peftsum.modeling.methods.Method.mixed_batch`):

* ``mixed``: adapters PEFT can mix in one batch (plain LoRA layers). All of them live in one
  ``PeftModel`` and a batch passes ``adapter_names=[...]`` (``"__base__"`` = the bare base).
* ``single``: the other PEFT adapters (``mixed_batch`` false: DoRA, AdaLoRA, IA3, ...): each has
  its own ``PeftModel``; its requests are batched per adapter.
* ``full``: a full fine-tuning checkpoint, served as its own model with its own tokenizer.

Every PEFT wrapper sits on a *structural* copy of the base whose parameters are the base's own
tensors (:func:`share_weights`), so an adapter costs only its own weights in memory.
"""

from __future__ import annotations

import copy
import gc
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftsum.errors import ConfigError, PeftsumError
from peftsum.run_format import read_optional, run_files

BASE = "__base__"
"""``adapter_id`` of the bare base model (PEFT's placeholder name in a mixed batch)."""

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]{0,127}$")

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


def _one_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:240]


def share_weights(model):
    """A copy of ``model``'s module tree whose parameters and buffers are ``model``'s own tensors.

    PEFT injects its layers by replacing modules in place, so each ``PeftModel`` needs its own
    module objects; sharing the tensors keeps the cost of a copy to Python objects (kilobytes).

    Args:
        model: a ``torch.nn.Module``.

    Returns:
        The copy (``copy.deepcopy`` with every parameter and buffer pre-seeded in the memo).
    """
    memo = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    return copy.deepcopy(model, memo)


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
    theirs, ours = _arch(read_optional(other / "config.json")), _arch(base_config)
    diff = [f"{k} {theirs.get(k)} vs {ours.get(k)}" for k in sorted(set(theirs) | set(ours))
            if theirs.get(k) != ours.get(k)]
    if diff:
        raise AdapterConflict(f"adapter {label} was trained on {trained_on}, whose architecture differs from the "
                              f"base {base_name}: {', '.join(diff)}")
    rows_a, rows_b = _stored_rows(str(other), FINGERPRINT_TENSOR, 4), _stored_rows(base_name, FINGERPRINT_TENSOR, 4)
    if rows_a is None or rows_b is None or not torch.equal(rows_a, rows_b):
        raise AdapterConflict(f"adapter {label} was trained on {trained_on}, whose weights differ from the base "
                              f"{base_name}")


@dataclass
class Entry:
    """One servable adapter or full checkpoint.

    Attributes:
        name: its ``adapter_id``.
        path: the folder with the weights.
        kind: ``mixed``, ``single`` or ``full`` (module docstring).
        method: peftsum method name.
        language: training language(s) joined by ``+`` (``None`` when unknown).
        rank: adapter rank ``r`` (AdaLoRA: ``target_r``), ``None`` where the method has none.
        size_mb: weight files on disk, MB (10^6 bytes); counts against the resident cap.
        trainable_params: trained parameters (from ``metrics.json``, else counted in the weights).
        max_source_length: article tokens kept, from the run's training config (else 512).
        source_prefix: task prefix from the run's training config (else empty).
        resident: loaded in memory now.
        model: its own model (``single``/``full`` while resident), else ``None``.
        tokenizer: its own tokenizer (``full``), else ``None`` (the base's).
        last_used: ``time.monotonic()`` of the last request (LRU order).
        loads: how many times it was loaded (1 + reloads after eviction).
    """

    name: str
    path: Path
    kind: str
    method: str
    language: str | None
    rank: int | None
    size_mb: float
    trainable_params: int | None
    max_source_length: int = 512
    source_prefix: str = ""
    resident: bool = False
    model: Any = None
    tokenizer: Any = None
    last_used: float = field(default_factory=time.monotonic)
    loads: int = 0

    def info(self) -> dict:
        """What ``GET /info`` shows for this entry."""
        return {"name": self.name, "kind": self.kind, "method": self.method, "language": self.language,
                "rank": self.rank, "size_mb": round(self.size_mb, 3), "trainable_params": self.trainable_params,
                "resident": self.resident, "loads": self.loads, "path": str(self.path),
                "max_source_length": self.max_source_length, "source_prefix": self.source_prefix}


def _weights_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.glob("*") if f.suffix in (".safetensors", ".bin")) / 1e6


def _count_params(path: Path) -> int | None:
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


@dataclass
class Slot:
    """What a batch of one group runs on (returned by :meth:`AdapterRegistry.acquire`).

    Attributes:
        model: the model to call ``generate`` on.
        tokenizer: its tokenizer.
        mixed: pass ``adapter_names`` (one per row) to ``generate``.
        failed: ``{adapter_id: error}`` for adapters of the group that could not be made resident.
    """

    model: Any
    tokenizer: Any
    mixed: bool
    failed: dict = field(default_factory=dict)


class AdapterRegistry:
    """The base model and every adapter of one server (thread-safe through :attr:`lock`).

    Args:
        base: hub id or folder of the base model (loaded once, float32, eval mode).
        max_resident_mb: cap on the summed ``size_mb`` of resident adapters and full checkpoints;
            the least recently used are evicted and reloaded on demand. Adapters needed by the
            batch in progress are never evicted (the cap may then be exceeded for that batch).
        device: where to decode (:func:`peftsum.runtime.inference_device`: ``None`` = ``$PEFTSUM_DEVICE``,
            else CUDA when available, else CPU).
        bf16: decode under bf16 autocast; ``None`` = ``PEFTSUM_BF16``, else where the hardware runs bf16
            natively (:func:`peftsum.runtime.resolve_bf16`). Weights stay fp32.

    Raises:
        PeftsumError: the base cannot be loaded.
        ConfigError: an unknown device.
    """

    def __init__(self, base: str, max_resident_mb: float = 2048.0, device: str | None = None,
                 bf16: bool | None = None):
        from peftsum.modeling.load import load_model, load_tokenizer
        from peftsum.runtime import inference_device, resolve_bf16

        self.base_name = str(base)
        self.device = inference_device(device)
        self.bf16 = resolve_bf16(bf16)
        self.base_model, _ = load_model(self.base_name)
        self.base_model.to(self.device).eval()
        self.tokenizer = load_tokenizer(self.base_name)
        self.base_config = self.base_model.config.to_dict()
        self.max_resident_mb = float(max_resident_mb)
        self.entries: OrderedDict[str, Entry] = OrderedDict()  # least recently used first
        self.lock = threading.RLock()
        self.evictions = 0
        self._mixed = None  # one PeftModel holding every resident ``mixed`` adapter

    # ------------------------------------------------------------------ adding and removing
    def add(self, name: str, path: str | Path) -> Entry:
        """Check, register and load an adapter folder, a run folder or a full checkpoint.

        Args:
            name: its ``adapter_id`` (letters, digits, ``._+=-``; not ``__base__``).
            path: a run folder (``model/`` inside), an adapter folder or a full checkpoint folder.

        Returns:
            The new :class:`Entry` (resident).

        Raises:
            ConfigError: a bad name, a missing folder, a folder that holds no model.
            AdapterConflict: the name is taken, or the adapter was trained on another base.
            PeftsumError: the weights cannot be loaded.
        """
        if not isinstance(name, str) or not NAME_RE.match(name) or name == BASE:
            raise ConfigError(f"name: {name!r} is not a valid adapter name (letters, digits and ._+=-, "
                              "at most 128 characters, not __base__)")
        src = Path(path).expanduser()
        if not src.is_dir():
            raise ConfigError(f"path: {src} is not a folder")
        with self.lock:
            if name in self.entries:
                raise AdapterConflict(f"an adapter named {name} is already loaded (DELETE /adapters/{name} first)")
            entry = self._describe(name, model_dir(src))
            self._make_room(entry.size_mb, pinned=set())
            self._load(entry)
            self.entries[name] = entry
            return entry

    def remove(self, name: str) -> None:
        """Unload and forget an adapter.

        Raises:
            UnknownAdapter: no adapter of that name.
        """
        with self.lock:
            entry = self.get(name)
            self._unload(entry)
            del self.entries[name]

    def get(self, name: str) -> Entry:
        """The entry for ``name``.

        Raises:
            UnknownAdapter: not held; the message lists the loaded ones.
        """
        entry = self.entries.get(name)
        if entry is None:
            held = ", ".join([BASE, *sorted(self.entries)])
            raise UnknownAdapter(f"unknown adapter_id {name!r}; loaded: {held}")
        return entry

    def _describe(self, name: str, path: Path) -> Entry:
        from peftsum.modeling.load import is_adapter_dir

        run_cfg, metrics = run_files(path)
        langs = run_cfg.get("languages") or metrics.get("train_languages")
        language = "+".join(langs) if isinstance(langs, list) else (str(langs) if langs else None)
        common = {"language": language, "max_source_length": int(run_cfg.get("max_source_length") or 512),
                  "source_prefix": str(run_cfg.get("source_prefix") or "")}
        if is_adapter_dir(path):
            acfg = read_optional(path / "adapter_config.json")
            check_adapter_base(acfg, self.base_name, self.base_config, name)
            method = adapter_method(acfg, run_cfg)
            rank = acfg.get("target_r") if acfg.get("peft_type") == "ADALORA" else acfg.get("r")
            return Entry(name, path, "mixed" if can_mix(method, acfg) else "single", method, rank=rank,
                         size_mb=_weights_mb(path), trainable_params=metrics.get("trainable_params")
                         or _count_params(path), **common)
        if (path / "config.json").is_file():
            return Entry(name, path, "full", str(run_cfg.get("method") or "full"), rank=None,
                         size_mb=_weights_mb(path), trainable_params=metrics.get("trainable_params")
                         or _count_params(path), **common)
        raise ConfigError(f"path: {path} holds neither a PEFT adapter (adapter_config.json) nor a model (config.json)")

    # ------------------------------------------------------------------ residency
    def resident_mb(self) -> float:
        """Summed ``size_mb`` of the resident entries."""
        return sum(e.size_mb for e in self.entries.values() if e.resident)

    def _make_room(self, need_mb: float, pinned: set[str]) -> None:
        for entry in list(self.entries.values()):  # least recently used first
            if self.resident_mb() + need_mb <= self.max_resident_mb:
                return
            if entry.resident and entry.name not in pinned:
                self._unload(entry)
                self.evictions += 1

    def _load(self, entry: Entry) -> None:
        try:
            if entry.kind == "full":
                from peftsum.modeling.load import load_model, load_tokenizer

                entry.model, _ = load_model(str(entry.path))
                entry.model.to(self.device).eval()
                entry.tokenizer = load_tokenizer(str(entry.path))
            else:
                from peft import PeftModel

                if entry.kind == "single":
                    entry.model = PeftModel.from_pretrained(share_weights(self.base_model), str(entry.path),
                                                            is_trainable=False)
                    entry.model.eval()
                elif self._mixed is None:
                    self._mixed = PeftModel.from_pretrained(share_weights(self.base_model), str(entry.path),
                                                            adapter_name=entry.name, is_trainable=False)
                    self._mixed.eval()
                else:
                    self._mixed.load_adapter(str(entry.path), adapter_name=entry.name, is_trainable=False)
                    self._mixed.eval()
        except PeftsumError:
            raise
        except Exception as exc:
            raise PeftsumError(f"adapter {entry.name}: could not load {entry.path} ({_one_line(exc)})") from None
        entry.resident = True
        entry.loads += 1

    def _unload(self, entry: Entry) -> None:
        if not entry.resident:
            return
        if entry.kind == "mixed":
            others = [e for e in self.entries.values() if e.kind == "mixed" and e.resident and e is not entry]
            if others:
                self._mixed.delete_adapter(entry.name)
            else:
                self._mixed = None
        entry.model = entry.tokenizer = None
        entry.resident = False
        gc.collect()

    # ------------------------------------------------------------------ serving
    def group_key(self, name: str) -> str:
        """Requests with the same key (and decoding settings) can share a batch.

        Raises:
            UnknownAdapter: ``name`` is not held.
        """
        if name == BASE:
            return "mixed"
        entry = self.get(name)
        return "mixed" if entry.kind == "mixed" else f"{entry.kind}:{name}"

    def input_settings(self, name: str) -> tuple[int, str]:
        """``(max_source_length, source_prefix)`` the adapter was trained with (base: 512, "")."""
        if name == BASE:
            return 512, ""
        entry = self.get(name)
        return entry.max_source_length, entry.source_prefix

    def acquire(self, names: list[str]) -> Slot:
        """Make the adapters of one group resident (evicting others, LRU) and return what to run them on.

        Call with :attr:`lock` held, and keep it for the ``generate`` call. An adapter that was
        removed meanwhile or cannot be reloaded is left out and reported in ``Slot.failed``; the
        other rows of the group still run.

        Args:
            names: the group's ``adapter_id`` per row (all with the same :meth:`group_key`).

        Returns:
            The :class:`Slot` (``model`` is ``None`` when every named adapter failed).
        """
        wanted = [n for n in dict.fromkeys(names) if n != BASE]
        failed: dict[str, PeftsumError] = {}
        entries = []
        for name in wanted:
            try:
                entry = self.get(name)
                if not entry.resident:
                    self._make_room(entry.size_mb, set(wanted))
                    self._load(entry)
            except PeftsumError as exc:
                failed[name] = exc
                continue
            entry.last_used = time.monotonic()
            self.entries.move_to_end(entry.name)
            entries.append(entry)
        if not entries:
            if wanted and len(failed) == len(wanted) and BASE not in names:
                return Slot(None, self.tokenizer, False, failed)
            if self._mixed is not None:
                return Slot(self._mixed, self.tokenizer, True, failed)
            return Slot(self.base_model, self.tokenizer, False, failed)
        entry = entries[0]
        if entry.kind == "mixed":
            return Slot(self._mixed, self.tokenizer, True, failed)
        return Slot(entry.model, entry.tokenizer or self.tokenizer, False, failed)

    def info(self) -> dict:
        """``GET /info``: the base, every entry, the cap and what is resident."""
        params = sum(p.numel() for p in self.base_model.parameters())
        size = sum(p.numel() * p.element_size() for p in self.base_model.parameters()) / 1e6
        entries = list(self.entries.values())  # no lock: /info must answer while a batch decodes
        return {
            "base": {"name": self.base_name, "model_type": self.base_config.get("model_type"),
                     "parameters": params, "size_mb": round(size, 3), "device": str(self.device),
                     "precision": "bf16" if self.bf16 else "fp32"},
            "adapters": [e.info() for e in sorted(entries, key=lambda e: e.name)],
            "max_resident_mb": self.max_resident_mb,
            "resident_mb": round(sum(e.size_mb for e in entries if e.resident), 3), "evictions": self.evictions,
        }


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
