"""Training on several devices: what peftsum checks and adds around the Trainer's DDP / FSDP2.

Data-parallel training (DDP) and sharded training (FSDP2) are the Trainer's, through
accelerate: ``torchrun --nproc-per-node N -m peftsum train ...`` gives DDP, and
``accelerate launch --config_file configs/accelerate/fsdp2_mt5_large.yaml -m peftsum train ...`` gives
FSDP2 (accelerate passes the config to the Trainer's ``Accelerator`` through ``ACCELERATE_USE_FSDP``
and ``FSDP_*`` environment variables). peftsum adds:

* :func:`check_parallel`: combinations that cannot work are refused at start, before weights load,
  with a line that says what to use instead;
* :func:`describe_batch`: the effective batch printed at start;
* :func:`final_model_and_state`: the model and (under FSDP) the gathered full state dict for the
  final ``save_pretrained``, so ``model/`` is always a standard checkpoint.
"""

from __future__ import annotations

import os

from peftsum.config import TrainConfig
from peftsum.distributed import effective_batch, fsdp_requested, world
from peftsum.errors import ConfigError

def launcher_precision() -> str:
    """The mixed precision the launcher asked for (``ACCELERATE_MIXED_PRECISION``: no, bf16, fp16)."""
    return os.environ.get("ACCELERATE_MIXED_PRECISION", "no").strip().lower() or "no"


def check_parallel(cfg: TrainConfig, method) -> None:
    """Refuse launcher settings that cannot work, before any weights load.

    Args:
        cfg: the resolved config.
        method: its registry row (``peftsum.modeling.methods``).

    Raises:
        ConfigError: fp16 asked by the launcher for a T5-family model; FSDP without CUDA (accelerate
            1.16 enables FSDP only for GPU distributed types: ``AcceleratorState`` sets
            ``DistributedType.FSDP`` inside its ``MULTI_GPU/...`` branch, so CPU processes would silently
            run DDP); a launcher precision that contradicts the resolved ``bf16``; a PEFT method other
            without :attr:`~peftsum.modeling.methods.Method.fsdp` under FSDP. Each message names what to use instead.
    """
    if launcher_precision() == "fp16" and not cfg.fp16:
        import dataclasses

        from peftsum.config_checks import refuse_fp16 as _refuse_fp16

        try:
            _refuse_fp16(dataclasses.replace(cfg, fp16=True))
        except ConfigError as exc:
            raise ConfigError(f"the launcher's mixed_precision fp16 is refused: {exc} "
                              "(set mixed_precision: bf16 or no in the accelerate config)") from None
    mixed = launcher_precision() if os.environ.get("ACCELERATE_MIXED_PRECISION") else None  # accelerate launch
    if mixed == "bf16" and not cfg.bf16:  # the Trainer would take the launcher's bf16 over peftsum's fp32
        raise ConfigError(
            "the launcher's mixed_precision is bf16 but this run resolved to fp32 (--no-bf16 or PEFTSUM_BF16=0); "
            "pass --bf16, or set mixed_precision: no in the accelerate config, so the run record says what ran")
    if fsdp_requested() and not method.fsdp:
        from peftsum.modeling.methods import METHODS

        names = [m.name for m in METHODS.values() if m.fsdp]
        raise ConfigError(
            f"{method.name} is not supported under FSDP; use --method {', '.join(names[:-1])} or {names[-1]} "
            f"with FSDP, or train "
            f"{method.name} data-parallel (torchrun --nproc-per-node N -m peftsum train, no FSDP config)")
    if fsdp_requested() and not _has_cuda():
        raise ConfigError(
            "FSDP needs CUDA GPUs: accelerate (1.16) turns an FSDP config on only for GPU processes and would "
            "silently train CPU processes data-parallel; on CPU use torchrun --nproc-per-node N -m peftsum train")


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def describe_batch(cfg: TrainConfig) -> str:
    """The start-of-run line with the effective batch and how it is made up.

    Returns:
        e.g. ``"effective batch 8 = 2 per device x 2 processes x 2 accumulation steps (data-parallel)"``.
    """
    w = world().world_size
    mode = "FSDP2" if fsdp_requested() else ("data-parallel" if w > 1 else "one process")
    return (f"effective batch {effective_batch(cfg.batch_size, cfg.gradient_accumulation_steps, w)} = "
            f"{cfg.batch_size} per device x {w} process{'es' if w > 1 else ''} x "
            f"{cfg.gradient_accumulation_steps} accumulation step{'s' if cfg.gradient_accumulation_steps > 1 else ''}"
            f" ({mode})")


def final_model_and_state(trainer):
    """The model to ``save_pretrained`` at the end of training, and its full state dict under FSDP.

    Under FSDP the parameters are sharded over the ranks, so every rank must take part in the
    gather (:func:`full_state_dict`: FSDP2 ``get_model_state_dict(full_state_dict=True,
    cpu_offload=True)``, tested on 2 CPU processes in tests/test_fsdp.py); rank 0 receives the
    full tensors and writes a standard checkpoint that plain ``from_pretrained`` loads.

    Args:
        trainer: the ``PeftsumTrainer`` after ``train()``.

    Returns:
        ``(model, state_dict)``: the unwrapped model and, under FSDP, the full state dict (on
        rank 0; ``{}`` elsewhere); ``state_dict`` is ``None`` without FSDP (the model saves its own).
    """
    if not getattr(trainer, "is_fsdp_enabled", False):
        return trainer.model, None
    model = trainer.accelerator.unwrap_model(trainer.model)
    return model, full_state_dict(model)


def shard_model(model, mesh=None):
    """Apply FSDP2 (``torch.distributed.fsdp.fully_shard``) the way the FSDP2 config does: each block
    class named in the model's ``_no_split_modules`` (mT5: ``MT5Block``) is one unit, then the root.

    Why per block and not by size: a size-based policy can cut a T5 block apart (its relative
    attention bias is shared from the first layer), and FSDP2 shards per parameter, so mT5's fp32
    ``wo`` (``_keep_in_fp32_modules``) next to bf16 weights is fine (FSDP1's flat parameters need one
    dtype). This is what accelerate's ``TRANSFORMER_BASED_WRAP`` with ``MT5Block`` does on GPUs; it
    is used directly by the CPU test (accelerate does not enable FSDP for CPU processes).

    Args:
        model: a ``transformers`` model (or PEFT model) on its device.
        mesh: a 1-D ``DeviceMesh`` (default: all ranks of the default process group).

    Returns:
        The same model, sharded in place (its class becomes ``FSDP<Class>``).
    """
    from torch.distributed.fsdp import fully_shard

    names = set(getattr(model, "_no_split_modules", None) or [])
    if not names and hasattr(model, "get_base_model"):
        names = set(getattr(model.get_base_model(), "_no_split_modules", None) or [])
    for module in model.modules():
        if type(module).__name__ in names:
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def full_state_dict(model) -> dict:
    """Gather an FSDP2 model's full (unsharded) state dict on CPU; every rank must call it.

    Args:
        model: a model sharded with FSDP2.

    Returns:
        ``{name: tensor}`` with full CPU tensors on rank 0 (``{}`` on the others), loadable with
        ``save_pretrained(state_dict=...)`` into a standard checkpoint.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
