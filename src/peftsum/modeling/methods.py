"""The fine-tuning methods peftsum compares, defined once in a table.

Each :class:`Method` row says how to build its ``peft`` config (or ``None`` for full
fine-tuning), its default learning rate, its default ``target_modules`` for mT5/T5, its
default rank, and what the trainer must do beyond PEFT's standard calls (AdaLoRA's rank
allocation callback; PiSSA's conversion to a plain LoRA on save), its display name, whether it
merges into the base weights, mixes with other adapters in one served batch and trains under FSDP.
Adding a method is one row in :data:`METHODS` (and its row in ``tests/test_methods.py``); nothing
else in peftsum branches on the method name: merge, serving, the report's labels, the run card,
the CLI help and the README's method table (:func:`methods_markdown`) all read the row.

Sources of the defaults (checked against peft 0.21.2 by ``tests/test_methods.py``):

* ``target_modules``: PEFT's own mapping for ``mt5`` (``peft.utils.constants``): the LoRA
  family, LoHa and VeRA ``q,v``; AdaLoRA ``q,k,v,o,wi_0,wi_1,wo`` (= ``all-linear``).
* IA3 (Liu et al., 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than
  In-Context Learning"): rescales keys, values and the feed-forward activation. PEFT's ``mt5``
  entry targets ``k,v,wi_1`` and leaves ``feedforward_modules`` empty; peftsum sets it
  explicitly, as PEFT does for ``t5``: targets ``k,v,wo`` with ``wo`` as the feed-forward module,
  so IA3 scales ``wo``'s *input*, the d_ff activation ``h = gelu(wi_0 x) * wi_1 x``. (Scaling
  ``wi_1``'s output, PEFT's mt5 choice, is the same function ``l * h``; the explicit form also works
  for non-gated T5, whose FFN has ``wi`` instead of ``wi_0/wi_1``.)
* Ranks: ``r = 8`` (PEFT's LoRA/LoHa default); VeRA ``r = 256`` (PEFT's VeRA default; its frozen
  random matrices are shared by all layers, so a high rank costs only ``r`` trained scalars
  per layer; Kopiczko et al., 2024). AdaLoRA starts at ``init_r = 12`` and prunes to
  ``target_r = r`` (PEFT's defaults 12 -> 8).
* Learning rates: full fine-tuning 5e-5 (the seed study; HF summarization examples); LoRA family
  5e-4, about 10x full fine-tuning (Hu et al., 2021; PEFT examples); IA3 3e-3 (Liu et al., 2022);
  VeRA 5e-3 (Kopiczko et al., 2024, use 1e-2-range rates); prefix tuning 1e-2 and prompt tuning
  3e-2 (PEFT's seq2seq examples; Lester et al., 2021 use 0.3 with Adafactor).
* Prompt tuning starts from embeddings of randomly sampled vocabulary tokens (Lester et al., 2021,
  section 3: "sampled vocab" beats random init; PEFT's ``SAMPLE_VOCAB``).

Why one file (about 440 lines): the registry is the point of it. The rows of :data:`METHODS`, the
``peft`` config builders they name and the lookups over them (:func:`get_method`, target modules,
hyperparameters) are one definition that the rest of peftsum reads; this docstring's sources for the
defaults are about 40 of the lines. Moving the builders elsewhere would make each row point into
another file.
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
        r: adapter rank (LoRA family, LoHa, AdaLoRA's target rank, VeRA's shared rank).
        lora_alpha: LoRA scaling numerator; the update is scaled by ``lora_alpha / r``
            (``lora_alpha / sqrt(r)`` for rsLoRA, Kalajdzievski, 2023). LoHa's ``alpha``.
        lora_dropout: dropout probability on the adapter input (LoRA family, AdaLoRA, VeRA).
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
    """One fine-tuning method (a row of :data:`METHODS`).

    Attributes:
        name: registry key used by ``--method``.
        label: display name in reports, figures and the README (``"LoRA"``).
        summary: one line for ``peftsum methods``.
        learning_rate: default peak learning rate (source in the module docstring).
        target_modules: default ``target_modules`` for mT5, or ``()`` where the method has none.
        build: ``(hyper, targets) -> peft config``, or ``None`` for full fine-tuning.
        uses: which :class:`MethodHyper` fields matter (shown by ``peftsum methods``).
        r: default rank when ``--lora-r`` is not given (``None`` for methods without a rank).
        callbacks: factories ``() -> transformers.TrainerCallback`` the trainer adds for this
            method (AdaLoRA's rank allocation).
        convert_on_save: the adapter's initialisation changes the base weights (PiSSA); the
            trainer keeps the initial adapter and saves the final one converted to a plain LoRA
            that applies to the *unmodified* base (PEFT's ``path_initial_model_for_weight_conversion``).
        resumable: ``--resume`` restores the method's full training state (AdaLoRA: no, its
            importance scores live outside the checkpoint and its rank pattern resizes layers).
        gradient_checkpointing: works with ``--gradient-checkpointing`` (prefix tuning: no;
            its prefixes travel in the key/value cache, which transformers drops inside
            checkpointed layers, ``transformers.modeling_layers.GradientCheckpointingLayer``).
        extra_record: ``hyper -> dict`` of derived settings for the run record (AdaLoRA's schedule).
        packed_head: the training loss may apply the output head to target tokens only
            (:func:`peftsum.training.loss.packed_head_loss`; AdaLoRA: no, PEFT adds its
            orthogonality regulariser only to a loss the model computes itself).
        mixed_batch: PEFT can decode a batch whose rows use different adapters of this method
            (``generate(..., adapter_names=[...])``, PEFT's ``_mixed_batch_forward``): plain LoRA
            layers only. DoRA is refused by PEFT; AdaLoRA's ``SVDLinear``, IA3, LoHa, VeRA and the
            prompt-learning methods ignore ``adapter_names`` (peft 0.21.2), so ``peftsum serve``
            batches their requests per adapter.
        peft_type: PEFT's ``peft_type`` in the saved ``adapter_config.json`` (``None``: full fine-tuning
            saves a plain checkpoint). Several methods share ``"LORA"``.
        config_flag: the ``adapter_config.json`` key that is true for this method and tells it apart
            from the others of its ``peft_type`` (DoRA's ``use_dora``), or ``None``.
        mergeable: ``peftsum merge`` can fold the adapter into the base weights (prefix and prompt
            tuning add virtual tokens instead; full fine-tuning has nothing to merge).
        fsdp: trained under FSDP (full fine-tuning and plain LoRA: PEFT documents FSDP for LoRA and
            the Trainer's ``update_fsdp_plugin_peft`` wraps LoRA layers; the others keep state outside
            ``nn.Linear``, prefix key/values, AdaLoRA's budget, VeRA's shared matrices, IA3's vectors,
            whose sharding neither PEFT nor peftsum tests).
        frozen_base_bf16: under bf16 autocast the frozen base's Linear weights may be stored in bf16
            for training (:mod:`peftsum.training.frozen_bf16`: the same numbers without per-step
            casts): the method reads them only through ``F.linear``. Not DoRA (it takes the base
            weight's norm) nor PiSSA (it rewrites the base weights).
    """

    name: str
    label: str
    summary: str
    learning_rate: float
    target_modules: tuple[str, ...]
    build: Callable[[MethodHyper, list[str]], Any] | None
    uses: tuple[str, ...] = field(default=())
    r: int | None = None
    callbacks: tuple[Callable[[], Any], ...] = field(default=())
    convert_on_save: bool = False
    resumable: bool = True
    gradient_checkpointing: bool = True
    extra_record: Callable[[MethodHyper], dict] | None = None
    packed_head: bool = True
    mixed_batch: bool = False
    peft_type: str | None = None
    config_flag: str | None = None
    mergeable: bool = True
    fsdp: bool = False
    frozen_base_bf16: bool = False

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


def adalora_schedule(total_steps: int) -> dict[str, int]:
    """AdaLoRA's rank-budget schedule for a run of ``total_steps`` optimizer steps.

    Zhang et al. (2023) warm up for ``tinit`` steps at the initial rank, prune the budget
    cubically until ``total_step - tfinal``, then fine-tune at the final ranks; they use
    tinit ~ 10% and tfinal ~ 20-30% of training and reallocate every ``deltaT`` steps.

    Args:
        total_steps: optimizer steps of the run (at least 3: PEFT needs ``tinit < total_step - tfinal``).

    Returns:
        ``{"total_step", "tinit", "tfinal", "deltaT"}`` for ``peft.AdaLoraConfig``.

    Raises:
        ConfigError: fewer than 3 steps (no budgeting phase is possible).
    """
    if total_steps < 3:
        raise ConfigError(f"adalora needs at least 3 training steps for its rank schedule, got {total_steps}")
    tinit = max(total_steps // 10, 1)
    tfinal = max(total_steps // 5, 1)
    return {"total_step": total_steps, "tinit": tinit, "tfinal": tfinal, "deltaT": max(total_steps // 20, 1)}


def _adalora(h: MethodHyper, targets: list[str]):
    from peft import AdaLoraConfig

    return AdaLoraConfig(
        task_type=_task(), init_r=max(h.r + h.r // 2, h.r + 1), target_r=h.r, lora_alpha=h.lora_alpha,
        lora_dropout=h.lora_dropout, target_modules=targets, **adalora_schedule(h.total_steps),
    )


def _adalora_record(h: MethodHyper) -> dict:
    return {"init_r": max(h.r + h.r // 2, h.r + 1), "target_r": h.r, **adalora_schedule(h.total_steps)}


def _adalora_callback():
    from peftsum.callbacks import AdaLoraAllocateCallback

    return AdaLoraAllocateCallback()


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

    # projection_prng_key fixes the shared random matrices; save_projection stores them in the
    # adapter so it reloads without regenerating them (PEFT's default, made explicit).
    return VeraConfig(task_type=_task(), r=h.r, vera_dropout=h.lora_dropout,
                      target_modules=targets, projection_prng_key=0, save_projection=True)


def _prefix(h: MethodHyper, targets: list[str]):
    from peft import PrefixTuningConfig

    return PrefixTuningConfig(task_type=_task(), num_virtual_tokens=h.num_virtual_tokens)


def _prompt(h: MethodHyper, targets: list[str]):
    from peft import PromptTuningConfig, PromptTuningInit

    return PromptTuningConfig(task_type=_task(), num_virtual_tokens=h.num_virtual_tokens,
                              prompt_tuning_init=PromptTuningInit.SAMPLE_VOCAB)


_QV = ("q", "v")
_LORA_USES = ("r", "lora_alpha", "lora_dropout", "target_modules")

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("full", "Full FT", "full fine-tuning: every weight trains", 5e-5, (), None, mergeable=False,
               fsdp=True),
        Method("lora", "LoRA", "LoRA, low-rank update B@A (Hu et al., 2021)", 5e-4, _QV, _lora(), _LORA_USES, r=8,
               mixed_batch=True, peft_type="LORA", fsdp=True, frozen_base_bf16=True),
        Method("dora", "DoRA", "DoRA, weight-decomposed LoRA (Liu et al., 2024)", 5e-4, _QV, _lora(use_dora=True),
               _LORA_USES, r=8, peft_type="LORA", config_flag="use_dora"),
        Method("rslora", "rsLoRA", "rank-stabilised LoRA, scale alpha/sqrt(r) (Kalajdzievski, 2023)", 5e-4, _QV,
               _lora(use_rslora=True), _LORA_USES, r=8, mixed_batch=True, peft_type="LORA",
               config_flag="use_rslora", fsdp=True, frozen_base_bf16=True),
        Method("pissa", "PiSSA", "LoRA initialised from principal singular vectors (Meng et al., 2024)", 5e-4,
               _QV, _lora(init_lora_weights="pissa"), _LORA_USES, r=8, convert_on_save=True, mixed_batch=True,
               peft_type="LORA"),
        Method("adalora", "AdaLoRA", "AdaLoRA, adaptive rank budget, init_r 1.5r pruned to r (Zhang et al., 2023)",
               5e-4, ALL_LINEAR, _adalora, _LORA_USES, r=8, callbacks=(_adalora_callback,), resumable=False,
               extra_record=_adalora_record, packed_head=False, peft_type="ADALORA", frozen_base_bf16=True),
        Method("ia3", "IA3", "IA3, learned rescaling of k, v and the FFN activation (Liu et al., 2022)", 3e-3,
               ("k", "v", "wo"), _ia3, ("target_modules",), peft_type="IA3", frozen_base_bf16=True),
        Method("loha", "LoHa", "LoHa, Hadamard product of two low-rank pairs (Hyeon-Woo et al., 2022)", 5e-4, _QV,
               _loha, ("r", "lora_alpha", "target_modules"), r=8, peft_type="LOHA", frozen_base_bf16=True),
        Method("vera", "VeRA",
               "VeRA, shared frozen random matrices + trained scaling vectors (Kopiczko et al., 2024)",
               5e-3, _QV, _vera, ("r", "lora_dropout", "target_modules"), r=256, peft_type="VERA", frozen_base_bf16=True),
        Method("prefix", "Prefix tuning",
               "prefix tuning, trained key/value prefixes (Li & Liang, 2021); decoder-side in PEFT",
               1e-2, (), _prefix, ("num_virtual_tokens",), gradient_checkpointing=False,
               peft_type="PREFIX_TUNING", mergeable=False, frozen_base_bf16=True),
        Method("prompt", "Prompt tuning", "prompt tuning, trained input embeddings (Lester et al., 2021)", 3e-2, (),
               _prompt, ("num_virtual_tokens",), peft_type="PROMPT_TUNING", mergeable=False, frozen_base_bf16=True),
    )
}
"""All methods, keyed by ``--method`` name."""

REFERENCE_METHOD = "full"
"""The method every other is compared with in reports (full fine-tuning, the registry's non-PEFT row)."""


def get_method(name: str) -> Method:
    """Look up a method by name (case and surrounding spaces ignored).

    Args:
        name: a ``--method`` value.

    Returns:
        The :class:`Method` row.

    Raises:
        ConfigError: unknown name; the message suggests the closest one and lists the valid ones.
    """
    key = str(name).strip().lower()
    if key not in METHODS:
        import difflib

        close = difflib.get_close_matches(key, list(METHODS), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(f"unknown method {name!r}; {hint}choose one of: {', '.join(METHODS)}")
    return METHODS[key]


def method_of_adapter(adapter_config: dict) -> Method | None:
    """The method that wrote an ``adapter_config.json``, from its ``peft_type`` and flags.

    Args:
        adapter_config: the parsed ``adapter_config.json``.

    Returns:
        The row whose :attr:`Method.peft_type` matches and whose :attr:`Method.config_flag` is set in
        the config, else the first row of that type without a flag (a plain LoRA for ``"LORA"``;
        PiSSA saves a plain LoRA), or ``None`` when no method writes that ``peft_type``.
    """
    peft_type = str(adapter_config.get("peft_type", "")).upper().split(".")[-1]
    rows = [m for m in METHODS.values() if m.peft_type == peft_type]
    flagged = [m for m in rows if m.config_flag and adapter_config.get(m.config_flag)]
    plain = [m for m in rows if not m.config_flag]
    return (flagged or plain or [None])[0]


def methods_markdown() -> str:
    """The README's method table, one row per :data:`METHODS` entry (``tests/test_methods.py`` checks
    that README.md holds exactly this text).

    Returns:
        A markdown table: ``--method`` name, display name, default learning rate and rank, whether it
        merges, mixes in a served batch and runs under FSDP, and its one-line summary.
    """
    yes = {True: "yes", False: "-"}
    lines = ["| `--method` | name | lr | r | merge | mixed batch | FSDP | summary |",
             "|---|---|---|---|---|---|---|---|"]
    for m in METHODS.values():
        lines.append(f"| `{m.name}` | {m.label} | {m.learning_rate:g} | {m.r or '-'} | {yes[m.mergeable]} "
                     f"| {yes[m.mixed_batch]} | {yes[m.fsdp]} | {m.summary} |")
    return "\n".join(lines) + "\n"


def resolve_target_modules(method: Method, requested: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """Turn ``--target-modules`` into a list: ``None`` = the method's default, ``all-linear`` = :data:`ALL_LINEAR`.

    Args:
        method: the method.
        requested: ``None``, ``"q,v"``, ``"all-linear"`` or a list of names.

    Returns:
        Module names (empty for methods that take none: full fine-tuning, prefix and prompt tuning).

    Raises:
        ConfigError: target modules given for a method that takes none.
    """
    takes_none = "target_modules" not in method.uses
    if requested is None or requested == "" or list(requested) == []:
        return [] if takes_none else list(method.target_modules)
    items = requested.split(",") if isinstance(requested, str) else [p for r in requested for p in str(r).split(",")]
    items = [i.strip() for i in items if i.strip()]
    if takes_none:
        raise ConfigError(f"--target-modules does not apply to {method.name} (it adapts no linear layers)")
    if items in (["all-linear"], ["all_linear"]):
        return list(ALL_LINEAR)
    return items


def check_target_modules(model, targets: list[str]) -> None:
    """Fail early when a target module name matches no linear layer of ``model``.

    A name matches a module whose dotted path ends in it (PEFT's suffix rule for a list of names).

    Args:
        model: the base model (before ``get_peft_model``).
        targets: module names, e.g. ``["q", "v"]``.

    Raises:
        ConfigError: names that match no linear layer; the message lists the ones that exist.
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


def method_hyper(method: Method, cfg) -> MethodHyper:
    """The :class:`MethodHyper` for ``method`` from a ``TrainConfig`` (rank falls back to the method's default).

    Args:
        method: the method row.
        cfg: a :class:`peftsum.config.TrainConfig` (reads ``lora_r``, ``lora_alpha``,
            ``lora_dropout``, ``target_modules``, ``num_virtual_tokens``).

    Returns:
        The hyperparameters, with ``target_modules`` resolved and ``total_steps`` left at its default.
    """
    targets = resolve_target_modules(method, cfg.target_modules)
    r = cfg.lora_r if cfg.lora_r is not None else (method.r or 8)
    return MethodHyper(r=r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                       target_modules=tuple(targets) or None, num_virtual_tokens=cfg.num_virtual_tokens)


def describe_hyper(method: Method, hyper: MethodHyper) -> dict[str, Any]:
    """The hyperparameters ``method`` actually uses, for the run record and the model card.

    Args:
        method: the method row.
        hyper: its resolved hyperparameters.

    Returns:
        ``{name: value}`` for the fields in ``method.uses`` (``target_modules`` as a list), plus
        AdaLoRA's schedule where it applies.
    """
    out: dict[str, Any] = {}
    for name in method.uses:
        value = getattr(hyper, name)
        out[name] = list(value) if isinstance(value, tuple) else value
    if method.extra_record is not None:
        out.update(method.extra_record(hyper))
    return out


def build_peft_config(method: Method, hyper: MethodHyper):
    """The ``peft`` config for ``method`` (``None`` for full fine-tuning).

    Args:
        method: the method row.
        hyper: hyperparameters (``target_modules`` ``None`` = the method's default).

    Returns:
        A ``peft.PeftConfig`` subclass instance, or ``None``.

    Raises:
        ConfigError: a setting PEFT cannot use (e.g. AdaLoRA with fewer than 3 steps).
    """
    if method.build is None:
        return None
    return method.build(hyper, resolve_target_modules(method, hyper.target_modules))
