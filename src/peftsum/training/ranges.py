"""Range checks for training settings and the options a method ignores.

One table (:data:`RANGES`) says which values each numeric :class:`~peftsum.config.TrainConfig`
field may take, so a flag, a ``--config`` file and an experiment YAML are all checked the same
way before anything loads (``--max-steps -5`` used to fall back to epochs in silence).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from peftsum.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """Allowed values of one numeric setting.

    Attributes:
        low: smallest allowed value (``None`` = no lower bound).
        high: largest allowed value (``None`` = none).
        low_open: ``low`` itself is not allowed (``> low`` instead of ``>= low``).
        high_open: ``high`` itself is not allowed.
        unset: a value meaning "not set" that is always accepted (``max_steps = -1``).
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    unset: float | None = None

    def ok(self, value) -> bool:
        """True when ``value`` is allowed (``None`` always is: the field's default applies)."""
        if value is None or (self.unset is not None and value == self.unset):
            return True
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            return False
        return True

    def describe(self) -> str:
        """``"> 0"``, ``"in [0, 1)"``, ``">= 1 (or -1 = not set)"``."""
        if self.low is not None and self.high is not None:
            text = f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        elif self.low is not None:
            text = f"{'>' if self.low_open else '>='} {self.low:g}"
        else:
            text = f"{'<' if self.high_open else '<='} {self.high:g}"
        return text + (f" (or {self.unset:g} = not set)" if self.unset is not None else "")


POSITIVE = Range(0, low_open=True)
AT_LEAST_ONE = Range(1)
NON_NEGATIVE = Range(0)
SHARE = Range(0, 1, high_open=True)

RANGES: dict[str, Range] = {
    "num_epochs": NON_NEGATIVE,
    "max_steps": Range(1, unset=-1),
    "batch_size": AT_LEAST_ONE,
    "gradient_accumulation_steps": AT_LEAST_ONE,
    "learning_rate": POSITIVE,
    "weight_decay": NON_NEGATIVE,
    "warmup_ratio": SHARE,
    "label_smoothing": SHARE,
    "max_grad_norm": POSITIVE,
    "train_samples": AT_LEAST_ONE,
    "val_samples": AT_LEAST_ONE,
    "max_source_length": AT_LEAST_ONE,
    "max_target_length": AT_LEAST_ONE,
    "lora_r": AT_LEAST_ONE,
    "lora_alpha": POSITIVE,
    "lora_dropout": SHARE,
    "num_virtual_tokens": AT_LEAST_ONE,
    "language_sampling_alpha": Range(0, 1),
    "seed": NON_NEGATIVE,
    "logging_steps": AT_LEAST_ONE,
    "eval_steps": NON_NEGATIVE,
    "eval_rouge_samples": AT_LEAST_ONE,
    "save_steps": AT_LEAST_ONE,
    "save_total_limit": AT_LEAST_ONE,
    "early_stopping_patience": AT_LEAST_ONE,
}
"""Allowed values per :class:`~peftsum.config.TrainConfig` field. Sources: shares (warmup,
smoothing, dropout) are probabilities below 1; the sampling exponent is in [0, 1] (XL-Sum /
Conneau & Lample, 2019: 0 = uniform over languages, 1 = proportional to size); counts start at 1."""

METHOD_OPTIONS: dict[str, str] = {
    "lora_r": "r",
    "lora_alpha": "lora_alpha",
    "lora_dropout": "lora_dropout",
    "num_virtual_tokens": "num_virtual_tokens",
}
"""Config fields that only some methods read, mapped to the ``Method.uses`` name that reads them
(``target_modules`` is refused by ``resolve_target_modules`` itself)."""


def check_train_ranges(cfg) -> None:
    """Raise :class:`ConfigError` for the first field of ``cfg`` outside its :data:`RANGES` entry.

    Args:
        cfg: a :class:`~peftsum.config.TrainConfig`.

    Raises:
        ConfigError: naming the setting as a config key and a flag (``max_steps (--max-steps)``),
            the allowed range and the value.
    """
    for name, allowed in RANGES.items():
        value = getattr(cfg, name, None)
        if not allowed.ok(value):
            raise ConfigError(f"{name} (--{name.replace('_', '-')}) must be {allowed.describe()}, got {value!r}")


def ignored_options(cfg, method) -> list[str]:
    """Method options set to a non-default value that ``method`` does not read.

    Args:
        cfg: a :class:`~peftsum.config.TrainConfig`.
        method: its :class:`~peftsum.modeling.methods.Method` row.

    Returns:
        One warning line per ignored option, e.g. ``"--lora-r does not apply to full; ignored"``.
    """
    from peftsum.config import TrainConfig

    defaults = TrainConfig()
    out = []
    for name, used_as in METHOD_OPTIONS.items():
        if used_as not in method.uses and getattr(cfg, name) != getattr(defaults, name):
            out.append(f"warning: --{name.replace('_', '-')} does not apply to {method.name}; ignored")
    return out
