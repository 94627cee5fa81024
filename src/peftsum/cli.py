"""peftsum's command line: parses arguments and calls the library. No logic lives here.

Every command runs inside :func:`_run`, which turns a :class:`~peftsum.errors.PeftsumError`
(and a few well-known library errors) into one line on stderr and exit status 2.

Why one file (about 530 lines): it is the list of commands, read top to bottom like ``peftsum --help``.
Each command is a thin typer function (its options and one call into the library), and the commands
share :func:`_run`, the ``--data`` option and the decoding-settings and split helpers. Splitting it
by command group would spread that shared part over modules without making any command shorter.
"""

from __future__ import annotations

import functools
import inspect
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


_INTERRUPTED = {
    "train_cmd": ": to continue from the last complete checkpoint, run the same command again with --resume added",
    "experiment_cmd": ": to continue, run the same command again (finished runs are skipped; an interrupted "
                      "run resumes from its last complete checkpoint)",
}
"""What to type after Ctrl-C, per command (the function name); other commands just say interrupted."""


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
            err_console.print(f"[bold red]interrupted[/]{_INTERRUPTED.get(fn.__name__, '')}", highlight=False)
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
    from peftsum.languages import LANGUAGES
    from peftsum.display import make_table

    table = make_table("language", "code", "script")
    for lang in LANGUAGES.values():
        table.add_row(lang.name, lang.code, lang.script)
    console.print(table)


@data_app.command("validate")
@_run
def data_validate(
    path: Path = typer.Argument(..., help="A .jsonl file or a folder in the official or per-language layout."),
    allow_drops: bool = typer.Option(False, "--allow-drops", help="Exit 0 even when rows are dropped (empty, null or missing text/summary)."),
) -> None:
    """Check XL-Sum JSONL files: every malformed line (file:line:column) and every dropped row (by reason, with lines).

    Exits 2 when a line is malformed or a row is dropped (--allow-drops accepts dropped rows).
    """
    from peftsum.data.validate import check_path, verdict

    checks = check_path(path)
    for check in checks:
        for line in check.lines():
            console.print(line, highlight=False, markup=False)
    problem = verdict(checks, allow_drops)
    if problem:
        raise PeftsumError(problem)


@data_app.command("cache")
@_run
def data_cache(
    clear: bool = typer.Option(False, "--clear", help="Delete every cached table (the next run rebuilds what it needs)."),
) -> None:
    """Where validated and tokenized XL-Sum is cached (Arrow files) and its size; --clear empties it."""
    from peftsum.data.cache import cache_usage, clear_cache, human_bytes

    if clear:
        removed = clear_cache()
        left = cache_usage(removed.path)
        kept = f"; {left.files} other files left untouched" if left.files else ""
        console.print(f"data cache {removed.path}: removed {removed.files} files ({human_bytes(removed.bytes)}){kept}")
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

    from peftsum.languages import get_language

    language = get_language(language).name
    tok_name = (f"the tokenizer of {tokenizer}" if tokenizer else
                f"the offline tiny mT5's tokenizer ({ensure_tiny_model()}; --tokenizer picks another)")
    tok = load_tokenizer(tokenizer or str(ensure_tiny_model()))
    stats = language_stats(language, data, tok)
    stats["tokenizer"] = tokenizer or str(ensure_tiny_model())
    print_stats(console, stats)
    console.print(f"token counts use {tok_name}", highlight=False)
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
    from peftsum.display import make_table
    from peftsum.modeling.methods import ALL_LINEAR, METHODS

    table = make_table("method", "lr", "r", "target_modules", "options it reads", numeric=("lr", "r"),
                       title="Fine-tuning methods (defaults for mT5)")
    for m in METHODS.values():
        table.add_row(m.name, f"{m.learning_rate:g}", str(m.r) if m.r else "-", ",".join(m.target_modules) or "-",
                      ", ".join(m.uses) or "-")
    console.print(table)
    for m in METHODS.values():
        console.print(f"[bold]{m.name}[/]: {m.summary}", highlight=False)
    console.print(f"--target-modules all-linear = {','.join(ALL_LINEAR)}", highlight=False)


def train_cmd(config: Optional[Path] = None, set_: Optional[list[str]] = None, dry_run: bool = False,
              **fields) -> None:
    """Fine-tune a seq2seq model on XL-Sum (full or PEFT) and write metrics.json, training_log.jsonl and a model card.

    Every option but --config, --set and --dry-run is a field of peftsum.config.TrainConfig (the same keys a
    --config file and an experiment's train: section take).
    """
    from peftsum.config import train_config_from
    from peftsum.modeling.tiny import resolve_model_name
    from peftsum.training.ranges import check_train_ranges
    from peftsum.training.trainer import train

    cfg = train_config_from(config, fields, set_)
    check_train_ranges(cfg)  # before the tiny model is built or anything loads
    cfg.model = resolve_model_name(cfg.model)
    if dry_run:
        from peftsum.training.memory import dry_run as memory_dry_run

        console.print(memory_dry_run([cfg])[1], markup=False, highlight=False)
        return
    metrics = train(cfg, log=console.print)
    val = "n/a" if metrics["eval_loss"] is None else f"{metrics['eval_loss']:.4f}"
    console.print(
        f"[bold]{metrics['method']}[/]: trainable {metrics['trainable_params']:,} "
        f"({metrics['trainable_pct']:.3f}%), {metrics['checkpoint_size_mb']:.2f} MB on disk, "
        f"{metrics['train_runtime_s']:.1f} s, train loss {metrics['train_loss']:.4f}, "
        f"val loss {val} -> {cfg.output_dir}"
    )


def _train_signature() -> inspect.Signature:
    """``train``'s options: --config, one per TrainConfig field (:func:`peftsum.options.config_options`),
    --set and --dry-run."""
    from peftsum.config import TrainConfig
    from peftsum.options import TRAIN_FLAGS, config_options

    def keyword(name, annotation, option):
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)

    return inspect.Signature([
        keyword("config", Optional[Path], typer.Option(None, "--config", help="YAML file of TrainConfig keys; "
                                                       "any option below can come from it (options win).")),
        *config_options(TrainConfig, TRAIN_FLAGS),
        keyword("set_", Optional[list[str]], typer.Option(
            None, "--set", help="Set a config key, e.g. --set max_steps=100 --set languages=\\[hindi,urdu] (values "
            "as YAML; repeat). Over --config, under the options above.")),
        keyword("dry_run", bool, typer.Option(False, "--dry-run", help="Print the memory per device (per world size) "
                                              "and exit; loads no weights.")),
    ])


_train = _run(train_cmd)
_train.__signature__ = _train_signature()
app.command("train")(_train)


def _settings(num_beams, length_penalty, no_repeat_ngram_size, max_new_tokens):
    from peftsum.generation.decode import GenerationSettings

    return GenerationSettings(num_beams=num_beams, length_penalty=length_penalty,
                              no_repeat_ngram_size=no_repeat_ngram_size, max_new_tokens=max_new_tokens)


NumBeams = typer.Option(4, min=1, help="Beam width (XL-Sum: 4; 1 = greedy).")
LengthPenalty = typer.Option(0.6, help="Beam length_penalty (XL-Sum: 0.6).")
NoRepeat = typer.Option(2, min=0, help="no_repeat_ngram_size (XL-Sum: 2; 0 = off).")
MaxNew = typer.Option(84, min=1, help="Maximum new tokens per summary (XL-Sum: 84).")
InferBf16 = typer.Option(None, "--bf16/--no-bf16", help="Decode under bf16 autocast (default: the run's training "
                         "precision; PEFTSUM_BF16 or the hardware for a model peftsum did not train).")
DeviceOpt = typer.Option(None, "--device", help="cpu, cuda or cuda:N (default: CUDA when available, else CPU; "
                         "PEFTSUM_DEVICE sets it too).")


def _check_split(value: Optional[str]) -> Optional[str]:
    """``--split`` takes what its help says: test or validation."""
    if value is not None and value not in ("test", "validation"):
        raise typer.BadParameter(f"{value!r} is not one of 'test', 'validation'")
    return value


SplitOpt = typer.Option(None, callback=_check_split,
                        help="test or validation (default: test where present, else validation; said on the console).")


def _eval_split(language: str, data: str, split: str | None) -> str:
    """``split`` as given; when not given and the language has no test rows, say that validation is used."""
    if split is not None:
        return split
    from peftsum.languages import get_language
    from peftsum.data.xlsum import eval_split

    chosen = eval_split(language, data)
    if chosen != "test":
        console.print(f"note: {get_language(language).name} has no test rows in --data {data}; "
                      f"using the {chosen} split", highlight=False)
    return chosen


@app.command("evaluate")
@_run
def evaluate_cmd(
    model_path: str = typer.Option(..., help="Run folder, checkpoint, adapter folder or hub id."),
    language: str = typer.Option(..., "--language", "-l", help="Language of the evaluation rows."),
    output_file: Path = typer.Option(..., help="Results JSON; predictions.jsonl is written beside it."),
    split: Optional[str] = SplitOpt,
    data: str = DataOpt,
    test_samples: Optional[int] = typer.Option(None, "--test-samples", "--num-samples", min=1,
                                               help="Evaluate the first N rows of the split (default all)."),
    batch_size: int = typer.Option(32, min=1, help="Articles per generate call."),
    num_beams: int = NumBeams,
    length_penalty: float = LengthPenalty,
    no_repeat_ngram_size: int = NoRepeat,
    max_new_tokens: int = MaxNew,
    stemmer: Optional[bool] = typer.Option(None, "--stemmer/--no-stemmer", help="Default: XL-Sum's choice per language."),
    overwrite: bool = typer.Option(False, help="Replace existing results/predictions."),
    bf16: Optional[bool] = InferBf16,
    device: Optional[str] = DeviceOpt,
) -> None:
    """Generate summaries (batched beam search), stream them to disk and score them with multilingual ROUGE."""
    from peftsum.generation.evaluate import evaluate_model
    from peftsum.display import print_scores

    from peftsum.locking import folder_lock

    split = _eval_split(language, data, split)
    with folder_lock(output_file.parent, "evaluate"):  # results and predictions.jsonl: one writer
        result = evaluate_model(model_path, language, output_file, split, data, test_samples,
                                _settings(num_beams, length_penalty, no_repeat_ngram_size, max_new_tokens),
                                batch_size, stemmer=stemmer, overwrite=overwrite, log=console.print, bf16=bf16,
                                device=device)
    print_scores(console, result)
    console.print(f"results: {output_file}; predictions: {output_file.parent / 'predictions.jsonl'}")


@app.command("generate")
@_run
def generate_cmd(
    model_path: str = typer.Option(..., help="Run folder, checkpoint, adapter folder or hub id."),
    language: str = typer.Option(..., "--language", "-l", help="Language of the articles."),
    output_file: Path = typer.Option(..., help="Text file with article start, reference and prediction."),
    num_samples: int = typer.Option(10, min=1, help="How many articles."),
    split: Optional[str] = SplitOpt,
    data: str = DataOpt,
    num_beams: int = NumBeams,
    length_penalty: float = LengthPenalty,
    no_repeat_ngram_size: int = NoRepeat,
    max_new_tokens: int = MaxNew,
    overwrite: bool = typer.Option(False, help="Replace an existing file."),
    bf16: Optional[bool] = InferBf16,
    device: Optional[str] = DeviceOpt,
) -> None:
    """Write sample summaries side by side with the reference, for reading."""
    from peftsum.generation.evaluate import write_samples

    split = _eval_split(language, data, split)
    out = write_samples(model_path, language, output_file, num_samples, split, data,
                        _settings(num_beams, length_penalty, no_repeat_ngram_size, max_new_tokens),
                        overwrite=overwrite, bf16=bf16, device=device)
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


@app.command("serve")
@_run
def serve_cmd(
    model: str = typer.Option(..., help="Base model every adapter was trained on (hub id or folder; 'tiny' = offline tiny model)."),
    adapter: Optional[list[str]] = typer.Option(None, "--adapter", help="NAME=DIR: a run folder, adapter folder or full checkpoint (repeat)."),
    adapters_from: Optional[list[str]] = typer.Option(None, "--adapters-from", help="Experiment folder: serve every PEFT run, named by run id (repeat)."),
    include_full: bool = typer.Option(False, "--include-full", help="With --adapters-from, also serve full fine-tuning runs (each a whole model)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8080, min=0, max=65535, help="Port to listen on (0: a free port, printed at start)."),
    window_ms: float = typer.Option(5.0, min=0.0, help="Micro-batching window after the first waiting request (ms)."),
    max_batch: int = typer.Option(16, min=1, help="Requests per generate call at most."),
    max_queue: int = typer.Option(256, min=1, help="Requests waiting or decoding at most (503 beyond)."),
    max_resident_mb: float = typer.Option(2048.0, min=0.0, help="Cap on resident adapters (MB); least recently used are evicted and reloaded on demand."),
    max_input_chars: int = typer.Option(50000, min=1, help="Longest article accepted, characters (413 beyond)."),
    device: Optional[str] = typer.Option(None, help="auto (default: CUDA when available), cpu, cuda or cuda:N."),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16", help="Decode under bf16 autocast (default: "
                                        "PEFTSUM_BF16, else where the hardware runs bf16 natively)."),
) -> None:
    """Serve one base model and many adapters over HTTP (POST /generate, /generate_stream, GET /info, /metrics, /)."""
    from peftsum.serving.app import bind_socket, load_registry, serve

    sock = bind_socket(host, port)  # before loading: a taken port fails at once; --port 0 picks a free one
    registry = load_registry(model, adapter, adapters_from, max_resident_mb, include_full, device, log=console.print,
                             bf16=bf16)
    shown = f"[{host}]" if ":" in host else host
    console.print(f"serving {registry.base_name} + {len(registry.entries)} adapter(s) on "
                  f"http://{shown}:{sock.getsockname()[1]}/ ({registry.device}, {'bf16' if registry.bf16 else 'fp32'})",
                  highlight=False)
    serve(registry, host, port, sock=sock, window_ms=window_ms, max_batch=max_batch, max_queue=max_queue,
          max_input_chars=max_input_chars)


@app.command("experiment")
@_run
def experiment_cmd(
    config: Optional[Path] = typer.Argument(None, help="Experiment YAML (default: the embedded offline demo)."),
    output_dir: Optional[Path] = typer.Option(None, help="Experiment folder (default: peftsum_runs/<name>, "
                                              "peftsum.experiments.config.experiment_dir)."),
    overwrite: bool = typer.Option(False, help="Start over in an existing folder that holds another experiment."),
    set_: Optional[list[str]] = typer.Option(
        None, "--set", help="Override a config key, e.g. --set train.max_steps=100 --set languages=\\[hindi,urdu] (a list in YAML "
        "brackets; a single name is a list of one)."
    ),
    show_config: bool = typer.Option(False, "--show-config", help="Print the resolved config and exit."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted experiment (a plain rerun does the same)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print each method's memory per device (per world size) and exit."),
) -> None:
    """Run methods x languages x seeds with equal budgets, evaluate, score baselines and write the report.

    With no CONFIG this is the offline demo: a tiny mT5 pretrained on the bundled rows, then full
    fine-tuning, LoRA and IA3 on English and Russian (about 4-5 minutes on 2 idle CPU cores).
    Finished runs are skipped when the same experiment is run again; an interrupted run resumes
    from its last complete checkpoint.
    """
    import yaml

    from peftsum.experiments.config import default_config_path, experiment_dir, load_experiment
    from peftsum.experiments.runner import run_experiment

    if resume and overwrite:
        raise PeftsumError("--resume continues the experiment in the folder and --overwrite replaces it; pass one of them")
    cfg = load_experiment(config, set_)
    if show_config:
        console.print(yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True), markup=False)
        console.print(f"(from {config or default_config_path()})")
        return
    exp_dir = experiment_dir(cfg, output_dir)
    if dry_run:
        from peftsum.experiments.config import expand_runs
        from peftsum.modeling.tiny import resolve_model_name
        from peftsum.training.memory import dry_run as memory_dry_run

        base = resolve_model_name(cfg.model, "rename or move that folder")  # tiny: same architecture, no pretraining
        console.print(memory_dry_run([r.train for r in expand_runs(cfg, exp_dir, base)])[1], markup=False,
                      highlight=False)
        return
    result = run_experiment(cfg, exp_dir, overwrite=overwrite, log=console.print)
    failed = [k for k, v in result["runs"].items() if v.get("status") != "done"]
    n_done = len(result["runs"]) - len(failed)
    console.print(f"experiment finished in {result['seconds']:.0f} s: {n_done} run{'' if n_done == 1 else 's'} done"
                  + (f", {len(failed)} failed ({', '.join(failed)})" if failed else ""))
    if result["report"]:
        paths = result["report"]
        n_fig = sum(1 for key in paths if key.startswith("figures/"))
        console.print(f"report: {paths['markdown']}, {paths['html']} and {n_fig} figure{'' if n_fig == 1 else 's'} "
                      f"in {exp_dir / 'figures'}", highlight=False)
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

    from peftsum.locking import folder_lock

    with folder_lock(run_dir, "report"):
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
    compare_seed_scorer: bool = typer.Option(
        False, "--compare-seed-scorer", help="Also score with rouge_score's default tokenizer + Porter stemmer "
        "(what evaluate's 'rouge' and run_summarization.py report) and show the difference."
    ),
) -> None:
    """Score predictions against references with multilingual ROUGE (XL-Sum's tokenization)."""
    from peftsum.locking import lock_or_none
    from peftsum.display import score_table, seed_score_table
    from peftsum.metrics.io import check_score_target, score_files, write_json

    check_score_target(output_file, overwrite)

    with lock_or_none(output_file.parent if output_file is not None else None, "score"):
        result = score_files(language, predictions, references, compare_predictions=compare_predictions,
                             stemmer=stemmer, normalize=normalize, n_resamples=n_resamples, seed=seed)
        console.print(score_table(result))
        if compare_seed_scorer:
            from peftsum.metrics.io import add_seed_scorer

            add_seed_scorer(result, predictions, references)
            console.print(seed_score_table(result))
        if output_file is not None:
            write_json(result, output_file)
            console.print(f"scores: {output_file}", highlight=False)


def main() -> None:
    """Console-script entry point (``peftsum``)."""
    from peftsum.runtime import TRAINING_COMMANDS, tune_openmp_spin

    if any(arg in TRAINING_COMMANDS for arg in sys.argv[1:2]):  # before torch loads (libgomp reads it once)
        tune_openmp_spin()
    # deprecation notices from inside transformers/peft tell users nothing they can act on
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*embeddings are no longer tied.*")
    from peftsum.distributed import is_main, shutdown

    console.quiet = not is_main()  # torchrun / accelerate launch: one copy of the output (errors still show)
    try:
        app()
    finally:
        shutdown()  # several processes: each destroys its group before exit, not during interpreter teardown


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
