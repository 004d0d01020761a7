"""The ``initlab`` command line: parse, call the library, render. Nothing else lives here.

Heavy modules (torch, pandas, the runner) are imported inside the commands so that
``initlab --help`` stays instant.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from typer.core import TyperArgument, TyperCommand

from initlab.limits import MAX_RUNS, check_seeds

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.progress import Progress

    from initlab.activations import Activation
    from initlab.config import Override
    from initlab.sweep import SweepFolder

app = typer.Typer(
    name="initlab",
    help="Weight-initialization studies in PyTorch: does the signal explode, vanish or stay stable?",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},  # inherited by every command
)


def _print_version(wanted: bool) -> None:
    if not wanted:
        return
    from importlib.metadata import PackageNotFoundError, version

    from initlab import __version__

    try:  # the installed distribution's metadata: no torch import, so this stays instant
        torch = f" (torch {version('torch')})"
    except PackageNotFoundError:
        torch = ""
    typer.echo(f"initlab {__version__}{torch}")
    raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=_print_version, help="Print the version and exit.")
    ] = False,
) -> None:
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
NoBackwardOption = Annotated[
    bool, typer.Option("--no-backward", help="Forward pass only: no gradients (the same as backward=false).")
]


def device_overrides(device: str | None, devices: str | None, no_backward: bool = False) -> list[Override]:
    """``--device`` / ``--devices`` (and ``--no-backward``) as typed config overrides, so precedence is
    resolved in one place."""
    from initlab.config import Override
    from initlab.errors import InitlabError

    out = [Override(("device",), device, f"--device {device!r}")] if device is not None else []
    if no_backward:
        out.append(Override(("backward",), False, "--no-backward"))
    if devices is not None:
        source = f"--devices {devices!r}"
        ids = [part.strip() for part in devices.split(",")]
        if not all(part.isdecimal() for part in ids):
            raise InitlabError(f"{source}: expected CUDA device ids separated by commas, e.g. 0,1")
        out.append(Override(("data_parallel", "device_ids"), [int(part) for part in ids], source))
        if device is None:
            out.append(Override(("device",), "cuda", source))
    return out


class Terminated(KeyboardInterrupt):
    """SIGTERM (what a batch scheduler sends), raised where Ctrl-C's KeyboardInterrupt would be,
    so that both stop a command the same way: finished work kept, nothing half-written."""


#: Exit codes of an interrupted command: the shell's 128 + signal number.
EXIT_INTERRUPTED = 130  # SIGINT, Ctrl-C
EXIT_TERMINATED = 143  # SIGTERM


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
    raise Terminated


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (main thread only, where signals go)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def interrupted_code(err: KeyboardInterrupt) -> int:
    """143 for SIGTERM, 130 for Ctrl-C."""
    return EXIT_TERMINATED if isinstance(err, Terminated) else EXIT_INTERRUPTED


@contextmanager
def user_errors(debug: bool) -> Iterator[None]:
    """Turn initlab's user-facing errors into one line each on stderr and exit code 2; Ctrl-C and
    SIGTERM into one line and exit code 130 or 143 (results folders are staged: none is half-written)."""
    from initlab.errors import ConfigError, InitlabError

    try:
        with _sigterm_as_interrupt():
            yield
    except InitlabError as err:
        if debug:
            raise
        lines = err.lines if isinstance(err, ConfigError) else [str(err)]
        for line in lines:
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt as err:
        if debug:
            raise
        typer.echo("terminated (SIGTERM)" if isinstance(err, Terminated) else "interrupted", err=True)
        raise typer.Exit(interrupted_code(err)) from None


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="YAML config of the study.", show_default=False)],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="Overrides as dotted.path=value, e.g. model.depth=50 init.scheme=kaiming_normal."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Root folder of results.")] = Path("results"),
    every: Annotated[int, typer.Option("--every", min=1, help="Show every k-th layer in the table.")] = 1,
    seeds: Annotated[
        int, typer.Option("--seeds", min=1, help="Run seeds S..S+N-1: median trace, band and one verdict.")
    ] = 1,
    save: Annotated[bool, typer.Option("--save/--no-save", help="Write the results folder.")] = True,
    save_model: Annotated[
        bool, typer.Option("--save-model", help="Also write the network's state_dict as model.pt in the results "
                           "folder (model-s<seed>.pt per seed with --seeds).")
    ] = False,
    device: DeviceOption = None,
    devices: DevicesOption = None,
    no_backward: NoBackwardOption = False,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Run one study: per-layer statistics, the regime verdict, plots, and a results folder."""
    with user_errors(debug):
        from initlab.config import load_config

        resolved = load_config(config, [*(overrides or []), *device_overrides(device, devices, no_backward)])
        if save_model and not save:
            from initlab.errors import InitlabError

            raise InitlabError("--save-model writes model.pt into the results folder: drop --no-save")
        from rich.console import Console

        from initlab import report
        from initlab.results import check_creatable, save_study

        if save:  # before the study runs, not after: a long run's results are not lost
            check_creatable(out / resolved.name)
        from initlab.seeds import run_seeds

        study = run_seeds(resolved, seeds, keep_weights=save_model)
        folder = save_study(study, out, sys.argv, overrides or []) if save else None
        if json_output:
            typer.echo(report.study_json(study, folder), nl=False)
        elif seeds == 1:
            report.print_run(Console(), study.runs[0].layers, study.summary, every, folder)
        else:
            report.print_seeds(Console(), study, every, folder)


def _parse_params(items: list[str]) -> dict[str, object]:
    if not items:  # PyYAML reads the values: not imported when there are none
        return {}
    from initlab.errors import InitlabError
    from initlab.yamlfile import parse_value

    params: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InitlabError(f"--param {item!r}: expected name=value, e.g. negative_slope=0.2")
        params[key] = parse_value(value)
    return params


def _activation(name: str, params: list[str], source: str) -> Activation:
    """The activation named on the command line. Validated by the activation registry alone:
    :mod:`initlab.config` (the whole config's models) is imported only to phrase an error."""
    from pydantic import ValidationError

    from initlab.activations import parse_activation

    value = {"name": name, **_parse_params(params)}
    try:
        return parse_activation(value)
    except ValidationError:
        from initlab.config import parse_cli_choice

        result: Activation = parse_cli_choice("activation", value, source)  # raises, phrased like a config's
        return result


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
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the std-ratio samples (up to 2**64-1).")] = 0,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """The gain an activation needs, by several definitions side by side."""
    with user_errors(debug):
        from initlab import activations
        from initlab.errors import InitlabError

        if all_ == (activation is not None):
            raise InitlabError("give one ACTIVATION or --all (valid: " + ", ".join(activations.names()) + ")")
        if all_ and param:
            raise InitlabError("--param applies to one ACTIVATION, not --all")
        check_seeds(seed, 1, "--seed")
        if activation is not None:
            chosen = [_activation(activation, param or [], "gain")]
        else:
            chosen = [activations.parse_activation(name) for name in activations.names()]
        from rich.console import Console

        from initlab import report
        from initlab.gain import gain_report

        try:
            reports = [gain_report(act, samples=samples, seed=seed) for act in chosen]
        except (ValueError, ArithmeticError) as err:  # parameters so extreme the moments over/underflow
            raise InitlabError(f"gain: no finite gain: {err}") from None
        if json_output:
            typer.echo(report.gain_json(reports), nl=False)
        elif all_:
            Console().print(report.gain_overview(reports))
        else:
            Console().print(report.gain_table(reports[0]))
            Console().print(report.gain_explanation(reports[0]))


_SPEC_HELP = (
    "Names and aliases as in configs, comma-separated, arguments after a colon: "
    "normal:std=1,xavier:gain=auto. A key=value without a colon belongs to the name before it, "
    "so normal:std=1,mean=0.5,xavier is two schemes."
)
_BASE = "Base network: "


@app.command()
def compare(
    schemes: Annotated[
        str | None, typer.Option("--schemes", help=f"Init schemes, the matrix's rows. {_SPEC_HELP}", show_default=False)
    ] = None,
    activations: Annotated[
        str | None,
        typer.Option("--activations", show_default=False,
                     help="Activations, the matrix's columns, same syntax (tanh,leaky_relu:negative_slope=0.2). "
                     "Default: the base network's activation."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", show_default=False,
                     help="YAML config of the base network. Default: the classic study: 100 blocks of width 256, "
                     "batch 16, no bias, linear, seed 0."),
    ] = None,
    depth: Annotated[int | None, typer.Option("--depth", min=1, help=_BASE + "number of blocks.")] = None,
    width: Annotated[int | None, typer.Option("--width", min=1, help=_BASE + "width of every block.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help=_BASE + "inputs per batch.")] = None,
    bias: Annotated[bool | None, typer.Option("--bias/--no-bias", help=_BASE + "Linear layers with bias.")] = None,
    activation: Annotated[
        str | None, typer.Option("--activation", help=_BASE + "activation, e.g. tanh or leaky_relu:negative_slope=0.2.")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", min=0, help=_BASE + "seed; --seeds N uses S..S+N-1.")] = None,
    seeds: Annotated[
        int, typer.Option("--seeds", min=1, help="Seeds per cell; a cell shows its median trace's verdict.")
    ] = 1,
    depths: Annotated[
        str | None, typer.Option("--depths", help="Depths to sweep, e.g. 10,50,100: one matrix per depth and width.")
    ] = None,
    widths: Annotated[str | None, typer.Option("--widths", help="Widths to sweep, e.g. 64,256,1024.")] = None,
    grid: Annotated[
        list[str] | None,
        typer.Option("--grid", metavar="PATH=VALUES", show_default=False,
                     help="Sweep any config field by its dotted path (as run's overrides): a comma list "
                     "(data.batch_size=16,256) or start:stop:step, stop included (init.gain=0.8:2.4:0.1). "
                     "Repeatable: the axes form a product with the others."),
    ] = None,
    layers: Annotated[
        str | None,
        typer.Option("--layers", help="Layers of the std table, e.g. 0,10,-1. Default: 0, 1, 10%, 50%, last."),
    ] = None,
    max_runs: Annotated[
        int, typer.Option("--max-runs", min=1, help="Refuse sweeps of more cell runs (cells x seeds) than this.")
    ] = MAX_RUNS,
    out: Annotated[Path | None, typer.Option("--out", help="Root folder of results. [default: results]")] = None,
    resume: Annotated[
        Path | None,
        typer.Option("--resume", help="Finish the sweep in this results folder: run only its missing cells.",
                     show_default=False),
    ] = None,
    save: Annotated[bool, typer.Option("--save/--no-save", help="Write the results folder.")] = True,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, show_default=False,
                                 help="Run cells in N local processes (with --executor dask: the local cluster's "
                                 "workers). Default: in this process.")
    ] = None,
    executor: Annotated[
        str | None, typer.Option("--executor", show_default=False,
                                 help="process (a local pool) or dask (a local Dask cluster on 127.0.0.1, or the "
                                 "one at --address; pip install 'initlab[dask]'). Default: in this process.")
    ] = None,
    address: Annotated[
        str | None, typer.Option("--address", show_default=False,
                                 help="With --executor dask: an existing scheduler, e.g. tcp://127.0.0.1:8786.")
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, show_default=False,
                                 help="Torch threads inside each cell. Default: cores / workers (in this process: "
                                 "torch's default).")
    ] = None,
    device: DeviceOption = None,
    devices: DevicesOption = None,
    no_backward: NoBackwardOption = False,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """The regime matrix: one network under several init schemes (and activations, depths, widths, seeds)."""
    with user_errors(debug):
        from initlab import plots, sweep

        chosen = sweep.parse_ints(layers, "--layers", minimum=None) if layers else None
        folder: sweep.SweepFolder | None = None
        if resume is not None:
            folder, plan = sweep.resume(resume, sys.argv, figures=plots.std_plot_files, given={
                "--schemes": schemes, "--activations": activations, "--config": config, "--depth": depth,
                "--width": width, "--batch-size": batch_size, "--bias/--no-bias": bias, "--activation": activation,
                "--seed": seed, "--seeds": seeds if seeds != 1 else None, "--depths": depths, "--widths": widths,
                "--grid": grid or None,
                "--out": out, "--no-save": None if save else True, "--device": device, "--devices": devices,
                "--no-backward": True if no_backward else None,
            }, remote=address is not None)
        else:
            plan = sweep.plan_from_options(
                config, schemes=schemes, activations=activations, depth=depth, width=width, batch_size=batch_size,
                bias=bias, activation=activation, seed=seed, seeds=seeds, depths=depths, widths=widths, grid=grid or (),
                overrides=device_overrides(device, devices, no_backward), max_runs=max_runs,
                remote=address is not None,  # a cluster's devices are its workers' to check
            )
        sweep.check_layers(chosen, plan.axes["depths"])
        from initlab.sweep import executors

        # Started before the folder is created: an engine that cannot start (no scheduler at --address)
        # writes nothing, and its start-up does not count in the progress bar's rate.
        engine = executors.choose(executor, workers, address, threads)()
        try:
            sweep.check_placeable(plan, engine)
            if resume is None and save:  # only now: bad input above writes nothing
                folder = sweep.SweepFolder.create(out or Path("results"), plan, sys.argv, plots.std_plot_files)
        except BaseException:
            engine.stop()
            raise
        try:
            with _progress_bar(not json_output and len(plan.runs) > 1) as progress:
                comparison = sweep.run_sweep(plan, folder, progress, engine)
        except KeyboardInterrupt as err:  # the bar is gone now: the message has the line to itself
            _interrupted(folder, len(plan.runs), interrupted_code(err))
        from rich.console import Console

        from initlab import report

        where = folder.path if folder is not None else None
        if json_output:
            typer.echo(report.compare_json(comparison, where), nl=False)
        else:
            report.print_compare(Console(), comparison, chosen, where)
        if comparison.failed:
            raise typer.Exit(1)


class _NamedArgument(TyperArgument):
    """An argument shown by its metavar alone: ``ACTIVATION``, not ``{activation}`` and ``<str>``."""

    def display_type_rich(self, ctx: object) -> str | None:  # no type tag: the metavar says it
        return None

    def _usage_display_name(self) -> str:
        return self.display_name_raw


class _MetavarCommand(TyperCommand):
    """A command whose arguments with a metavar are shown as :class:`_NamedArgument`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, TyperArgument) and param.metavar is not None:
                param.__class__ = _NamedArgument


@app.command(cls=_MetavarCommand)
def theory(
    activation: Annotated[
        str, typer.Argument(metavar="ACTIVATION", help="Activation name, e.g. tanh, relu, selu.", show_default=False)
    ],
    param: Annotated[
        list[str] | None,
        typer.Option("--param", metavar="NAME=VALUE", help="Activation parameter as name=value (repeatable)."),
    ] = None,
    sw2: Annotated[
        float | None,
        typer.Option("--sw2", metavar="NUMBER", help="σw² = Var(W_ij)·fan_in. [default: 1]", show_default=False),
    ] = None,
    sb2: Annotated[
        float | None, typer.Option("--sb2", metavar="NUMBER", help="σb² = Var(b_i). [default: 0]", show_default=False)
    ] = None,
    depth: Annotated[
        int,
        typer.Option("--depth", metavar="N", min=1, max=100_000, help="Layers of the per-layer prediction."),
    ] = 10,
    q0: Annotated[
        float | None,
        typer.Option("--q0", metavar="NUMBER", show_default=False,
                     help="q_0, the first pre-activation second moment. [default: σw² + σb², a unit-variance "
                     "input's; 1 for --critical and --phase]"),
    ] = None,
    critical: Annotated[
        bool, typer.Option("--critical", help="The edge of chaos: σw² for the given --sb2, or σb² for the given --sw2.")
    ] = False,
    phase: Annotated[bool, typer.Option("--phase", help="Draw the σw² × σb² phase diagram (PNG and SVG).")] = False,
    sw2_max: Annotated[float, typer.Option("--sw2-max", metavar="NUMBER", help="Phase diagram: top σw².")] = 4.0,
    sb2_max: Annotated[float, typer.Option("--sb2-max", metavar="NUMBER", help="Phase diagram: top σb².")] = 0.5,
    out: Annotated[
        Path, typer.Option("--out", metavar="DIR", help="Folder the phase diagram is written to.")
    ] = Path("results"),
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Mean-field theory of a deep random MLP: q*, χ₁, c*, ξ_q, ξ_c, phase, per-layer prediction."""
    with user_errors(debug):
        from initlab.errors import InitlabError

        act = _activation(activation, param or [], "theory")
        numbers = {"--sw2": sw2, "--sb2": sb2, "--q0": q0, "--sw2-max": sw2_max, "--sb2-max": sb2_max}
        for option, number in numbers.items():
            positive = option in ("--q0", "--sw2-max", "--sb2-max")
            if number is not None and not (math.isfinite(number) and (number > 0 if positive else number >= 0)):
                raise InitlabError(f"{option}: must be a finite number {'> 0' if positive else '>= 0'}, got {number}")
        if critical and phase:
            raise InitlabError("--critical and --phase are separate questions: give one")
        if phase:
            _theory_phase(act, sw2_max, sb2_max, out, json_output)
        elif critical:
            _theory_critical(act, sw2, sb2, 1.0 if q0 is None else q0, json_output)
        else:
            _theory_point(act, 1.0 if sw2 is None else sw2, 0.0 if sb2 is None else sb2, q0, depth, json_output)


def _print(renderables: Sequence[RenderableType]) -> None:
    """Rich renderables on stdout, fitted to the terminal (80 columns through a pipe)."""
    from rich.console import Console

    console = Console()
    for renderable in renderables:
        console.print(renderable)


def _theory_point(act: Any, sw2: float, sb2: float, q0: float | None, depth: int, json_output: bool) -> None:
    from initlab import report_theory as render
    from initlab import theory as mf

    start = sw2 + sb2 if q0 is None else q0  # `run`'s q0 = σw²·E[x²] + σb² for a unit-variance input
    at = mf.point(act, sw2, sb2, start)
    layers = mf.trajectory(act, start, [sw2] * depth, sb2)
    if json_output:
        typer.echo(render.point_json(act.label(), at, layers), nl=False)
    else:
        note = " (input E[x²] = 1)" if q0 is None else " (--q0)"
        _print(render.point_text(act.label(), at, layers, note))


def _theory_critical(act: Any, sw2: float | None, sb2: float | None, q0: float, json_output: bool) -> None:
    from initlab import report_theory as render
    from initlab import theory as mf
    from initlab.errors import InitlabError

    if sw2 is not None and sb2 is not None:
        raise InitlabError("--critical takes one of --sw2 (to find σb²) or --sb2 (to find σw²), not both")
    found: float | None
    w2: float | None
    b2: float | None
    if sw2 is None:
        given, value = "σb²", 0.0 if sb2 is None else sb2
        found = mf.critical_sigma_w2(act, value, q0)
        w2, b2 = found, value
    else:
        given, value = "σw²", sw2
        found = mf.critical_sigma_b2(act, value, q0)
        w2, b2 = value, found
    at = mf.point(act, w2, b2, q0) if w2 is not None and b2 is not None else None
    limit = None if found is not None else (
        mf.critical_sigma_w2(act, value, q0, asymptotic=True) if sw2 is None
        else mf.critical_sigma_b2(act, value, q0, asymptotic=True))
    if json_output:
        boundary = None if limit is None else {"sw2": limit if sw2 is None else value,
                                               "sb2": value if sw2 is None else limit}
        typer.echo(render.critical_json(act.label(), w2, b2, at, boundary), nl=False)
    else:
        from rich.text import Text

        _print([Text(line) for line in render.critical_text(act.label(), given, value, found, at, limit).splitlines()])


def _theory_phase(act: Any, sw2_max: float, sb2_max: float, out: Path, json_output: bool) -> None:
    import numpy as np

    from initlab import report_theory as render
    from initlab import theory as mf
    from initlab.phase_plot import phase_plot_files
    from initlab.results import check_creatable

    check_creatable(out)  # before the diagram is computed: an unwritable --out is one line, exit 2
    diagram = mf.phase_diagram(act, np.linspace(0.0, sw2_max, 61), np.linspace(0.0, sb2_max, 41))
    stem = "theory-phase-" + "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in act.label()).strip("-")
    files = []
    out.mkdir(parents=True, exist_ok=True)
    for fmt, data in phase_plot_files(diagram).items():
        path = out / f"{stem}.{fmt}"
        path.write_bytes(data)
        files.append(path)
    if json_output:
        typer.echo(render.phase_json(diagram, files), nl=False)
    else:
        _print(render.phase_text(diagram, files))


@contextmanager
def _progress_bar(wanted: bool) -> Iterator[Callable[[int, int, object], None] | None]:
    """A progress bar on stderr when it is a terminal and ``wanted``; yields the sweep's callback.

    The first call gives the cells already on disk (a resumed sweep): they count in done / total, not
    in the rate. The bar is stopped (and erased) when the block ends, however it ends."""
    if not (wanted and sys.stderr.isatty()):
        yield None
        return
    import time

    from rich.console import Console

    with progress_display(Console(stderr=True), transient=True) as bar:
        start: list[float] = []  # when the sweep's first callback came, and the cells done by then

        def update(done: int, total: int, cell: object) -> None:
            if not start:
                start.extend((time.perf_counter(), done))
                bar.add_task("", total=total, completed=done, since=done)
            bar.update(bar.task_ids[0], completed=done, total=total, elapsed=time.perf_counter() - start[0])

        yield update


def progress_display(console: Console, **options: Any) -> Progress:
    """The sweep's progress display: one line, never wider than the console nor cut or wrapped: the
    figures of :func:`progress_line` that fit, then a bar in what width is left (if 10 columns or more)."""
    from rich.progress import Progress
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    class OneLine(Progress):
        def get_renderables(self) -> Iterator[RenderableType]:
            width = console.width - 1  # a terminal's last column wraps the cursor on some terminals
            for task in self.tasks:
                text = Text(progress_line(int(task.completed), int(task.total or 0),
                                          task.fields.get("elapsed", 0.0), width, since=task.fields.get("since", 0)))
                if width - len(text) - 1 < 10:
                    yield text
                    continue
                row = Table.grid(padding=(0, 1))
                row.add_row(text, ProgressBar(total=task.total, completed=task.completed,
                                              width=width - len(text) - 1))
                yield row

    return OneLine(console=console, **options)


def progress_line(done: int, total: int, elapsed: float, width: int = 80, since: int = 0) -> str:
    """``12/200 cells, 3.4 cells/s, ETA 0:00:55``, or the shorter forms that fit in ``width``
    (``12/200, 3.4/s, ETA 0:00:55``; ``12/200 ETA 0:00:55``; ``12/200``). The rate and ETA count the
    cells done since the first call (``since``: those on disk before) once one has finished."""
    forms = [f"{done}/{total} cells", f"{done}/{total}"]
    if done > since and elapsed > 0:
        rate = (done - since) / elapsed
        left = round((total - done) / rate)
        eta = f"ETA {left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}"
        forms = [f"{done}/{total} cells, {rate:.3g} cells/s, {eta}", f"{done}/{total}, {rate:.3g}/s, {eta}",
                 f"{done}/{total} {eta}", *forms]
    return next((form for form in forms if len(form) <= width), forms[-1])


def _interrupted(folder: SweepFolder | None, total: int, code: int) -> NoReturn:
    """Say what an interrupted sweep kept and how to finish it; exit ``code`` (130 Ctrl-C, 143 SIGTERM)."""
    what = "terminated (SIGTERM)" if code == EXIT_TERMINATED else "interrupted"
    if folder is None:
        typer.echo(f"{what}; nothing was written (--no-save)", err=True)
    else:
        done = len(folder.finished())
        typer.echo(f"{what}: {done} of {total} cell runs are written in {folder.path}", err=True)
        typer.echo(f"resume with: initlab compare --resume {folder.path}", err=True)
    raise typer.Exit(code)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
