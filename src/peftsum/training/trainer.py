"""Fine-tune a seq2seq model on XL-Sum with full fine-tuning or a PEFT method.

Why ``transformers.Seq2SeqTrainer``: it already does checkpointing with optimizer, scheduler and
RNG state (exact resume), gradient accumulation, gradient checkpointing, mixed precision, length-
grouped sampling, Adafactor/AdamW, schedules with warmup, early stopping, best-checkpoint
tracking, TensorBoard and multi-GPU via accelerate. peftsum adds only what it lacks:

* the method registry (``peftsum.modeling.methods``) and the lm_head tie check;
* guards: fp16 refused for T5-family models, NaN/inf loss stops the run naming the step;
* checkpoints marked complete only after every file is written (:class:`PeftsumTrainer`), so a
  kill during a save leaves the previous checkpoint usable, and ``--resume`` refuses a changed config;
* ROUGE during evaluation on a capped validation subset with greedy decoding;
* the run record: ``metrics.json``, ``training_log.jsonl``, a model card.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

from peftsum.config import TrainConfig
from peftsum.errors import ConfigError, PeftsumError

COMPLETE_MARKER = ".peftsum_complete"
"""File written into a checkpoint folder after all of its files are saved."""
CONFIG_FILE = "peftsum_config.json"
"""The resolved config of a run, compared on ``--resume``."""
_RESUME_IGNORED = {"resume", "overwrite", "max_steps", "num_epochs", "tensorboard"}


def _make_trainer_class():
    from transformers import Seq2SeqTrainer
    from transformers.trainer_utils import rotate_checkpoints

    class PeftsumTrainer(Seq2SeqTrainer):
        """``Seq2SeqTrainer`` with complete-marked checkpoints, token counting and ROUGE in evaluate."""

        rouge_eval = None  # callable(model) -> dict of eval_rouge* metrics, or None

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.tokens_seen = 0
            self.examples_seen = 0

        def training_step(self, model, inputs, num_items_in_batch=None):
            self.tokens_seen += int(inputs["attention_mask"].sum()) + int((inputs["labels"] != -100).sum())
            self.examples_seen += int(inputs["input_ids"].shape[0])
            return super().training_step(model, inputs, num_items_in_batch)

        def _save_checkpoint(self, model, trial):
            limit = self.args.save_total_limit
            self.args.save_total_limit = None  # rotate only after the new checkpoint is complete
            try:
                super()._save_checkpoint(model, trial)
            finally:
                self.args.save_total_limit = limit
            run_dir = Path(self._get_output_dir(trial=trial))
            ckpt = run_dir / f"checkpoint-{self.state.global_step}"
            meta = {"tokens_seen": self.tokens_seen, "examples_seen": self.examples_seen}
            (ckpt / "peftsum_counters.json").write_text(json.dumps(meta))
            (ckpt / COMPLETE_MARKER).write_text("ok\n")
            rotate_checkpoints(output_dir=str(run_dir), save_total_limit=limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=False)

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval", **kwargs):
            metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix, **kwargs)
            if self.rouge_eval is not None and metric_key_prefix == "eval":
                extra = self.rouge_eval(self.model)
                metrics.update(extra)
                self.log(extra)
            return metrics

    return PeftsumTrainer


def latest_complete_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The newest ``checkpoint-N`` folder that carries the complete marker (or ``None``).

    Incomplete folders (a save that was killed) are ignored.
    """
    if not checkpoints_dir.is_dir():
        return None
    done = [p for p in checkpoints_dir.glob("checkpoint-*") if (p / COMPLETE_MARKER).is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[-1])) if done else None


def _config_diff(old: dict, new: dict) -> list[str]:
    keys = sorted((set(old) | set(new)) - _RESUME_IGNORED)
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def _prepare_output(cfg: TrainConfig) -> tuple[Path, Path | None]:
    out = Path(cfg.output_dir)
    if cfg.resume:
        saved = out / CONFIG_FILE
        if not saved.is_file():
            raise ConfigError(f"{out}: nothing to resume (no {CONFIG_FILE}); run without --resume first")
        diff = _config_diff(json.loads(saved.read_text()), cfg.to_dict())
        if diff:
            raise ConfigError(f"--resume with a changed config ({'; '.join(diff)}); use the original settings "
                              "or a new --output-dir")
        ckpt = latest_complete_checkpoint(out / "checkpoints")
        if ckpt is None:
            raise ConfigError(f"{out}/checkpoints: no complete checkpoint to resume from")
        return out, ckpt
    if out.exists() and any(out.iterdir()):
        if not cfg.overwrite:
            raise PeftsumError(f"{out} already exists; pass --overwrite to replace it or --resume to continue it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out, None


def _load_rows(cfg: TrainConfig, split: str, limit: int | None, log) -> dict[str, list[dict]]:
    from peftsum.data.xlsum import load_split

    rows = {}
    for lang in cfg.languages:
        loaded = load_split(lang, split, cfg.data, limit)
        if loaded.num_dropped:
            log(f"{loaded.source}: dropped {loaded.num_dropped} rows ({dict(loaded.dropped)})")
        rows[lang] = loaded.rows
        _load_rows.dropped[f"{lang}/{split}"] = dict(loaded.dropped)
    return rows


_load_rows.dropped = {}


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Validate and fill in method defaults (learning rate); languages become config names.

    Raises:
        ConfigError: unknown method or language, fp16 with a T5-family model, bad combinations.
    """
    from peftsum.data.languages import parse_languages
    from peftsum.modeling.methods import get_method

    method = get_method(cfg.method)
    cfg.method = method.name
    cfg.languages = parse_languages(cfg.languages)
    if cfg.learning_rate is None:
        cfg.learning_rate = method.learning_rate
    if cfg.fp16 and cfg.bf16:
        raise ConfigError("--fp16 and --bf16 are exclusive; use --bf16 (or neither for fp32)")
    if cfg.optimizer not in ("adamw", "adafactor"):
        raise ConfigError(f"unknown optimizer {cfg.optimizer!r}; choose adamw or adafactor")
    if cfg.lr_scheduler not in ("linear", "constant", "cosine"):
        raise ConfigError(f"unknown lr_scheduler {cfg.lr_scheduler!r}; choose linear, constant or cosine")
    if cfg.early_stopping_patience and not cfg.load_best:
        raise ConfigError("early_stopping_patience needs load_best (and eval_rouge)")
    if cfg.load_best and not cfg.eval_rouge:
        raise ConfigError("load_best keeps the best checkpoint by validation ROUGE-L; it needs eval_rouge")
    if cfg.max_steps <= 0 and cfg.num_epochs <= 0:
        raise ConfigError("set num_epochs > 0 or max_steps > 0")
    return cfg


def _refuse_fp16(cfg: TrainConfig, model) -> None:
    from peftsum.modeling.load import is_t5_family

    if cfg.fp16 and is_t5_family(model):
        raise ConfigError(
            f"--fp16 refused for {model.config.model_type}: T5/mT5 activations overflow in fp16 (NaN loss); "
            "use --bf16 (Ampere+ GPU or a CPU with bf16) or fp32"
        )


def _rouge_evaluator(cfg: TrainConfig, rows_by_lang: dict[str, list[dict]], tokenizer):
    from peftsum.generation.decode import GenerationSettings, generate_summaries

    subset = {lang: rows[: cfg.eval_rouge_samples] for lang, rows in rows_by_lang.items()}
    greedy = GenerationSettings(num_beams=1, length_penalty=1.0, no_repeat_ngram_size=0,
                                max_new_tokens=cfg.max_target_length)

    def evaluate(model) -> dict:
        from peftsum.metrics import score_texts

        totals: dict[str, list[float]] = {}
        for lang, rows in subset.items():
            preds = generate_summaries(model, tokenizer, [r["text"] for r in rows], greedy,
                                       max_source_length=cfg.max_source_length, source_prefix=cfg.source_prefix,
                                       batch_size=cfg.batch_size * 2, progress=False)
            res = score_texts(preds, [r["summary"] for r in rows], lang, n_resamples=0)
            for key in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
                totals.setdefault(key, []).append(res[key]["f1"])
        return {f"eval_{k}": sum(v) / len(v) for k, v in totals.items()}

    return evaluate


def train(cfg: TrainConfig, log=print) -> dict:
    """Fine-tune ``cfg.model`` on XL-Sum and write the run record.

    Args:
        cfg: a :class:`TrainConfig` (method defaults are filled in).
        log: where progress lines go (the CLI passes rich's console).

    Returns:
        The dict written to ``metrics.json`` (keys in ``docs/run_format.md``).

    Raises:
        PeftsumError: bad config or data, an existing output without ``overwrite``, a refused
            fp16 run, non-finite loss (naming the step), an unusable resume.
    """
    import torch
    from datasets import Dataset
    from transformers import EarlyStoppingCallback, Seq2SeqTrainingArguments, set_seed

    from peftsum.data.features import make_collator, mix_languages, tokenize_rows
    from peftsum.modeling.load import load_model, load_tokenizer
    from peftsum.modeling.methods import MethodHyper, build_peft_config, check_target_modules, get_method, \
        resolve_target_modules
    from peftsum.training.callbacks import JsonlLogCallback, NanGuardCallback, ProgressBarCallback
    from peftsum.training.record import count_parameters, git_commit, library_versions, model_card, \
        peak_gpu_mb, peak_rss_mb, weights_size_mb
    from peftsum.io import write_json_atomic, write_text_atomic

    cfg = resolve(cfg)
    method = get_method(cfg.method)
    out, resume_ckpt = _prepare_output(cfg)
    write_json_atomic(out / CONFIG_FILE, cfg.to_dict())
    set_seed(cfg.seed)

    tokenizer = load_tokenizer(cfg.model)
    model, tie_state = load_model(cfg.model)
    _refuse_fp16(cfg, model)

    _load_rows.dropped = {}
    train_rows = mix_languages(_load_rows(cfg, "train", cfg.train_samples, log), cfg.language_sampling_alpha,
                               cfg.seed)
    val_by_lang = _load_rows(cfg, "validation", cfg.val_samples, log)
    val_rows = [dict(r, language=lang) for lang, rows in val_by_lang.items() for r in rows]
    feats = dict(max_source_length=cfg.max_source_length, max_target_length=cfg.max_target_length,
                 source_prefix=cfg.source_prefix)
    train_ds = Dataset.from_list(tokenize_rows(train_rows, tokenizer, **feats))
    val_ds = Dataset.from_list(tokenize_rows(val_rows, tokenizer, **feats))

    steps_per_epoch = max(1, math.ceil(len(train_ds) / (cfg.batch_size * cfg.gradient_accumulation_steps)))
    total_steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(steps_per_epoch * cfg.num_epochs)
    targets = resolve_target_modules(method, cfg.target_modules)
    hyper = MethodHyper(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                        target_modules=tuple(targets) or None, num_virtual_tokens=cfg.num_virtual_tokens,
                        total_steps=total_steps)
    peft_config = build_peft_config(method, hyper)
    if peft_config is not None:
        from peft import get_peft_model

        check_target_modules(model, targets)
        model = get_peft_model(model, peft_config)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if peft_config is not None:
            model.enable_input_require_grads()
    trainable, total = count_parameters(model)

    evaluate_each = "steps" if cfg.eval_steps else "epoch"
    args = Seq2SeqTrainingArguments(
        output_dir=str(out / "checkpoints"),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size * 2,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        num_train_epochs=cfg.num_epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.lr_scheduler if cfg.lr_scheduler != "constant" else "constant_with_warmup",
        warmup_steps=int(round(cfg.warmup_ratio * total_steps)),
        optim="adafactor" if cfg.optimizer == "adafactor" else "adamw_torch",
        label_smoothing_factor=cfg.label_smoothing,
        max_grad_norm=cfg.max_grad_norm,
        bf16=cfg.bf16,
        fp16=cfg.fp16,
        use_cpu=not torch.cuda.is_available(),
        logging_strategy="steps",
        logging_steps=cfg.logging_steps,
        logging_nan_inf_filter=False,
        eval_strategy=evaluate_each,
        eval_steps=cfg.eval_steps,
        save_strategy=evaluate_each if cfg.save_steps is None else "steps",
        save_steps=cfg.save_steps or cfg.eval_steps or 500,
        save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=cfg.load_best,
        metric_for_best_model="eval_rougeL" if cfg.load_best else None,
        greater_is_better=True if cfg.load_best else None,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        report_to=["tensorboard"] if cfg.tensorboard else [],
        seed=cfg.seed,
        data_seed=cfg.seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
        predict_with_generate=False,
        generation_max_length=cfg.max_target_length,
        save_only_model=False,
    )
    callbacks = [JsonlLogCallback(out / "training_log.jsonl", _resume_step(resume_ckpt)), NanGuardCallback()]
    if cfg.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    trainer = _make_trainer_class()(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        data_collator=make_collator(tokenizer, model),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(ProgressBarCallback(f"{method.name} {'+'.join(cfg.languages)}"))
    if cfg.eval_rouge:
        trainer.rouge_eval = _rouge_evaluator(cfg, val_by_lang, tokenizer)
    if resume_ckpt is not None:
        counters = resume_ckpt / "peftsum_counters.json"
        if counters.is_file():
            c = json.loads(counters.read_text())
            trainer.tokens_seen, trainer.examples_seen = c["tokens_seen"], c["examples_seen"]
        log(f"resuming from {resume_ckpt}")

    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume_ckpt) if resume_ckpt else None)
    runtime = time.perf_counter() - start
    eval_metrics = trainer.evaluate()

    model_dir = out / "model"
    final = trainer.model
    final.save_pretrained(str(model_dir))
    tokenizer.save_pretrained(str(model_dir))

    history = [row for row in trainer.state.log_history if "loss" in row]
    window = history[-max(1, min(len(history), steps_per_epoch)):]
    train_loss = sum(r["loss"] for r in window) / len(window) if window else result.training_loss
    metrics = {
        "method": method.name,
        "model": cfg.model,
        "data": cfg.data,
        "train_languages": cfg.languages,
        "train_rows": len(train_ds),
        "val_rows": len(val_ds),
        "dropped_rows": _load_rows.dropped,
        "trainable_params": trainable,
        "total_params": total,
        "trainable_pct": 100.0 * trainable / total,
        "checkpoint_size_mb": weights_size_mb(model_dir),
        "train_runtime_s": runtime,
        "global_step": trainer.state.global_step,
        "peak_rss_mb": peak_rss_mb(),
        "peak_gpu_mb": peak_gpu_mb(),
        "train_loss": train_loss,
        "eval_loss": eval_metrics.get("eval_loss"),
        "eval_rougeL": eval_metrics.get("eval_rougeL"),
        "tokens_per_second": trainer.tokens_seen / runtime if runtime > 0 else None,
        "examples_per_second": trainer.examples_seen / runtime if runtime > 0 else None,
        "lm_head": tie_state,
        "hyperparameters": {
            "learning_rate": cfg.learning_rate,
            "num_epochs": cfg.num_epochs,
            "max_steps": cfg.max_steps,
            "batch_size": cfg.batch_size,
            "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
            **({k: getattr(cfg, {"r": "lora_r"}.get(k, k)) for k in method.uses if k != "target_modules"}),
            **({"target_modules": targets} if targets else {}),
            "bf16": cfg.bf16,
        },
        "config": cfg.to_dict(),
        "versions": library_versions(),
        "git_commit": git_commit(),
    }
    write_json_atomic(out / "metrics.json", metrics)
    write_text_atomic(out / "README.md", model_card(metrics))
    return metrics


def _resume_step(ckpt: Path | None) -> int | None:
    return int(ckpt.name.split("-")[-1]) if ckpt is not None else None
