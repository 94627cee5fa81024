"""T5-family attention: SDPA's result, with one bias mask per stack, cheaper dropout masks and a fused CPU kernel.

mT5 drops attention probabilities (``dropout_rate`` 0.1) inside the attention function. With a
dropout probability PyTorch's ``scaled_dot_product_attention`` takes its math path on CPU and draws
the mask with ``bernoulli_``: 8 encoder layers x 4 x 6 x 512 x 512 elements per training step of
mT5-small, the single largest operator of a bf16 step on a CPU with AMX (``benchmarks/steps.py
--profile``). transformers' SDPA wrapper also rebuilds the float mask (relative position bias +
padding/causal mask) in every layer, although all layers of a stack share both.

:func:`attention_forward` computes ``softmax(QK^T * scale + bias_mask)`` with dropout, times V, with
the mask from :func:`peftsum.modeling.fast_paths.keep_bits` and the bias mask built once per forward
and reused by every layer. The softmax, the dropout and their backward run as one compiled kernel
(:mod:`peftsum.modeling.cpu_kernel`) where it is built, else as PyTorch ops. In fp32 that is SDPA's
math path (same losses and gradients to float rounding, ``tests/test_fast_training.py``,
``tests/test_cpu_kernel.py``). Under bf16 autocast it is what transformers' eager T5 attention
computed (bf16 matmuls, the softmax in fp32, probabilities in bf16), where SDPA's CPU math path
upcasts Q, K and V to fp32: the two differ by bf16 rounding of the scores. Everything else
(evaluation, generation, no dropout, GPUs) goes to transformers' ``sdpa_attention_forward`` with
the same float mask SDPA would build, built once per stack instead of once per layer (for decoding,
once per step instead of once per layer and step); models without a position bias go to it
unchanged. :func:`use_fast_attention` registers it under :data:`NAME` (transformers'
``AttentionInterface``, with the SDPA mask builder) and switches a model to it
(:func:`peftsum.modeling.load.load_model` does, for every T5-family model it loads); the name is
runtime state only (transformers does not write ``_attn_implementation`` into config.json).
"""

from __future__ import annotations

import functools

NAME = "peftsum_sdpa"
"""The attention implementation's registered name (``model.config._attn_implementation``)."""

_CACHE_ATTR = "_peftsum_bias_mask"


def _bias_mask(position_bias, attention_mask, is_causal: bool, query, key, reuse: bool = True):
    """The additive float mask SDPA would get (``create_position_bias_mask``), built once per (bias, mask) pair.

    All layers of a T5 stack pass the same ``position_bias`` tensor (computed by the first layer)
    and the same mask, so the result is kept on the bias tensor and reused while both are the
    same objects; it is part of the autograd graph like the per-layer masks it replaces. Not
    reused (``reuse=False``) under gradient checkpointing, where a layer's recomputation must build
    its own.
    """
    from transformers.integrations.sdpa_attention import create_position_bias_mask

    if not reuse:
        return create_position_bias_mask(position_bias, attention_mask, is_causal, query, key)
    cached = getattr(position_bias, _CACHE_ATTR, None)
    shape = (query.shape[2], key.shape[2], key.dtype)
    if cached is not None and cached[0] is attention_mask and cached[1] == is_causal and cached[2] == shape:
        return cached[3]
    mask = create_position_bias_mask(position_bias, attention_mask, is_causal, query, key)
    if mask is not position_bias:  # (no mask to add: the bias itself, which must not hold itself)
        setattr(position_bias, _CACHE_ATTR, (attention_mask, is_causal, shape, mask))
    return mask


def _kernel_masks(position_bias, attention_mask, is_causal: bool, query, key, reuse: bool):
    """``(bias, key_mask)`` for the kernel where the mask is the position bias plus key padding, else None.

    The encoder's mask is T5's position bias ``(1, heads, q_len, kv_len)`` plus a padding mask that
    is the same for every query row; built into one ``(batch, heads, q_len, kv_len)`` fp32 tensor
    (``_bias_mask``) it is read in full by every layer's forward and its gradient written in full by
    every layer's backward (25 MB each for the benchmark batch) and summed over the batch once more.
    Handed to the kernel as the bias itself (broadcast over the batch; its gradient summed over the
    batch inside the kernel) and an additive ``(batch, kv_len)`` key mask (0 where attended, fp32's
    lowest number where padded: what ``create_position_bias_mask`` puts there, to rounding that the
    softmax cannot see), the same probabilities and gradients come out. Kept on the bias tensor for
    the stack's other layers, as ``_bias_mask`` is. None for causal masks and masks that differ by query row.
    """
    import torch

    if is_causal or position_bias.shape[0] != 1:
        return None
    cached = getattr(position_bias, _CACHE_ATTR + "_split", None) if reuse else None
    if cached is not None and cached[0] is attention_mask:
        return position_bias, cached[1]
    batch, k_len = query.shape[0], key.shape[2]
    if attention_mask is None:
        key_mask = None
    elif (attention_mask.dtype == torch.bool and attention_mask.dim() == 4 and attention_mask.shape[1] == 1
          and attention_mask.shape[0] == batch and attention_mask.shape[3] == k_len
          and bool((attention_mask == attention_mask[:, :, :1]).all())):
        key_mask = torch.zeros(batch, k_len, dtype=torch.float32, device=query.device).masked_fill_(
            ~attention_mask[:, 0, 0], torch.finfo(torch.float32).min)
    else:
        return None
    if reuse:  # (the key mask only: the bias must not hold itself)
        setattr(position_bias, _CACHE_ATTR + "_split", (attention_mask, key_mask))
    return position_bias, key_mask


def attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                      is_causal: bool | None = None, position_bias=None, **kwargs):
    """transformers' attention-function signature; the T5 training path on CPU, SDPA (mask once per stack) elsewhere.

    Args:
        module: the calling attention module (its ``training`` and ``is_causal`` are read).
        query: ``(batch, heads, q_len, head_dim)``; key, value: ``(batch, heads, kv_len, head_dim)``.
        attention_mask: SDPA's boolean mask (True = attend) or an additive float mask, or None.
        dropout: attention-probability dropout (0 outside training).
        scaling: the score scale (T5: 1.0); None means ``head_dim ** -0.5``.
        is_causal: as for SDPA (default: the module's ``is_causal``).
        position_bias: T5's relative position bias ``(1 or batch, heads, q_len, kv_len)``.

    Returns:
        ``(attn_output, None)`` with ``attn_output`` of shape ``(batch, q_len, heads, head_dim)``.
    """
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from peftsum.modeling import cpu_kernel
    from peftsum.modeling.fast_paths import MAX_P, keep_bits, threshold_and_scale

    plain = (position_bias is None or getattr(module, "num_key_value_groups", 1) != 1
             or kwargs.get("output_attentions"))
    q_length = query.shape[2]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = q_length > 1 and attention_mask is None and causal
    cropped = causal and key.shape[2] > q_length  # sdpa_attention_forward's upper-left causal alignment
    reuse = not getattr(module, "gradient_checkpointing", False)
    if plain or not (module.training and 0.0 < dropout < MAX_P and query.device.type == "cpu"):
        if plain or cropped:
            return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                          is_causal=is_causal, position_bias=position_bias, **kwargs)
        # what sdpa_attention_forward does with a position bias, with the float mask built once per stack (not
        # once per layer: 8 x [batch, heads, 512, 512] torch.where per encoder pass of mT5-small, and 8 per
        # decoding step); SDPA then gets the same mask and takes the same kernel
        mask = _bias_mask(position_bias, attention_mask, causal, query, key, reuse=reuse)
        return sdpa_attention_forward(module, query, key, value, mask, dropout=dropout, scaling=scaling,
                                      is_causal=False, position_bias=None, **kwargs)

    if cropped:
        key, value, position_bias = key[:, :, :q_length], value[:, :, :q_length], position_bias[..., :q_length]
    # head-major copies (1.5 MB each for the benchmark batch): the batched products of the views that the
    # projections leave (rows 384 elements apart) ran ~1.7 ms each in a training step, ~0.6-1 ms contiguous
    # (benchmarks/README.md, session 10: LoRA step 0.69 -> 0.67 s)
    query, key, value = query.contiguous(), key.contiguous(), value.contiguous()
    scores = torch.matmul(query, key.transpose(-1, -2))
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    if scale != 1.0:
        scores = scores * scale
    threshold, keep_scale = threshold_and_scale(dropout)
    split = (_kernel_masks(position_bias, attention_mask, causal, query, key, reuse)
             if cpu_kernel.applies(scores, position_bias) else None)
    if split is not None:  # the bias and a (batch, kv_len) key mask, the dropout bits drawn inside the kernel
        dropped = cpu_kernel.attention_probs(scores, split[0], None, threshold, key_mask=split[1])
    elif cpu_kernel.applies(scores, mask := _bias_mask(position_bias, attention_mask, causal, query, key,
                                                        reuse=reuse)):  # one pass each way (cpu_kernel)
        dropped = cpu_kernel.attention_probs(scores, mask, None, threshold)
    else:
        bits, threshold, keep_scale = keep_bits(scores.shape, dropout, device=scores.device)
        # softmax in fp32 over the (bf16 under autocast) scores, probabilities back in the scores' dtype: what
        # transformers' eager T5 attention did under autocast (softmax(scores.float()).type_as(scores))
        probs = torch.softmax(scores.float() + mask, dim=-1).to(scores.dtype)
        dropped = probs * (bits >= threshold)
    # the survivors' scale goes on the (head_dim-wide) output instead of the (kv_len-wide) probabilities
    out = torch.matmul(dropped, value).mul_(keep_scale)
    return out.transpose(1, 2).contiguous(), None


@functools.cache
def register() -> str:
    """Register :func:`attention_forward` (and SDPA's mask builder) under :data:`NAME` once per process; returns NAME."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
    return NAME


def use_fast_attention(model) -> bool:
    """Switch a T5-family model that runs SDPA attention to :data:`NAME` (``load_model`` and the trainer call it).

    Args:
        model: a transformers model, PEFT-wrapped or not.

    Returns:
        Whether the model was switched (False for other architectures or attention implementations).
    """
    from peftsum.modeling.load import is_t5_family

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if config is None or not is_t5_family(base) or config._attn_implementation != "sdpa":
        return False
    base.set_attn_implementation(register())
    return True
