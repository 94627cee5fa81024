"""Typed configuration for training and evaluation, loadable from YAML with CLI overrides.

Every field has a default and a docstring; unknown keys are an error that names the key and
lists the valid ones. The same dataclass is used by ``peftsum train`` (flags), ``--config``
files and experiment YAMLs, so a run's ``metrics.json`` records exactly what ran.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from peftsum.errors import ConfigError


@dataclass
class TrainConfig:
    """Everything ``peftsum train`` needs. Defaults follow XL-Sum (Hasan et al., 2021) where it has one."""

    model: str = "google/mt5-small"
    """Hub id or local folder of any ``AutoModelForSeq2SeqLM``; ``tiny`` = the offline tiny mT5 (built on first use)."""
    method: str = "lora"
    """Fine-tuning method: ``full`` or a PEFT method such as ``lora`` or ``ia3`` (``peftsum methods`` lists them)."""
    languages: list[str] = field(default_factory=lambda: ["english"])
    """XL-Sum config names to train on; several = multilingual training with exponent smoothing."""
    data: str = "sample"
    """``sample`` (bundled rows), ``hub`` or a local folder/file."""
    output_dir: str = "runs/run"
    """Run folder (model/ or adapter, metrics.json, training_log.jsonl, checkpoints)."""
    num_epochs: float = 3.0
    """Passes over the training rows (ignored when ``max_steps`` > 0)."""
    max_steps: int = -1
    """Optimizer steps; > 0 overrides ``num_epochs``."""
    batch_size: int = 4
    """Examples per device per step."""
    gradient_accumulation_steps: int = 1
    """Micro-batches per optimizer step (effective batch = batch_size x this)."""
    learning_rate: float | None = None
    """Peak learning rate; ``None`` = the method's default (see ``peftsum methods``)."""
    weight_decay: float = 0.0
    """Decoupled weight decay (AdamW; Adafactor's ``weight_decay``)."""
    optimizer: str = "adamw"
    """``adamw`` (``torch.optim.AdamW``, fused) or ``adafactor`` (``transformers.Adafactor`` at the given learning rate)."""
    lr_scheduler: str = "linear"
    """``linear`` (decay to 0), ``constant`` or ``cosine`` (half cosine to 0), all after a linear warmup."""
    warmup_ratio: float = 0.0
    """Share of the optimizer steps spent warming the learning rate up linearly from 0 (0-1)."""
    label_smoothing: float = 0.0
    """Label smoothing of the training loss (XL-Sum used 0.1); ``eval_loss`` stays the plain cross-entropy."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm."""
    train_samples: int | None = None
    """Use at most this many training rows per language (``None`` = all)."""
    val_samples: int | None = None
    """Use at most this many validation rows per language (``None`` = all)."""
    max_source_length: int = 512
    """Article tokens kept (XL-Sum: 512); EOS stays the last token."""
    max_target_length: int = 84
    """Summary tokens kept (XL-Sum: 84); EOS stays the last token."""
    source_prefix: str = ""
    """Task prefix prepended to every article (seed study: ``"summarize: "``; XL-Sum: none)."""
    lora_r: int | None = None
    """Adapter rank ``r`` (``None`` = the method's default: 8, VeRA 256)."""
    lora_alpha: int = 16
    """LoRA ``lora_alpha`` (scale = lora_alpha / r; LoHa's ``alpha``)."""
    lora_dropout: float = 0.1
    """Dropout on the adapter input."""
    target_modules: list[str] | None = None
    """Modules to adapt (``None`` = method default; ``["all-linear"]`` = q,k,v,o,wi_0,wi_1,wo)."""
    num_virtual_tokens: int = 20
    """Prefix/prompt tuning length in tokens."""
    language_sampling_alpha: float = 0.5
    """Multilingual sampling exponent: p_i ~ n_i^alpha (XL-Sum / Conneau & Lample, 2019)."""
    seed: int = 42
    """Seeds weights of new layers, dropout and data order."""
    bf16: bool | None = None
    """bf16 autocast; weights and optimizer states stay fp32. ``None`` (the default) = auto: on
    where the hardware runs bf16 natively (an Ampere+ GPU, a CPU with AMX/AVX512-BF16), off
    elsewhere (``peftsum.runtime.bf16_is_fast``); the environment variable ``PEFTSUM_BF16=0|1|auto``
    overrides the auto decision. The resolved run config records the choice."""
    fp16: bool = False
    """fp16 mixed precision; refused for T5/mT5 (activations overflow)."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward to save memory (works with PEFT)."""
    group_by_length: bool = True
    """Batch examples of similar length together (less padding)."""
    logging_steps: int = 1
    """Log loss and learning rate every N optimizer steps."""
    eval_steps: int | None = None
    """Evaluate every N optimizer steps (``None`` = at the end of each epoch; 0 = only once, after training)."""
    eval_rouge: bool = False
    """Also compute ROUGE (greedy decoding) at each evaluation, on at most ``eval_rouge_samples`` rows."""
    eval_rouge_samples: int = 32
    """Cap on validation rows decoded for in-training ROUGE."""
    save_steps: int | None = None
    """Checkpoint every N steps (``None`` = at every evaluation; with ``eval_steps`` 0, at each epoch end)."""
    save_total_limit: int | None = 2
    """Checkpoints kept (the best one is always kept when ``load_best`` is on)."""
    load_best: bool = False
    """Keep and finish with the best checkpoint by validation ROUGE-L (needs ``eval_rouge``)."""
    early_stopping_patience: int | None = None
    """Stop after this many evaluations without improvement (needs ``load_best``)."""
    tensorboard: bool = False
    """Also log to TensorBoard in ``<output_dir>/tensorboard`` (``pip install 'peftsum[tensorboard]'``)."""
    resume: bool = False
    """Continue from the latest complete checkpoint in ``output_dir``."""
    overwrite: bool = False
    """Replace an existing run folder."""

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-able values."""
        return dataclasses.asdict(self)


def field_docs(cls) -> dict[str, str]:
    """Each field's attribute docstring (the string literal under it in the class body), by field name.

    This is where the help of ``peftsum train``'s options comes from (``peftsum.options``): a new
    field with a docstring is a new, documented flag. Fields without a docstring map to ``""``.

    Args:
        cls: a config dataclass whose source is available (``inspect.getsource``).

    Returns:
        ``{field name: docstring with whitespace collapsed}``, in field order.
    """
    import ast
    import inspect
    import textwrap

    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    docs = {}
    for node, after in zip(body, body[1:] + [None]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            text = after.value.value if (isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                                         and isinstance(after.value.value, str)) else ""
            docs[node.target.id] = " ".join(text.split())
    return {name: docs.get(name, "") for name in field_names(cls)}


def field_names(cls) -> list[str]:
    """The valid keys of a config dataclass."""
    return [f.name for f in fields(cls)]


def check_keys(cls, data: dict, where: str) -> None:
    """Raise :class:`ConfigError` naming the first unknown key and the valid ones.

    Args:
        cls: the dataclass the keys belong to.
        data: the mapping read from YAML or flags.
        where: file (and section) for the message.
    """
    valid = field_names(cls)
    for key in data:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown key {key!r}{hint}; valid keys: {', '.join(valid)}")


def _normalise(data: dict) -> dict:
    out = dict(data)
    for key in ("languages", "target_modules"):
        value = out.get(key)
        if isinstance(value, str):
            out[key] = [v.strip() for v in value.split(",") if v.strip()]
    if "language" in out and "languages" not in out:
        lang = out.pop("language")
        out["languages"] = [v.strip() for v in lang.split(",")] if isinstance(lang, str) else list(lang)
    return out


def check_types(cls, data: dict, where: str) -> None:
    """Raise :class:`ConfigError` when a value does not fit its field's type (``max_steps: abc``).

    Ints accept ints, floats accept ints and floats, bools only bools, strings only strings,
    lists only lists; ``None`` only where the field is optional.
    """
    import typing

    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        hint = hints.get(key)
        if hint is None:
            continue
        args = typing.get_args(hint)
        allowed = [a for a in args if a is not type(None)] if args and type(None) in args else [hint]
        if value is None:
            if type(None) in args:
                continue
            raise ConfigError(f"{where}: {key} must not be empty")
        ok = False
        for kind in allowed:
            origin = typing.get_origin(kind) or kind
            if origin is bool:
                ok = ok or isinstance(value, bool)
            elif origin is int:
                ok = ok or (isinstance(value, int) and not isinstance(value, bool))
            elif origin is float:
                ok = ok or (isinstance(value, (int, float)) and not isinstance(value, bool))
            elif origin in (list, tuple):
                ok = ok or isinstance(value, (list, tuple))
            elif origin is dict:
                ok = ok or isinstance(value, dict)
            elif origin is str:
                ok = ok or isinstance(value, str)
            else:
                ok = True
        if not ok:
            names = " or ".join(getattr(typing.get_origin(k) or k, "__name__", str(k)) for k in allowed)
            raise ConfigError(f"{where}: {key} must be {names}, got {value!r}")


def make_config(cls, data: dict, where: str = "config"):
    """Build ``cls`` from a mapping after checking keys and value types (``language`` = ``languages``).

    Raises:
        ConfigError: an unknown key (named, with the valid ones) or a value of the wrong type.
    """
    data = _normalise(data)
    check_keys(cls, data, where)
    check_types(cls, data, where)
    try:
        return cls(**data)
    except TypeError as exc:  # pragma: no cover - keys are checked above
        raise ConfigError(f"{where}: {exc}") from None


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``1e-3`` as a float as YAML 1.2 does (YAML 1.1, which PyYAML
    follows, needs a dot: ``1.0e-3``; without this, ``learning_rate: 1e-3`` arrives as a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def yaml_load(text: str) -> Any:
    """Parse YAML text with peftsum's loader (safe; ``1e-3`` is a float). Raises ``yaml.YAMLError``."""
    return yaml.load(text, Loader=_Loader)


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; a parse error names the file and line.

    Raises:
        ConfigError: missing file, invalid YAML, or a top level that is not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: invalid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    return data


def apply_overrides(data: dict, assignments: list[str]) -> dict:
    """Apply ``KEY=VALUE`` overrides (``train.max_steps=10``, ``languages=[hindi]``) to a config mapping.

    Values are parsed as YAML (``10`` -> int, ``[a, b]`` -> list, ``null`` -> None).

    Raises:
        ConfigError: an assignment without ``=`` or a dotted key whose parent is not a mapping.
    """
    data = dict(data)
    for item in assignments or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.max_steps=10")
        key, raw = item.split("=", 1)
        value = yaml_load(raw) if raw.strip() else None
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is not a mapping")
            node[part] = dict(child)
            node = node[part]
        if parts == ["languages"] and isinstance(value, str):  # --set languages=russian: a list of one
            value = [v.strip() for v in value.split(",") if v.strip()]
        node[parts[-1]] = value
    return data


def train_config_from(file: str | Path | None, overrides: dict, assignments: list[str] | None = None) -> TrainConfig:
    """A :class:`TrainConfig` from an optional YAML file, ``--set KEY=VALUE`` assignments and flag
    overrides, in that order (flags win).

    ``overrides`` with value ``None`` are ignored (flag not given); ``assignments`` are parsed by
    :func:`apply_overrides` (values as YAML).

    Raises:
        ConfigError: an unknown key in the file or in ``--set`` (named, with the valid ones), an
            assignment without ``=``, a value of the wrong type.
    """
    data = load_yaml(file) if file else {}
    data = _normalise(data)
    check_keys(TrainConfig, data, str(file))
    if assignments:
        assigned = _normalise(apply_overrides({}, assignments))
        check_keys(TrainConfig, assigned, "--set")
        data.update(assigned)
    data.update({k: v for k, v in _normalise(overrides).items() if v is not None})
    return make_config(TrainConfig, data, str(file or "flags"))
