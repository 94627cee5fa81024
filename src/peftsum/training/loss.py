"""The training loss with the output head applied to target tokens only."""

from __future__ import annotations

IGNORE_INDEX = -100
"""Label of positions that are not scored (padding), as in ``torch.nn.CrossEntropyLoss``."""


def packed_head_loss(model, inputs: dict, smoothing: float = 0.0):
    """Token-mean cross-entropy of a seq2seq model, computing logits only where there is a label.

    A seq2seq model's own loss projects every decoder position, padding included, onto the whole
    vocabulary (mT5: 250,112 columns) and then ignores the padded ones. Here the output head is
    given only the ``n`` positions whose label is not -100 (a forward pre-hook on the head gathers
    those rows), so the projection, its backward and the log-softmax shrink by the padding share
    of the targets, and the ``batch x length x vocab`` logits are never materialised (peak memory
    falls by the same share). The loss is the same quantity as the model's
    ``CrossEntropyLoss(ignore_index=-100)`` mean (equal to float rounding; ``tests/test_fast_path.py``).

    Works for models whose forward applies ``get_output_embeddings()`` to the decoder's hidden
    states and then only broadcasts over the vocabulary axis (T5, mT5, BART's
    ``final_logits_bias``, ...), with or without a PEFT wrapper. Not for losses that a PEFT method
    adds inside the model's own loss (AdaLoRA; the method registry's ``packed_head`` flag).

    Args:
        model: a ``*ForConditionalGeneration`` model or a PEFT model around one.
        inputs: a collated batch: ``input_ids``/``attention_mask`` (batch x source tokens),
            ``labels`` (batch x target tokens, -100 = padding) and optionally
            ``decoder_input_ids`` (else built from ``labels`` as the model would).
        smoothing: label smoothing epsilon; the loss is ``(1 - eps) * NLL + eps * mean_v(-log p_v)``
            (the definition of ``torch.nn.CrossEntropyLoss(label_smoothing=eps)``).

    Returns:
        ``(loss, outputs)``: the scalar mean loss over target tokens (nats), and the model output,
        whose ``logits`` are ``n x vocab`` (target tokens only, in label order), or ``None`` where
        the head and its loss are fused (:func:`fused_head_applies`: T5-family heads in one
        process), which never builds fp32 logits (:func:`peftsum.training.head_loss.head_cross_entropy`).

    Raises:
        ValueError: the model's logits do not line up with the labels (a model whose forward
            reshapes the head's output).
    """
    import torch.nn.functional as F

    labels = inputs["labels"]
    mask = labels != IGNORE_INDEX
    from torch.nn.parallel import DistributedDataParallel

    inner = model.module if isinstance(model, DistributedDataParallel) else model  # DDP wraps; FSDP2 does not
    base = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    head = base.get_output_embeddings()
    kwargs = {k: v for k, v in inputs.items() if k != "labels"}
    if kwargs.get("decoder_input_ids") is None and kwargs.get("decoder_inputs_embeds") is None:
        kwargs["decoder_input_ids"] = base.prepare_decoder_input_ids_from_labels(labels=labels)

    target = labels[mask]
    if getattr(getattr(base, "config", None), "use_cache", None) is not None:
        # no decoding cache in a training forward: the decoder's keys and values would be kept in it (and the
        # Trainer's accelerate wrapper copies every bf16 tensor of the outputs to fp32: ~28 MB a mT5-small step)
        kwargs.setdefault("use_cache", False)
    one_lookup(base, kwargs)
    if fused_head_applies(base, head):
        from peftsum.training.head_loss import head_cross_entropy

        losses = []

        def head_and_loss(hidden):  # stands in for the head's forward for this one call
            picked = hidden[mask]  # n x d: inside the model's forward, so under its autocast
            losses.append(head_cross_entropy(picked, head.weight, target, smoothing))
            return picked

        head.forward = head_and_loss
        try:
            outputs = model(**kwargs)
        finally:
            del head.forward  # the class's forward again
        if len(losses) != 1:
            raise ValueError(f"packed loss: the output head ran {len(losses)} times in one forward, expected once")
        outputs["logits"] = None
        return losses[0], outputs

    def gather_targets(module, args):
        return (args[0][mask],) + tuple(args[1:])

    handle = head.register_forward_pre_hook(gather_targets)
    try:
        outputs = model(**kwargs)
    finally:
        handle.remove()
    logits = outputs["logits"]
    if logits.dim() != 2 or logits.shape[0] != target.shape[0]:
        raise ValueError(f"packed loss: logits {tuple(logits.shape)} do not match {target.shape[0]} target tokens")
    if smoothing > 0:
        nll, uniform = smoothing_terms(logits, target)
        loss = nll + smoothing * (uniform - nll)
    else:
        loss = F.cross_entropy(logits.float(), target)
    return loss, outputs


def fused_head_applies(base, head) -> bool:
    """Whether :func:`packed_head_loss` computes the head and its loss in one (``head_loss.py``).

    True for T5-family models (their forward returns the head's output as the logits, unchanged)
    whose head is a plain bias-free ``nn.Linear`` (or peftsum's decoding subclass) without hooks,
    in one process. The loss is then computed inside the model's forward, in place of the head,
    so under the autocast that accelerate wraps the forward in. Not for heads that a PEFT method
    wraps (LoRA on ``lm_head``, ``modules_to_save``), which keep the plain packed path, nor under
    several processes (not measured there; FSDP2 shards the head's weight).
    """
    import torch

    from peftsum.modeling.fast_paths import _skinny_linear_class
    from peftsum.modeling.load import is_t5_family

    return (is_t5_family(base) and type(head) in (torch.nn.Linear, _skinny_linear_class()) and head.bias is None
            and not head._forward_hooks and not head._forward_pre_hooks and "forward" not in vars(head)
            and _one_unsharded_process(head))


def one_lookup(base, kwargs: dict) -> bool:
    """Embed encoder and decoder tokens with one lookup when they share a trainable embedding (full fine-tuning).

    A shared ``nn.Embedding`` used twice (T5's encoder and decoder) gets two dense gradients in
    backward, each the size of the whole table (mT5: 250,112 x 512, 512 MB, zero-filled), which
    autograd then adds. One lookup of both id tensors gives one such gradient with the same sum
    (equal to float rounding). Replaces ``input_ids``/``decoder_input_ids`` in ``kwargs`` by
    ``inputs_embeds``/``decoder_inputs_embeds``; does nothing for frozen embeddings (PEFT methods),
    models whose encoder and decoder embed with different weights, inputs given as embeddings, or
    under several processes (FSDP2 unshards the embedding only inside the model's own forward).

    Args:
        base: the model under any PEFT wrapper.
        kwargs: the model's keyword inputs, changed in place.

    Returns:
        Whether the inputs were replaced.
    """
    import torch

    emb = base.get_input_embeddings() if hasattr(base, "get_input_embeddings") else None
    if not _one_unsharded_process(emb):
        return False
    enc, dec = (getattr(base, "get_encoder", lambda: None)(), getattr(base, "get_decoder", lambda: None)())
    ids, dec_ids = kwargs.get("input_ids"), kwargs.get("decoder_input_ids")
    if (emb is None or not emb.weight.requires_grad or ids is None or dec_ids is None
            or type(emb) is not torch.nn.Embedding
            or any(getattr(getattr(stack, "embed_tokens", None), "weight", None) is not emb.weight for stack in (enc, dec))):
        return False
    from peftsum.training.sparse_rows import ATTR

    rows = getattr(emb, ATTR, None)  # full fine-tuning's touched-rows AdamW (training.sparse_rows): rows kept there
    all_ids = torch.cat([ids.reshape(-1), dec_ids.reshape(-1)])
    both = rows.lookup(all_ids) if rows is not None and torch.is_grad_enabled() else emb(all_ids)
    n = ids.numel()
    kwargs["inputs_embeds"] = both[:n].view(*ids.shape, -1)
    kwargs["decoder_inputs_embeds"] = both[n:].view(*dec_ids.shape, -1)
    del kwargs["input_ids"], kwargs["decoder_input_ids"]
    return True


def _one_unsharded_process(module) -> bool:
    """One process, and ``module``'s weight a plain tensor (FSDP2 shards it into a DTensor, unsharded only
    inside the model's own forward): where :func:`one_lookup` and the fused head may run."""
    from peftsum import distributed

    return distributed.world().world_size == 1 and not _is_dtensor(module)


def _is_dtensor(module) -> bool:
    """Whether ``module``'s weight is a DTensor (FSDP2 shards it; unsharded only inside the model's forward)."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch without distributed
        return False
    return isinstance(getattr(module, "weight", None), DTensor)


def smoothing_terms(logits, target):
    """The two means that label smoothing mixes, over ``n`` scored positions.

    Args:
        logits: ``n x vocab`` (any float dtype; computed in fp32).
        target: ``n`` label ids.

    Returns:
        ``(nll, uniform)``: the mean negative log-likelihood of the targets and the mean over
        positions of ``mean_v(-log p_v)`` (nats). A smoothed loss is
        ``(1 - eps) * nll + eps * uniform``, ``torch.nn.CrossEntropyLoss(label_smoothing=eps)``'s definition.
    """
    import torch

    logp = torch.log_softmax(logits.float(), dim=-1)
    nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1).mean()
    return nll, -logp.mean(dim=-1).mean()
