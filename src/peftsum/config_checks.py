"""Checks of a :class:`~peftsum.config.TrainConfig` beyond keys and types: :func:`resolve` validates a
run's settings and fills in the method's defaults; :func:`refuse_fp16` refuses fp16 for T5-family
models from the model's config. Nothing heavy is imported before the cheap checks have passed.
"""

from __future__ import annotations

import dataclasses

from peftsum.config import TrainConfig
from peftsum.errors import ConfigError


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
    from peftsum.languages import parse_languages
    from peftsum.hub import resolve_model_source
    from peftsum.modeling.methods import get_method

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
    from peftsum.training.ranges import check_train_ranges  # imported only after the checks above passed

    check_train_ranges(cfg)
    from peftsum.runtime import resolve_bf16

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
