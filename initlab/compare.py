"""The regime matrix: one network under several init schemes, activations, depths, widths and seeds.

A sweep is *planned* from a base :class:`~initlab.config.Config` and its axes: every
(scheme, activation, depth, width) is a **cell**, and every seed of a cell is one fully
resolved ``Config``, validated exactly as a config file is. Each of them is run by
:func:`initlab.runner.run`, so its numbers equal ``initlab run`` on that config by
construction. A resolved config is identified by the first 12 hex digits of the sha256 of
its JSON (which includes the seed); that id names its folder ``cells/<id>/``.

The per-seed tables are *aggregated* into a tidy table (one row per cell, seed and layer)
and a summary (one row per cell). A cell's verdict is :func:`initlab.regimes.classify`
on its **median trace**: the per-layer median of the block-output std over its seeds,
where a non-finite output counts as +inf (so the median trace goes non-finite where most
seeds do). ``agree`` counts the seeds whose own verdict is the same. Where the cells ran a
backward pass, the same is done for the gradient (:data:`BACKWARD`): the median of ``grad_rms``
over seeds, judged by :func:`initlab.regimes.judge_backward` from the last block down; its
columns are ``grad_*`` in the traces and ``backward_*`` in the summary.

Nothing here prints. Progress is reported through a callback; files are written only
through a :class:`SweepFolder`, one finished cell at a time, so an interrupted sweep keeps
what it finished and :func:`sweep` on the same folder runs only what is missing.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import platform
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
import pandas as pd
from pydantic import ValidationError

from initlab import __version__
from initlab.activations import Activation
from initlab.config import (
    Config,
    Override,
    VerdictConfig,
    format_errors,
    load_config,
    parse_cli_choice,
    parse_value,
    to_yaml,
)
from initlab.errors import InitlabError
from initlab.folder_lock import FolderLock
from initlab.gradient_theory import backward_theory_summary
from initlab.limits import MAX_RUNS, check_seeds
from initlab.regimes import (
    Signal,
    Trace,
    Verdict,
    backward_trace,
    classify,
    judge_backward,
    with_theory,
)
from initlab.results import csv_text, git_commit, run_id, to_json, write_folder
from initlab.schemes import Scheme
from initlab.schemes import names as scheme_names
from initlab.signals import BACKWARD, FORWARD, SIGNALS, SignalColumns

if TYPE_CHECKING:
    from initlab.model import ConstructionDraws

#: Columns that say which cell and seed a row of the tidy table belongs to.
ID_COLUMNS = ["cell", "scheme", "activation", "depth", "width", "seed"]
#: The axes of the matrix, in the order cells are planned, sorted and shown.
CELL_KEYS = ["scheme", "activation", "depth", "width"]
PLAN_FORMAT = "initlab-compare/1"

# ---------------------------------------------------------------- specs


def split_specs(text: str, option: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """Split ``name:key=value,key=value,name2`` into ``[(name, [(key, value_text), ...]), ...]``.

    Commas separate both specs and a spec's arguments, so a fragment with ``=`` and no
    ``:`` continues the previous spec: ``normal:std=1,mean=0.5,xavier`` is two specs.
    """
    specs: list[tuple[str, list[tuple[str, str]]]] = []
    for fragment in (part.strip() for part in text.split(",")):
        if not fragment:
            raise InitlabError(f"{option} {text!r}: empty name (a stray comma?)")
        name, colon, rest = fragment.partition(":")
        if not colon and "=" in fragment:  # an argument of the spec before it
            if not specs:
                raise InitlabError(f"{option} {text!r}: {fragment!r} needs a name first, e.g. normal:std=1")
            specs[-1][1].append(_key_value(fragment, option, text))
            continue
        if not name.strip():
            raise InitlabError(f"{option} {text!r}: {fragment!r} has no name before ':'")
        specs.append((name.strip(), [_key_value(rest, option, text)] if colon else []))
    return specs


def _key_value(fragment: str, option: str, text: str) -> tuple[str, str]:
    key, sep, value = fragment.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise InitlabError(f"{option} {text!r}: expected key=value after ':', got {fragment!r}")
    return key.strip(), value.strip()


def _spec_dicts(text: str, option: str, tag: str) -> list[dict[str, Any]]:
    out = []
    for name, args in split_specs(text, option):
        keys = [key for key, _ in args]
        duplicate = next((key for key in keys if keys.count(key) > 1), None)
        if duplicate is not None:
            raise InitlabError(f"{option} {text!r}: {duplicate!r} given twice for {name!r}")
        out.append({tag: name, **{key: parse_value(value) for key, value in args}})
    return out


def parse_schemes(text: str, option: str = "--schemes") -> list[Scheme]:
    """Weight schemes from ``name[:key=value,...],...`` (config names, aliases and arguments)."""
    return [parse_cli_choice("scheme", spec, option) for spec in _spec_dicts(text, option, "scheme")]


def parse_activations(text: str, option: str = "--activations") -> list[Activation]:
    """Activations from ``name[:key=value,...],...``, e.g. ``tanh,leaky_relu:negative_slope=0.2``."""
    return [parse_cli_choice("activation", spec, option) for spec in _spec_dicts(text, option, "name")]


def activation_overrides(text: str, option: str = "--activation") -> list[Override]:
    """Config overrides that set ``model.activation`` to one spec (arguments kept as written)."""
    specs = split_specs(text, option)
    if len(specs) != 1:
        raise InitlabError(f"{option} {text!r}: expected one activation")
    name, args = specs[0]
    source = f"{option} {text!r}"
    return [Override(("model", "activation", "name"), name, source, name)] + [
        Override(("model", "activation", key), parse_value(value), source, value) for key, value in args
    ]


def base_config(
    path: Path | None,
    *,
    depth: int | None = None,
    width: int | None = None,
    batch_size: int | None = None,
    bias: bool | None = None,
    activation: str | None = None,
    seed: int | None = None,
    overrides: Sequence[str | Override] = (),
) -> Config:
    """The base network: ``path`` (or the classic study's defaults, named ``compare``) with the given
    fields and ``overrides`` (``device=cuda``, say) applied through :func:`initlab.config.load_config`,
    so precedence lives in one place; errors name the option (``--seed 5``)."""
    typed = [*([] if path is not None else [Override(("name",), "compare", "the default name")]), *overrides]
    for option, key, value in (("--depth", ("model", "depth"), depth), ("--width", ("model", "width"), width),
                               ("--batch-size", ("data", "batch_size"), batch_size), ("--seed", ("seed",), seed)):
        if value is not None:
            typed.append(Override(key, value, f"{option} {value}"))
    if bias is not None:
        typed.append(Override(("model", "bias"), bias, "--bias" if bias else "--no-bias"))
    if activation is not None:
        typed += activation_overrides(activation)
    return load_config(path, typed)


def plan_from_options(
    config: Path | None,
    *,
    schemes: str | None,
    activations: str | None = None,
    depth: int | None = None,
    width: int | None = None,
    batch_size: int | None = None,
    bias: bool | None = None,
    activation: str | None = None,
    seed: int | None = None,
    seeds: int = 1,
    depths: str | None = None,
    widths: str | None = None,
    overrides: Sequence[str | Override] = (),
    max_runs: int = MAX_RUNS,
) -> Plan:
    """The plan of ``initlab compare`` from its options as typed, every check made before any run.

    A bad spec, a base flag next to the axis that replaces it (``--depth`` with
    ``--depths``), a device that is not here, seeds torch cannot take, more than ``max_runs``
    cell runs, or a cell too large for memory is an :class:`InitlabError`.
    """
    from initlab.devices import usable

    base = base_config(
        config, depth=_one(depth, depths, "depth"), width=_one(width, widths, "width"), batch_size=batch_size,
        bias=bias, activation=_one(activation, activations, "activation"), seed=seed, overrides=overrides,
    )
    usable(base)  # no CUDA, a bad id or dtype: one error now, not one per cell
    axes = (parse_schemes(_required(schemes)), parse_activations(activations) if activations else [],
            parse_ints(depths, "--depths") if depths else [], parse_ints(widths, "--widths") if widths else [])
    check_size([len(axis) or 1 for axis in axes], seeds, max_runs)
    check_seeds(base.seed, seeds, "--seed/--seeds")
    plan = plan_sweep(base, *axes, seeds=seeds)
    check_feasible(plan)
    return plan


def check_size(lengths: Sequence[int], seeds: int, max_runs: int) -> None:
    """Refuse, before planning anything, a sweep of more than ``max_runs`` cell runs."""
    count = seeds
    for length in lengths:
        count *= length
    if count > max_runs:
        names = ["scheme", "activation", "depth", "width", "seed"]
        shape = " x ".join(f"{n:,} {axis}{'s' if n != 1 else ''}"
                           for n, axis in zip([*lengths, seeds], names, strict=True) if n != 1 or axis == "scheme")
        raise InitlabError(f"the sweep has {count:,} cell runs ({shape}), more than --max-runs {max_runs:,}; "
                           f"give --max-runs {count} to run it anyway")


def check_feasible(plan: Plan) -> None:
    """Refuse a plan with a cell that cannot fit in memory, checked once per distinct network size."""
    from initlab.devices import check_memory, usable

    checked: set[tuple[int, int]] = set()
    for run in plan.runs:
        if run.config is None or (run.depth, run.width) in checked:
            continue
        checked.add((run.depth, run.width))
        try:
            check_memory(run.config, usable(run.config))
        except InitlabError as err:
            raise InitlabError(f"cell depth {run.depth}, width {run.width}: {err}") from None


def resume(path: Path, argv: Sequence[str], given: dict[str, object]) -> tuple[SweepFolder, Plan]:
    """The folder and plan of an earlier sweep; ``given`` are the other options, which must be unset.

    The folder is not locked yet: enter it (``with folder:``) around the work.
    """
    extra = [name for name, value in given.items() if value is not None]
    if extra:
        raise InitlabError(f"--resume takes the sweep from its folder; drop {', '.join(extra)}")
    folder, plan = SweepFolder.open(path, argv)
    check_feasible(plan)
    return folder, plan


def check_layers(chosen: list[int] | None, depths: list[int]) -> None:
    """Refuse ``--layers`` that name no layer at any of the sweep's depths."""
    if chosen is not None and not any(-d <= layer < d for layer in chosen for d in depths):
        raise InitlabError(f"--layers: no layer of {chosen} exists at depth {', '.join(map(str, depths))}")


_T = TypeVar("_T")


def _one(flag: _T | None, axis: str | None, name: str) -> _T | None:
    """A base flag, refused next to the axis that replaces it (--depth with --depths)."""
    if flag is not None and axis is not None:
        raise InitlabError(f"--{name} and --{name}s: give one (--{name}s sweeps, --{name} sets the base network)")
    return flag


def _required(schemes: str | None) -> str:
    if schemes is None:
        raise InitlabError(f"--schemes is required, e.g. --schemes xavier,kaiming; valid: {', '.join(scheme_names())}")
    return schemes


def parse_ints(text: str, option: str, minimum: int | None = 1) -> list[int]:
    """Comma-separated integers (each ``>= minimum`` unless it is None), without repeats."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        bound = f" >= {minimum}" if minimum is not None else ""
        raise InitlabError(f"{option} {text!r}: expected comma-separated integers{bound}, e.g. 10,50,100") from None
    low = next((v for v in values if minimum is not None and v < minimum), None)
    if low is not None:
        raise InitlabError(f"{option} {text!r}: {low} is below {minimum}")
    _no_repeats(values, option)
    return values


def _no_repeats(values: Iterable[Any], option: str) -> None:
    seen: set[Any] = set()
    for value in values:
        if value in seen:
            raise InitlabError(f"{option}: {value} given twice")
        seen.add(value)


# ---------------------------------------------------------------- plan


@dataclass(frozen=True)
class CellRun:
    """One seed of one cell: its resolved config, or why it has none."""

    cell: str  # 12 hex digits of sha256(resolved config JSON); names cells/<cell>/
    scheme: str
    activation: str
    depth: int
    width: int
    seed: int
    config: Config | None
    raw: dict[str, Any]  # the mapping that was validated (the resolved config when valid)
    error: str | None = None

    @property
    def position(self) -> tuple[str, str, int, int]:
        """Where the run sits in the matrix: (scheme, activation, depth, width)."""
        return (self.scheme, self.activation, self.depth, self.width)

    def ids(self) -> dict[str, Any]:
        """The identifying columns of the tidy table."""
        return {"cell": self.cell, "scheme": self.scheme, "activation": self.activation,
                "depth": self.depth, "width": self.width, "seed": self.seed}

    def as_dict(self) -> dict[str, Any]:
        return {**self.ids(), "config": self.raw, "error": self.error}


#: ``progress(done, total, cell)`` after each cell run (``cell`` is None for the first call, done = 0).
Progress = Callable[[int, int, CellRun | None], None]


@dataclass(frozen=True)
class Plan:
    """Every cell run of a sweep, in matrix order, and the axes they were planned from."""

    name: str
    axes: dict[str, list[Any]]  # schemes, activations (labels), depths, widths, seeds
    runs: tuple[CellRun, ...]
    argv: list[str] = field(default_factory=list)

    def positions(self) -> list[tuple[str, str, int, int]]:
        """The matrix cells, in plan order, each once."""
        return list(dict.fromkeys(run.position for run in self.runs))

    def to_json(self) -> str:
        return to_json({"format": PLAN_FORMAT, "name": self.name, "argv": self.argv, "axes": self.axes,
                        "runs": [run.as_dict() for run in self.runs]})

    @classmethod
    def from_json(cls, text: str, source: str) -> Plan:
        """Read a plan written by :meth:`to_json`, re-validating every stored config."""
        try:
            data = json.loads(text)
            if data.get("format") != PLAN_FORMAT:
                raise ValueError(f"format is {data.get('format')!r}, not {PLAN_FORMAT!r}")
            runs = tuple(_stored_run(entry) for entry in data["runs"])
            return cls(str(data["name"]), dict(data["axes"]), runs, list(data.get("argv", [])))
        except (ValueError, KeyError, TypeError, AttributeError, ValidationError) as err:
            raise InitlabError(f"{source}: not a readable compare plan ({str(err).splitlines()[0]})") from None


def _stored_run(entry: dict[str, Any]) -> CellRun:
    config = Config.model_validate(entry["config"]) if entry["error"] is None else None
    if config is not None and config_hash(config) != entry["cell"]:
        raise ValueError(f"cell {entry['cell']}: its config no longer hashes to its id")
    fields = {k: entry[k] for k in ("cell", "scheme", "activation", "depth", "width", "seed", "error")}
    return CellRun(config=config, raw=entry["config"], **fields)


def config_hash(config: Config) -> str:
    """A cell run's id: the first 12 hex digits of sha256 of its resolved config's JSON."""
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:12]


def plan_sweep(
    base: Config,
    schemes: Sequence[Scheme],
    activations: Sequence[Activation] = (),
    depths: Sequence[int] = (),
    widths: Sequence[int] = (),
    seeds: int = 1,
) -> Plan:
    """Every (scheme, activation, depth, width, seed) of a sweep as a resolved config.

    Empty axes take the base config's value; seeds are ``base.seed``, ``base.seed + 1``, ...
    A scheme replaces the base's weight scheme (its per-layer overrides and bias scheme
    stay). A combination that does not validate (``gain: torch`` on gelu, say) is planned
    as a failed run carrying the error, so the other cells still run.
    """
    if not schemes:
        raise InitlabError("give at least one scheme")
    check_seeds(base.seed, seeds, "seeds")
    acts = list(activations) or [base.model.activation]
    axes: dict[str, list[Any]] = {
        "schemes": [s.label() for s in schemes], "activations": [a.label() for a in acts],
        "depths": list(depths) or [base.model.depth], "widths": list(widths) or [base.model.width],
        "seeds": [base.seed + i for i in range(seeds)],
    }
    for name in ("schemes", "activations"):
        _no_repeats(axes[name], f"--{name}")
    runs = tuple(
        _resolve(base, scheme, act, depth, width, seed)
        for scheme in schemes for act in acts
        for depth in axes["depths"] for width in axes["widths"] for seed in axes["seeds"]
    )
    return Plan(base.name, axes, runs)


def _resolve(base: Config, scheme: Scheme, act: Activation, depth: int, width: int, seed: int) -> CellRun:
    raw = base.model_dump(mode="json")
    raw["seed"] = seed
    raw["model"] = {**raw["model"], "activation": act.model_dump(mode="json"), "depth": depth, "width": width}
    raw["init"] = {**scheme.model_dump(mode="json"), "layers": raw["init"]["layers"], "bias": raw["init"]["bias"]}
    where: dict[str, Any] = {"scheme": scheme.label(), "activation": act.label(), "depth": depth, "width": width,
                             "seed": seed}
    try:
        config = Config.model_validate(raw)
    except ValidationError as err:
        error = "; ".join(line.removeprefix(": ") for line in format_errors(err, raw, {}, "", {}))
        cell = hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:12]
        return CellRun(cell=cell, config=None, raw=raw, error=error, **where)
    return CellRun(cell=config_hash(config), config=config, raw=config.model_dump(mode="json"), **where)


# ---------------------------------------------------------------- run


@dataclass(frozen=True)
class Outcome:
    """A cell run's per-layer table and verdict, or its error."""

    run: CellRun
    layers_csv: str | None = None  # exactly the bytes of its layers.csv
    summary: dict[str, Any] | None = None
    error: str | None = None

    def layers(self) -> pd.DataFrame:
        """The per-layer table, read back from its CSV text so memory and disk agree exactly."""
        assert self.layers_csv is not None
        return read_csv(self.layers_csv)


def read_csv(text: str) -> pd.DataFrame:
    """A CSV written by :func:`initlab.results.csv_text`, floats read back bit for bit."""
    if _PANDAS_MAJOR >= 3:  # round-trip exact by default; the option is deprecated
        return pd.read_csv(io.StringIO(text))
    return pd.read_csv(io.StringIO(text), float_precision="round_trip")


_PANDAS_MAJOR = int(pd.__version__.split(".")[0])


def run_cell(cell: CellRun, draws: ConstructionDraws | None = None) -> Outcome:
    """Run one cell with :func:`initlab.runner.run`; a user-facing error becomes a failed outcome.

    ``draws``, shared across a sweep's cells, draws what runs with the same seed share once.
    """
    from initlab.runner import run

    if cell.config is None:
        return Outcome(cell, error=cell.error)
    try:
        result = run(cell.config, draws)
    # Schemes reject bad argument combinations (uniform with a > b) with ValueError.
    except (InitlabError, ValueError) as err:
        return Outcome(cell, error=str(err).splitlines()[0] if str(err) else type(err).__name__)
    return Outcome(cell, csv_text(result.layers), result.summary)


def sweep(plan: Plan, folder: SweepFolder | None = None, progress: Progress | None = None) -> Comparison:
    """Run every cell of ``plan`` not yet in ``folder`` and aggregate all that are finished.

    Each finished cell is written to ``folder`` at once; the aggregates are written at the
    end, and also when a KeyboardInterrupt stops the sweep (which is then re-raised). The
    folder is locked meanwhile: another process sweeping it is refused with an InitlabError.
    """
    with folder.lock() if folder is not None else nullcontext():
        return _sweep(plan, folder, progress)


def _sweep(plan: Plan, folder: SweepFolder | None, progress: Progress | None) -> Comparison:
    from initlab.model import ConstructionDraws

    started = time.perf_counter()
    draws = ConstructionDraws()
    outcomes = folder.load(plan) if folder is not None else {}
    todo = [cell for cell in plan.runs if cell.cell not in outcomes]
    if progress is not None:
        progress(0, len(todo), None)
    try:
        for done, cell in enumerate(todo, 1):
            outcome = run_cell(cell, draws)
            if folder is not None and outcome.error is None:
                folder.save(outcome)
            outcomes[cell.cell] = outcome
            if progress is not None:
                progress(done, len(todo), cell)
    except KeyboardInterrupt:
        if folder is not None:
            folder.finish(aggregate(plan, outcomes), time.perf_counter() - started, interrupted=True)
        raise
    comparison = aggregate(plan, outcomes)
    if folder is not None:
        folder.finish(comparison, time.perf_counter() - started, interrupted=False)
    return comparison


# ---------------------------------------------------------------- aggregate


@dataclass(frozen=True)
class Comparison:
    """A sweep's results so far."""

    plan: Plan
    layers: pd.DataFrame  # tidy: one row per (cell, seed, layer): ID_COLUMNS, layer, per-layer columns
    summary: pd.DataFrame  # one row per cell: CELL_KEYS, status, seeds, agree, median-trace verdict
    traces: pd.DataFrame  # per cell and layer: median, low, high std over seeds (non-finite: inf / skipped)
    failed: list[dict[str, Any]]  # one entry per failed cell run: ids and error

    @property
    def missing(self) -> int:
        """Cell runs neither finished nor failed (an interrupted sweep)."""
        return len(self.plan.runs) - self.layers["cell"].nunique() - len(self.failed)


def aggregate(plan: Plan, outcomes: dict[str, Outcome]) -> Comparison:
    """The tidy table, median traces and per-cell summary of the finished ``outcomes``."""
    ordered = [outcomes[run.cell] for run in plan.runs if run.cell in outcomes]
    ok = [o for o in ordered if o.error is None]
    layers = tidy_layers(ok)
    traces = median_traces(layers)
    failed = [{**o.run.ids(), "error": o.error} for o in ordered if o.error is not None]
    summary = summarise(plan, ok, traces, failed)
    return Comparison(plan, layers, summary, traces, failed)


def tidy_layers(outcomes: Sequence[Outcome]) -> pd.DataFrame:
    """One row per (cell, seed, layer), in plan order: ids first, then the per-layer columns."""
    frames = [o.layers().assign(**o.run.ids()) for o in outcomes]
    if not frames:
        empty: pd.DataFrame = pd.DataFrame(columns=[*ID_COLUMNS, "layer", "std", "nonfinite"])
        return empty
    table = pd.concat(frames, ignore_index=True)
    ordered: pd.DataFrame = table[ID_COLUMNS + _merged_columns([list(f.columns) for f in frames], ID_COLUMNS)]
    return ordered


def _merged_columns(orders: Sequence[list[str]], skip: Sequence[str]) -> list[str]:
    """All columns once, each new one placed before the column that follows it where it first
    appears, so statistics only some activations have (saturated, dead) stay among their kin."""
    merged: list[str] = []
    for order in orders:
        successor: str | None = None
        for column in reversed([c for c in order if c not in skip]):
            if column not in merged:
                merged.insert(merged.index(successor) if successor is not None else len(merged), column)
            successor = column
    return merged


def median_traces(layers: pd.DataFrame) -> pd.DataFrame:
    """Per cell and layer: the forward median trace (``median``, ``low``, ``high``, ``seeds``, the fractions'
    medians, ``theory_std``) and, where the cells ran a backward pass, the backward one beside it
    (``grad_median``, ``grad_low``, ``grad_high``, ``theory_grad_rms``): see :func:`signal_traces`."""
    forward = signal_traces(layers, FORWARD)
    backward = signal_traces(layers, BACKWARD)
    if backward.empty:
        return forward
    merged: pd.DataFrame = forward.merge(backward.drop(columns="grad_seeds"), how="left", on=[*CELL_KEYS, "layer"])
    return merged


def signal_traces(layers: pd.DataFrame, columns: SignalColumns) -> pd.DataFrame:
    """Per cell and layer: the median of the signal's value over seeds (non-finite as +inf), the range of the
    finite ones, the seeds counted, the fractions' medians and the mean-field prediction (missing where the
    theory does not apply), the columns prefixed by ``columns.prefix``. Rows without the signal (a cell run
    without a backward pass) are left out: empty where no cell has it."""
    first = columns.nonfinite[0]
    if first not in layers.columns:
        empty: pd.DataFrame = pd.DataFrame(columns=[*CELL_KEYS, "layer"])
        return empty
    layers = layers[layers[first].notna()]
    value = layers[columns.value].astype("float64")
    bad = (layers[first] > 0) | ~np.isfinite(value)
    for name in columns.nonfinite[1:]:  # an overflow a bounded activation hides is still one
        if name in layers.columns:
            bad |= layers[name].fillna(0) > 0
    fractions = [c for c in columns.fractions if c in layers.columns]
    predicted = [columns.predicted] if columns.predicted in layers.columns else []  # the same for every seed
    frame = layers[CELL_KEYS + ["seed", "layer", *fractions, *predicted]].assign(
        as_inf=value.where(~bad, np.inf), finite=value.where(~bad))
    grouped = frame.groupby(CELL_KEYS + ["layer"], sort=False)
    out = pd.DataFrame({
        columns.median: grouped["as_inf"].median(), columns.low: grouped["finite"].min(),
        columns.high: grouped["finite"].max(), f"{columns.prefix}seeds": grouped["seed"].count(),
        **{c: grouped[c].median() for c in fractions},
        **{c: grouped[c].first() for c in predicted},  # first() skips missing values: the first finite one
    })
    flat: pd.DataFrame = out.reset_index()
    return flat


_SUMMARY_FIGURES = ["nonfinite", "first_nonfinite_layer", "nonfinite_site", "first_zero_layer", "input_std",
                    "first_std", "last_std", "last_finite_layer", "ratio", "decades", "growth_per_layer",
                    "tail_start", "tail_change", "trend_t", "saturated_fraction", "dead_fraction",
                    "depth_over_width", "ratio_low", "ratio_high", "theory_regime", "theory_ratio",
                    "theory_agrees", "shape", "reason", "notes"]
#: The backward verdict's columns of summary.csv: ``backward_`` and the figures that apply to a gradient
#: (``first_std``/``last_std`` are the upstream gradient's and the first layer's rms).
_BACKWARD_FIGURES = [BACKWARD.summary + name for name in ["regime", "agree", *_SUMMARY_FIGURES]
                     if name not in ("input_std", "saturated_fraction", "dead_fraction")]


def summarise(
    plan: Plan, ok: Sequence[Outcome], traces: pd.DataFrame, failed: Sequence[dict[str, Any]]
) -> pd.DataFrame:
    """One row per cell: status, seed counts, the median trace's verdicts and figures, any error."""
    summaries: dict[tuple[str, str, int, int], list[dict[str, Any]]] = {}
    for outcome in ok:
        assert outcome.summary is not None
        summaries.setdefault(outcome.run.position, []).append(outcome.summary)
    errors: dict[tuple[str, str, int, int], list[str]] = {}
    for entry in failed:
        errors.setdefault((entry["scheme"], entry["activation"], entry["depth"], entry["width"]), []).append(
            entry["error"]
        )
    by_cell = {key: group for key, group in traces.groupby(CELL_KEYS, sort=False)}
    configs = {run.position: run.config for run in plan.runs if run.config is not None}
    planned = len(plan.axes["seeds"])
    rows = []
    for position in plan.positions():
        trace, config, seeds = by_cell.get(position), configs.get(position), summaries.get(position, [])
        row = _summary_row(position, planned, seeds, errors.get(position, []), trace, config)
        rows.append(row | _backward_row(seeds, trace, config))
    return _summary_frame(rows)


def _summary_row(
    position: tuple[str, str, int, int],
    planned: int,
    summaries: list[dict[str, Any]],
    errors: list[str],
    trace: pd.DataFrame | None,
    config: Config | None,
) -> dict[str, Any]:
    regimes = [s["regime"] for s in summaries]
    status: Literal["done", "failed", "missing"] = (
        "failed" if errors else "done" if len(regimes) == planned else "missing"
    )
    row: dict[str, Any] = {**dict(zip(CELL_KEYS, position, strict=True)), "status": status, "seeds": planned,
                           "finished": len(regimes), "failed": len(errors), "regime": None, "agree": None}
    row |= dict.fromkeys(_SUMMARY_FIGURES)
    if trace is not None and regimes and config is not None:
        verdict = median_verdict(trace, summaries, position[3], config.verdict)
        row |= _verdict_figures(verdict, summaries, "")
    row["error"] = errors[0] if errors else None
    return row


def _backward_row(summaries: list[dict[str, Any]], trace: pd.DataFrame | None, config: Config | None
                  ) -> dict[str, Any]:
    """The ``backward_*`` columns: the backward verdict of the cell's median gradient trace; empty where the
    cell ran no backward pass (or has no finished seed)."""
    row: dict[str, Any] = dict.fromkeys(_BACKWARD_FIGURES)
    seeds = [s["backward"] for s in summaries if s.get("backward") is not None]
    if trace is None or config is None or not seeds or len(seeds) < len(summaries) or BACKWARD.median not in trace:
        return row
    verdict = median_verdict(trace, summaries, config.model.width, config.verdict, "backward",
                             backward_of=config)
    return row | _verdict_figures(verdict, seeds, BACKWARD.summary)


def _verdict_figures(verdict: Verdict, seeds: Sequence[dict[str, Any]], prefix: str) -> dict[str, Any]:
    """A median trace's verdict as summary.csv's columns (``prefix``ed), with the seeds' agreement and spread."""
    ratios = [s["ratio"] for s in seeds if s.get("ratio") is not None]
    spread = [f"{len(seeds)} seeds: ratio {min(ratios):.3g} to {max(ratios):.3g}"] if len(ratios) > 1 else []
    row = {k: v for k, v in verdict.as_dict().items() if k in _SUMMARY_FIGURES}
    row |= {"regime": verdict.regime, "agree": [s["regime"] for s in seeds].count(verdict.regime),
            "notes": "; ".join([*verdict.notes, *spread]) or None, "ratio_low": min(ratios, default=None),
            "ratio_high": max(ratios, default=None)}
    allowed = _BACKWARD_FIGURES if prefix else ["regime", "agree", *_SUMMARY_FIGURES]
    return {prefix + key: value for key, value in row.items() if prefix + key in allowed}


def median_verdict(
    trace: pd.DataFrame, summaries: Sequence[dict[str, Any]], width: int, thresholds: VerdictConfig,
    signal: Signal = "forward", *, backward_of: Config | None = None,
) -> Verdict:
    """The verdict of a cell's median trace (:func:`median_traces`) beside the theory the seeds share.

    Backward: :func:`initlab.regimes.judge_backward` of the median gradient trace, the tail's shape from the
    prediction ``theory_grad_rms`` where there is one; ``backward_of`` is the cell's config (its upstream
    gradient, activation and dtype).
    """
    theory = summaries[0].get("theory")  # the same prediction for every seed of a cell
    measured = cell_trace(trace, summaries, width, signal)
    if signal == "backward":
        predicted = trace[BACKWARD.predicted].tolist() if BACKWARD.predicted in trace.columns else []
        expected = predicted if any(math.isfinite(p) for p in predicted) else None
        assert backward_of is not None and backward_of.backward is not None
        upstream, activation = backward_of.backward.upstream, backward_of.model.activation
        shared = backward_theory_summary(theory, upstream, activation) if theory is not None else None
        from initlab.devices import largest  # torch: only once a sweep runs

        return judge_backward(measured, thresholds, expected, shared, largest(backward_of.dtype))
    verdict = classify(measured, thresholds, theory)
    if theory is not None:
        figures = {k: summaries[0][k] for k in ("theory_regime", "theory_ratio")}
        verdict = with_theory(verdict, figures, theory, thresholds)
    return verdict


def cell_trace(trace: pd.DataFrame, summaries: Sequence[dict[str, Any]], width: int,
               signal: Signal = "forward") -> Trace:
    """A cell's median trace as the verdict reads it. Forward: the reference is the seeds' median input std;
    backward: the gradient from the last block down (:func:`initlab.regimes.backward_trace`), the
    reference the median upstream gradient."""
    median = trace[SIGNALS[signal].median].to_numpy()
    finite = np.isfinite(median)
    values = [float(s) if f else None for s, f in zip(median, finite, strict=True)]
    if signal == "backward":
        return backward_trace(values, (~finite).astype(int).tolist(), width=width)
    inputs = [s["input_std"] for s in summaries if s.get("input_std") is not None]

    def column(name: str) -> list[float | None]:
        return [None if np.isnan(v) else float(v) for v in trace[name]] if name in trace.columns else []

    return Trace(std=values, nonfinite=(~finite).astype(int).tolist(),
                 input_std=float(np.median(inputs)) if inputs else None,
                 saturated=column("saturated"), dead=column("dead"), width=width)


def _summary_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(rows, columns=[*CELL_KEYS, "status", "seeds", "finished", "failed", "regime",
                                                     "agree", *_SUMMARY_FIGURES, "error", *_BACKWARD_FIGURES])
    # Nullable dtypes so missing figures are empty cells, never "3.0" or "nan".
    ints = ["agree", "first_nonfinite_layer", "first_zero_layer", "last_finite_layer", "tail_start"]
    floats = ["input_std", "first_std", "last_std", "ratio", "decades", "growth_per_layer", "tail_change", "trend_t",
              "saturated_fraction", "dead_fraction", "depth_over_width", "ratio_low", "ratio_high", "theory_ratio"]
    booleans = ["nonfinite", "theory_agrees"]
    dtypes = {**dict.fromkeys(ints, "Int64"), **dict.fromkeys(floats, "float64"), **dict.fromkeys(booleans, "boolean")}
    backward = {BACKWARD.summary + c: dtype for c, dtype in dtypes.items() if BACKWARD.summary + c in _BACKWARD_FIGURES}
    typed: pd.DataFrame = frame.astype({**dtypes, **backward})
    return typed


# ---------------------------------------------------------------- results folder


class SweepFolder:
    """``<root>/<name>/<run-id>/``: ``plan.json``, ``cells/<id>/`` per finished cell run, aggregates.

    The folder is created with its plan (atomically); each cell run is staged and renamed
    into ``cells/`` when complete; aggregate files are replaced atomically, so every file
    that exists is whole, whenever the sweep stops. While :func:`sweep` works in it, the
    folder holds a lock file (``.lock``, :class:`~initlab.folder_lock.FolderLock`), so a second
    sweep of the same folder is refused rather than doing the work twice.
    """

    def __init__(self, path: Path, argv: Sequence[str], resumed: bool) -> None:
        self.path = path
        self.argv = list(argv)
        self.resumed = resumed

    def lock(self) -> FolderLock:
        """The folder's lock (not yet taken): ``with folder.lock():`` around the work."""
        return FolderLock(self.path)

    @classmethod
    def create(cls, root: Path, plan: Plan, argv: Sequence[str]) -> SweepFolder:
        """A new, empty sweep folder holding ``plan.json``."""
        ident = run_id(datetime.now(timezone.utc), plan.axes["seeds"][0])
        stored = Plan(plan.name, plan.axes, plan.runs, list(argv))
        return cls(write_folder(root, plan.name, ident, {"plan.json": stored.to_json()}), argv, resumed=False)

    @classmethod
    def open(cls, path: Path, argv: Sequence[str]) -> tuple[SweepFolder, Plan]:
        """An existing sweep folder and its plan (for ``--resume``)."""
        if not path.is_dir():
            raise InitlabError(f"--resume {path}: no such folder")
        plan_file = path / "plan.json"
        if not plan_file.is_file():
            raise InitlabError(f"--resume {path}: not a compare results folder (no plan.json)")
        return cls(path, argv, resumed=True), Plan.from_json(plan_file.read_text(encoding="utf-8"), str(plan_file))

    def finished(self) -> set[str]:
        """Ids of the cell runs whose folder is complete."""
        cells = self.path / "cells"
        if not cells.is_dir():
            return set()
        return {p.name for p in cells.iterdir() if p.is_dir() and not p.name.startswith(".")}  # .x: staging

    def save(self, outcome: Outcome) -> Path:
        """Write one finished cell run to ``cells/<id>/`` (config.yaml, layers.csv, summary.json)."""
        assert outcome.run.config is not None and outcome.layers_csv is not None
        files = {"config.yaml": to_yaml(outcome.run.config), "layers.csv": outcome.layers_csv,
                 "summary.json": to_json({**outcome.run.ids(), **(outcome.summary or {})})}
        return write_folder(self.path, "cells", outcome.run.cell, files)

    def load(self, plan: Plan) -> dict[str, Outcome]:
        """The finished cell runs of ``plan`` found in ``cells/``."""
        done = self.finished()
        out = {}
        for cell in plan.runs:
            if cell.cell in done:
                folder = self.path / "cells" / cell.cell
                summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
                out[cell.cell] = Outcome(cell, (folder / "layers.csv").read_text(encoding="utf-8"), summary)
        return out

    def finish(self, comparison: Comparison, elapsed: float, interrupted: bool) -> None:
        """(Re)write the aggregates: layers.csv, summary.csv, traces.csv, meta.json, std.png, std.svg and, with a
        backward pass, grad.png, grad.svg."""
        from initlab import plots

        _replace(self.path / "layers.csv", csv_text(comparison.layers).encode())
        _replace(self.path / "summary.csv", csv_text(comparison.summary).encode())
        _replace(self.path / "traces.csv", csv_text(comparison.traces).encode())
        meta = sweep_meta(comparison, self.argv, elapsed, interrupted, self.resumed)
        _replace(self.path / "meta.json", to_json(meta).encode())
        for name, data in plots.std_plot_files(comparison).items():
            _replace(self.path / name, data)


def _replace(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all: a temporary sibling renamed over it."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def sweep_meta(
    comparison: Comparison, argv: Sequence[str], elapsed: float, interrupted: bool, resumed: bool
) -> dict[str, Any]:
    """meta.json: versions, command line, git commit, axes, counts and failures."""
    import torch

    base = next((run.config for run in comparison.plan.runs if run.config is not None), None)
    return {
        "initlab": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "platform": platform.platform(), "device": base.device if base else None,
        "dtype": base.dtype if base else None,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "argv": list(argv), "resumed": resumed, "git_commit": git_commit(),
        "axes": comparison.plan.axes, "cell_runs": len(comparison.plan.runs),
        "finished": int(comparison.layers["cell"].nunique()), "missing": comparison.missing,
        "interrupted": interrupted, "elapsed_s": elapsed, "failed": comparison.failed,
    }


__all__ = [
    "CELL_KEYS",
    "ID_COLUMNS",
    "CellRun",
    "Comparison",
    "Outcome",
    "Plan",
    "SweepFolder",
    "activation_overrides",
    "aggregate",
    "base_config",
    "config_hash",
    "parse_activations",
    "parse_ints",
    "parse_schemes",
    "plan_sweep",
    "run_cell",
    "split_specs",
    "sweep",
]
