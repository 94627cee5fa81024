"""Gradient clipping that skips the scaling pass when nothing is clipped (CPU gradients)."""

from __future__ import annotations


def clip_grad_norm_skip_unit(parameters, max_norm: float):
    """``accelerate``'s ``clip_grad_norm_`` (its path for unsharded gradients), without multiplying by 1.

    ``torch.nn.utils.clip_grads_with_norm_`` always multiplies every gradient by the clamped
    coefficient ``min(1, max_norm / (norm + 1e-6))``, even when it is 1, to avoid the host-device
    synchronisation of a branch on GPUs (its source says so). On CPU the branch costs nothing, and
    the multiplication by 1 is a read and write of every gradient: 1.2 GB for mT5-small's 300M
    fp32 gradients, ~50 ms of a full fine-tuning step on two cores (``benchmarks/README.md``).
    Multiplying by exactly 1.0 changes no bit, so skipping it gives the same gradients; when the
    coefficient is below 1 (or the norm is not finite: NaN/inf propagate as in torch) the
    gradients are scaled by torch's own function.

    Args:
        parameters: the model's parameters (those without ``.grad`` are ignored), gradients on CPU.
        max_norm: the largest total L2 norm (``TrainingArguments.max_grad_norm``).

    Returns:
        The total L2 norm of the gradients before clipping (0-dim fp32 tensor), computed as
        accelerate does (``get_total_norm``, then the norm of the one-element stack).
    """
    import torch
    from torch.nn.utils import clip_grads_with_norm_, get_total_norm

    params = [p for p in parameters if p.grad is not None]
    norms = [get_total_norm([p.grad for p in params], 2.0)] if params else []
    total = torch.linalg.vector_norm(torch.stack(norms) if norms else torch.zeros(1), 2.0)
    if params and max_norm != float("inf") and not bool(max_norm / (total + 1e-6) >= 1.0):
        clip_grads_with_norm_(params, max_norm, total)
    return total


def applies(accelerator, parameters) -> bool:
    """Whether :func:`clip_grad_norm_skip_unit` gives accelerate's result for these gradients.

    One process or DDP (plain tensors, already all-reduced), no gradient scaler (fp16), every
    gradient a plain CPU tensor (not FSDP's DTensors, not on a GPU, where the branch would sync).
    """
    import torch
    from accelerate.utils import DistributedType

    if accelerator.distributed_type not in (DistributedType.NO, DistributedType.MULTI_CPU):
        return False
    if getattr(accelerator, "scaler", None) is not None:
        return False
    return all(type(p.grad) is torch.Tensor and p.grad.device.type == "cpu"
               for p in parameters if p.grad is not None)
