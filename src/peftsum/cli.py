"""peftsum's command line: parses arguments and calls the library. No logic lives here.

Every command runs inside :func:`_run`, which turns a :class:`~peftsum.errors.PeftsumError`
(and a few well-known library errors) into one line on stderr and exit status 2.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console

from peftsum.errors import PeftsumError

app = typer.Typer(
    help=(
        "Full fine-tuning vs LoRA (and other PEFT methods) for multilingual summarization on "
        "XL-Sum, scored with multilingual ROUGE. Start with `peftsum experiment`."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
data_app = typer.Typer(help="Load, validate and describe XL-Sum data.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console(soft_wrap=True)
err_console = Console(stderr=True)


def _run(fn: Callable) -> Callable:
    """Decorator: run a command, printing a one-line error (exit 2) for bad input."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PeftsumError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/] (a training run continues with --resume)")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as exc:  # a library error we did not anticipate: still one line
            if os.environ.get("PEFTSUM_DEBUG"):
                raise
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            err_console.print(f"[bold red]error:[/] {type(exc).__name__}: {first} "
                              "(set PEFTSUM_DEBUG=1 to see the traceback)", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


DataOpt = typer.Option(
    "sample",
    "--data",
    help="Where XL-Sum comes from: 'sample' (bundled real rows, offline), 'hub' (csebuetnlp/xlsum), or a local folder/file.",
)


# --------------------------------------------------------------------------- data
@data_app.command("languages")
@_run
def data_languages() -> None:
    """List XL-Sum's 45 languages with ISO code and script."""
    from rich.table import Table

    from peftsum.data.languages import LANGUAGES

    table = Table("language", "code", "script")
    for lang in LANGUAGES.values():
        table.add_row(lang.name, lang.code, lang.script)
    console.print(table)


@data_app.command("validate")
@_run
def data_validate(
    path: Path = typer.Argument(..., help="A .jsonl file or a folder in the official or per-language layout."),
) -> None:
    """Check XL-Sum JSONL files: malformed lines are errors (file:line); bad rows are counted by reason."""
    from peftsum.data.validate import validate_path

    report = validate_path(path)
    for file, kept, dropped in report:
        reasons = ", ".join(f"{n} {r}" for r, n in dropped.items()) or "none"
        console.print(f"{file}: {kept} valid rows; dropped: {reasons}")


@data_app.command("cache")
@_run
def data_cache(
    clear: bool = typer.Option(False, "--clear", help="Delete every cached table (the next run rebuilds what it needs)."),
) -> None:
    """Where validated and tokenized XL-Sum is cached (Arrow files) and its size; --clear empties it."""
    from peftsum.data.cache import cache_usage, clear_cache, human_bytes

    if clear:
        before = clear_cache()
        console.print(f"data cache {before.path}: removed {before.files} files ({human_bytes(before.bytes)})")
        return
    usage = cache_usage()
    where = "" if usage.path.is_dir() else " (not created yet)"
    console.print(f"data cache {usage.path}{where}: {human_bytes(usage.bytes)} in {usage.files} files "
                  f"({usage.row_files} validated row tables, {usage.feature_files} tokenized tables); "
                  "empty it with `peftsum data cache --clear`")


@data_app.command("stats")
@_run
def data_stats(
    language: str = typer.Option(..., "--language", "-l", help="XL-Sum language, e.g. russian."),
    data: str = DataOpt,
    tokenizer: Optional[str] = typer.Option(
        None, help="Tokenizer for token lengths (hub id or folder); default: the offline tiny model's."
    ),
    output_file: Optional[Path] = typer.Option(None, help="Also write the statistics as JSON."),
) -> None:
    """Rows per split, length percentiles (characters, tokens), compression, novel n-grams."""
    from peftsum.data.stats import language_stats
    from peftsum.io import write_json_atomic
    from peftsum.modeling.load import load_tokenizer
    from peftsum.modeling.tiny import ensure_tiny_model
    from peftsum.display import print_stats

    from peftsum.data.languages import get_language

    language = get_language(language).name
    tok = load_tokenizer(tokenizer or str(ensure_tiny_model()))
    stats = language_stats(language, data, tok)
    print_stats(console, stats)
    if output_file:
        write_json_atomic(output_file, stats)


@app.command("build-tiny-model")
@_run
def build_tiny(
    output_dir: Path = typer.Option(..., help="Folder to write (a standard Hugging Face model directory)."),
    seed: int = typer.Option(0, help="Seeds SentencePiece and the weights; same seed, same files."),
    overwrite: bool = typer.Option(False, help="Replace an existing folder."),
) -> None:
    """Train a SentencePiece tokenizer on the bundled rows of all 45 languages and save a tiny random mT5."""
    from peftsum.modeling.tiny import TinyModelSpec, build_tiny_model

    out = build_tiny_model(output_dir, TinyModelSpec(seed=seed), overwrite=overwrite)
    console.print(f"tiny mT5 written to {out}")


@app.command("methods")
@_run
def methods() -> None:
    """List the fine-tuning methods with their default learning rate, rank and target modules (mT5)."""
    from rich.table import Table

    from peftsum.modeling.methods import ALL_LINEAR, METHODS

    table = Table("method", "default lr", "default r", "target_modules (mT5)", "uses", "what it is")
    for m in METHODS.values():
        table.add_row(m.name, f"{m.learning_rate:g}", str(m.r) if m.r else "-", ",".join(m.target_modules) or "-",
                      ", ".join(m.uses) or "-", m.summary)
    console.print(table)
    console.print(f"--target-modules all-linear = {','.join(ALL_LINEAR)}")


@app.command("train")
@_run
def train_cmd(
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file; any flag below can come from it."),
    method: Optional[str] = typer.Option(None, help="full, lora, dora, rslora, pissa, ia3, adalora, prefix, prompt, loha, vera (see `peftsum methods`)."),
    model: Optional[str] = typer.Option(None, help="Hub id (google/mt5-small) or folder. 'tiny' = the offline tiny model."),
    language: Optional[list[str]] = typer.Option(None, "--language", "-l", help="XL-Sum language(s); repeat or comma-separate."),
    data: Optional[str] = typer.Option(None, help="sample (bundled), hub, or a local folder/file."),
    output_dir: Optional[str] = typer.Option(None, help="Run folder."),
    num_epochs: Optional[float] = typer.Option(None, help="Passes over the training rows."),
    max_steps: Optional[int] = typer.Option(None, help="Optimizer steps (overrides epochs)."),
    batch_size: Optional[int] = typer.Option(None, help="Examples per micro-batch."),
    gradient_accumulation_steps: Optional[int] = typer.Option(None, help="Micro-batches per optimizer step."),
    learning_rate: Optional[float] = typer.Option(None, help="Peak learning rate (default: the method's)."),
    weight_decay: Optional[float] = typer.Option(None, help="Decoupled weight decay (default 0)."),
    optimizer: Optional[str] = typer.Option(None, help="adamw or adafactor."),
    lr_scheduler: Optional[str] = typer.Option(None, help="linear, constant or cosine (after warmup)."),
    warmup_ratio: Optional[float] = typer.Option(None, help="Share of steps for linear warmup."),
    label_smoothing: Optional[float] = typer.Option(None, help="Label smoothing (XL-Sum: 0.1)."),
    max_grad_norm: Optional[float] = typer.Option(None, help="Gradient clipping norm (default 1.0)."),
    train_samples: Optional[int] = typer.Option(None, help="Training rows per language (default all)."),
    val_samples: Optional[int] = typer.Option(None, help="Validation rows per language (default all)."),
    max_source_length: Optional[int] = typer.Option(None, help="Article tokens kept (default 512)."),
    max_target_length: Optional[int] = typer.Option(None, help="Summary tokens kept and generated (default 84)."),
    source_prefix: Optional[str] = typer.Option(None, help="Task prefix, e.g. 'summarize: ' (default none)."),
    lora_r: Optional[int] = typer.Option(None, help="Adapter rank r (default: the method's, 8; VeRA 256)."),
    lora_alpha: Optional[int] = typer.Option(None, help="lora_alpha (default 16)."),
    lora_dropout: Optional[float] = typer.Option(None, help="Adapter dropout (default 0.1)."),
    target_modules: Optional[str] = typer.Option(None, help="Comma-separated module names, or all-linear."),
    num_virtual_tokens: Optional[int] = typer.Option(None, help="Prefix/prompt length (default 20)."),
    language_sampling_alpha: Optional[float] = typer.Option(None, help="Multilingual sampling exponent (default 0.5)."),
    seed: Optional[int] = typer.Option(None, help="Random seed (default 42)."),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16", help="bf16 autocast (default: auto, on for an Ampere+ GPU or a CPU with AMX/AVX512-BF16)."),
    fp16: Optional[bool] = typer.Option(None, "--fp16", help="fp16 (refused for T5/mT5: use --bf16)."),
    gradient_checkpointing: Optional[bool] = typer.Option(None, "--gradient-checkpointing", help="Save memory."),
    group_by_length: Optional[bool] = typer.Option(None, "--group-by-length/--no-group-by-length",
                                                   help="Batch similar lengths together (default on)."),
    logging_steps: Optional[int] = typer.Option(None, help="Log every N steps (default 1)."),
    eval_steps: Optional[int] = typer.Option(None, help="Evaluate every N steps (default each epoch; 0 = only at the end)."),
    eval_rouge: Optional[bool] = typer.Option(None, "--eval-rouge", help="ROUGE (greedy) at each evaluation."),
    eval_rouge_samples: Optional[int] = typer.Option(None, help="Validation rows per language decoded for ROUGE (default 32)."),
    save_steps: Optional[int] = typer.Option(None, help="Checkpoint every N steps (default: at each evaluation)."),
    save_total_limit: Optional[int] = typer.Option(None, help="Checkpoints kept (default 2; the best is kept too)."),
    load_best: Optional[bool] = typer.Option(None, "--load-best", help="Finish with the best checkpoint by ROUGE-L."),
    early_stopping_patience: Optional[int] = typer.Option(None, help="Evaluations without improvement before stopping."),
    tensorboard: Optional[bool] = typer.Option(None, "--tensorboard", help="Log to TensorBoard (<output-dir>/tensorboard)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest complete checkpoint in --output-dir."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run folder."),
) -> None:
    """Fine-tune a seq2seq model on XL-Sum (full or PEFT) and write metrics.json, training_log.jsonl and a model card."""
    overrides = {k: v for k, v in locals().items() if k != "config"}
    from peftsum.config import train_config_from
    from peftsum.modeling.tiny import ensure_tiny_model
    from peftsum.training.trainer import train

    overrides["languages"] = overrides.pop("language")
    overrides["resume"] = resume or None
    overrides["overwrite"] = overwrite or None
    cfg = train_config_from(config, overrides)
    if cfg.model == "tiny":
        cfg.model = str(ensure_tiny_model())
    metrics = train(cfg, log=console.print)
    val = "n/a" if metrics["eval_loss"] is None else f"{metrics['eval_loss']:.4f}"
    console.print(
        f"[bold]{metrics['method']}[/]: trainable {metrics['trainable_params']:,} "
        f"({metrics['trainable_pct']:.3f}%), {metrics['checkpoint_size_mb']:.2f} MB on disk, "
        f"{metrics['train_runtime_s']:.1f} s, train loss {metrics['train_loss']:.4f}, "
        f"val loss {val} -> {cfg.output_dir}"
    )


def _settings(num_beams, length_penalty, no_repeat_ngram_size, max_new_tokens):
    from peftsum.generation.decode import GenerationSettings

    return GenerationSettings(num_beams=num_beams, length_penalty=length_penalty,
                              no_repeat_ngram_size=no_repeat_ngram_size, max_new_tokens=max_new_tokens)


NumBeams = typer.Option(4, help="Beam width (XL-Sum: 4; 1 = greedy).")
LengthPenalty = typer.Option(0.6, help="Beam length_penalty (XL-Sum: 0.6).")
NoRepeat = typer.Option(2, help="no_repeat_ngram_size (XL-Sum: 2; 0 = off).")
MaxNew = typer.Option(84, help="Maximum new tokens per summary (XL-Sum: 84).")


@app.command("evaluate")
@_run
def evaluate_cmd(
    model_path: str = typer.Option(..., help="Run folder, checkpoint, adapter folder or hub id."),
    language: str = typer.Option(..., "--language", "-l", help="Language of the evaluation rows."),
    output_file: Path = typer.Option(..., help="Results JSON; predictions.jsonl is written beside it."),
    split: Optional[str] = typer.Option(None, help="test or validation (default: test where present)."),
    data: str = DataOpt,
    test_samples: Optional[int] = typer.Option(None, help="Evaluate the first N rows (default all)."),
    batch_size: int = typer.Option(32, help="Articles per generate call."),
    num_beams: int = NumBeams,
    length_penalty: float = LengthPenalty,
    no_repeat_ngram_size: int = NoRepeat,
    max_new_tokens: int = MaxNew,
    stemmer: Optional[bool] = typer.Option(None, "--stemmer/--no-stemmer", help="Default: XL-Sum's choice per language."),
    overwrite: bool = typer.Option(False, help="Replace existing results/predictions."),
) -> None:
    """Generate summaries (batched beam search), stream them to disk and score them with multilingual ROUGE."""
    from peftsum.generation.evaluate import evaluate_model
    from peftsum.display import print_scores

    result = evaluate_model(model_path, language, output_file, split, data, test_samples,
                            _settings(num_beams, length_penalty, no_repeat_ngram_size, max_new_tokens),
                            batch_size, stemmer=stemmer, overwrite=overwrite, log=console.print)
    print_scores(console, result)
    console.print(f"results: {output_file}; predictions: {output_file.parent / 'predictions.jsonl'}")


@app.command("generate")
@_run
def generate_cmd(
    model_path: str = typer.Option(..., help="Run folder, checkpoint, adapter folder or hub id."),
    language: str = typer.Option(..., "--language", "-l", help="Language of the articles."),
    output_file: Path = typer.Option(..., help="Text file with article start, reference and prediction."),
    num_samples: int = typer.Option(10, help="How many articles."),
    split: Optional[str] = typer.Option(None, help="test or validation (default: test where present)."),
    data: str = DataOpt,
    num_beams: int = NumBeams,
    length_penalty: float = LengthPenalty,
    no_repeat_ngram_size: int = NoRepeat,
    max_new_tokens: int = MaxNew,
    overwrite: bool = typer.Option(False, help="Replace an existing file."),
) -> None:
    """Write sample summaries side by side with the reference, for reading."""
    from peftsum.generation.evaluate import write_samples

    out = write_samples(model_path, language, output_file, num_samples, split, data,
                        _settings(num_beams, length_penalty, no_repeat_ngram_size, max_new_tokens),
                        overwrite=overwrite)
    console.print(out.read_text(encoding="utf-8"), highlight=False, markup=False)


@app.command("merge")
@_run
def merge_cmd(
    adapter: Path = typer.Option(..., help="PEFT adapter folder (or a run folder with model/)."),
    output_dir: Path = typer.Option(..., help="Where the standalone merged model goes."),
    overwrite: bool = typer.Option(False, help="Replace an existing folder."),
) -> None:
    """Merge an adapter into its base model: one standalone checkpoint to ship."""
    from peftsum.modeling.merge import merge_adapter

    out = merge_adapter(adapter, output_dir, overwrite)
    console.print(f"merged model written to {out}")


@app.command("experiment")
@_run
def experiment_cmd(
    config: Optional[Path] = typer.Argument(None, help="Experiment YAML (default: the embedded offline demo)."),
    output_dir: Optional[Path] = typer.Option(None, help="Experiment folder (default: peftsum_runs/<name>)."),
    overwrite: bool = typer.Option(False, help="Start over in an existing folder that holds another experiment."),
    set_: Optional[list[str]] = typer.Option(
        None, "--set", help="Override a config key, e.g. --set train.max_steps=100 --set languages=[hindi,urdu]."
    ),
    show_config: bool = typer.Option(False, "--show-config", help="Print the resolved config and exit."),
) -> None:
    """Run methods x languages x seeds with equal budgets, evaluate, score baselines and write the report.

    With no CONFIG this is the offline demo: a tiny mT5 pretrained on the bundled rows, then full
    fine-tuning, LoRA and IA3 on English and Russian (about 5-8 minutes on 2 CPU cores).
    Finished runs are skipped when the same experiment is run again.
    """
    import yaml

    from peftsum.experiments.config import default_config_path, load_experiment
    from peftsum.experiments.runner import run_experiment

    cfg = load_experiment(config, set_)
    if show_config:
        console.print(yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True), markup=False)
        console.print(f"(from {config or default_config_path()})")
        return
    exp_dir = output_dir or Path("peftsum_runs") / cfg.name
    result = run_experiment(cfg, exp_dir, overwrite=overwrite, log=console.print)
    failed = [k for k, v in result["runs"].items() if v.get("status") != "done"]
    console.print(f"experiment finished in {result['seconds']:.0f} s: {len(result['runs']) - len(failed)} runs done"
                  + (f", {len(failed)} failed ({', '.join(failed)})" if failed else ""))
    if result["report"]:
        for name, path in result["report"].items():
            console.print(f"{name}: {path}")
    if failed:
        raise typer.Exit(1)


@app.command("report")
@_run
def report(
    run_dir: Path = typer.Argument(
        ..., help="Experiment folder (holding runs/<run_id>/) or a single run folder.", show_default=False
    ),
    samples: int = typer.Option(3, "--samples", min=0, help="Sample summaries shown per language."),
) -> None:
    """Write report.md, a self-contained report.html and figures/*.png from the run files in RUN_DIR."""
    from peftsum.reporting import write_report

    paths = write_report(run_dir, n_samples=samples)
    n_fig = sum(1 for key in paths if key.startswith("figures/"))
    figs = f"{n_fig} figure{'' if n_fig == 1 else 's'}"
    console.print(f"wrote {paths['markdown']}, {paths['html']} and {figs} in {run_dir / 'figures'}", highlight=False)


@app.command("score")
@_run
def score_cmd(
    language: str = typer.Option(..., "--language", "-l", help="XL-Sum language of the texts (name or ISO code)."),
    predictions: Path = typer.Option(..., help="One prediction per line, or JSON lines with a 'prediction' field."),
    references: Path = typer.Option(..., help="One reference per line, or JSON lines with 'reference'/'summary'."),
    stemmer: Optional[bool] = typer.Option(None, "--stemmer/--no-stemmer", help="Default: XL-Sum's choice per language."),
    normalize: bool = typer.Option(True, "--normalize/--no-normalize", help="NFKC-normalize both sides (XL-Sum does not)."),
    output_file: Optional[Path] = typer.Option(None, help="Write the score JSON here."),
    overwrite: bool = typer.Option(False, help="Replace an existing --output-file."),
    compare_predictions: Optional[Path] = typer.Option(
        None, help="A second system's predictions on the same references: adds a paired bootstrap test."
    ),
    n_resamples: int = typer.Option(1000, min=1, help="Bootstrap resamples."),
    seed: int = typer.Option(0, help="Bootstrap seed."),
) -> None:
    """Score predictions against references with multilingual ROUGE (XL-Sum's tokenization)."""
    from peftsum.io import ensure_writable_target
    from peftsum.metrics.io import render_table, score_files, write_json

    if output_file is not None:
        ensure_writable_target(output_file, overwrite, alternative=None)

    result = score_files(language, predictions, references, compare_predictions=compare_predictions,
                         stemmer=stemmer, normalize=normalize, n_resamples=n_resamples, seed=seed)
    console.print(render_table(result))
    if output_file is not None:
        write_json(result, output_file)
        console.print(f"scores: {output_file}", highlight=False)


def main() -> None:
    """Console-script entry point (``peftsum``)."""
    # deprecation notices from inside transformers/peft tell users nothing they can act on
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*embeddings are no longer tied.*")
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
