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


DeviceOption = Annotated[
    str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N (overrides the config's device).")
]
DevicesOption = Annotated[
    str | None,
    typer.Option("--devices", help="Run under nn.DataParallel on these CUDA ids, e.g. 0,1 (implies --device cuda)."),
]


def device_overrides(device: str | None, devices: str | None) -> list[str]:
    """``--device`` / ``--devices`` as config overrides, so precedence is resolved in one place."""
    out = [f"device={device}"] if device is not None else []
    if devices is not None:
        out += [f"data_parallel.device_ids=[{devices}]"] + ([] if device is not None else ["device=cuda"])
    return out


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
    device: DeviceOption = None,
    devices: DevicesOption = None,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Run one study: per-layer statistics, the regime verdict, and a results folder."""
    with user_errors(debug):
        from initlab.config import load_config

        resolved = load_config(config, [*(overrides or []), *device_overrides(device, devices)])
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


def _parse_params(items: list[str]) -> dict[str, object]:
    from initlab.config import parse_value
    from initlab.errors import InitlabError

    params: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InitlabError(f"--param {item!r}: expected name=value, e.g. negative_slope=0.2")
        params[key] = parse_value(value)
    return params


@app.command()
def gain(
    activation: Annotated[
        str | None, typer.Argument(help="Activation name, e.g. tanh, relu, leaky_relu.", show_default=False)
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", help="Activation parameter as name=value (repeatable).")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="One table for every registered activation.")] = False,
    samples: Annotated[int, typer.Option("--samples", min=3, help="Samples of the std-ratio estimate.")] = 1_000_000,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the std-ratio samples.")] = 0,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """The gain an activation needs, by several definitions side by side."""
    with user_errors(debug):
        from initlab import activations
        from initlab.config import parse_cli_choice
        from initlab.errors import InitlabError

        if all_ == (activation is not None):
            raise InitlabError("give one ACTIVATION or --all (valid: " + ", ".join(activations.names()) + ")")
        if all_ and param:
            raise InitlabError("--param applies to one ACTIVATION, not --all")
        if activation is not None:
            chosen = [parse_cli_choice("activation", {"name": activation, **_parse_params(param or [])}, "gain")]
        else:
            chosen = [activations.parse_activation(name) for name in activations.names()]
        from rich.console import Console

        from initlab import report
        from initlab.gain import gain_report

        reports = [gain_report(act, samples=samples, seed=seed) for act in chosen]
        if json_output:
            typer.echo(report.gain_json(reports), nl=False)
        elif all_:
            Console().print(report.gain_overview(reports))
        else:
            Console().print(report.gain_table(reports[0]))
            Console().print(report.gain_explanation(reports[0]))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
