"""peftsum's command line: parses arguments and calls the library. No logic lives here.

Every command runs inside :func:`_run`, which turns a :class:`~peftsum.errors.PeftsumError`
(and a few well-known library errors) into one line on stderr and exit status 2.
"""

from __future__ import annotations

import functools
import sys
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

console = Console()
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
            err_console.print("[bold red]interrupted[/]")
            raise typer.Exit(130) from None

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
    console.print(f"wrote {paths['markdown']}, {paths['html']} and {n_fig} figures in {run_dir / 'figures'}", highlight=False)


def main() -> None:
    """Console-script entry point (``peftsum``)."""
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
