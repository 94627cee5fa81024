"""How the report writes numbers. One place, so tests can format a file value the same way.

All functions return ``"—"`` for ``None``.
"""

from __future__ import annotations

from peftsum.modeling.methods import METHODS

DASH = "—"

#: Order methods appear in tables and plots: the registry's (full fine-tuning first); others follow by name.
METHOD_ORDER: tuple[str, ...] = tuple(METHODS)

def method_label(method: str) -> str:
    """Display name of a registry method name (``"lora"`` -> ``"LoRA"``, :attr:`Method.label`); other
    names as they are."""
    row = METHODS.get(method)
    return row.label if row else method


def variant_label(method: str, label: str | None = None) -> str:
    """Display name of a run variant: the method's (``"LoRA"``), or an experiment's own label with the
    method beside it (``"lora-r16 (LoRA)"``) when the config named the variant (``name:``)."""
    if not label or label == method:
        return method_label(method)
    return f"{label} ({method_label(method)})"


def variant_sort_key(method: str, label: str | None = None) -> tuple:
    """Sort key: :func:`method_sort_key`, then labels in natural order (``lora-r4`` before ``lora-r16``)."""
    import re

    natural = tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", label or method))
    return (*method_sort_key(method), (label or method) != method, natural)


def method_sort_key(method: str) -> tuple[int, str]:
    """Sort key: registry order (``full`` first, then the PEFT methods), then the rest by name."""
    try:
        return (METHOD_ORDER.index(method), method)
    except ValueError:
        return (len(METHOD_ORDER), method)


def fmt_score(x: float | None) -> str:
    """A ROUGE F1 on the 0-100 scale, two decimals: ``34.56``."""
    return DASH if x is None else f"{x:.2f}"


def fmt_ci(lo: float | None, hi: float | None) -> str:
    """A confidence interval of ROUGE points: ``[33.10, 36.02]``."""
    if lo is None or hi is None:
        return DASH
    return f"[{lo:.2f}, {hi:.2f}]"


def fmt_score_ci(x: float | None, lo: float | None, hi: float | None) -> str:
    """Score with its 95% CI: ``34.56 [33.10, 36.02]``."""
    return DASH if x is None else f"{fmt_score(x)} {fmt_ci(lo, hi)}"


def fmt_mean_std(mean: float | None, std: float | None) -> str:
    """Mean ± sample standard deviation across seeds: ``34.56 ± 0.42``."""
    if mean is None:
        return DASH
    return fmt_score(mean) if std is None else f"{mean:.2f} ± {std:.2f}"


def fmt_diff(x: float | None) -> str:
    """A signed difference in ROUGE points: ``+1.23`` / ``-0.40``."""
    return DASH if x is None else f"{x:+.2f}"


def fmt_pct(x: float | None) -> str:
    """A percentage with one decimal: ``84.3%`` (used for "% of full fine-tuning")."""
    return DASH if x is None else f"{x:.1f}%"


def fmt_share_pct(x: float | None) -> str:
    """A small percentage such as trainable share, three significant digits: ``0.273%``."""
    return DASH if x is None else f"{x:.3g}%"


def fmt_p(p: float | None) -> str:
    """A p-value: three decimals, ``<0.001`` below that."""
    if p is None:
        return DASH
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def fmt_p_eq(p: float | None) -> str:
    """``p=0.012`` or ``p<0.001`` (for prose and table cells)."""
    text = fmt_p(p)
    return "p" + text if text.startswith("<") else f"p={text}"


def fmt_count(n: float | None) -> str:
    """An integer count with thousands separators: ``1,234,567``."""
    return DASH if n is None else f"{int(round(n)):,}"


def fmt_mb(x: float | None) -> str:
    """Megabytes (10^6 bytes): ``1,234.5 MB`` / ``3.21 MB``."""
    if x is None:
        return DASH
    return f"{x:,.1f} MB" if abs(x) >= 100 else f"{x:.2f} MB"


def fmt_seconds(x: float | None) -> str:
    """A duration in seconds: ``742.3 s``."""
    return DASH if x is None else f"{x:,.1f} s"


def fmt_rate(x: float | None) -> str:
    """A throughput (tokens or examples per second): ``1,234.5``."""
    return DASH if x is None else f"{x:,.1f}"


def fmt_loss(x: float | None) -> str:
    """A loss value, four decimals."""
    return DASH if x is None else f"{x:.4f}"


def fmt_ratio(x: float | None) -> str:
    """A "times" ratio: ``373×`` for 10 and above, ``1.6×`` below."""
    if x is None:
        return DASH
    return f"{x:,.0f}×" if x >= 10 else f"{x:.1f}×"
