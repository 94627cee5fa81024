"""Fine-tune a seq2seq model on XL-Sum with full fine-tuning or a PEFT method.

Why ``transformers.Seq2SeqTrainer`` and not a hand-written loop or another trainer: every PEFT
method in the registry is a ``peft`` model, and the HF Trainer is the loop PEFT itself is
developed and tested against (its adapters save and reload through ``save_pretrained`` /
``load_adapter`` inside the Trainer's checkpoints). It already does, and peftsum does *not*
re-implement: checkpoints with optimizer, scheduler and RNG state and mid-epoch resume (batch
skipping), gradient accumulation, gradient (activation) checkpointing, bf16/fp16 autocast on CPU
and GPU (via accelerate), AdamW and Adafactor, linear/constant/cosine schedules with warmup,
evaluation every N steps, best-checkpoint tracking, early stopping, TensorBoard and multi-GPU.
A custom loop would have to re-prove all of that; Lightning or accelerate-only loops would add
a second checkpoint format next to PEFT's. peftsum adds only what the Trainer lacks or gets
wrong for T5-family models:

* the method registry (``peftsum.modeling.methods``): PEFT configs, AdaLoRA's rank-allocation
  callback (the Trainer never calls ``update_and_allocate``), PiSSA's conversion on save;
* the loss (:meth:`PeftsumTrainer.compute_loss`): T5's loss is a per-micro-batch mean that the
  Trainer 5.x mistakes for one normalised over the accumulated batch, and its label smoother
  drops PEFT's additions to the loss; peftsum's is token-weighted over the accumulated batch;
* length-grouped batches whose order depends only on (seed, epoch)
  (:mod:`peftsum.training.sampling`): the Trainer's draws from the global RNG, so a resumed run
  would see different batches;
* guards: fp16 refused for T5-family models (before any weights load), a NaN/inf loss stops the
  run naming the step (checked on every micro-batch; the Trainer only averages it into the log),
  the lm_head tie check after loading, target modules that match nothing, a resume whose
  config changed, an explicit generation length;
* checkpoints marked complete (:data:`COMPLETE_MARKER`) only after every file is written and
  synced, and old checkpoints rotated only after that, so a kill during a save leaves the
  previous checkpoint usable; ``--resume`` picks the newest *complete* one;
* ROUGE (greedy decoding, a capped validation subset) in every evaluation, so the best
  checkpoint is kept by ROUGE-L;
* multilingual mixing with exponent smoothing (``peftsum.data.features.mix_languages``);
* the run record: ``metrics.json``, ``training_log.jsonl``, ``peftsum_config.json``, a model card.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftsum.config import TrainConfig
from peftsum.errors import ConfigError, PeftsumError
from peftsum.io import apply_umask_tree, ensure_writable_target

from peftsum.run_format import (  # noqa: F401  (the run folder's names; re-exported for existing imports)
    COMPLETE_MARKER, CONFIG_FILE, COUNTERS_FILE, INIT_ADAPTER_DIR, METRICS_FILE, ROUGE_KEYS, RUN_MARKERS,
    TRAINING_LOG_FILE, write_metrics)
_RESUME_IGNORED = {"resume", "overwrite", "tensorboard", "output_dir", "model_as_given"}
"""Config keys that may change on ``--resume``: none of them changes the trajectory of training.
Everything else (``max_steps`` and ``num_epochs`` included: they shape the LR schedule) must match."""


def _make_trainer_class():
    import torch
    from transformers import Seq2SeqTrainer
    from transformers.trainer_utils import rotate_checkpoints

    from peftsum.training.loss import packed_head_loss, smoothing_terms

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

        def _save_checkpoint(self, model, trial):
            from peftsum import distributed
            from peftsum.faults import checkpoint_disk_full, is_disk_full
            from peftsum.io import write_json_atomic

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
                write_json_atomic(ckpt / COUNTERS_FILE,
                                  {"tokens_seen": self.tokens_seen, "examples_seen": self.examples_seen})
                apply_umask_tree(ckpt)  # safetensors writes 0600: the umask's modes, like every other output
                _sync_tree(ckpt)
                _write_synced(ckpt / COMPLETE_MARKER, "ok\n")
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

    return PeftsumTrainer


def _is_main() -> bool:
    from peftsum.distributed import is_main

    return is_main()


def _quiet(*args, **kwargs) -> None:
    """The ``log`` of ranks other than 0 (one copy of every progress line)."""


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _sync_tree(folder: Path) -> None:
    """fsync every file in ``folder`` and the folder itself, so the marker is written after the data."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _step_of(path: Path) -> int:
    try:
        return int(path.name.split("-")[-1])
    except ValueError:
        return -1


def latest_complete_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The newest ``checkpoint-N`` folder that carries :data:`COMPLETE_MARKER`.

    Args:
        checkpoints_dir: a run's ``checkpoints/`` folder.

    Returns:
        The folder with the highest step among complete ones, or ``None`` (folder missing or
        no complete checkpoint). Incomplete folders (a save that was killed) are ignored.
    """
    checkpoints_dir = Path(checkpoints_dir)
    if not checkpoints_dir.is_dir():
        return None
    done = [p for p in checkpoints_dir.glob("checkpoint-*") if _step_of(p) >= 0 and (p / COMPLETE_MARKER).is_file()]
    return max(done, key=_step_of) if done else None


def _config_diff(old: dict, new: dict) -> list[str]:
    from peftsum.distributed import BATCH_KEYS, batch_diff

    keys = sorted((set(old) | set(new)) - _RESUME_IGNORED - BATCH_KEYS)
    diff = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
    return diff + batch_diff(old, new)  # the world size may change if the global batch stays


def _check_output(cfg: TrainConfig) -> Path | None:
    """Check that ``cfg.output_dir`` can be used, touching nothing (cheap: runs before the heavy imports).

    Returns:
        The checkpoint to resume from (``--resume``), else ``None``.

    Raises:
        ConfigError: ``--resume`` with nothing to resume, a changed config, or no complete checkpoint.
        PeftsumError: an existing output without ``--overwrite`` or ``--resume``.
    """
    out = Path(cfg.output_dir)
    if not cfg.resume:
        ensure_writable_target(out, cfg.overwrite, alternative="or --resume to continue it", markers=RUN_MARKERS)
        return None
    saved = out / CONFIG_FILE
    if not saved.is_file():
        raise ConfigError(f"{out}: nothing to resume (no {CONFIG_FILE}); run without --resume first")
    from peftsum.distributed import run_config_record

    diff = _config_diff(json.loads(saved.read_text(encoding="utf-8")), run_config_record(cfg))
    if diff:
        raise ConfigError(f"--resume with a changed config ({'; '.join(diff)}); use the original settings "
                          "or a new --output-dir")
    ckpt = latest_complete_checkpoint(out / "checkpoints")
    if ckpt is None:
        raise ConfigError(f"{out / 'checkpoints'}: no complete checkpoint to resume from; "
                          "start again with --overwrite")
    return ckpt


def finished_run(cfg: TrainConfig) -> dict | None:
    """The record of a finished run that ``--resume`` was asked to continue, else ``None``.

    A run is finished when its ``metrics.json`` exists (it is written after the final model).
    Resuming it would train zero steps and rewrite its record with a fraction of a second of
    runtime, so :func:`train` returns this record unchanged instead.

    Args:
        cfg: the resolved config (``cfg.resume`` true).

    Returns:
        The run's ``metrics.json`` as a dict, or ``None`` (not resuming, or not finished).

    Raises:
        ConfigError: the finished run was made with a different config (each difference listed).
    """
    from peftsum.io import read_json_object

    out = Path(cfg.output_dir)
    if not cfg.resume or not (out / METRICS_FILE).is_file() or not (out / CONFIG_FILE).is_file():
        return None
    diff = _config_diff(json.loads((out / CONFIG_FILE).read_text(encoding="utf-8")), cfg.to_dict())
    if diff:
        raise ConfigError(f"--resume with a changed config ({'; '.join(diff)}); use the original settings "
                          "or a new --output-dir")
    return read_json_object(out / METRICS_FILE)


def _prepare_output(cfg: TrainConfig, resume_ckpt: Path | None, log) -> Path:
    """Make ``cfg.output_dir`` ready after :func:`_check_output`: drop incomplete checkpoints of a
    resumed run, or replace (``--overwrite``) / create the folder of a new one."""
    out = Path(cfg.output_dir)
    if resume_ckpt is not None:
        for stale in (out / "checkpoints").glob("checkpoint-*"):
            if stale.is_dir() and not (stale / COMPLETE_MARKER).is_file():
                log(f"removing incomplete checkpoint {stale} (a save that was interrupted)")
                shutil.rmtree(stale)
        return out
    if out.exists():
        if out.is_file():
            out.unlink()
        elif any(out.iterdir()):
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Validate a config and fill in defaults; returns a resolved *copy*.

    Languages become XL-Sum config names; the learning rate defaults to the method's; the
    method name is normalised; a local model folder becomes its absolute path. Nothing is loaded.

    Args:
        cfg: the config as given (flags, YAML).

    Returns:
        A new :class:`TrainConfig` (the input is not modified).

    Raises:
        ConfigError: unknown method, optimizer or scheduler; a combination that cannot work (fp16
            with bf16, load_best without ROUGE or without evaluations, early stopping without
            load_best, no steps, sizes below 1, warmup or smoothing outside [0, 1));
            ``tensorboard`` without the package; ``--resume`` or ``--gradient-checkpointing``
            with a method that does not support it (registry flags).
        DataError: an unknown language.
    """
    from peftsum.data.languages import parse_languages
    from peftsum.modeling.methods import get_method

    from peftsum.hub import resolve_model_source

    cfg = dataclasses.replace(cfg)
    method = get_method(cfg.method)
    cfg.method = method.name
    cfg.model = resolve_model_source(cfg.model)  # a local folder is stored absolute (loads from any cwd)
    cfg.languages = parse_languages(cfg.languages)
    if cfg.learning_rate is None:
        cfg.learning_rate = method.learning_rate
    if cfg.fp16 and cfg.bf16:
        raise ConfigError("--fp16 and --bf16 are exclusive; use --bf16 (or neither for fp32)")
    if cfg.resume and cfg.overwrite:
        raise ConfigError("--resume continues the run in --output-dir and --overwrite replaces it; pass one of them")
    from peftsum.training.ranges import check_train_ranges

    check_train_ranges(cfg)
    from peftsum.runtime import resolve_bf16

    # explicit choice, else PEFTSUM_BF16, else auto: bf16 where the hardware runs it natively; never next to fp16
    cfg.bf16 = resolve_bf16(cfg.bf16, fp16=cfg.fp16)
    if cfg.optimizer not in ("adamw", "adafactor"):
        raise ConfigError(f"unknown optimizer {cfg.optimizer!r}; choose adamw or adafactor")
    if cfg.lr_scheduler not in ("linear", "constant", "cosine"):
        raise ConfigError(f"unknown lr_scheduler {cfg.lr_scheduler!r}; choose linear, constant or cosine")
    if not 0.0 <= cfg.warmup_ratio < 1.0:
        raise ConfigError(f"warmup_ratio must be in [0, 1), got {cfg.warmup_ratio}")
    if not 0.0 <= cfg.label_smoothing < 1.0:
        raise ConfigError(f"label_smoothing must be in [0, 1), got {cfg.label_smoothing}")
    for name in ("batch_size", "gradient_accumulation_steps", "max_source_length", "max_target_length",
                 "logging_steps", "num_virtual_tokens", "eval_rouge_samples"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(cfg, name)}")
    if cfg.lora_r is not None and cfg.lora_r < 1:
        raise ConfigError(f"lora_r (the adapter rank r) must be at least 1, got {cfg.lora_r}")
    if cfg.eval_steps is not None and cfg.eval_steps < 0:
        raise ConfigError(f"eval_steps must be >= 0 (0 = evaluate only after training), got {cfg.eval_steps}")
    if cfg.early_stopping_patience and not cfg.load_best:
        raise ConfigError("early_stopping_patience needs --load-best (and --eval-rouge)")
    if cfg.load_best and not cfg.eval_rouge:
        raise ConfigError("--load-best keeps the best checkpoint by validation ROUGE-L; it needs --eval-rouge")
    if cfg.load_best and cfg.eval_steps == 0:
        raise ConfigError("--load-best needs evaluations during training; set eval_steps > 0 or leave it unset")
    if cfg.max_steps <= 0 and cfg.num_epochs <= 0:
        raise ConfigError("set num_epochs > 0 or max_steps > 0")
    if cfg.gradient_checkpointing and not method.gradient_checkpointing:
        raise ConfigError(f"--gradient-checkpointing does not work with {method.name}: transformers drops the "
                          "key/value cache that carries the prefixes inside checkpointed layers; train without it")
    if cfg.resume and not method.resumable:
        raise ConfigError(f"--resume is not supported for {method.name}: its training state is not fully "
                          "checkpointed (AdaLoRA's importance scores); start again with --overwrite")
    if cfg.tensorboard:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise ConfigError("--tensorboard needs the tensorboard package: pip install 'peftsum[tensorboard]'") from None
    return cfg


def _refuse_fp16(cfg: TrainConfig) -> None:
    """Refuse fp16 for T5-family models from the config alone (before any weights are loaded)."""
    if not cfg.fp16:
        return
    from transformers import AutoConfig

    from peftsum.modeling.load import is_t5_family

    try:
        model_config = AutoConfig.from_pretrained(cfg.model)
    except Exception:
        return  # load_model reports an unloadable model with a proper message
    if is_t5_family(model_config):
        raise ConfigError(
            f"--fp16 refused for {model_config.model_type}: T5/mT5 activations overflow in fp16 (NaN loss); "
            "use --bf16 (Ampere+ GPU or a CPU with bf16) or fp32 (neither flag)"
        )


def _rouge_evaluator(cfg: TrainConfig, rows_by_lang: dict[str, list[dict]], tokenizer):
    """ROUGE on the first ``eval_rouge_samples`` validation rows per language, greedy decoding.

    The returned callable gives ``eval_rouge1/2/L/Lsum``: F1 (0-100) averaged over languages.
    """
    from peftsum.generation.decode import GenerationSettings, generate_summaries

    subset = {lang: rows[: cfg.eval_rouge_samples] for lang, rows in rows_by_lang.items()}
    greedy = GenerationSettings(num_beams=1, length_penalty=1.0, no_repeat_ngram_size=0,
                                max_new_tokens=cfg.max_target_length)

    def evaluate(model) -> dict:
        from peftsum.metrics import score_texts

        totals: dict[str, list[float]] = {}
        was_training = model.training
        for lang, rows in subset.items():
            preds = generate_summaries(model, tokenizer, [r["text"] for r in rows], greedy,
                                       max_source_length=cfg.max_source_length, source_prefix=cfg.source_prefix,
                                       batch_size=cfg.batch_size * 2, progress=False, bf16=cfg.bf16)
            res = score_texts(preds, [r["summary"] for r in rows], lang, n_resamples=0)
            for key in ROUGE_KEYS:
                totals.setdefault(key, []).append(res[key]["f1"])
        model.train(was_training)
        return {f"eval_{k}": sum(v) / len(v) for k, v in totals.items()}

    return evaluate


@dataclass
class TrainingSetup:
    """A ready-to-run training job (:func:`build_trainer`'s result).

    Attributes:
        cfg: the resolved config (as written to ``peftsum_config.json``).
        method: the registry row.
        hyper: the method's resolved hyperparameters.
        out: the run folder.
        resume_from: the checkpoint training continues from, or ``None``.
        trainer: the ``PeftsumTrainer`` (a ``transformers.Seq2SeqTrainer``).
        tokenizer: the tokenizer.
        tie_state: :func:`peftsum.modeling.load.lm_head_tie_state` of the loaded base model.
        rows_per_language: training rows per language after exponent-smoothed mixing.
        val_rows: validation rows (all languages).
        dropped: rows dropped by validation, per ``language/split`` and reason.
        steps_per_epoch: optimizer steps per pass over the training rows.
        total_steps: optimizer steps the run will take.
        init_adapter: the initial adapter kept for ``convert_on_save`` methods, or ``None``.
        model_as_given: the model as the user gave it (``cfg.model`` is the resolved path of a local folder).
    """

    cfg: TrainConfig
    method: Any
    hyper: Any
    out: Path
    resume_from: Path | None
    trainer: Any
    tokenizer: Any
    tie_state: dict
    rows_per_language: dict[str, int]
    val_rows: int
    dropped: dict
    steps_per_epoch: int
    total_steps: int
    init_adapter: Path | None = None
    model_as_given: str | None = None


def build_trainer(cfg: TrainConfig, log=print) -> TrainingSetup:
    """Validate ``cfg``, prepare the run folder, load model and data, and build the trainer.

    Nothing is trained. ``peftsum_config.json`` is written (the resolved config).

    Args:
        cfg: the config (not modified; see :func:`resolve`).
        log: where progress lines go.

    Returns:
        A :class:`TrainingSetup`; :func:`run_training` trains it.

    Raises:
        PeftsumError: everything :func:`resolve` raises; fp16 with a T5-family model; an
            existing output without ``overwrite``; an unusable resume (nothing to resume, config
            changed: the message lists each difference); an unloadable model; bad data;
            target modules that match no layer (the message lists the layers that exist);
            launcher settings that cannot work (``peftsum.training.parallel.check_parallel``).

    Under several processes (torchrun / accelerate launch) every rank builds the same trainer;
    rank 0 alone prepares the folder and writes files (``peftsum.distributed``).
    """
    # cheap checks first: a typo or an unusable output folder fails in about a second, before transformers loads
    model_as_given = cfg.model
    cfg = resolve(cfg)
    resume_ckpt = _check_output(cfg)
    from peftsum.modeling.methods import get_method as _get_method
    from peftsum.training.ranges import ignored_options

    for line in ignored_options(cfg, _get_method(cfg.method)):
        log(line)
    from peftsum import distributed

    distributed.barrier()  # several processes: all have checked the folder before rank 0 changes it
    from peftsum.modeling.load import check_model_source

    check_model_source(cfg.model)  # offline, a hub id (or --data hub) fails here, in a second (peftsum.hub)
    if str(cfg.data) == "hub":
        from peftsum.data.xlsum import HUB_ID
        from peftsum.hub import require_hub_dataset

        require_hub_dataset(HUB_ID)

    import torch
    from transformers import EarlyStoppingCallback, Seq2SeqTrainingArguments, set_seed
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from peftsum.data.arrow import build_training_data
    from peftsum.data.features import make_collator
    from peftsum.io import write_json_atomic
    from peftsum.modeling.load import fast_dropout, load_model, load_tokenizer
    from peftsum.modeling.methods import build_peft_config, check_target_modules, get_method, method_hyper
    from peftsum.training.callbacks import JsonlLogCallback, ProgressBarCallback
    from peftsum.training.parallel import check_parallel, describe_batch

    _refuse_fp16(cfg)
    method = get_method(cfg.method)
    check_parallel(cfg, method)
    hyper = method_hyper(method, cfg)
    distributed.init()
    if distributed.is_main():  # rank 0 prepares the folder while the others wait
        _prepare_output(cfg, resume_ckpt, log)
        write_json_atomic(Path(cfg.output_dir) / CONFIG_FILE,
                          {**distributed.run_config_record(cfg), "model_as_given": model_as_given})
    else:
        log = _quiet  # one copy of every progress line
    distributed.barrier()
    out = Path(cfg.output_dir)
    log(describe_batch(cfg))
    set_seed(cfg.seed)

    tokenizer = load_tokenizer(cfg.model)
    model, tie_state = load_model(cfg.model)
    # Never rely on a checkpoint's generation default (mt5-small's is max_length 20): the length
    # used for in-training ROUGE and saved with a full fine-tune is the configured summary length.
    model.generation_config.max_new_tokens = cfg.max_target_length
    model.generation_config.max_length = None

    # memory-mapped Arrow tables, tokenized once and cached; languages mixed on indices (data/arrow.py)
    data = build_training_data(cfg, tokenizer, log)
    if cfg.data not in ("sample", "hub") and Path(cfg.data).is_file():
        log(f"warning: {cfg.data} is one file, so validation rows come from the training rows: validation loss and "
            "ROUGE measure fit, not generalisation (pass a folder with train and validation files)")
    train_ds, val_ds, dropped, rows_per_language = data.train, data.validation, data.dropped, data.rows_per_language

    steps_per_epoch = max(1, math.ceil(len(train_ds) / distributed.effective_batch(
        cfg.batch_size, cfg.gradient_accumulation_steps)))
    total_steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(steps_per_epoch * cfg.num_epochs)
    hyper = dataclasses.replace(hyper, total_steps=total_steps)
    peft_config = build_peft_config(method, hyper)
    init_adapter = None
    if peft_config is not None:
        from peft import get_peft_model

        check_target_modules(model, list(hyper.target_modules or ()))
        model = get_peft_model(model, peft_config)
        if method.convert_on_save:
            init_adapter = out / INIT_ADAPTER_DIR
            if distributed.is_main():
                if init_adapter.exists():
                    shutil.rmtree(init_adapter)
                model.save_pretrained(str(init_adapter))
                apply_umask_tree(init_adapter)
            distributed.barrier()

    fast_dropout(model)  # after PEFT: its lora_dropout modules too

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
    try:
        args = Seq2SeqTrainingArguments(
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
            eval_strategy=eval_strategy,
            eval_steps=cfg.eval_steps or None,
            save_strategy=save_strategy,
            save_steps=save_steps,
            save_total_limit=cfg.save_total_limit,
            load_best_model_at_end=cfg.load_best,
            metric_for_best_model="eval_rougeL" if cfg.load_best else None,
            greater_is_better=True if cfg.load_best else None,
            train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
            report_to=[],  # TensorBoard is added below with an explicit log folder
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

    callbacks = [JsonlLogCallback(out / TRAINING_LOG_FILE, _step_of(resume_ckpt) if resume_ckpt else None)
                 ] if distributed.is_main() else []
    callbacks += [factory() for factory in method.callbacks]
    if cfg.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    if cfg.tensorboard and distributed.is_main():
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        callbacks.append(TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(out / "tensorboard"))))
    trainer = _make_trainer_class()(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        data_collator=make_collator(tokenizer, model),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    trainer.packed_head = method.packed_head
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(ProgressBarCallback(f"{method.name} {'+'.join(cfg.languages)}"))
    if cfg.eval_rouge:
        trainer.rouge_eval = _rouge_evaluator(cfg, data.rouge_rows(cfg.eval_rouge_samples), tokenizer)
    if resume_ckpt is not None:
        counters = resume_ckpt / COUNTERS_FILE
        if counters.is_file():
            c = json.loads(counters.read_text(encoding="utf-8"))
            trainer.tokens_seen, trainer.examples_seen = c["tokens_seen"], c["examples_seen"]
        log(f"resuming from {resume_ckpt}")
    return TrainingSetup(cfg=cfg, method=method, hyper=hyper, out=out, resume_from=resume_ckpt, trainer=trainer,
                         tokenizer=tokenizer, tie_state=tie_state, rows_per_language=rows_per_language,
                         val_rows=len(val_ds), dropped=dropped, steps_per_epoch=steps_per_epoch,
                         total_steps=total_steps, init_adapter=init_adapter, model_as_given=model_as_given)


def run_training(setup: TrainingSetup, log=print) -> dict:
    """Train a :class:`TrainingSetup`, evaluate, save the model and write the run record.

    Writes into ``setup.out``: ``model/`` (full checkpoint or PEFT adapter, with the tokenizer),
    ``metrics.json``, ``README.md`` (model card); ``training_log.jsonl`` and ``checkpoints/``
    are written during training.

    Args:
        setup: from :func:`build_trainer`.
        log: where progress lines go.

    Returns:
        The dict written to ``metrics.json`` (keys in ``docs/run_format.md``); under several
        processes rank 0 writes it and every rank returns it.

    Raises:
        PeftsumError: a non-finite loss (naming the step).
    """
    from peftsum.io import atomic_dir, write_text_atomic
    from peftsum.modeling.methods import describe_hyper
    from peftsum.runtime import precision_name
    from peftsum.training.record import count_parameters, git_commit, library_versions, model_card, \
        peak_gpu_mb, peak_rss_mb, weights_size_mb

    cfg, trainer, out = setup.cfg, setup.trainer, setup.out
    trainable, total = count_parameters(trainer.model)
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(setup.resume_from) if setup.resume_from else None)
    runtime = time.perf_counter() - start
    eval_metrics = trainer.evaluate()
    # With bf16, accelerate wrapped model.forward in autocast; take the wrapper off so the model in memory is the
    # fp32 model that is saved, and evaluation after training chooses its precision explicitly (issue #10).
    trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)

    model_dir = out / "model"
    save_kwargs = {}
    if setup.init_adapter is not None:
        save_kwargs["path_initial_model_for_weight_conversion"] = str(setup.init_adapter)
    if not setup.method.is_peft:  # a full checkpoint ships as is: plain generate() decodes with XL-Sum's beams,
        from peftsum.generation.decode import GenerationSettings  # up to the configured summary length
        from peftsum.modeling.shipping import set_generation_settings

        set_generation_settings(trainer.model.generation_config, GenerationSettings(max_new_tokens=cfg.max_target_length))
    from peftsum import distributed
    from peftsum.training.parallel import final_model_and_state

    save_model, state_dict = final_model_and_state(trainer)  # under FSDP every rank takes part in the gather
    if not distributed.is_main():  # rank 0 writes the run record; the others wait for it and return it
        distributed.barrier()
        return distributed.broadcast(None)
    if state_dict is not None:
        save_kwargs["state_dict"] = state_dict
    with atomic_dir(model_dir, overwrite=True) as tmp:  # a kill while saving leaves no half-written model/
        save_model.save_pretrained(str(tmp), **save_kwargs)
        setup.tokenizer.save_pretrained(str(tmp))

    history = [row for row in trainer.state.log_history if "loss" in row]
    window = history[-max(1, min(len(history), setup.steps_per_epoch)):]
    train_loss = sum(r["loss"] for r in window) / len(window) if window else result.training_loss
    hyper = {  # the method's hyperparameters and the training budget; everything else is in "config"
        "learning_rate": cfg.learning_rate,
        "optimizer": cfg.optimizer,
        "lr_scheduler": cfg.lr_scheduler,
        "warmup_ratio": cfg.warmup_ratio,
        "label_smoothing": cfg.label_smoothing,
        "total_steps": setup.total_steps,
        "batch_size": cfg.batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "world_size": distributed.world().world_size,
        "effective_batch_size": distributed.effective_batch(cfg.batch_size, cfg.gradient_accumulation_steps),
        **describe_hyper(setup.method, setup.hyper),
        "bf16": cfg.bf16,
    }
    best = trainer.state.best_model_checkpoint
    metrics = {
        "method": setup.method.name,
        "model": cfg.model,
        "model_as_given": setup.model_as_given or cfg.model,
        "data": cfg.data,
        "train_languages": cfg.languages,
        "language_sampling": {"alpha": cfg.language_sampling_alpha, "rows_per_language": setup.rows_per_language},
        "train_rows": sum(setup.rows_per_language.values()),
        "val_rows": setup.val_rows,
        "dropped_rows": setup.dropped,
        "trainable_params": trainable,
        "total_params": total,
        "trainable_pct": 100.0 * trainable / total,
        "checkpoint_size_mb": weights_size_mb(model_dir),
        "train_runtime_s": runtime,
        "global_step": trainer.state.global_step,
        "resumed_from_step": _step_of(setup.resume_from) if setup.resume_from else None,
        "best_checkpoint_step": _step_of(Path(best)) if best else None,
        "best_metric": trainer.state.best_metric,
        "precision": precision_name(cfg.bf16),  # "bf16" (autocast, fp32 master weights) or "fp32"
        "device": str(trainer.args.device),
        "peak_rss_mb": peak_rss_mb(),
        "peak_gpu_mb": peak_gpu_mb(),
        "train_loss": train_loss,
        "eval_loss": eval_metrics.get("eval_loss"),
        "eval_rouge1": eval_metrics.get("eval_rouge1"),
        "eval_rouge2": eval_metrics.get("eval_rouge2"),
        "eval_rougeL": eval_metrics.get("eval_rougeL"),
        "eval_rougeLsum": eval_metrics.get("eval_rougeLsum"),
        "tokens_seen": trainer.tokens_seen,
        "examples_seen": trainer.examples_seen,
        "tokens_per_second": trainer.session_tokens / runtime if runtime > 0 else None,
        "examples_per_second": trainer.session_examples / runtime if runtime > 0 else None,
        "lm_head": setup.tie_state,
        "hyperparameters": hyper,
        "config": {**distributed.run_config_record(cfg), "model_as_given": setup.model_as_given or cfg.model},  # = peftsum_config.json
        "versions": library_versions(),
        "git_commit": git_commit(),
    }
    from peftsum.training.divergence import check_divergence, divergence_warning

    metrics.update(check_divergence([r["loss"] for r in history], getattr(trainer.model.config, "vocab_size", None),
                                    metrics["eval_loss"]))
    metrics = write_metrics(out, metrics)  # stamped with the schema version
    write_text_atomic(out / "README.md", model_card(metrics))
    if not setup.method.is_peft:  # the checkpoint folder carries the card too (PEFT writes its own)
        write_text_atomic(model_dir / "README.md", model_card(metrics))
    if divergence_warning(metrics):
        log(divergence_warning(metrics))
    log(f"{setup.method.name}: {trainer.state.global_step} steps in {runtime:.1f} s -> {model_dir}")
    distributed.barrier()
    return distributed.broadcast(metrics)


def train(cfg: TrainConfig, log=print) -> dict:
    """Fine-tune ``cfg.model`` on XL-Sum and write the run record (:func:`build_trainer` + :func:`run_training`).

    Args:
        cfg: a :class:`TrainConfig` (method defaults are filled in on a copy).
        log: where progress lines go (the CLI passes rich's console).

    Returns:
        The dict written to ``metrics.json`` (keys in ``docs/run_format.md``).

    Raises:
        PeftsumError: bad config or data, an existing output without ``overwrite``, a refused
            fp16 run, non-finite loss (naming the step), an unusable resume, a full disk during
            a checkpoint save; :class:`peftsum.locking.FolderLocked` when another process
            writes ``cfg.output_dir``.
    """
    from peftsum.locking import folder_lock
    from peftsum.training.record import reset_peak_rss

    out = Path(cfg.output_dir)
    with folder_lock(out, "train"):  # one writer per run folder; a second process stops here
        fresh = not cfg.resume and not (out.is_dir() and any(out.iterdir()))
        if cfg.resume:
            done = finished_run(resolve(cfg))
            if done is not None:
                log(f"{out} is finished ({done.get('global_step')} steps): nothing to resume; its files are unchanged")
                return done
        reset_peak_rss()  # several runs in one process (experiments) each get their own peak
        try:
            return run_training(build_trainer(cfg, log), log)
        except BaseException as exc:
            # a run that failed before training started leaves nothing behind to block the rerun
            started = (out / TRAINING_LOG_FILE).exists() or any((out / "checkpoints").glob("checkpoint-*"))
            if fresh and out.is_dir() and not started and _is_main():
                shutil.rmtree(out, ignore_errors=True)
            from peftsum.faults import DiskFull, is_disk_full

            if is_disk_full(exc) and not isinstance(exc, PeftsumError):  # e.g. saving model/ or metrics.json
                raise DiskFull(f"disk full while writing {out} ({getattr(exc, 'strerror', exc)}); complete "
                               "checkpoints are kept: free space, then rerun with --resume") from None
            raise
