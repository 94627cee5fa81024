"""Typed configuration for training and evaluation, loadable from YAML with CLI overrides.

Every field has a default and a docstring; unknown keys are an error that names the key and
lists the valid ones. The same dataclass is used by ``peftsum train`` (flags), ``--config``
files and experiment YAMLs, so a run's ``metrics.json`` records exactly what ran.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from peftsum.errors import ConfigError


@dataclass
class TrainConfig:
    """Everything ``peftsum train`` needs. Defaults follow XL-Sum (Hasan et al., 2021) where it has one."""

    model: str = "google/mt5-small"
    """Hub id or local folder of any ``AutoModelForSeq2SeqLM``."""
    method: str = "lora"
    """Fine-tuning method (``peftsum methods`` lists them)."""
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
    """Continue from the latest checkpoint in ``output_dir``."""
    overwrite: bool = False
    """Replace an existing run folder."""

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-able values."""
        return dataclasses.asdict(self)


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


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; a parse error names the file and line.

    Raises:
        ConfigError: missing file, invalid YAML, or a top level that is not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: invalid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    return data


def train_config_from(file: str | Path | None, overrides: dict) -> TrainConfig:
    """A :class:`TrainConfig` from an optional YAML file plus flag overrides (flags win).

    ``overrides`` with value ``None`` are ignored (flag not given).
    """
    data = load_yaml(file) if file else {}
    data = _normalise(data)
    check_keys(TrainConfig, data, str(file))
    data.update({k: v for k, v in _normalise(overrides).items() if v is not None})
    return make_config(TrainConfig, data, str(file or "flags"))


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Validate a config and fill in defaults; returns a resolved *copy*.

    Languages become XL-Sum config names; the learning rate defaults to the method's; the
    method name is normalised; a local model folder becomes its absolute path. Nothing is loaded.

    Args:
        cfg: the config as given (flags, YAML).

    Returns:
        A new :class:`TrainConfig` (the input is not modified).

    Raises:
        ConfigError: unknown method, optimizer or scheduler; a combination that cannot work (fp16
            with bf16, load_best without ROUGE or without evaluations, early stopping without
            load_best, no steps, sizes below 1, warmup or smoothing outside [0, 1));
            ``tensorboard`` without the package; ``--resume`` or ``--gradient-checkpointing``
            with a method that does not support it (registry flags).
        DataError: an unknown language.
    """
    from peftsum.data.languages import parse_languages
    from peftsum.hub import resolve_model_source
    from peftsum.modeling.methods import get_method
    from peftsum.runtime import resolve_bf16
    from peftsum.training.ranges import check_train_ranges

    cfg = dataclasses.replace(cfg)
    method = get_method(cfg.method)
    cfg.method = method.name
    cfg.model = resolve_model_source(cfg.model)  # a local folder is stored absolute (loads from any cwd)
    cfg.languages = parse_languages(cfg.languages)
    if cfg.learning_rate is None:
        cfg.learning_rate = method.learning_rate
    if cfg.fp16 and cfg.bf16:
        raise ConfigError("--fp16 and --bf16 are exclusive; use --bf16 (or neither for fp32)")
    if cfg.resume and cfg.overwrite:
        raise ConfigError("--resume continues the run in --output-dir and --overwrite replaces it; pass one of them")
    check_train_ranges(cfg)
    # explicit choice, else PEFTSUM_BF16, else auto: bf16 where the hardware runs it natively; never next to fp16
    cfg.bf16 = resolve_bf16(cfg.bf16, fp16=cfg.fp16)
    _check_values(cfg)
    _check_combinations(cfg, method)
    return cfg


def _check_values(cfg: TrainConfig) -> None:
    """Raise :class:`ConfigError` for a value no run can use: an unknown optimizer or scheduler, a
    ratio outside [0, 1), a size below 1, a negative ``eval_steps``."""
    if cfg.optimizer not in ("adamw", "adafactor"):
        raise ConfigError(f"unknown optimizer {cfg.optimizer!r}; choose adamw or adafactor")
    if cfg.lr_scheduler not in ("linear", "constant", "cosine"):
        raise ConfigError(f"unknown lr_scheduler {cfg.lr_scheduler!r}; choose linear, constant or cosine")
    if not 0.0 <= cfg.warmup_ratio < 1.0:
        raise ConfigError(f"warmup_ratio must be in [0, 1), got {cfg.warmup_ratio}")
    if not 0.0 <= cfg.label_smoothing < 1.0:
        raise ConfigError(f"label_smoothing must be in [0, 1), got {cfg.label_smoothing}")
    for name in ("batch_size", "gradient_accumulation_steps", "max_source_length", "max_target_length",
                 "logging_steps", "num_virtual_tokens", "eval_rouge_samples"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(cfg, name)}")
    if cfg.lora_r is not None and cfg.lora_r < 1:
        raise ConfigError(f"lora_r (the adapter rank r) must be at least 1, got {cfg.lora_r}")
    if cfg.eval_steps is not None and cfg.eval_steps < 0:
        raise ConfigError(f"eval_steps must be >= 0 (0 = evaluate only after training), got {cfg.eval_steps}")


def _check_combinations(cfg: TrainConfig, method) -> None:
    """Raise :class:`ConfigError` for settings that cannot work together or with ``method`` (a registry row)."""
    if cfg.early_stopping_patience and not cfg.load_best:
        raise ConfigError("early_stopping_patience needs --load-best (and --eval-rouge)")
    if cfg.load_best and not cfg.eval_rouge:
        raise ConfigError("--load-best keeps the best checkpoint by validation ROUGE-L; it needs --eval-rouge")
    if cfg.load_best and cfg.eval_steps == 0:
        raise ConfigError("--load-best needs evaluations during training; set eval_steps > 0 or leave it unset")
    if cfg.max_steps <= 0 and cfg.num_epochs <= 0:
        raise ConfigError("set num_epochs > 0 or max_steps > 0")
    if cfg.gradient_checkpointing and not method.gradient_checkpointing:
        raise ConfigError(f"--gradient-checkpointing does not work with {method.name}: transformers drops the "
                          "key/value cache that carries the prefixes inside checkpointed layers; train without it")
    if cfg.resume and not method.resumable:
        raise ConfigError(f"--resume is not supported for {method.name}: its training state is not fully "
                          "checkpointed (AdaLoRA's importance scores); start again with --overwrite")
    if cfg.tensorboard:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise ConfigError("--tensorboard needs the tensorboard package: pip install 'peftsum[tensorboard]'") from None


def refuse_fp16(cfg: TrainConfig) -> None:
    """Refuse fp16 for T5-family models from the model's config alone (before any weights are loaded).

    Raises:
        ConfigError: ``cfg.fp16`` with a T5/mT5 model (its activations overflow in fp16). A model
            whose config cannot be read passes here; loading it reports the problem.
    """
    if not cfg.fp16:
        return
    from transformers import AutoConfig

    from peftsum.modeling.load import is_t5_family

    try:
        model_config = AutoConfig.from_pretrained(cfg.model)
    except Exception:
        return  # load_model reports an unloadable model with a proper message
    if is_t5_family(model_config):
        raise ConfigError(
            f"--fp16 refused for {model_config.model_type}: T5/mT5 activations overflow in fp16 (NaN loss); "
            "use --bf16 (Ampere+ GPU or a CPU with bf16) or fp32 (neither flag)"
        )
