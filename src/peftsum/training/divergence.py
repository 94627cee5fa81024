"""Tell a diverged training run from a normal one, from its logged losses.

A NaN/inf loss already stops training (``PeftsumTrainer.training_step``). Two finite failures
are caught here, after training:

* **collapse**: the loss sits at ``ln(vocabulary size)``, the cross-entropy of a uniform
  output distribution: the model predicts every token with the same probability (e.g. full
  fine-tuning at ``--learning-rate 1e6`` ends at loss 8.9996 = ln 8100 on the tiny model).
  Label smoothing does not move this value: a uniform distribution has cross-entropy
  ``ln V`` against any target distribution.
* **blow-up**: the training loss ends far above where it started.

A short run from a random base starts near ``ln V`` too (random logits are nearly uniform),
so collapse needs the loss to be *at* ``ln V`` to within :data:`COLLAPSE_TOLERANCE`, which
random initial logits are not (their loss is ``ln V`` plus half the logit variance and more).
"""

from __future__ import annotations

import math
from typing import Iterable

COLLAPSE_TOLERANCE = 0.005
"""Relative distance to ``ln V`` counted as collapsed: 0.5% (0.045 nats for V = 8100)."""
BLOWUP_RATIO = 1.5
"""The final training loss is this many times the first logged one or more: diverged."""
BLOWUP_MIN_INCREASE = 0.5
"""...and at least this many nats above it (a rise from 0.01 to 0.02 is noise, not divergence)."""
WINDOW = 3
"""Logged training losses averaged at the start and at the end."""


def check_divergence(train_losses: Iterable[float], vocab_size: int | None,
                     eval_loss: float | None = None) -> dict:
    """Decide whether a finished run diverged.

    Args:
        train_losses: the logged training losses in step order (``training_log.jsonl``'s
            ``loss`` rows), nats per target token.
        vocab_size: size of the model's output distribution (``config.vocab_size``), or ``None``
            (collapse is then not checked).
        eval_loss: the final validation loss (plain cross-entropy), or ``None``.

    Returns:
        ``{"diverged": bool, "divergence_reason": str | None}``; the reason names the numbers
        (``"training loss 8.9996 and validation loss 8.9996 sit at ln(8100) = 8.9996: the output
        distribution collapsed to uniform"``).
    """
    losses = [float(x) for x in train_losses if x is not None and math.isfinite(float(x))]
    reasons = []
    if losses:
        k = min(WINDOW, max(1, len(losses) // 2))
        start = sum(losses[:k]) / k
        end = sum(losses[-k:]) / k
        if len(losses) > 1 and end >= BLOWUP_RATIO * start and end - start >= BLOWUP_MIN_INCREASE:
            reasons.append(f"training loss rose from {start:.4f} to {end:.4f}")
    if vocab_size and vocab_size > 1:
        uniform = math.log(vocab_size)

        def at_uniform(x: float | None) -> bool:
            return x is not None and math.isfinite(x) and abs(x - uniform) <= COLLAPSE_TOLERANCE * uniform

        last = losses[-1] if losses else None
        checked = [(name, x) for name, x in (("training loss", last), ("validation loss", eval_loss)) if x is not None]
        if checked and all(at_uniform(x) for _, x in checked):
            values = " and ".join(f"{name} {x:.4f}" for name, x in checked)
            verb = "sit" if len(checked) > 1 else "sits"
            reasons.append(f"{values} {verb} at ln({vocab_size}) = {uniform:.4f}: "
                           "the output distribution collapsed to uniform")
    return {"diverged": bool(reasons), "divergence_reason": "; ".join(reasons) or None}


def divergence_warning(result: dict) -> str | None:
    """The warning line printed at the end of ``train`` for a diverged run, else ``None``."""
    if not result.get("diverged"):
        return None
    return (f"warning: training diverged ({result['divergence_reason']}); lower --learning-rate "
            "(or raise warmup_ratio) and train again; the report leaves this run out of its recommendations")
