"""Exact AdamW for the input embedding of full fine-tuning, over the rows that can move instead of all 250,112.

A batch of mT5 touches a few thousand of the embedding's 250,112 rows, yet the table's gradient is
dense: autograd writes a zero-filled 128M-element fp32 tensor (512 MB) and adds the batch's rows
into it, clipping reads all of it, and fused AdamW reads and writes the weight, both moments and
the gradient in full. On the 2-core AMX machine that was ~0.13 s of a 1.1 s full fine-tuning step
of mT5-small (``benchmarks/README.md``, session 10).

With AdamW's weight decay at 0 (peftsum's default, ``TrainConfig.weight_decay``) a row whose moments
are both zero and whose gradient is zero is left exactly as it is by the update: ``m = v = 0``,
so the step ``lr * m_hat / (sqrt(v_hat) + eps)`` is 0. Those are the rows no batch has touched
yet. So the same fused AdamW kernel, run on the rows that some batch has touched (gathered, updated,
written back), gives the weights and moments of the dense update exactly; the untouched rows keep
moments of zero, as the dense update would leave them. Gradients are never made dense: the lookup
(:func:`RowSparseEmbedding.lookup`, used by ``peftsum.training.loss.one_lookup``) hands each
backward's rows and their gradients to this object instead of to ``weight.grad``, and clipping
counts them in the total norm (``peftsum.training.clipping``). The optimizer state keeps torch's own
layout (``step``, ``exp_avg``, ``exp_avg_sq`` of the full table), so checkpoints are the same files
and resuming with or without this works.

The touched set only grows: on a long run it approaches the vocabulary the data uses (tokens of one
language are a share of mT5's 250,112), and the saving shrinks with it; past :data:`DENSE_SHARE` of the
rows a step adds the rows into a dense gradient and lets torch's step update the table, as it would have
without this. A dense gradient made elsewhere (a forward through the module itself) is treated the same
way, and the touched set is rebuilt from the moments after it and after ``load_state_dict``.

Applies (:func:`applies`) to one process on CPU with torch's fused Adam or AdamW at weight decay 0,
no amsgrad or maximize, an embedding not tied to the output head, and peftsum's own clipping.
"""

from __future__ import annotations

import torch

ATTR = "_peftsum_row_sparse"
"""Attribute of the embedding module (and list attribute of the optimizer) holding the :class:`RowSparseEmbedding`."""

DENSE_SHARE = 0.35
"""Share of the table's rows touched beyond which a step takes torch's dense update instead (the gradient
rows added into a dense ``weight.grad``). From traffic counts, not a measurement: the touched-rows update moves
~84 bytes per element of a touched fp32 row (gather and scatter of weight and both moments, the kernel's
reads and writes), the dense step ~32 bytes per element of the whole table (zero-fill, the kernel)."""


class _Lookup(torch.autograd.Function):
    """``F.embedding(ids, weight)`` whose backward hands ``(ids, grad rows)`` to the owner, not to ``weight.grad``."""

    @staticmethod
    def forward(ctx, ids, weight, owner):
        ctx.ids, ctx.owner = ids, owner
        return torch.nn.functional.embedding(ids, weight)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        ctx.owner.add(ctx.ids.reshape(-1), grad.reshape(-1, grad.shape[-1]))
        return None, None, None


class RowSparseEmbedding:
    """The touched-rows AdamW of one embedding (module docstring): its gradient rows, norm and update.

    Args:
        embedding: the model's input ``nn.Embedding`` (its weight trained by ``optimizer``).
        optimizer: the torch fused Adam/AdamW (not a wrapper) whose param group holds the weight.

    Raises:
        ValueError: the weight is in none of the optimizer's param groups.
    """

    def __init__(self, embedding, optimizer):
        self.weight = embedding.weight
        self.optimizer = optimizer
        if self._group() is None:
            raise ValueError("RowSparseEmbedding: the embedding's weight is not in the optimizer's param groups")
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.coalesced: tuple[torch.Tensor, torch.Tensor] | None = None
        self.touched: torch.Tensor | None = None  # bool (vocab,), rows whose moments may be non-zero
        previous = getattr(embedding, ATTR, None)
        if previous is not None:  # a new optimizer for this model (another Trainer): the old one stops taking rows
            previous.detach()
        setattr(embedding, ATTR, self)
        optimizer.__dict__.setdefault(ATTR, []).append(self)
        self._hooks = [optimizer.register_step_pre_hook(lambda opt, args, kwargs: self.step()),
                       # a loaded state (a resume) may give any row moments: the touched set is rebuilt from them
                       optimizer.register_load_state_dict_post_hook(lambda opt: setattr(self, "touched", None))]

    def detach(self) -> None:
        """Stop: the hooks removed, the pending rows dropped, the optimizer's list and the embedding let go of it."""
        self.clear()
        for hook in self._hooks:
            hook.remove()
        mine = self.optimizer.__dict__.get(ATTR, [])
        if self in mine:
            mine.remove(self)

    def _group(self):
        """The weight's param group, looked up at each step (schedulers write ``lr`` into the current dicts, and
        ``load_state_dict`` and accelerate replace them)."""
        return next((g for g in self.optimizer.param_groups if any(p is self.weight for p in g["params"])), None)

    def lookup(self, ids):
        """The embeddings of ``ids`` (any shape; returns ``ids.shape + (dim,)``), gradient rows kept here."""
        return _Lookup.apply(ids, self.weight, self)

    def add(self, rows, grads) -> None:
        """Record one backward's gradient rows: ``rows`` (n,) int64 ids and ``grads`` (n, dim)."""
        self.pending.append((rows, grads))
        self.coalesced = None

    def gradient(self):
        """``(rows, grads)``: the distinct ids of the pending gradients (sorted) and their summed rows (fp32), or None."""
        if not self.pending:
            return None
        if self.coalesced is None:
            rows = torch.cat([r for r, _ in self.pending])
            grads = torch.cat([g for _, g in self.pending]) if len(self.pending) > 1 else self.pending[0][1]
            unique, inverse = torch.unique(rows, sorted=True, return_inverse=True)
            summed = torch.zeros(unique.numel(), grads.shape[1], dtype=torch.float32, device=grads.device)
            summed.index_add_(0, inverse, grads.float())
            self.coalesced = (unique, summed)
            self.pending = [(unique, summed)]  # (what a later backward of the same step adds to)
        return self.coalesced

    def clear(self) -> None:
        """Drop the pending gradient (the optimizer step used it, or it is being discarded)."""
        self.pending, self.coalesced = [], None

    def _state(self):
        state = self.optimizer.state[self.weight]
        if not state:  # torch's Adam._init_group layout (fused: an fp32 0-dim step on the parameter's device)
            state["step"] = torch.zeros((), dtype=torch.float32, device=self.weight.device)
            state["exp_avg"] = torch.zeros_like(self.weight, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(self.weight, memory_format=torch.preserve_format)
        if self.touched is None or self.touched.numel() != self.weight.shape[0]:
            # (after a resume: the rows whose moments are not both zero; all rows untouched in a new run)
            self.touched = (state["exp_avg"].ne(0).any(dim=1) | state["exp_avg_sq"].ne(0).any(dim=1))
        return state

    def step(self) -> None:
        """The optimizer's pre-step hook: this step's AdamW on the touched rows, then the gradient cleared.

        A dense ``weight.grad`` (some forward used the module itself) takes the pending rows instead and
        torch's step updates the table as usual; so does one made here when more than :data:`DENSE_SHARE`
        of the rows have been touched.
        """
        grad = self.gradient()
        weight = self.weight
        if weight.grad is not None:  # some forward used the module itself: torch's dense step updates the table
            self.touched = None  # (its moments may then be non-zero on any row: rebuilt from them next time)
            if grad is not None:
                weight.grad.index_add_(0, grad[0], grad[1].to(weight.grad.dtype))
            self.clear()
            return
        if grad is None:
            return
        rows, grads = grad
        state = self._state()
        self.touched[rows] = True
        if int(self.touched.sum()) > DENSE_SHARE * weight.shape[0]:  # cheaper as torch's dense step (the touched
            weight.grad = torch.zeros_like(weight)  # set stays right after it)
            weight.grad.index_add_(0, rows, grads.to(weight.dtype))
            self.clear()
            return
        touched = self.touched.nonzero().squeeze(1)
        dense = torch.zeros(touched.numel(), weight.shape[1], dtype=weight.dtype, device=weight.device)
        dense[torch.searchsorted(touched, rows)] = grads.to(weight.dtype)
        params = weight.detach().index_select(0, touched)
        exp_avg = state["exp_avg"].index_select(0, touched)
        exp_avg_sq = state["exp_avg_sq"].index_select(0, touched)
        group = self._group()
        state["step"] += 1  # as torch's _fused_adam: the step count first, then the kernel
        fused = torch._fused_adamw_ if group.get("decoupled_weight_decay", True) else torch._fused_adam_
        beta1, beta2 = group["betas"]
        fused([params], [dense], [exp_avg], [exp_avg_sq], [], [state["step"]], amsgrad=False, lr=group["lr"],
              beta1=float(beta1), beta2=float(beta2), weight_decay=group["weight_decay"], eps=group["eps"],
              maximize=False, grad_scale=getattr(self.optimizer, "grad_scale", None), found_inf=None)
        weight.data.index_copy_(0, touched, params)
        state["exp_avg"].index_copy_(0, touched, exp_avg)
        state["exp_avg_sq"].index_copy_(0, touched, exp_avg_sq)
        self.clear()


def pending_gradients(optimizer) -> list:
    """The summed gradient rows (``(k, dim)`` tensors, scaled in place by clipping) of the
    :class:`RowSparseEmbedding` objects on ``optimizer`` (a wrapper or torch's); where the weight also
    got a dense gradient, the rows are added into it instead (and not returned)."""
    inner = getattr(optimizer, "optimizer", optimizer)
    out = []
    for rows in getattr(inner, ATTR, []):
        grad = rows.gradient()
        if grad is None:
            continue
        if rows.weight.grad is not None:
            rows.weight.grad.index_add_(0, grad[0], grad[1].to(rows.weight.grad.dtype))
            rows.clear()
        else:
            out.append(grad[1])
    return out


def _base(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _input_embedding(model):
    base = _base(model)
    return base.get_input_embeddings() if hasattr(base, "get_input_embeddings") else None


def attach(model, optimizer, accelerator):
    """Give ``model``'s input embedding the touched-rows AdamW where :func:`applies` says it can (the Trainer's
    ``create_optimizer`` calls it); returns the :class:`RowSparseEmbedding`, or None (the dense path stays)."""
    if applies(model, optimizer, accelerator) is not None:
        return None
    return RowSparseEmbedding(_input_embedding(model), getattr(optimizer, "optimizer", optimizer))


def drop_pending(model) -> None:
    """Drop the gradient rows ``model``'s touched-rows AdamW holds, if it has one (what ``zero_grad`` is to dense
    gradients; the Trainer's ``train`` calls it, so rows a failed earlier call left are not applied)."""
    rows = getattr(_input_embedding(model), ATTR, None)
    if rows is not None:
        rows.clear()


def applies(model, optimizer, accelerator) -> str | None:
    """Why :class:`RowSparseEmbedding` cannot take this run's input embedding, or None when it can.

    Args:
        model: the model being trained (any PEFT wrapper).
        optimizer: the Trainer's optimizer (accelerate's wrapper or torch's).
        accelerator: the Trainer's accelerator (one process, no gradient scaler: then the Trainer's
            clipping is peftsum's, which counts the rows).
    """
    from accelerate.utils import DistributedType

    base, emb = _base(model), _input_embedding(model)
    inner = getattr(optimizer, "optimizer", optimizer)
    if type(emb) is not torch.nn.Embedding or not emb.weight.requires_grad:
        return "no trainable nn.Embedding"
    if emb.weight.device.type != "cpu" or emb.weight.dtype != torch.float32:
        return "embedding not fp32 on CPU"
    if emb.padding_idx is not None or emb.max_norm is not None or emb.scale_grad_by_freq or emb.sparse:
        return "embedding options"
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if head is not None and getattr(head, "weight", None) is emb.weight:
        return "embedding tied to the output head"
    if accelerator.distributed_type != DistributedType.NO or getattr(accelerator, "scaler", None) is not None:
        return "several processes or a gradient scaler"
    if type(inner) not in (torch.optim.Adam, torch.optim.AdamW) or not inner.defaults.get("fused"):
        return "not torch's fused Adam/AdamW"
    group = next((g for g in inner.param_groups if any(p is emb.weight for p in g["params"])), None)
    if group is None or group["weight_decay"] != 0 or group["amsgrad"] or group["maximize"] or not group["fused"]:
        return "weight decay, amsgrad, maximize or no fused kernel on the embedding"
    previous = getattr(emb, ATTR, None)
    if previous is not None and previous.optimizer is inner:
        return "already set up"
    return None
