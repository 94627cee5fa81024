"""Same-result fast paths for CPU: swapped module classes that compute what the originals do, faster.

:func:`skinny_output_head` (decoding's output projection), :func:`fuse_activations` (mT5's
``gelu_new`` as one kernel), :func:`fuse_feed_forward` (the gated feed-forward's core as one compiled
kernel), :func:`fuse_layer_norms` (T5's layer norm likewise) and :func:`fast_dropout` (training dropout
masks from :func:`keep_mask`); the attention function with the same masks is
:mod:`peftsum.modeling.attention`. :func:`peftsum.modeling.load.load_model` applies all but the last;
the trainer applies :func:`fast_dropout` after PEFT wraps the model. Each is measured in
``benchmarks/README.md``.
"""

from __future__ import annotations

import functools

SKINNY_ROWS = 32
"""Up to this many rows (batch x positions), :func:`skinny_output_head` computes the output
projection as ``(W @ x.T).T`` on CPU."""


@functools.cache  # one class per process (torch is imported only when a model is loaded)
def _skinny_linear_class():
    import torch

    class SkinnyOutputLinear(torch.nn.Linear):
        """``nn.Linear`` whose CPU forward for a few rows multiplies the tall weight by the skinny input.

        ``F.linear(x, W)`` with x of 2-32 rows and W of 250,112 x 512 (mT5's output projection at
        every decoding step) is 1.6-3x slower with MKL on CPU than ``(W @ x.T).T``: the same
        products summed in another order, equal to float rounding. Larger inputs (training, long
        prompts), GPUs and layers with a bias take the usual path.
        """

        def forward(self, x):
            rows = x.numel() // x.shape[-1] if x.dim() >= 2 else 0
            if x.device.type == "cpu" and self.bias is None and 1 < rows <= SKINNY_ROWS:
                # a transposed view: generation copies the last position's logits anyway, so a
                # .contiguous() here would copy the 250,112-wide rows twice per step
                out = torch.mm(self.weight, x.reshape(rows, x.shape[-1]).t()).t()
                return out.view(*x.shape[:-1], out.shape[-1])
            return super().forward(x)

    return SkinnyOutputLinear


def skinny_output_head(model) -> bool:
    """Make the output projection fast for decoding on CPU (see ``SkinnyOutputLinear``).

    The head keeps its weight (same ``Parameter``, same state-dict key); only its class changes,
    to a subclass of ``nn.Linear``. Models whose head is not a plain ``nn.Linear`` are left alone.

    Returns:
        Whether the head was changed.
    """
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if type(head) is not torch.nn.Linear:
        return False
    head.__class__ = _skinny_linear_class()
    return True


def fuse_activations(model) -> int:
    """Run mT5's ``gelu_new`` as one fused kernel instead of seven elementwise ops.

    transformers' ``NewGELUActivation`` (T5 v1.1/mT5's ``dense_act_fn = "gelu_new"``) writes the
    tanh approximation of GELU in Python: pow, mul, add, mul, tanh, add, mul, each allocating a
    tensor the size of the feed-forward activation, and as many again in backward. ``GELUTanh``
    computes the same formula with ``torch.nn.functional.gelu(approximate="tanh")``: outputs agree to
    float rounding (max difference ~2e-7 in fp32), forward plus backward is ~4x faster on CPU
    (benchmarks/README.md). Only module instances change; the config (and so every saved
    checkpoint) still says ``gelu_new``.

    Args:
        model: any ``torch.nn.Module`` (PEFT-wrapped or not).

    Returns:
        How many activation modules were replaced.
    """
    from transformers.activations import GELUTanh, NewGELUActivation

    replaced = 0
    for module in model.modules():
        for name, child in list(module.named_children()):
            if type(child) is NewGELUActivation:
                setattr(module, name, GELUTanh())
                replaced += 1
    return replaced


def _cpu_bf16_autocast() -> bool:
    """Whether CPU autocast is on with bf16 (where the fused layer norm and LoRA's input dropout hand bf16 on)."""
    import torch

    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


@functools.cache
def _fused_feed_forward_class(base):
    import torch

    class FusedGatedFeedForward(base):
        """T5 v1.1 / mT5's gated feed-forward whose CPU training forward runs ``dropout(gelu(wi_0 x) * wi_1 x)``
        as one compiled kernel each way (:func:`peftsum.modeling.cpu_kernel.gated_gelu_dropout`).

        The projections stay the module's own (``nn.Linear`` or a PEFT layer on them). Under autocast the
        product is no longer cast to ``wo``'s fp32 weight dtype first (autocast casts it straight back
        to bf16: the round trip changes no bit). Evaluation, other activations than ``GELUTanh``, GPUs and
        a missing kernel take the module's own forward.
        """

        def forward(self, hidden_states):
            from transformers.activations import GELUTanh

            from peftsum.modeling import cpu_kernel

            drop = self.dropout
            if (not self.training or hidden_states.device.type != "cpu" or type(self.act) is not GELUTanh
                    or not 0.0 <= drop.p < MAX_P or drop.inplace):
                return super().forward(hidden_states)
            gate, linear = self.wi_0(hidden_states), self.wi_1(hidden_states)
            if cpu_kernel.gated_gelu_applies(gate, linear):
                hidden = cpu_kernel.gated_gelu_dropout(gate, linear, *threshold_and_scale(drop.p))
            else:
                hidden = drop(self.act(gate) * linear)
            weight = self.wo.weight
            if (isinstance(weight, torch.Tensor) and hidden.dtype != weight.dtype and weight.dtype != torch.int8
                    and not torch.is_autocast_enabled(hidden.device.type)):
                hidden = hidden.to(weight.dtype)
            return self.wo(hidden)

    FusedGatedFeedForward.__name__ = FusedGatedFeedForward.__qualname__ = f"Fused{base.__name__}"
    return FusedGatedFeedForward


def fuse_feed_forward(model) -> int:
    """Run the gated feed-forward of T5 v1.1 / mT5 models (``wi_0``, ``wi_1``, ``wo``) with one kernel for its core.

    In a bf16 training step of mT5-small on CPU the activation, the gating product and the dropout
    between ``wi_*`` and ``wo`` are three passes forward and as many backward over ``batch x tokens x
    d_ff`` elements, plus a cast to fp32 and back under autocast (``benchmarks/README.md``). The module
    classes change to a subclass (weights, state dict and config untouched).

    Args:
        model: any ``torch.nn.Module`` (PEFT-wrapped or not).

    Returns:
        How many feed-forward modules changed class.
    """
    changed = 0
    for module in model.modules():
        cls = type(module)
        if (cls.__name__.endswith("DenseGatedActDense") and not cls.__name__.startswith("Fused")
                and all(hasattr(module, n) for n in ("wi_0", "wi_1", "wo", "act", "dropout"))):
            module.__class__ = _fused_feed_forward_class(cls)
            changed += 1
    return changed


@functools.cache
def _fused_layer_norm_class(base):
    import torch

    class FusedT5LayerNorm(base):
        """T5's layer norm whose CPU training forward is one compiled kernel each way
        (:func:`peftsum.modeling.cpu_kernel.rms_norm`); under bf16 autocast its output is bf16.

        A sub-layer's norm feeds only matmuls (q, k, v; the feed-forward's ``wi``), which autocast would
        feed the same values rounded to bf16, each casting on its own: so the norm rounds once instead
        (their gradients then add up in bf16, as activation gradients of bf16 matmuls do). A stack's
        ``final_layer_norm`` is followed by a dropout before its matmuls (a second rounding in bf16), so it
        keeps fp32 (``peftsum_bf16_output`` False). Evaluation, fp16/bf16 weights, GPUs and a missing
        kernel take the module's own forward.
        """

        peftsum_bf16_output = True

        def forward(self, hidden_states):
            from peftsum.modeling import cpu_kernel

            if not self.training or not cpu_kernel.rms_norm_applies(hidden_states, self.weight):
                return super().forward(hidden_states)
            out = torch.bfloat16 if self.peftsum_bf16_output and _cpu_bf16_autocast() else torch.float32
            return cpu_kernel.rms_norm(hidden_states, self.weight, self.variance_epsilon, out)

    FusedT5LayerNorm.__name__ = FusedT5LayerNorm.__qualname__ = f"Fused{base.__name__}"
    return FusedT5LayerNorm


def fuse_layer_norms(model) -> int:
    """Run T5-family layer norms (``T5LayerNorm``, ``MT5LayerNorm``, ...) as one compiled kernel in training on CPU.

    42 per training step of mT5-small, each seven elementwise passes forward over ``tokens x 512``
    fp32 values (plus one cast per consuming matmul under autocast) and more backward
    (``benchmarks/README.md``). Classes change to a subclass; weights, state dict and config are untouched.

    Returns:
        How many layer norms changed class.
    """
    changed = 0
    for name, module in model.named_modules():
        cls = type(module)
        if (cls.__name__.endswith("T5LayerNorm") and not cls.__name__.startswith("Fused")
                and hasattr(module, "variance_epsilon") and getattr(module, "bias", None) is None):
            module.__class__ = _fused_layer_norm_class(cls)
            if name.split(".")[-1] == "final_layer_norm":  # dropout, then matmuls: keep its output fp32
                module.peftsum_bf16_output = False
            changed += 1
    return changed


MASK_BITS = 16
"""Random bits per element of a :func:`keep_mask`: each 64-bit random integer gives four elements."""

MAX_P = 1 - 2 ** -(MASK_BITS + 1)
"""Largest drop probability :func:`keep_mask` takes (above, p would round to dropping everything);
:class:`FastDropout` and the attention leave such p to PyTorch's dropout. (Below 2**-17, p rounds to
dropping nothing.)"""


def keep_bits(shape, p: float, device=None):
    """The random draw behind :func:`keep_mask`: 16 random bits per element and the keep threshold.

    An element is kept when its bits (read as a signed ``int16``) are ``>= threshold``; the fused
    attention kernel (:mod:`peftsum.modeling.cpu_kernel`) reads the bits directly, so the same draw
    gives the same mask on both paths. On CPU the words come from the kernel library's SplitMix64
    (:func:`peftsum.modeling.cpu_kernel.random_words`, ~7x faster) where it is built, else from
    ``torch.randint``; both are seeded by torch's global generator.

    Args:
        shape: the mask's shape.
        p: drop probability, 0 <= p < :data:`MAX_P`.
        device: where to draw (default: CPU).

    Returns:
        ``(bits, threshold, scale)``: a contiguous ``int16`` tensor of ``shape``, the threshold (an
        int in [-32768, 32767]) and the survivors' factor ``1 / (1 - p')`` (p' = p rounded to 2**-16).
    """
    import math

    import torch

    from peftsum.modeling import cpu_kernel

    n = math.prod(shape)
    words = cpu_kernel.random_words((n + 3) // 4) if device is None or torch.device(device).type == "cpu" else None
    if words is None:
        words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=device)
    bits = words.view(torch.int16)[:n].view(shape)
    return (bits, *threshold_and_scale(p))


def threshold_and_scale(p: float) -> tuple[int, float]:
    """:func:`keep_bits`' keep threshold (kept: 16 random bits as ``int16`` >= it) and survivors' factor for ``p``."""
    drop_levels = round(p * 2**MASK_BITS)
    return drop_levels - 2 ** (MASK_BITS - 1), 2**MASK_BITS / (2**MASK_BITS - drop_levels)


def keep_mask(shape, p: float, device=None):
    """A dropout keep-mask drawn from 16-bit slices of 64-bit random integers, and its survivor scale.

    PyTorch's CPU ``bernoulli_`` draws one random number per element (~2 ns each on the 2-core
    development machine; ``torch.rand`` ~1 ns): for the attention probabilities of mT5-small at
    512 tokens (6.3M elements per layer) that is 15-46 ms per layer and call. Here each full-range
    64-bit random word gives four 16-bit uniform integers: the same mask for a quarter of the draws
    (~7 ms for 6.3M elements with ``torch.randint``, ~1 ms with the kernel library's SplitMix64,
    :func:`keep_bits`; ``benchmarks/README.md``).

    An element is dropped when its 16 bits fall below ``round(p * 65536)``: the drop probability is
    ``p`` rounded to a multiple of 2**-16 (0.1 -> 0.1000061), and survivors are scaled by
    ``1 / (1 - that probability)`` so every element's expectation is unchanged, as with
    ``nn.Dropout`` (Srivastava et al., 2014, inverted dropout). Seeded by torch's global generator
    (the draw is :func:`keep_bits`).

    Args:
        shape: the mask's shape (that of the tensor to drop from).
        p: drop probability, 0 <= p < :data:`MAX_P`.
        device: where to draw (default: CPU).

    Returns:
        ``(keep, scale)``: a bool tensor of ``shape`` (True = keep) and the survivors' factor.
    """
    bits, threshold, scale = keep_bits(shape, p, device)
    return bits >= threshold, scale


def apply_dropout(x, p: float):
    """``x`` with a :func:`keep_mask` applied (training-mode dropout; differentiable, same mask backward).

    On CPU in bf16/fp32 with the kernel library built, one pass each way
    (:func:`peftsum.modeling.cpu_kernel.dropout`: the same mask, the same result bit for bit, and no
    mask kept for backward); else PyTorch's ops.
    """
    from peftsum.modeling import cpu_kernel

    if cpu_kernel.dropout_applies(x):
        return cpu_kernel.dropout(x, *threshold_and_scale(p))
    keep, scale = keep_mask(x.shape, p, device=x.device)
    return (x * keep).mul_(scale)


@functools.cache
def _fast_dropout_class():
    import torch

    class FastDropout(torch.nn.Dropout):
        """``nn.Dropout`` whose CPU training forward draws its mask with :func:`keep_mask` instead of ``bernoulli_``.

        Each element kept with probability ``1 - p`` (p rounded to a multiple of 2**-16) and
        survivors scaled to keep the expectation, from the same seeded global generator; ~4x fewer
        random draws than ``torch.rand`` and ~6x less time than ``bernoulli_`` for the mask
        (benchmarks/README.md). The masks are other draws than ``nn.Dropout``'s for the same seed.
        Evaluation, ``p`` of 0 or 1, ``inplace`` and GPUs take the usual path.
        """

        def forward(self, x):
            if not self.training or not 0.0 < self.p < MAX_P or self.inplace or x.device.type != "cpu":
                return super().forward(x)
            return apply_dropout(x, self.p)

    return FastDropout


@functools.cache
def _lora_input_dropout_class():
    import torch

    class LoraInputDropout(_fast_dropout_class()):
        """A LoRA adapter's ``lora_dropout`` that, under CPU bf16 autocast, returns its fp32 input dropped *and* in bf16.

        Its output only feeds ``lora_A`` (vanilla LoRA: ``lora_B(lora_A(dropout(x)))``), whose autocast
        matmul casts it to bf16 first: one kernel pass instead of a dropout pass over fp32 and a cast
        pass, and the same for the gradient (``cpu_kernel.dropout`` with ``out_dtype``; the same values
        and gradients bit for bit, ``tests/test_cpu_kernel.py``). Elsewhere a :class:`FastDropout`.
        """

        def forward(self, x):
            from peftsum.modeling import cpu_kernel

            if (self.training and 0.0 < self.p < MAX_P and not self.inplace and x.dtype == torch.float32
                    and _cpu_bf16_autocast() and cpu_kernel.dropout_applies(x)):
                return cpu_kernel.dropout(x, *threshold_and_scale(self.p), out_dtype=torch.bfloat16)
            return super().forward(x)

    return LoraInputDropout


def lora_layer_variants(module):
    """The ``lora_variant`` dict (adapter name -> DoRA or other variant) of a PEFT LoRA layer, or None for any
    other module. Adapters not in it are vanilla LoRA (``lora_B(lora_A(dropout(x))) * scaling``)."""
    import torch

    variants = getattr(module, "lora_variant", None)
    if (not isinstance(variants, dict) or not isinstance(getattr(module, "lora_A", None), torch.nn.ModuleDict)
            or not isinstance(getattr(module, "lora_dropout", None), torch.nn.ModuleDict)):
        return None
    return variants


def fast_dropout(model) -> int:
    """Make every plain ``nn.Dropout`` of ``model`` a :class:`FastDropout` (see there); call after PEFT wraps it.

    Dropout was 21% of a LoRA training step of mT5-small on 2 CPU cores (132 ``bernoulli_`` calls:
    the model's dropouts and LoRA's ``lora_dropout`` on q and v). Attention-probability dropout
    inside the attention kernel is not a module and is left alone. Vanilla LoRA adapters' input
    dropouts become :class:`LoraInputDropout` (the cast to bf16 for ``lora_A`` in the same pass).

    Args:
        model: any ``torch.nn.Module`` (PEFT-wrapped or not).

    Returns:
        How many dropout modules changed class (parameters, state dict and ``p`` are untouched).
    """
    import torch

    cls, lora_cls = _fast_dropout_class(), _lora_input_dropout_class()
    changed = 0
    for module in model.modules():
        if type(module) is torch.nn.Dropout:
            module.__class__ = cls
            changed += 1
    for module in model.modules():  # vanilla LoRA adapters (not DoRA or other variants): their input dropout
        variants = lora_layer_variants(module)
        if variants is not None:
            for name, drop in module.lora_dropout.items():
                if name not in variants and type(drop) is cls:
                    drop.__class__ = lora_cls
    return changed
