"""Run-record helpers: parameter counts, sizes on disk, memory, versions, git commit, model card and the
assembly of ``metrics.json`` (:func:`run_metrics`)."""

from __future__ import annotations

import platform
import resource
import subprocess
import sys
from pathlib import Path

from peftsum.run_format import EVAL_DIR, METRICS_FILE, MODEL_CARD_FILE, RESULTS_FILE


def count_parameters(model) -> tuple[int, int]:
    """Count parameters from the model itself (tied/shared tensors once).

    Args:
        model: a ``torch.nn.Module`` (a PEFT model counts its frozen base too).

    Returns:
        ``(trainable, total)`` numbers of scalar parameters.
    """
    seen: set[int] = set()
    trainable = total = 0
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
    return trainable, total


def weights_size_mb(path: Path) -> float:
    """Size of the weight files (``*.safetensors``, ``*.bin``) under ``path`` in MB."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.suffix in (".safetensors", ".bin")) / 1e6


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (``VmHWM``) of this process, where Linux allows it.

    Writing ``5`` to ``/proc/self/clear_refs`` resets VmHWM (Linux ``proc(5)``), so runs made one
    after another in one process (an experiment) each report their own peak.

    Returns:
        True if the mark was reset.
    """
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident set size of this process since the last :func:`reset_peak_rss`, MB (10^6 bytes).

    Source: ``VmHWM`` in ``/proc/self/status`` on Linux; elsewhere
    ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (bytes on macOS), the peak since process start.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value / 1e6 if sys.platform == "darwin" else value * 1024 / 1e6


def reset_peak_gpu() -> bool:
    """Reset torch's peak-GPU-memory mark of the current device (``torch.cuda.reset_peak_memory_stats``), so
    runs made one after another in one process each report their own :func:`peak_gpu_mb`.

    Returns:
        True if there was a CUDA device to reset.
    """
    import torch

    if not torch.cuda.is_available():
        return False
    torch.cuda.reset_peak_memory_stats()
    return True


def peak_gpu_mb() -> float | None:
    """Peak GPU memory allocated by torch in this process since the last :func:`reset_peak_gpu`, MB (10^6
    bytes), or ``None`` without CUDA.

    Source: ``torch.cuda.max_memory_allocated`` (tensors only; the CUDA context and the caching
    allocator's reserve are not included).
    """
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 1e6
    return None


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries that decide results.

    Returns:
        ``{"python": "3.11.x", "torch": ..., "transformers": ..., ...}``; ``"not installed"`` where missing.
    """
    import importlib.metadata as md

    import torch

    # torch's own string keeps the build (2.11.0+cu130, 2.13.0+cpu), which some wheels' metadata drops
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("peftsum", "transformers", "peft", "datasets", "accelerate", "sentencepiece", "rouge-score"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit() -> str | None:
    """The peftsum source tree's git commit, or ``None`` outside a git checkout (e.g. a wheel install).

    Returns:
        The ``HEAD`` sha, with ``-dirty`` appended when tracked files have uncommitted changes.
    """
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _precision_line(metrics: dict) -> str:
    precision = metrics.get("precision") or ("bf16" if (metrics.get("hyperparameters") or {}).get("bf16") else "fp32")
    where = f" on {metrics['device']}" if metrics.get("device") else ""
    if precision == "bf16":
        return f"bf16 autocast{where} (fp32 master weights; saved weights are fp32)"
    return f"fp32{where}"


def _evaluations_section(evaluations: list[dict] | None) -> str:
    from peftsum.modeling.shipping import scores_table

    if not evaluations:
        return ""
    return ("\n## Evaluations\n\nmultilingual ROUGE F1 (0-100), decoding settings as recorded in each "
            "`eval/<language>/results.json`.\n\n" + scores_table(evaluations) + "\n")


def evaluations_of(run_dir: Path) -> list[dict]:
    """The ``eval/<language>/results.json`` dicts of a run folder, by language (empty when none)."""
    from peftsum.errors import PeftsumError
    from peftsum.run_format import read_results

    out = []
    for res in sorted(Path(run_dir).glob(f"{EVAL_DIR}/*/{RESULTS_FILE}")):
        try:
            out.append(read_results(res))
        except PeftsumError:
            continue  # a corrupt file is reported by the report reader, not here
    return out


def refresh_model_card(run_dir: Path) -> bool:
    """Rewrite a run's ``README.md`` with its evaluations (after ``peftsum evaluate`` wrote one).

    Args:
        run_dir: a run folder with ``metrics.json``.

    Returns:
        Whether the card was written (``False`` when the folder has no ``metrics.json``).
    """
    from peftsum.io import write_text_atomic
    from peftsum.run_format import read_metrics

    metrics_path = Path(run_dir) / METRICS_FILE
    if not metrics_path.is_file():
        return False
    metrics = read_metrics(metrics_path)
    write_text_atomic(Path(run_dir) / MODEL_CARD_FILE, model_card(metrics, evaluations_of(run_dir)))
    return True


def _as_given(metrics: dict) -> str:
    given = metrics.get("model_as_given")
    return f" (given as `{given}`)" if given and given != metrics.get("model") else ""


def _load_snippet(base, is_peft: bool) -> str:
    """The card's "How to load" code: plain ``peft`` / ``transformers`` calls."""
    if is_peft:
        return (
            "from peft import PeftModel\n"
            "from transformers import AutoModelForSeq2SeqLM, AutoTokenizer\n\n"
            f"base = AutoModelForSeq2SeqLM.from_pretrained({base!r})\n"
            "model = PeftModel.from_pretrained(base, \"model\")  # this folder's model/\n"
            "tokenizer = AutoTokenizer.from_pretrained(\"model\")"
        )
    return (
        "from transformers import AutoModelForSeq2SeqLM, AutoTokenizer\n\n"
        "model = AutoModelForSeq2SeqLM.from_pretrained(\"model\")  # this folder's model/\n"
        "tokenizer = AutoTokenizer.from_pretrained(\"model\")"
    )


def _card_header(metrics: dict, is_peft: bool) -> str:
    """The Hugging Face metadata header, the title and the training data sentence."""
    method, base = metrics.get("method"), metrics.get("model")
    languages = metrics.get("train_languages", [])
    sampling = metrics.get("language_sampling") or {}
    mix = ""
    if len(languages) > 1:
        rows = ", ".join(f"{k}: {v}" for k, v in (sampling.get("rows_per_language") or {}).items())
        mix = f" Languages mixed with exponent smoothing p_i ~ n_i^{sampling.get('alpha')} ({rows} training rows)."
    return f"""---
library_name: {"peft" if is_peft else "transformers"}
base_model: {base}
license: cc-by-nc-sa-4.0
datasets: [csebuetnlp/xlsum]
language: [{", ".join(languages)}]
tags: [summarization, xlsum, peftsum, {method}]
---

# {method} fine-tune of {base} for XL-Sum summarization

Trained with peftsum on XL-Sum (data: `{metrics.get("data")}`), training languages:
{", ".join(languages)}.{mix}
"""


def _card_facts(metrics: dict, is_peft: bool) -> str:
    """The card's table: base, method, sizes, data, steps, precision, time, losses and validation ROUGE."""
    trainable, total = metrics.get("trainable_params") or 0, metrics.get("total_params") or 1
    return f"""| | |
| --- | --- |
| base model | {metrics.get("model")}{_as_given(metrics)} |
| method | {metrics.get("method")} |
| trainable parameters | {trainable:,} ({100.0 * trainable / total:.4f}% of {total:,}) |
| {"adapter" if is_peft else "checkpoint"} size | {_fmt(metrics.get("checkpoint_size_mb"))} MB |
| training rows / validation rows | {metrics.get("train_rows")} / {metrics.get("val_rows")} |
| optimizer steps | {metrics.get("global_step")} |
| precision (training) | {_precision_line(metrics)} |
| training time | {_fmt(metrics.get("train_runtime_s"), 1)} s ({_fmt(metrics.get("tokens_per_second"), 0)} tokens/s) |
| final training loss | {_fmt(metrics.get("train_loss"), 4)} |
| validation loss | {_fmt(metrics.get("eval_loss"), 4)} |
| validation ROUGE-1 / 2 / L (greedy, F1) | {_fmt(metrics.get("eval_rouge1"))} / {_fmt(metrics.get("eval_rouge2"))} / {_fmt(metrics.get("eval_rougeL"))} |
| best checkpoint (by ROUGE-L) | {_fmt(metrics.get("best_checkpoint_step"))} |
"""


def _card_usage(metrics: dict, is_peft: bool, evaluations: list[dict] | None) -> str:
    """Hyperparameters, evaluations, how to load and generate, provenance and the data licence."""
    hp = metrics.get("hyperparameters", {})
    hp_rows = "\n".join(f"| {k} | {', '.join(map(str, v)) if isinstance(v, list) else v} |" for k, v in hp.items())
    versions = ", ".join(f"{k} {v}" for k, v in (metrics.get("versions") or {}).items())
    return f"""## Hyperparameters

| name | value |
| --- | --- |
{hp_rows}

The exact resolved config is in `metrics.json` (`config`) and `peftsum_config.json`.
{_evaluations_section(evaluations)}
## How to load

```python
{_load_snippet(metrics.get("model"), is_peft)}
```

Generate with XL-Sum's settings: `num_beams=4, length_penalty=0.6, no_repeat_ngram_size=2, max_new_tokens=84`
(or `peftsum evaluate --model-path <this folder> --language <language> --output-file results.json`).

## Provenance

{versions}; peftsum commit {metrics.get("git_commit") or "unknown"}.

Training data: XL-Sum (Hasan et al., 2021), CC BY-NC-SA 4.0, non-commercial research use only.
"""


def model_card(metrics: dict, evaluations: list[dict] | None = None) -> str:
    """A model card (``README.md``) for a run folder, from its ``metrics.json`` values.

    Args:
        metrics: the dict :func:`peftsum.training.trainer.run_training` writes to ``metrics.json``.
        evaluations: ``results.json`` dicts of the run's evaluations (language, ROUGE, the precision and
            device decoding ran in), shown in an "Evaluations" section; ``None`` = none yet.

    Returns:
        Markdown with a Hugging Face metadata header: base model, method and its
        hyperparameters, training languages and data, training and validation metrics, how to
        load the model (plain ``transformers`` / ``peft`` calls), versions and the peftsum commit.

    Raises:
        ConfigError: ``metrics["method"]`` is not a registry method.
    """
    from peftsum.modeling.methods import get_method

    is_peft = get_method(metrics.get("method")).is_peft
    return "\n".join([_card_header(metrics, is_peft), _card_facts(metrics, is_peft),
                      _card_usage(metrics, is_peft, evaluations)])


def hyperparameters_record(setup) -> dict:
    """``metrics.json``'s ``hyperparameters``: the method's hyperparameters and the training budget.

    Args:
        setup: the :class:`peftsum.training.trainer.TrainingSetup` of the run.
    """
    from peftsum import distributed
    from peftsum.modeling.methods import describe_hyper

    cfg = setup.cfg
    return {  # everything else is in "config"
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


def run_metrics(setup, outcome: dict, model_dir: Path) -> dict:
    """The dict written to ``metrics.json`` (keys in ``docs/run_format.md``).

    Args:
        setup: the :class:`peftsum.training.trainer.TrainingSetup`, after training.
        outcome: what training measured: ``params`` ((trainable, total) before training),
            ``result`` (``trainer.train``'s output), ``runtime`` (seconds) and ``eval`` (the final
            ``trainer.evaluate()`` metrics).
        model_dir: the saved ``model/`` folder (its weights give ``checkpoint_size_mb``).
    """
    from peftsum import distributed
    from peftsum.runtime import precision_name
    from peftsum.training.divergence import check_divergence
    from peftsum.training.output import step_of

    cfg, trainer, runtime, ev = setup.cfg, setup.trainer, outcome["runtime"], outcome["eval"]
    trainable, total = outcome["params"]
    history = [row for row in trainer.state.log_history if "loss" in row]
    window = history[-max(1, min(len(history), setup.steps_per_epoch)):]
    train_loss = sum(r["loss"] for r in window) / len(window) if window else outcome["result"].training_loss
    best = trainer.state.best_model_checkpoint
    as_given = setup.model_as_given or cfg.model
    metrics = {
        "method": setup.method.name, "model": cfg.model, "model_as_given": as_given, "data": cfg.data,
        "train_languages": cfg.languages,
        "language_sampling": {"alpha": cfg.language_sampling_alpha, "rows_per_language": setup.rows_per_language},
        "train_rows": sum(setup.rows_per_language.values()), "val_rows": setup.val_rows,
        "dropped_rows": setup.dropped,
        "trainable_params": trainable, "total_params": total, "trainable_pct": 100.0 * trainable / total,
        "checkpoint_size_mb": weights_size_mb(model_dir),
        "train_runtime_s": runtime,
        "global_step": trainer.state.global_step,
        "resumed_from_step": step_of(setup.resume_from) if setup.resume_from else None,
        "best_checkpoint_step": step_of(Path(best)) if best else None,
        "best_metric": trainer.state.best_metric,
        "precision": precision_name(cfg.bf16),  # "bf16" (autocast, fp32 master weights) or "fp32"
        "device": str(trainer.args.device), "peak_rss_mb": peak_rss_mb(), "peak_gpu_mb": peak_gpu_mb(),
        "train_loss": train_loss,
        **{key: ev.get(key) for key in ("eval_loss", "eval_rouge1", "eval_rouge2", "eval_rougeL", "eval_rougeLsum")},
        "tokens_seen": trainer.tokens_seen, "examples_seen": trainer.examples_seen,
        "tokens_per_second": trainer.session_tokens / runtime if runtime > 0 else None,
        "examples_per_second": trainer.session_examples / runtime if runtime > 0 else None,
        "lm_head": setup.tie_state,
        "hyperparameters": hyperparameters_record(setup),
        "config": {**distributed.run_config_record(cfg), "model_as_given": as_given},  # = peftsum_config.json
        "versions": library_versions(), "git_commit": git_commit(),
    }
    metrics.update(check_divergence([r["loss"] for r in history], getattr(trainer.model.config, "vocab_size", None),
                                    metrics["eval_loss"]))
    return metrics
