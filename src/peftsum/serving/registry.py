"""The adapters a server holds: one base model loaded once, adapters checked against it, an LRU capped in MB.

Three kinds of entry, chosen from the method registry (:attr:`peftsum.modeling.methods.Method.mixed_batch`):

* ``mixed``: adapters PEFT can mix in one batch (plain LoRA layers). All of them live in one
  ``PeftModel`` and a batch passes ``adapter_names=[...]`` (``"__base__"`` = the bare base).
* ``single``: the other PEFT adapters (``mixed_batch`` false: DoRA, AdaLoRA, IA3, ...): each has
  its own ``PeftModel``; its requests are batched per adapter.
* ``full``: a full fine-tuning checkpoint, served as its own model with its own tokenizer.

Every PEFT wrapper sits on a *structural* copy of the base whose parameters are the base's own
tensors (:func:`share_weights`), so an adapter costs only its own weights in memory.
What an adapter folder says before it is loaded (method, base check, size) is in
:mod:`peftsum.serving.adapter_files`, importable from here.
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
from peftsum.runtime import weights_dtype
from peftsum.serving.adapter_files import (
    ARCH_FIELDS,
    FINGERPRINT_TENSOR,
    AdapterConflict,
    UnknownAdapter,
    adapter_method,
    can_mix,
    check_adapter_base,
    count_params,
    experiment_adapters,
    model_dir,
    read_json,
    run_files,
    weights_mb,
)

__all__ = ["ARCH_FIELDS", "BASE", "FINGERPRINT_TENSOR", "NAME_RE", "AdapterConflict", "AdapterRegistry", "Entry",
           "Slot", "UnknownAdapter", "adapter_method", "can_mix", "check_adapter_base", "count_params", "experiment_adapters",
           "model_dir", "read_json", "run_files", "share_weights", "weights_mb"]

BASE = "__base__"
"""``adapter_id`` of the bare base model (PEFT's placeholder name in a mixed batch)."""

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]{0,127}$")


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
        bf16: decode in bf16: the base, every adapter and every full checkpoint are converted to bf16
            when loaded (as ``peftsum evaluate`` does: the same summaries; half the memory);
            ``None`` = ``PEFTSUM_BF16``, else where the hardware runs bf16 natively
            (:func:`peftsum.runtime.resolve_bf16`). Otherwise the weights stay fp32.

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
        self.bf16 = resolve_bf16(bf16, cuda=self.device.startswith("cuda"))  # the hardware that decodes
        self.base_model, _ = load_model(self.base_name)
        self.base_model.to(device=self.device, dtype=weights_dtype(self.bf16)).eval()
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
            acfg = read_json(path / "adapter_config.json")
            check_adapter_base(acfg, self.base_name, self.base_config, name)
            method = adapter_method(acfg, run_cfg)
            rank = acfg.get("target_r") if acfg.get("peft_type") == "ADALORA" else acfg.get("r")
            return Entry(name, path, "mixed" if can_mix(method, acfg) else "single", method, rank=rank,
                         size_mb=weights_mb(path), trainable_params=metrics.get("trainable_params")
                         or count_params(path), **common)
        if (path / "config.json").is_file():
            return Entry(name, path, "full", str(run_cfg.get("method") or "full"), rank=None,
                         size_mb=weights_mb(path), trainable_params=metrics.get("trainable_params")
                         or count_params(path), **common)
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
                entry.model.to(device=self.device, dtype=weights_dtype(self.bf16)).eval()
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
                if self.bf16:  # PEFT loads adapter weights in fp32 (autocast_adapter_dtype); the base is bf16
                    (entry.model if entry.kind == "single" else self._mixed).to(dtype=weights_dtype(self.bf16))
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
