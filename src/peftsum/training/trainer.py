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
* the loss (:meth:`peftsum.training.seq2seq.PeftsumTrainer.compute_loss`): T5's loss is a per-micro-batch mean that the
  Trainer 5.x mistakes for one normalised over the accumulated batch, and its label smoother
  drops PEFT's additions to the loss; peftsum's is token-weighted over the accumulated batch;
* length-grouped batches whose order depends only on (seed, epoch)
  (:mod:`peftsum.training.sampling`): the Trainer's draws from the global RNG, so a resumed run
  would see different batches;
* guards: fp16 refused for T5-family models (before any weights load), a NaN/inf loss stops the
  run naming the step (checked on every micro-batch; the Trainer only averages it into the log),
  the lm_head tie check after loading, target modules that match nothing, a resume whose
  config changed, an explicit generation length;
* checkpoints marked complete (:data:`peftsum.training.output.COMPLETE_MARKER`) only after every file is written and
  synced, and old checkpoints rotated only after that, so a kill during a save leaves the
  previous checkpoint usable; ``--resume`` picks the newest *complete* one;
* ROUGE (greedy decoding, a capped validation subset) in every evaluation, so the best
  checkpoint is kept by ROUGE-L;
* speed on CPU without changing the numbers: clipping with an exact norm folded into fused AdamW
  (:mod:`peftsum.training.clipping`) and, in full fine-tuning, AdamW over the input embedding's
  touched rows only (:mod:`peftsum.training.sparse_rows`: the dense update at weight decay 0);
* multilingual mixing with exponent smoothing (``peftsum.data.features.mix_languages``);
* the run record: ``metrics.json``, ``training_log.jsonl``, ``peftsum_config.json``, a model card.

The recipe, top to bottom (:func:`train` = :func:`build_trainer` + :func:`run_training`), each step
in the module where it belongs:

1. config: :func:`peftsum.config_checks.resolve` (validation beside :class:`~peftsum.config.TrainConfig`);
2. run folder: :func:`peftsum.training.output.check_output` / ``prepare_output`` (what may be
   replaced, what a resume needs);
3. model and tokenizer: :mod:`peftsum.modeling.load`;
4. data: :func:`peftsum.data.training_data.build_training_data`;
5. method: :mod:`peftsum.modeling.methods` (the PEFT config applied to the model);
6. trainer: :func:`peftsum.training.arguments.training_arguments`, the callbacks,
   :class:`peftsum.training.seq2seq.PeftsumTrainer`, in-training ROUGE from
   :mod:`peftsum.generation.rouge_eval`;
7. train, evaluate and save ``model/``;
8. record: :func:`peftsum.training.record.run_metrics` -> ``metrics.json`` and the model card.

Why this file passes 400 lines: about 50 of them are this rationale, and each step's docstring says
what it takes, returns and raises; no function is over ~45 lines.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftsum.config import TrainConfig
from peftsum.config_checks import resolve
from peftsum.errors import PeftsumError
from peftsum.run_format import TRAINING_LOG_FILE, write_metrics
from peftsum.training.output import (  # noqa: F401  (the run-folder names, importable from here as before)
    COMPLETE_MARKER,
    CONFIG_FILE,
    COUNTERS_FILE,
    INIT_ADAPTER_DIR,
    RUN_MARKERS,
    check_output,
    finished_run,
    latest_complete_checkpoint,
    prepare_output,
    step_of,
)


def _is_main() -> bool:
    from peftsum.distributed import is_main

    return is_main()


def _quiet(*args, **kwargs) -> None:
    """The ``log`` of ranks other than 0 (one copy of every progress line)."""


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
        cfg: the config (not modified; see :func:`peftsum.config_checks.resolve`).
        log: where progress lines go.

    Returns:
        A :class:`TrainingSetup`; :func:`run_training` trains it.

    Raises:
        PeftsumError: everything :func:`peftsum.config_checks.resolve` raises; fp16 with a T5-family model; an
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
    resume_ckpt = check_output(cfg)
    _check_sources(cfg, log)
    from peftsum.data.training_data import build_training_data
    from peftsum.training.frozen_bf16 import FrozenBf16Callback, base_names
    from peftsum.training.seq2seq import make_trainer

    method, hyper, log = _start_run(cfg, resume_ckpt, model_as_given, log)
    out = Path(cfg.output_dir)
    tokenizer, model, tie_state = _load_model(cfg)
    # memory-mapped Arrow tables, tokenized once and cached; languages mixed on indices (data/arrow.py)
    data = build_training_data(cfg, tokenizer, log)
    steps_per_epoch, total_steps = _steps(cfg, len(data.train))
    hyper = dataclasses.replace(hyper, total_steps=total_steps)
    names = base_names(model) if _frozen_base_in_bf16(cfg, method) else None
    model, init_adapter = _apply_method(model, method, hyper, out)
    trainer = make_trainer(cfg, method, model, tokenizer, data, total_steps, resume_ckpt)
    if names is not None:  # frozen base weights in bf16 from train begin to train end
        trainer.add_callback(FrozenBf16Callback(names, cfg.model))
    if resume_ckpt is not None:
        log(f"resuming from {resume_ckpt}")
    return TrainingSetup(cfg=cfg, method=method, hyper=hyper, out=out, resume_from=resume_ckpt, trainer=trainer,
                         tokenizer=tokenizer, tie_state=tie_state, rows_per_language=data.rows_per_language,
                         val_rows=len(data.validation), dropped=data.dropped, steps_per_epoch=steps_per_epoch,
                         total_steps=total_steps, init_adapter=init_adapter, model_as_given=model_as_given)


def _frozen_base_in_bf16(cfg: TrainConfig, method) -> bool:
    """Store the frozen base's Linear weights in bf16 (:mod:`peftsum.training.frozen_bf16`): bf16 autocast,
    a method whose registry row allows it, one process, no FSDP."""
    from peftsum import distributed

    return (bool(cfg.bf16) and method.frozen_base_bf16 and distributed.world().world_size == 1
            and not distributed.fsdp_requested())


def _check_sources(cfg: TrainConfig, log) -> None:
    """Say which options the method ignores, then check (offline: in a second) that the model and the
    hub dataset can be reached, before anything heavy loads (``peftsum.hub``)."""
    from peftsum import distributed
    from peftsum.modeling.load import check_model_source
    from peftsum.modeling.methods import get_method
    from peftsum.training.ranges import ignored_options

    for line in ignored_options(cfg, get_method(cfg.method)):
        log(line)
    distributed.barrier()  # several processes: all have checked the folder before rank 0 changes it
    check_model_source(cfg.model)  # offline, a hub id (or --data hub) fails here, in a second (peftsum.hub)
    if str(cfg.data) == "hub":
        from peftsum.data.xlsum import HUB_ID
        from peftsum.hub import require_hub_dataset

        require_hub_dataset(HUB_ID)


def _start_run(cfg: TrainConfig, resume_ckpt: Path | None, model_as_given: str, log):
    """The last checks (fp16, launcher), then the run folder (rank 0) and the seed.

    Returns:
        ``(method, hyper, log)``: the registry row, its resolved hyperparameters, and the ``log``
        to use from here on (silent on ranks other than 0).
    """
    from transformers import set_seed

    from peftsum import distributed
    from peftsum.config_checks import refuse_fp16
    from peftsum.io import write_json_atomic
    from peftsum.modeling.methods import get_method, method_hyper
    from peftsum.training.parallel import check_parallel, describe_batch

    refuse_fp16(cfg)
    method = get_method(cfg.method)
    check_parallel(cfg, method)
    hyper = method_hyper(method, cfg)
    distributed.init()
    if distributed.is_main():  # rank 0 prepares the folder while the others wait
        prepare_output(cfg, resume_ckpt, log)
        write_json_atomic(Path(cfg.output_dir) / CONFIG_FILE,
                          {**distributed.run_config_record(cfg), "model_as_given": model_as_given})
    else:
        log = _quiet  # one copy of every progress line
    distributed.barrier()
    log(describe_batch(cfg))
    set_seed(cfg.seed)
    return method, hyper, log


def _load_model(cfg: TrainConfig):
    """``(tokenizer, model, tie_state)`` of ``cfg.model``, its generation length set to the configured one."""
    from peftsum.modeling.load import load_model, load_tokenizer

    tokenizer = load_tokenizer(cfg.model)
    model, tie_state = load_model(cfg.model)
    # Never rely on a checkpoint's generation default (mt5-small's is max_length 20): the length
    # used for in-training ROUGE and saved with a full fine-tune is the configured summary length.
    model.generation_config.max_new_tokens = cfg.max_target_length
    model.generation_config.max_length = None
    return tokenizer, model, tie_state


def _steps(cfg: TrainConfig, train_rows: int) -> tuple[int, int]:
    """``(steps_per_epoch, total_steps)``: optimizer steps per pass over ``train_rows`` and in the run."""
    from peftsum import distributed

    steps_per_epoch = max(1, math.ceil(train_rows / distributed.effective_batch(
        cfg.batch_size, cfg.gradient_accumulation_steps)))
    total_steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(steps_per_epoch * cfg.num_epochs)
    return steps_per_epoch, total_steps


def _apply_method(model, method, hyper, out: Path):
    """Wrap ``model`` in the method's PEFT model (none for full fine-tuning); keep the initial adapter
    of a ``convert_on_save`` method (PiSSA) in ``out``.

    Returns:
        ``(model, init_adapter)``: the model to train and the initial adapter's folder, or ``None``.

    Raises:
        ConfigError: target modules that match no layer (the message lists the layers that exist).
    """
    from peftsum import distributed
    from peftsum.io import apply_umask_tree
    from peftsum.modeling.fast_paths import fast_dropout
    from peftsum.modeling.methods import build_peft_config, check_target_modules

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
    fast_dropout(model)  # after PEFT: its lora_dropout modules too (load_model switched the attention)
    return model, init_adapter


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
    from peftsum import distributed
    from peftsum.io import write_text_atomic
    from peftsum.training.divergence import divergence_warning
    from peftsum.training.record import model_card, run_metrics

    outcome = _train_and_evaluate(setup)
    model_dir = setup.out / "model"
    if not _save_model(setup, model_dir):  # rank 0 writes the run record; the others wait for it and return it
        distributed.barrier()
        return distributed.broadcast(None)
    metrics = run_metrics(setup, outcome, model_dir)
    metrics = write_metrics(setup.out, metrics)  # stamped with the schema version
    write_text_atomic(setup.out / "README.md", model_card(metrics))
    if not setup.method.is_peft:  # the checkpoint folder carries the card too (PEFT writes its own)
        write_text_atomic(model_dir / "README.md", model_card(metrics))
    if divergence_warning(metrics):
        log(divergence_warning(metrics))
    log(f"{setup.method.name}: {setup.trainer.state.global_step} steps in {outcome['runtime']:.1f} s -> {model_dir}")
    distributed.barrier()
    return distributed.broadcast(metrics)


def _train_and_evaluate(setup: TrainingSetup) -> dict:
    """Train (from ``setup.resume_from`` if set) and evaluate once more.

    Returns:
        ``params`` ((trainable, total) before training), ``result`` (``trainer.train``'s output),
        ``runtime`` (seconds of training) and ``eval`` (the final evaluation's metrics).
    """
    from peftsum.training.record import count_parameters

    trainer = setup.trainer
    params = count_parameters(trainer.model)
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(setup.resume_from) if setup.resume_from else None)
    runtime = time.perf_counter() - start
    eval_metrics = trainer.evaluate()
    # With bf16, accelerate wrapped model.forward in autocast; take the wrapper off so the model in memory is the
    # fp32 model that is saved, and evaluation after training chooses its precision explicitly (issue #10).
    trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    return {"params": params, "result": result, "runtime": runtime, "eval": eval_metrics}


def _save_model(setup: TrainingSetup, model_dir: Path) -> bool:
    """Save the final model (full checkpoint or adapter) and the tokenizer to ``model_dir``, atomically.

    Every rank takes part (FSDP gathers the weights); only rank 0 writes.

    Returns:
        True on rank 0 (which wrote ``model_dir``), False on the other ranks.
    """
    from peftsum import distributed
    from peftsum.io import atomic_dir
    from peftsum.training.parallel import final_model_and_state

    trainer, save_kwargs = setup.trainer, {}
    if setup.init_adapter is not None:
        save_kwargs["path_initial_model_for_weight_conversion"] = str(setup.init_adapter)
    if not setup.method.is_peft:  # a full checkpoint ships as is: plain generate() decodes with XL-Sum's beams,
        from peftsum.generation.decode import GenerationSettings  # up to the configured summary length
        from peftsum.modeling.shipping import set_generation_settings

        set_generation_settings(trainer.model.generation_config,
                                GenerationSettings(max_new_tokens=setup.cfg.max_target_length))
    save_model, state_dict = final_model_and_state(trainer)  # under FSDP every rank takes part in the gather
    if not distributed.is_main():
        return False
    if state_dict is not None:
        save_kwargs["state_dict"] = state_dict
    with atomic_dir(model_dir, overwrite=True) as tmp:  # a kill while saving leaves no half-written model/
        save_model.save_pretrained(str(tmp), **save_kwargs)
        setup.tokenizer.save_pretrained(str(tmp))
    return True


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
    from peftsum.training.record import reset_peak_gpu, reset_peak_rss

    out = Path(cfg.output_dir)
    with folder_lock(out, "train"):  # one writer per run folder; a second process stops here
        fresh = not cfg.resume and not (out.is_dir() and any(out.iterdir()))
        if cfg.resume:
            done = finished_run(resolve(cfg))
            if done is not None:
                log(f"{out} is finished ({done.get('global_step')} steps): nothing to resume; its files are unchanged")
                return done
        reset_peak_rss()  # several runs in one process (experiments, the Python API) each get their own peaks
        reset_peak_gpu()
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
