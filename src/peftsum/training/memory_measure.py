"""Measure what :mod:`peftsum.training.memory` estimates: the peak of one real training step on CPU.

``tests/test_memory.py`` and ``benchmarks/memory.py`` compare the two; both functions are importable
from :mod:`peftsum.training.memory` as well.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from peftsum.training.memory import MemoryEstimate


def measure_peak(fn) -> int:
    """Peak bytes of live CPU tensors while ``fn()`` runs (tensors that exist before and are used count).

    Uses ``torch.profiler``'s memory timeline (``profile_memory``, ``record_shapes``, ``with_stack``):
    tensors touched by ``fn`` that existed before (parameters, optimizer states) are counted from
    the start, then every allocation and free in order. This is the quantity :func:`~peftsum.training.memory.estimate`
    predicts on CPU, where peak RSS is dominated by the runtime for small models.

    Args:
        fn: a callable running one training step.

    Returns:
        The peak, bytes.
    """
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        fn()
    current = peak = 0
    for _, action, _, size in prof._memory_profile().timeline:
        if action in (Action.PREEXISTING, Action.CREATE):
            current += size
        elif action == Action.DESTROY:
            current -= size
        peak = max(peak, current)
    return peak


def measure_training_step(cfg, log=None) -> tuple[int, MemoryEstimate]:
    """Measure one steady-state training step of ``cfg`` on CPU and estimate it, for comparison.

    Builds the run with peftsum's own :func:`~peftsum.training.trainer.build_trainer` (so the loss,
    optimizer and model are the ones training uses; ``cfg.output_dir`` is written), takes the first
    training batch, runs one step so the optimizer states exist, then measures the next step with
    :func:`measure_peak`. With ``cfg.bf16`` the forward runs under CPU bf16 autocast, as in the Trainer.

    Args:
        cfg: a :class:`~peftsum.config.TrainConfig`; pick lengths that every row
            reaches so the batch is at the configured lengths, which the estimate assumes.
        log: progress lines (default: none).

    Returns:
        ``(measured peak bytes, estimate)``.
    """
    from peftsum.training.memory import estimate  # the module that re-exports this one
    from peftsum.training.trainer import build_trainer

    setup = build_trainer(cfg, log=log or (lambda *a, **k: None))
    trainer = setup.trainer
    trainer.create_optimizer()
    batch = next(iter(trainer.get_train_dataloader()))
    model, opt = trainer.model, trainer.optimizer
    model.train()
    if setup.cfg.gradient_checkpointing:  # the Trainer turns it on when train() starts; here by hand
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()

    import contextlib

    import torch

    def step():
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if setup.cfg.bf16 else contextlib.nullcontext()
        with autocast:  # the Trainer's bf16 autocast around the forward pass
            loss = trainer.compute_loss(model, batch, num_items_in_batch=(batch["labels"] != -100).sum())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    measured = measure_peak(step)
    return measured, estimate(setup.cfg)
