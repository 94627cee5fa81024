"""peftsum's ``Seq2SeqTrainer`` (what the HF Trainer lacks or gets wrong for T5-family models) and
:func:`make_trainer`, which builds one for a run with its callbacks.

Imports torch and transformers at import time: :mod:`peftsum.training.trainer` imports this module
only after the cheap checks (config, output folder) have passed. What it adds, and why, is listed
at the top of :mod:`peftsum.training.trainer`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Seq2SeqTrainer
from transformers.trainer_utils import rotate_checkpoints

from peftsum.config import TrainConfig
from peftsum.errors import PeftsumError
from peftsum.training.loss import packed_head_loss, smoothing_terms
from peftsum.training.output import latest_complete_checkpoint, mark_checkpoint_complete
from peftsum.run_format import TRAINING_LOG_FILE


class PeftsumTrainer(Seq2SeqTrainer):
    """``Seq2SeqTrainer`` with complete-marked checkpoints, a per-step NaN guard, token counting
    and ROUGE in ``evaluate``."""

    rouge_eval = None  # callable(model) -> dict of eval_rouge* metrics, or None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tokens_seen = 0  # non-padding source + target tokens, whole run (restored on resume)
        self.examples_seen = 0
        self.session_tokens = 0  # this process only (throughput)
        self.session_examples = 0
        # The loss is computed by compute_loss below (see there): label smoothing is applied on
        # top of the model's own loss, and the loss is normalised over the accumulated batch.
        self.smoothing = float(self.args.label_smoothing_factor)
        self.label_smoother = None
        self.model_accepts_loss_kwargs = True  # makes the Trainer count num_items_in_batch
        # training loss from the output head applied to target tokens only (see packed_head_loss);
        # set by build_trainer from the method registry
        self.packed_head = False
        self.loss_is_scaled_for_ga = True
        # full fine-tuning: AdamW over the input embedding's touched rows only (create_optimizer; exact)
        self.row_sparse_embedding = True

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Token-weighted loss over the whole accumulated batch, with label smoothing.

        Why not the Trainer's: T5/mT5's ``forward`` takes ``**kwargs`` but computes a plain
        per-micro-batch mean, so the Trainer (5.x) assumes the loss is already normalised by
        ``num_items_in_batch`` and neither divides by the accumulation steps nor weights the
        micro-batches by their tokens: with accumulation, gradients and the logged loss are
        ``accumulation_steps`` times too large. Its label smoother also takes ``labels`` away
        from the model, which drops what PEFT adds to the model's loss (AdaLoRA's
        orthogonality regulariser). Here the model computes its own loss (``labels`` kept),
        smoothing adds ``eps * (mean_v(-log p_v) - NLL)`` (so the total is
        ``(1 - eps) * NLL + eps * mean_v(-log p_v)``, the Trainer's/torch's definition), and the
        result is scaled by ``tokens in this micro-batch / tokens in the accumulated batch``.
        """
        labels = inputs["labels"]
        if model.training and self.packed_head:
            loss, outputs = packed_head_loss(model, inputs, self.smoothing)
        else:
            outputs = model(**inputs)
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs[0]
            if self.smoothing > 0 and model.training:
                mask = labels != -100
                nll, uniform = smoothing_terms(outputs["logits"][mask], labels[mask])
                loss = loss + self.smoothing * (uniform - nll)
        if num_items_in_batch is not None:
            tokens = (labels != -100).sum().to(loss.device)
            loss = loss * tokens / num_items_in_batch
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                loss = loss * self.args.world_size  # DDP averages gradients over devices
        elif model.training:
            loss = loss / getattr(self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps)
        return (loss, outputs) if return_outputs else loss

    def _get_train_sampler(self, train_dataset=None):
        from transformers.trainer_pt_utils import LengthGroupedSampler

        from peftsum.training.sampling import EpochSeededLengthGroupedSampler, own_length_column

        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        lengths = own_length_column(self.train_dataset, train_dataset, self.args)
        # groups of one *global* step (x processes): 2 ranks x B see the rows of 1 process x 2B
        # (accelerate deals the sampler's batches round-robin to the ranks; peftsum.distributed)
        if lengths is not None:  # the length column of peftsum's features (no pass over the rows)
            self.epoch_sampler = EpochSeededLengthGroupedSampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps * max(1, self.args.world_size),
                lengths, seed)
            return self.epoch_sampler
        sampler = super()._get_train_sampler(train_dataset)
        if isinstance(sampler, LengthGroupedSampler):  # make length grouping resumable (see sampling.py)
            # groups of one *global* step (x processes): 2 ranks x B see the rows of 1 process x 2B
            # (accelerate deals the sampler's batches round-robin to the ranks; peftsum.distributed)
            self.epoch_sampler = EpochSeededLengthGroupedSampler(
                sampler.batch_size * max(1, self.args.world_size), sampler.lengths, seed)
            return self.epoch_sampler
        return sampler

    epoch_sampler = None  # the EpochSeededLengthGroupedSampler in use

    def _run_epoch(self, *args, **kwargs):
        # Set the epoch here: on a mid-epoch resume under several processes the sampler sits three
        # wrappers deep (SkipBatchSampler > BatchSamplerShard > BatchSampler), where neither
        # DataLoaderShard.set_epoch nor the Trainer reaches it, and it would replay epoch 0's order.
        if self.epoch_sampler is not None and "epoch" in kwargs:
            self.epoch_sampler.set_epoch(kwargs["epoch"])
        return super()._run_epoch(*args, **kwargs)

    def _get_eval_sampler(self, eval_dataset):
        from transformers.trainer_pt_utils import LengthGroupedSampler

        from peftsum.training.sampling import own_length_column

        lengths = own_length_column(self.eval_dataset, eval_dataset, self.args)
        if lengths is None:
            return super()._get_eval_sampler(eval_dataset)
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed  # as the Trainer's
        return LengthGroupedSampler(self.args.eval_batch_size, lengths=lengths[:],
                                    generator=torch.Generator().manual_seed(seed))

    def training_step(self, model, inputs, num_items_in_batch=None):
        tokens = int(inputs["attention_mask"].sum()) + int((inputs["labels"] != -100).sum())
        examples = int(inputs["input_ids"].shape[0])
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.args.world_size > 1:  # count every rank's rows: the counters are the whole job's
            from peftsum.distributed import sum_over_ranks

            tokens, examples = sum_over_ranks(tokens, examples)
        if not bool(torch.isfinite(loss).all()):
            raise PeftsumError(
                f"training loss became {float(loss)} at step {self.state.global_step + 1}; lower "
                "--learning-rate, use --bf16 or fp32 instead of fp16, or check the data"
            )
        self.tokens_seen += tokens
        self.examples_seen += examples
        self.session_tokens += tokens
        self.session_examples += examples
        return loss

    def train(self, *args, **kwargs):
        """The Trainer's ``train``; gradient rows an earlier, failed call left with the embedding's touched-rows
        AdamW are dropped first (as the Trainer's ``model.zero_grad()`` drops dense gradients)."""
        from peftsum.training.sparse_rows import drop_pending

        drop_pending(self.model)
        return super().train(*args, **kwargs)

    def create_optimizer(self, model=None):
        """The Trainer's optimizer; full fine-tuning's input embedding then gets the touched-rows AdamW where it
        applies (:mod:`peftsum.training.sparse_rows`: the same update, ~0.13 s less per mT5-small step on CPU)."""
        optimizer = super().create_optimizer(model) if model is not None else super().create_optimizer()
        if self.row_sparse_embedding:
            from peftsum.training.sparse_rows import attach

            attach(self.model if model is None else model, optimizer, self.accelerator)
        return optimizer

    def _clip_grad_norm(self, model):
        """The Trainer's clipping with an exact norm in one read and no scaling pass of its own (CPU gradients:
        :func:`peftsum.training.clipping.clip_gradients`, the coefficient folded into fused AdamW's step);
        elsewhere the Trainer's own."""
        from peftsum.training import clipping

        params = list(model.parameters())
        if clipping.applies(self.accelerator, params):
            return clipping.clip_gradients(params, self.args.max_grad_norm, self.optimizer)
        return super()._clip_grad_norm(model)

    def _save_checkpoint(self, model, trial):
        from peftsum import distributed
        from peftsum.faults import checkpoint_disk_full, is_disk_full

        limit = self.args.save_total_limit
        self.args.save_total_limit = None  # rotate only after the new checkpoint is complete
        run_dir = Path(self._get_output_dir(trial=trial))
        ckpt = run_dir / f"checkpoint-{self.state.global_step}"
        previous = latest_complete_checkpoint(run_dir)
        try:
            super()._save_checkpoint(model, trial)
            distributed.barrier()  # every rank's files (RNG state, FSDP shards) are in before the marker
            if not distributed.is_main():
                return
            mark_checkpoint_complete(ckpt, self.tokens_seen, self.examples_seen)
        except Exception as exc:
            if is_disk_full(exc):  # one line; the half-written folder goes, the previous one stays
                raise checkpoint_disk_full(ckpt, previous, exc) from None
            raise
        finally:
            self.args.save_total_limit = limit
        rotate_checkpoints(output_dir=str(run_dir), save_total_limit=limit,
                           best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=False)

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        # Adding ROUGE here (not after evaluate()) puts it in the same log row as eval_loss and
        # in the metrics that on_evaluate (early stopping) and the best-checkpoint choice see.
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys,
                                         metric_key_prefix)
        if self.rouge_eval is not None and metric_key_prefix == "eval":
            output.metrics.update(self.rouge_eval(self.model))
        return output


def restore_counters(trainer: PeftsumTrainer, ckpt: Path | None) -> None:
    """Set ``trainer.tokens_seen`` / ``examples_seen`` from checkpoint ``ckpt`` (no-op without one)."""
    from peftsum.training.output import saved_counters

    counters = saved_counters(ckpt) if ckpt is not None else None
    if counters is not None:
        trainer.tokens_seen, trainer.examples_seen = counters


def run_callbacks(cfg: TrainConfig, method, resume_ckpt: Path | None) -> list:
    """The run's callbacks: the JSON-lines log (rank 0), the method's own, early stopping, TensorBoard."""
    from transformers import EarlyStoppingCallback

    from peftsum import distributed
    from peftsum.callbacks import JsonlLogCallback
    from peftsum.training.output import step_of

    out = Path(cfg.output_dir)
    callbacks = [JsonlLogCallback(out / TRAINING_LOG_FILE, step_of(resume_ckpt) if resume_ckpt else None)
                 ] if distributed.is_main() else []
    callbacks += [factory() for factory in method.callbacks]
    if cfg.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    if cfg.tensorboard and distributed.is_main():
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        callbacks.append(TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(out / "tensorboard"))))
    return callbacks


def make_trainer(cfg: TrainConfig, method, model, tokenizer, data, total_steps: int, resume_ckpt: Path | None):
    """The :class:`PeftsumTrainer` of a run, with its progress bar, the in-training ROUGE (``eval_rouge``)
    and, on resume, the token counters of ``resume_ckpt``.

    Args:
        cfg: the resolved config.
        method: the registry row (``peftsum.modeling.methods``).
        model: the model to train (PEFT-wrapped or not).
        tokenizer: its tokenizer.
        data: a :class:`peftsum.data.training_data.TrainingData`.
        total_steps: optimizer steps of the run.
        resume_ckpt: the checkpoint training continues from, or ``None``.

    Raises:
        ConfigError: settings the Trainer refuses (:func:`peftsum.training.arguments.training_arguments`).
    """
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from peftsum.data.features import make_collator
    from peftsum.training.arguments import training_arguments
    from peftsum.callbacks import ProgressBarCallback

    trainer = PeftsumTrainer(
        model=model,
        args=training_arguments(cfg, Path(cfg.output_dir), total_steps),
        train_dataset=data.train,
        eval_dataset=data.validation,
        data_collator=make_collator(tokenizer, model),
        processing_class=tokenizer,
        callbacks=run_callbacks(cfg, method, resume_ckpt),
    )
    trainer.packed_head = method.packed_head
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(ProgressBarCallback(f"{method.name} {'+'.join(cfg.languages)}"))
    if cfg.eval_rouge:
        from peftsum.generation.rouge_eval import rouge_evaluator

        trainer.rouge_eval = rouge_evaluator(cfg, data.rouge_rows(cfg.eval_rouge_samples), tokenizer)
    restore_counters(trainer, resume_ckpt)
    return trainer
