"""The mapping from :class:`peftsum.config.TrainConfig` to ``transformers.Seq2SeqTrainingArguments``.

One place for every Trainer setting peftsum fixes (fused AdamW, no tqdm, NaN losses logged as they
are, ...) and for the schedules derived from peftsum's simpler options (``eval_steps`` 0 / None,
``save_steps`` None).
"""

from __future__ import annotations

from pathlib import Path

from peftsum.config import TrainConfig
from peftsum.errors import ConfigError


def schedules(cfg: TrainConfig) -> dict:
    """The Trainer's evaluation and save schedule from ``eval_steps`` and ``save_steps``.

    ``eval_steps`` 0 = no evaluation during training, ``None`` = each epoch, N = every N steps;
    ``save_steps`` ``None`` = at every evaluation (each epoch when there is none).

    Returns:
        ``eval_strategy``, ``eval_steps``, ``save_strategy`` and ``save_steps`` keyword arguments.
    """
    if cfg.eval_steps == 0:
        eval_strategy = "no"
    elif cfg.eval_steps:
        eval_strategy = "steps"
    else:
        eval_strategy = "epoch"
    if cfg.save_steps:
        save_strategy, save_steps = "steps", cfg.save_steps
    else:
        save_strategy = "epoch" if eval_strategy == "no" else eval_strategy
        save_steps = cfg.eval_steps or 500
    return dict(eval_strategy=eval_strategy, eval_steps=cfg.eval_steps or None, save_strategy=save_strategy,
                save_steps=save_steps)


def training_arguments(cfg: TrainConfig, out: Path, total_steps: int):
    """``Seq2SeqTrainingArguments`` for a resolved config; checkpoints go to ``out/checkpoints``.

    Args:
        cfg: the resolved config.
        out: the run folder.
        total_steps: optimizer steps of the run (the warmup is a share of them).

    Raises:
        ConfigError: the Trainer's own checks refuse the settings (first line of its message),
            e.g. ``save_steps`` not a multiple of ``eval_steps`` with ``load_best``.
    """
    import torch
    from transformers import Seq2SeqTrainingArguments

    try:
        return Seq2SeqTrainingArguments(
            output_dir=str(out / "checkpoints"),
            per_device_train_batch_size=cfg.batch_size,
            per_device_eval_batch_size=cfg.batch_size * 2,
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            activation_checkpointing=cfg.gradient_checkpointing,
            activation_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
            num_train_epochs=cfg.num_epochs,
            max_steps=cfg.max_steps,
            learning_rate=cfg.learning_rate,
            weight_decay=cfg.weight_decay,
            lr_scheduler_type=cfg.lr_scheduler if cfg.lr_scheduler != "constant" else "constant_with_warmup",
            warmup_steps=int(round(cfg.warmup_ratio * total_steps)),
            # fused AdamW: one pass over parameters and states instead of a dozen foreach ops, each
            # allocating parameter-sized temporaries (benchmarks/README.md: ~3x faster step, same update)
            optim="adafactor" if cfg.optimizer == "adafactor" else "adamw_torch_fused",
            label_smoothing_factor=cfg.label_smoothing,
            max_grad_norm=cfg.max_grad_norm,
            bf16=cfg.bf16,
            fp16=cfg.fp16,
            use_cpu=not torch.cuda.is_available(),
            logging_strategy="steps",
            logging_steps=cfg.logging_steps,
            logging_nan_inf_filter=False,
            **schedules(cfg),
            save_total_limit=cfg.save_total_limit,
            load_best_model_at_end=cfg.load_best,
            metric_for_best_model="eval_rougeL" if cfg.load_best else None,
            greater_is_better=True if cfg.load_best else None,
            train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
            report_to=[],  # TensorBoard is added by the trainer's callbacks with an explicit log folder
            seed=cfg.seed,
            data_seed=cfg.seed,
            dataloader_num_workers=0,
            disable_tqdm=True,
            predict_with_generate=False,
            generation_max_length=cfg.max_target_length,
            generation_num_beams=1,
            save_only_model=False,
        )
    except ValueError as exc:  # the Trainer's own checks (e.g. save_steps not a multiple of eval_steps)
        raise ConfigError(f"invalid training settings: {str(exc).strip().splitlines()[0]}") from None
