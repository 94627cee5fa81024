"""Gradient clipping for CPU gradients: an exact norm in one read, the scaling folded into fused AdamW."""

from __future__ import annotations

CHUNK = 1 << 20
"""Elements per fp32 dot product in :func:`total_norm` (partial sums then added in fp64)."""

EPS = 1e-6
"""Added to the norm before dividing, as ``torch.nn.utils.clip_grads_with_norm_`` does."""


def total_norm(grads):
    """The total L2 norm of ``grads`` (0-dim fp32 tensor): sums of squares by 1M-element dot products, added in fp64.

    ``torch.nn.utils.get_total_norm`` (accelerate's) takes each tensor's ``vector_norm``: for
    mT5-small's 300M fp32 gradients 77 ms on the 2-core AMX machine, and over a 128M-element tensor
    (the 250,112 x 512 embedding) its fp32 accumulation drifts: 1.1% below the float64 norm of 306M
    standard normal values, where the chunked dots are within 1.4e-7 in 41 ms (``benchmarks/README.md``).
    NaN and inf propagate (a dot of them is NaN or inf). Gradients that are not fp32 or fp64 take
    ``get_total_norm``.
    """
    import torch
    from torch.nn.utils import get_total_norm

    grads = list(grads)
    if not grads:
        return torch.zeros((), dtype=torch.float32)
    if any(g.dtype not in (torch.float32, torch.float64) for g in grads):
        return get_total_norm(grads, 2.0).float()
    parts = []
    for g in grads:
        flat = g.reshape(-1)
        for i in range(0, flat.numel(), CHUNK):
            x = flat[i:i + CHUNK]
            parts.append(torch.dot(x, x).double())
    return torch.stack(parts).sum().sqrt().float()


def folds_into(optimizer) -> bool:
    """Whether ``optimizer`` (a torch optimizer, or accelerate's wrapper of one) can apply the clip coefficient.

    torch's fused Adam and AdamW divide every gradient by their ``grad_scale`` attribute inside the
    update (the attribute ``torch.amp.GradScaler`` sets to unscale fp16 gradients), so a clip
    coefficient handed over as ``grad_scale = (norm + eps) / max_norm`` costs no extra pass.
    """
    import torch

    inner = getattr(optimizer, "optimizer", optimizer)
    return (type(inner) in (torch.optim.Adam, torch.optim.AdamW) and bool(inner.defaults.get("fused"))
            and getattr(inner, "grad_scale", None) is None)


def _drop_stale(optimizer) -> None:
    """Remove a ``grad_scale`` this module set whose step never ran (an exception or a skipped step in between)."""
    inner = getattr(optimizer, "optimizer", optimizer)
    if getattr(inner, "grad_scale", None) is not None and inner.grad_scale is getattr(inner, "_peftsum_scale", None):
        inner.grad_scale = None


def _fold(optimizer, scale) -> None:
    """Hand ``scale`` to the fused optimizer's next step as ``grad_scale``; removed again after that step."""
    inner = getattr(optimizer, "optimizer", optimizer)
    inner.grad_scale = inner._peftsum_scale = scale
    if not getattr(inner, "_peftsum_clip_hook", False):
        def drop(opt, args, kwargs):
            opt.grad_scale = opt._peftsum_scale = None

        inner.register_step_post_hook(drop)
        inner._peftsum_clip_hook = True


def clip_gradients(parameters, max_norm: float, optimizer=None):
    """Clip the gradients' total L2 norm to ``max_norm``; what accelerate's ``clip_grad_norm_`` does, faster on CPU.

    Three differences, all on CPU gradients (:func:`applies`): the norm is :func:`total_norm`'s
    (exact to ~1e-7 where accelerate's drifts by up to ~1% on 100M-element tensors); nothing is
    multiplied when the coefficient ``min(1, max_norm / (norm + 1e-6))`` is 1 (torch multiplies
    by 1 to avoid a host-device sync on GPUs: a read and write of every gradient, 1.2 GB for
    mT5-small); and when it is below 1 and ``optimizer`` is fused Adam/AdamW, the optimizer's next
    step divides the gradients by ``(norm + 1e-6) / max_norm`` inside its update instead of a
    separate pass (:func:`folds_into`). Else the gradients are scaled by torch's own function
    (also when the norm is not finite: NaN and inf propagate as in torch).

    Args:
        parameters: the model's parameters (those without ``.grad`` are ignored), gradients on CPU.
            The gradient rows an embedding's touched-rows AdamW keeps for ``optimizer``
            (:mod:`peftsum.training.sparse_rows`) count too, and are scaled the same way.
        max_norm: the largest total L2 norm (``TrainingArguments.max_grad_norm``).
        optimizer: the optimizer whose next step applies the gradients (the Trainer's), or None.

    Returns:
        The total L2 norm of the gradients before clipping (0-dim fp32 tensor).
    """
    import torch
    from torch.nn.utils import clip_grads_with_norm_

    from peftsum.training.sparse_rows import pending_gradients

    if optimizer is not None:
        _drop_stale(optimizer)
    rows = pending_gradients(optimizer) if optimizer is not None else []  # an embedding's touched rows
    params = [p for p in parameters if p.grad is not None]
    total = total_norm([p.grad for p in params] + rows)
    if not (params or rows) or max_norm == float("inf") or bool(max_norm / (total + EPS) >= 1.0):
        return total
    if optimizer is not None and bool(torch.isfinite(total)) and folds_into(optimizer):
        _fold(optimizer, ((total + EPS) / max_norm).to(torch.float32))
    else:
        clip_grads_with_norm_(params, max_norm, total)
        for g in rows:  # the same coefficient as torch's (max_norm / (norm + eps), at most 1)
            g.mul_(torch.clamp(max_norm / (total + EPS), max=1.0))
    return total


def applies(accelerator, parameters) -> bool:
    """Whether :func:`clip_gradients` replaces accelerate's clipping for these gradients.

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
