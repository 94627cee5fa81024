"""The fine-tuning methods peftsum compares, defined once in a table.

Each :class:`Method` says how to build its ``peft`` config (or ``None`` for full fine-tuning),
its default learning rate and its default ``target_modules`` for mT5/T5. Adding a method is one
row in :data:`METHODS`; nothing else in peftsum branches on the method name.

Sources of the defaults:

* ``target_modules``: PEFT's own mapping for ``mt5`` (``peft.utils.constants``:
  LoRA family ``q,v``; AdaLoRA ``all-linear``); ``all-linear`` = ``q,k,v,o,wi_0,wi_1,wo``.
* IA3 (Liu et al., 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than
  In-Context Learning"): rescales keys, values and the feed-forward activation. PEFT's ``mt5``
  entry leaves ``feedforward_modules`` empty, so peftsum sets it explicitly: targets ``k,v,wo``
  with ``wo`` as the feed-forward module (its input, the d_ff activation, is scaled), as PEFT does for t5.
* Learning rates: full fine-tuning 5e-5 (the seed study; HF summarization examples); LoRA-family
  5e-4, about 10x full fine-tuning (Hu et al., 2021; PEFT examples); IA3 3e-3 (Liu et al., 2022);
  VeRA 5e-3 (Kopiczko et al., 2024, use 1e-2-range rates); prefix tuning 1e-2 and prompt tuning
  3e-2 (PEFT's seq2seq examples; Lester et al., 2021 use 0.3 with Adafactor).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from peftsum.errors import ConfigError

ALL_LINEAR = ("q", "k", "v", "o", "wi_0", "wi_1", "wo")
"""Every linear layer of an mT5 block (attention q/k/v/o, gated feed-forward wi_0/wi_1/wo)."""


@dataclass(frozen=True)
class MethodHyper:
    """Hyperparameters a method may use (each method reads only its own).

    Attributes:
        r: LoRA rank ``r`` (LoRA family, LoHa, AdaLoRA's target rank, VeRA's shared rank).
        lora_alpha: LoRA scaling numerator; the update is scaled by ``lora_alpha / r``
            (``lora_alpha / sqrt(r)`` for rsLoRA, Kalajdzievski, 2023).
        lora_dropout: dropout on the adapter input.
        target_modules: module names to adapt, or ``None`` for the method's default.
        num_virtual_tokens: prefix / prompt length in tokens.
        total_steps: optimizer steps of the run (AdaLoRA's rank schedule needs it).
    """

    r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    target_modules: tuple[str, ...] | None = None
    num_virtual_tokens: int = 20
    total_steps: int = 1000


@dataclass(frozen=True)
class Method:
    """One fine-tuning method.

    Attributes:
        name: registry key used by ``--method``.
        summary: one line for ``peftsum methods``.
        learning_rate: default learning rate (source in the module docstring).
        target_modules: default ``target_modules`` for mT5, or ``()`` where the method has none.
        build: ``(hyper, targets) -> peft config`` or ``None`` for full fine-tuning.
        uses: which :class:`MethodHyper` fields matter (shown by ``peftsum methods``).
    """

    name: str
    summary: str
    learning_rate: float
    target_modules: tuple[str, ...]
    build: Callable[[MethodHyper, list[str]], Any] | None
    uses: tuple[str, ...] = field(default=())

    @property
    def is_peft(self) -> bool:
        """True for parameter-efficient methods (an adapter is saved instead of a full checkpoint)."""
        return self.build is not None


def _task():
    from peft import TaskType

    return TaskType.SEQ_2_SEQ_LM


def _lora(**extra):
    def build(h: MethodHyper, targets: list[str]):
        from peft import LoraConfig

        return LoraConfig(
            task_type=_task(), r=h.r, lora_alpha=h.lora_alpha, lora_dropout=h.lora_dropout,
            target_modules=targets, **extra,
        )

    return build


def _adalora(h: MethodHyper, targets: list[str]):
    from peft import AdaLoraConfig

    total = max(h.total_steps, 4)
    return AdaLoraConfig(
        task_type=_task(), init_r=max(h.r + h.r // 2, h.r + 1), target_r=h.r, lora_alpha=h.lora_alpha,
        lora_dropout=h.lora_dropout, target_modules=targets, total_step=total,
        tinit=max(total // 10, 1), tfinal=max(total // 5, 1), deltaT=max(total // 20, 1),
    )


def _ia3(h: MethodHyper, targets: list[str]):
    from peft import IA3Config

    # IA3 scales a feed-forward module's *input*; only wo's input is the d_ff activation.
    ff = [t for t in targets if t == "wo"]
    return IA3Config(task_type=_task(), target_modules=targets, feedforward_modules=ff)


def _loha(h: MethodHyper, targets: list[str]):
    from peft import LoHaConfig

    return LoHaConfig(task_type=_task(), r=h.r, alpha=h.lora_alpha, module_dropout=0.0,
                      rank_dropout=0.0, target_modules=targets)


def _vera(h: MethodHyper, targets: list[str]):
    from peft import VeraConfig

    return VeraConfig(task_type=_task(), r=h.r, vera_dropout=h.lora_dropout,
                      target_modules=targets, projection_prng_key=0, save_projection=True)


def _prefix(h: MethodHyper, targets: list[str]):
    from peft import PrefixTuningConfig

    return PrefixTuningConfig(task_type=_task(), num_virtual_tokens=h.num_virtual_tokens)


def _prompt(h: MethodHyper, targets: list[str]):
    from peft import PromptTuningConfig, PromptTuningInit

    return PromptTuningConfig(task_type=_task(), num_virtual_tokens=h.num_virtual_tokens,
                              prompt_tuning_init=PromptTuningInit.RANDOM)


_QV = ("q", "v")
_LORA_USES = ("r", "lora_alpha", "lora_dropout", "target_modules")

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("full", "full fine-tuning: every weight trains", 5e-5, (), None),
        Method("lora", "LoRA, low-rank update B@A (Hu et al., 2021)", 5e-4, _QV, _lora(), _LORA_USES),
        Method("dora", "DoRA, weight-decomposed LoRA (Liu et al., 2024)", 5e-4, _QV, _lora(use_dora=True), _LORA_USES),
        Method("rslora", "rank-stabilised LoRA, scale alpha/sqrt(r) (Kalajdzievski, 2023)", 5e-4, _QV,
               _lora(use_rslora=True), _LORA_USES),
        Method("pissa", "LoRA initialised from principal singular vectors (Meng et al., 2024)", 5e-4, _QV,
               _lora(init_lora_weights="pissa"), _LORA_USES),
        Method("adalora", "AdaLoRA, adaptive rank budget (Zhang et al., 2023)", 5e-4, ALL_LINEAR, _adalora,
               _LORA_USES),
        Method("ia3", "IA3, learned rescaling of k, v and the FFN activation (Liu et al., 2022)", 3e-3,
               ("k", "v", "wo"), _ia3, ("target_modules",)),
        Method("loha", "LoHa, Hadamard product of two low-rank pairs (Hyeon-Woo et al., 2022)", 5e-4, _QV,
               _loha, ("r", "lora_alpha", "target_modules")),
        Method("vera", "VeRA, shared frozen random matrices + trained scaling vectors (Kopiczko et al., 2024)",
               5e-3, _QV, _vera, ("r", "target_modules")),
        Method("prefix", "prefix tuning, trained key/value prefixes (Li & Liang, 2021); decoder-side in PEFT",
               1e-2, (), _prefix, ("num_virtual_tokens",)),
        Method("prompt", "prompt tuning, trained input embeddings (Lester et al., 2021)", 3e-2, (), _prompt,
               ("num_virtual_tokens",)),
    )
}
"""All methods, keyed by ``--method`` name."""


def get_method(name: str) -> Method:
    """Look up a method by name.

    Raises:
        ConfigError: unknown name; the message lists the valid ones.
    """
    key = name.strip().lower()
    if key not in METHODS:
        raise ConfigError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    return METHODS[key]


def resolve_target_modules(method: Method, requested: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """Turn ``--target-modules`` into a list: ``None`` = the method's default, ``all-linear`` = :data:`ALL_LINEAR`.

    Args:
        method: the method.
        requested: ``None``, ``"q,v"``, ``"all-linear"`` or a list of names.

    Returns:
        Module names (empty for methods that take none).
    """
    if not method.target_modules and method.name in ("full", "prefix", "prompt"):
        return []
    if requested is None or requested == "" or requested == []:
        return list(method.target_modules)
    items = requested.split(",") if isinstance(requested, str) else list(requested)
    items = [i.strip() for i in items if i.strip()]
    if items == ["all-linear"] or items == ["all_linear"]:
        return list(ALL_LINEAR)
    return items


def check_target_modules(model, targets: list[str]) -> None:
    """Fail early when a target module name matches nothing in ``model``.

    Raises:
        ConfigError: names that match no module; the message lists the linear module names that exist.
    """
    import torch

    if not targets:
        return
    leaf_names = {name.rsplit(".", 1)[-1] for name, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)}
    missing = [t for t in targets if t not in leaf_names]
    if missing:
        raise ConfigError(
            f"target_modules {', '.join(missing)} match no linear layer of this model; "
            f"it has: {', '.join(sorted(leaf_names))} (or use all-linear)"
        )


def build_peft_config(method: Method, hyper: MethodHyper):
    """The ``peft`` config for ``method`` (``None`` for full fine-tuning)."""
    if method.build is None:
        return None
    return method.build(hyper, resolve_target_modules(method, hyper.target_modules))
