"""The ``initlab`` command line: parse, call the library, render. Nothing else lives here.

Heavy modules (torch, pandas, the runner) are imported inside the commands so that
``initlab --help`` stays instant.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="initlab",
    help="Weight-initialization studies in PyTorch: does the signal explode, vanish or stay stable?",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)



@app.callback()
def _root() -> None:
    """Weight-initialization studies in PyTorch: does the signal explode, vanish or stay stable?"""


DebugOption = Annotated[bool, typer.Option("--debug", help="Show the full traceback of errors.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else.")]


@contextmanager
def user_errors(debug: bool) -> Iterator[None]:
    """Turn initlab's user-facing errors into one line each on stderr and exit code 2."""
    from initlab.errors import ConfigError, InitlabError

    try:
        yield
    except InitlabError as err:
        if debug:
            raise
        lines = err.lines if isinstance(err, ConfigError) else [str(err)]
        for line in lines:
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(2) from None


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="YAML config of the study.", show_default=False)],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="Overrides as dotted.path=value, e.g. model.depth=50 init.scheme=kaiming_normal."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Root folder of results.")] = Path("results"),
    every: Annotated[int, typer.Option("--every", min=1, help="Show every k-th layer in the table.")] = 1,
    save: Annotated[bool, typer.Option("--save/--no-save", help="Write the results folder.")] = True,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Run one study: per-layer statistics, the regime verdict, and a results folder."""
    with user_errors(debug):
        from initlab.config import load_config

        resolved = load_config(config, overrides or [])
        from rich.console import Console

        from initlab import report
        from initlab.results import save_run
        from initlab.runner import run as run_study

        result = run_study(resolved)
        folder = save_run(result, out, sys.argv) if save else None
        if json_output:
            document = report.run_json(result.layers, result.summary, resolved.model_dump(mode="json"), folder)
            typer.echo(document, nl=False)
        else:
            report.print_run(Console(), result.layers, result.summary, every, folder)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
