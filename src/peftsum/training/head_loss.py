"""Cross-entropy of the output head without vocabulary-wide fp32 tensors (the fused head loss).

mT5's head projects every scored target token onto 250,112 columns. The plain path keeps the
logits in the compute dtype, then an fp32 copy, the fp32 log-softmax (saved for backward), the
fp32 gradient of the log-softmax and its cast back: four ``n x 250,112`` tensors (231 target
tokens: 115-231 MB each), each written and read in full. :func:`head_cross_entropy` keeps one
``n x vocab`` buffer in the compute dtype: the logits, which it turns in place, a row block at a
time through a small fp32 scratch, into the gradient of the loss with respect to the logits
(``(softmax - onehot) / n``, with label smoothing ``softmax - (1 - eps) onehot - eps / V``).
The gradient of the head's input is computed in forward, the head weight's gradient in
backward (one matmul, as autograd would), so nothing is recomputed. A frozen head (PEFT methods)
needs no logits in backward: on CPU it goes through the vocabulary a block of rows at a time
(``cpu_kernel.frozen_head_cross_entropy``), so its logits are never held whole (mT5, 231 tokens:
15 MB of scratch in bf16 instead of 116 MB).

Same idea as Liger-Kernel's fused linear cross-entropy and Apple's Cut Cross-Entropy (both GPU
kernels); here with PyTorch ops, which is what pays on a CPU whose memory bandwidth, not its
matmul units, bounds the head (``benchmarks/README.md``).
"""

from __future__ import annotations

import weakref

import torch

from peftsum.modeling import cpu_kernel

ROW_BYTES = 1 << 20
"""Size of the fp32 scratch the rows are turned through on CPU (1 MiB: one mT5 row at a time; it
stays in the core's cache; ``benchmarks/levers.py --only head``)."""

DEVICE_ROW_BYTES = 256 << 20
"""The same on GPUs and other devices, where kernel launches rather than cache size bound a small
block (256 MiB: all 231 target rows of the benchmark batch at once; not measured on a GPU)."""


_CAST_BUFFERS: dict[int, tuple] = {}
"""id(weight) -> (weakref to the weight, its buffer); an entry goes when its weight is collected."""


def _cast_buffer(weight, dtype):
    """A persistent ``weight``-shaped buffer in ``dtype`` (CPU), kept while the weight lives.

    The head's weight cast (forward) and its gradient in the compute dtype (backward) are
    vocab x d tensors (256 MB each for mT5 in bf16), allocated and freed at every step; between
    them the step's small allocations split the freed space, so the C heap kept growing by 256 MB
    every few steps of full fine-tuning (7.0 GB after 2 steps, 13.0 GB after 48: the page faults
    of each growth also cost ~0.6 s). One buffer per weight, reused by both, removes both allocations.
    """
    key = id(weight)
    ref, buf = _CAST_BUFFERS.get(key, (None, None))
    if ref is None or ref() is not weight or buf.dtype != dtype or buf.shape != weight.shape:
        with torch.inference_mode(False):  # a normal tensor even when first made under inference_mode
            buf = torch.empty(weight.shape, dtype=dtype)
        _CAST_BUFFERS[key] = (weakref.ref(weight, lambda _, key=key: _CAST_BUFFERS.pop(key, None)), buf)
    return buf


class _HeadCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``hidden @ weight.T`` against ``target``; see :func:`head_cross_entropy`."""

    @staticmethod
    def forward(ctx, hidden, weight, target, smoothing: float, dtype):
        with torch.autocast(hidden.device.type, enabled=False):
            h = hidden.to(dtype)
            buffer = _cast_buffer(weight, dtype) if weight.device.type == "cpu" and weight.dtype != dtype else None
            w = buffer.copy_(weight) if buffer is not None else weight.to(dtype)
            columns = _columns_apply(h, w)
            if columns and not ctx.needs_input_grad[1] and w.is_contiguous():  # a frozen head (PEFT): by blocks
                logits = None
                nll, uniform, grad_hidden = cpu_kernel.frozen_head_cross_entropy(w, h, target, smoothing)
                grad_hidden = grad_hidden.to(hidden.dtype)
            elif columns:  # vocab x n: the layout whose products run ~2x faster on CPU
                logits = w @ h.t()  # the logits in the compute dtype, become their gradient in place (saved)
                nll, uniform = cpu_kernel.cross_entropy_columns(logits, target, smoothing)
                grad_hidden = (logits.t() @ w).to(hidden.dtype)
            else:
                logits = h @ w.t()  # n x V in the compute dtype, becomes the logits' gradient in place
                nll, uniform = _cross_entropy_rows(logits, target, smoothing)
                grad_hidden = (logits @ w).to(hidden.dtype)
        loss = nll.mean() if uniform is None else (1.0 - smoothing) * nll.mean() + smoothing * uniform.mean()
        # the logits' gradient is needed again only for the weight's gradient: a frozen head (PEFT) frees it here
        ctx.save_for_backward(logits if ctx.needs_input_grad[1] else None, h, grad_hidden)
        ctx.weight_dtype = weight.dtype
        ctx.columns = columns
        ctx.buffer = buffer  # backward's product goes into the same buffer (forward's cast is dead by then)
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable  # the saved gradients are constants: double backward raises
    def backward(ctx, grad_loss):
        grad, h, grad_hidden = ctx.saved_tensors
        scale = float(grad_loss)
        grad_weight = None
        if ctx.needs_input_grad[1]:
            with torch.autocast(h.device.type, enabled=False):
                rhs = h if scale == 1.0 else h * scale
                grad_t = grad if ctx.columns else grad.t()  # vocab x n either way
                product = torch.mm(grad_t, rhs, out=ctx.buffer) if ctx.buffer is not None else grad_t @ rhs
                grad_weight = product.to(ctx.weight_dtype)
        if ctx.needs_input_grad[0]:
            grad_hidden = grad_hidden if scale == 1.0 else grad_hidden * scale
        return grad_hidden, grad_weight, None, None, None


def _columns_apply(h, w) -> bool:
    """Whether the vocab x n layout and peftsum's cross-entropy kernel take this head: CPU tensors in the
    kernel's dtypes (``cpu_kernel.cross_entropy_applies`` of the logits ``w @ h.T`` will make), kernel built."""
    return (h.device.type == "cpu" and w.device.type == "cpu" and h.dtype in (torch.bfloat16, torch.float32)
            and cpu_kernel.available())


def _cross_entropy_rows(logits, target, smoothing: float):
    """:func:`peftsum.modeling.cpu_kernel.cross_entropy_columns` for ``n x vocab`` logits, with PyTorch ops.

    A block of rows at a time through an fp32 scratch of :data:`ROW_BYTES` (:data:`DEVICE_ROW_BYTES`
    off CPU); returns ``(nll, uniform or None)`` and leaves the mean loss's gradient in ``logits``.
    """
    n, vocab = logits.shape
    rows = max(1, (ROW_BYTES if logits.device.type == "cpu" else DEVICE_ROW_BYTES) // (4 * vocab))
    nll = torch.empty(n, dtype=torch.float32, device=logits.device)
    uniform = torch.empty(n, dtype=torch.float32, device=logits.device) if smoothing > 0 else None
    for r in range(0, n, rows):
        block = logits[r:r + rows]
        x = block.float() if block.dtype != torch.float32 else block  # fp32 scratch (or in place)
        t = target[r:r + rows, None]
        m = x.amax(dim=-1, keepdim=True)
        picked = x.gather(1, t)
        if uniform is not None:
            mean = x.mean(dim=-1, keepdim=True)
        x.sub_(m).exp_()
        s = x.sum(dim=-1, keepdim=True)
        lse = m + s.log()
        nll[r:r + rows] = (lse - picked).squeeze(1)
        if uniform is not None:
            uniform[r:r + rows] = (lse - mean).squeeze(1)
        x.mul_(1.0 / (s * n))  # softmax / n
        x.scatter_add_(1, t, torch.full_like(picked, -(1.0 - smoothing) / n))
        if smoothing > 0:
            x.sub_(smoothing / (vocab * n))
        if x is not block:
            block.copy_(x)
    return nll, uniform


def head_cross_entropy(hidden, weight, target, smoothing: float = 0.0):
    """Token-mean cross-entropy of the logits ``hidden @ weight.T``, never materialising them in fp32.

    The value is ``torch.nn.functional.cross_entropy(hidden @ weight.T, target,
    label_smoothing=smoothing)`` with the logits rounded to the compute dtype first, exactly what
    an autocast ``nn.Linear`` followed by ``cross_entropy(logits.float(), target)`` computes
    (equal to float rounding; ``tests/test_fast_training.py``). Gradients flow to ``hidden`` and,
    when it requires grad (full fine-tuning), to ``weight``.

    Args:
        hidden: ``n x d`` head inputs of the scored target tokens (any float dtype).
        weight: ``vocab x d`` head weight (fp32, or bf16 while a PEFT method trains a frozen base).
        target: ``n`` label ids (no -100 here: pass only scored positions).
        smoothing: label smoothing epsilon in ``[0, 1)`` (``torch.nn.CrossEntropyLoss``'s definition).

    Returns:
        The scalar fp32 mean loss over the ``n`` tokens (nats).

    Memory: one ``n x vocab`` buffer in the compute dtype (autocast's dtype when autocast is on,
    else ``hidden``'s) plus a 1 MiB scratch, instead of about four (mT5, 231 tokens: ~115 MB in
    bf16 instead of ~690 MB).
    """
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
    return _HeadCrossEntropy.apply(hidden, weight, target, float(smoothing), dtype)
