"""The plan of a sweep: one network under several init schemes, activations, depths, widths and seeds.

A sweep is *planned* from a base :class:`~initlab.config.Config` and its axes: every
(scheme, activation, depth, width) is a **cell**, and every seed of a cell is one fully
resolved ``Config``, validated exactly as a config file is. Each of them is run by
:func:`initlab.runner.run`, so its numbers equal ``initlab run`` on that config by
construction. A resolved config is identified by the first 12 hex digits of the sha256 of
its JSON (which includes the seed); that id names its folder ``cells/<id>/``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from initlab.activations import Activation
from initlab.config import Config, Override, load_config, patched
from initlab.errors import ConfigError, InitlabError
from initlab.limits import MAX_RUNS, check_seeds
from initlab.results import to_json
from initlab.schemes import Scheme
from initlab.sweep.grid import Axis, check_axes, parse_grid, shown_value
from initlab.sweep.specs import (
    activation_overrides,
    base_or_axis,
    no_repeats,
    parse_activations,
    parse_ints,
    parse_schemes,
    required_schemes,
)

#: Columns that say which cell and seed a row of the tidy table belongs to.
ID_COLUMNS = ["cell", "scheme", "activation", "depth", "width", "seed"]


#: The axes of the matrix, in the order cells are planned, sorted and shown.
CELL_KEYS = ["scheme", "activation", "depth", "width"]


PLAN_FORMAT = "initlab-compare/1"


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
    grid: Sequence[str] = (),
    overrides: Sequence[str | Override] = (),
    max_runs: int = MAX_RUNS,
    remote: bool = False,
) -> Plan:
    """The plan of ``initlab compare`` from its options as typed, every check made before any run.

    A bad spec, a base flag next to the axis that replaces it (``--depth`` with
    ``--depths``), a ``--grid`` value that does not validate in some cell, a device that is not
    here, seeds torch cannot take, more than ``max_runs`` cell runs, or a cell too large for
    memory is an :class:`InitlabError`. With ``remote`` (cells run on a cluster's machines) the
    devices and memory are not checked here, where they say nothing of the workers': a worker that
    cannot run a cell reports it failed, with the same one-line error.
    """
    from initlab.devices import usable

    base = base_config(
        config, depth=base_or_axis(depth, depths, "depth"), width=base_or_axis(width, widths, "width"),
        batch_size=batch_size, bias=bias, activation=base_or_axis(activation, activations, "activation"), seed=seed,
        overrides=overrides,
    )
    if not remote:
        usable(base)  # no CUDA, a bad id or dtype: one error now, not one per cell
    grid_axes = tuple(parse_grid(text, max_values=max_runs) for text in grid)
    if any(axis.path == ("init", "from") for axis in grid_axes):
        raise InitlabError("--grid init.from: saved weights are a fixed base (init.from in the --config YAML), "
                           "not an axis")
    if base.init.from_ is not None:
        check_fixed_weights(base.init.from_, schemes=schemes, depths=depths, widths=widths, grid=grid_axes)
    weights = [base.init.weight] if base.init.from_ is not None else parse_schemes(required_schemes(schemes))
    axes = (weights, parse_activations(activations) if activations else [],
            parse_ints(depths, "--depths") if depths else [], parse_ints(widths, "--widths") if widths else [])
    check_axes(grid_axes)
    check_bias_axis(base, bias, grid_axes)
    check_size([len(axis) or 1 for axis in axes], seeds, max_runs, grid_axes)
    check_seeds(base.seed, seeds, "--seed/--seeds")
    plan = plan_sweep(base, *axes, seeds=seeds, grid=grid_axes)
    if not remote:
        check_feasible(plan)
    if base.init.from_ is not None:
        from initlab import checkpoint

        checkpoint.check(run.config for run in plan.runs if run.config is not None)
    return plan


def check_bias_axis(base: Config, bias: bool | None, grid: Sequence[Axis]) -> None:
    """Refuse a ``model.bias_std`` axis next to what it would silently replace: ``--no-bias``, or a config's
    own ``init.bias``. (A config file's ``bias: false`` is the base network's default, which the axis turns on.)"""
    if not any(axis.path == ("model", "bias_std") for axis in grid) or base.model.bias_std is not None:
        return
    if bias is False:
        raise InitlabError("--grid model.bias_std: sets bias: true in every cell, next to --no-bias; give one")
    if "bias" in base.init.model_fields_set:
        raise InitlabError(f"--grid model.bias_std: sets init.bias to normal(0, σb), but the config sets init.bias "
                           f"({base.init.bias.label()}); "
                           "drop one (or sweep init.bias.std)")


#: Fields of the base config a sweep over loaded weights (``init.from``) keeps fixed: drawn weights, biases, shapes.
_FIXED_BY_WEIGHTS = (("init",), ("model", "bias"), ("model", "bias_std"))


def check_fixed_weights(path: str, *, schemes: str | None, depths: str | None, widths: str | None,
                        grid: Sequence[Axis]) -> None:
    """Refuse the axes that would change weights loaded from ``init.from`` (a fixed base, never an axis)."""
    given = {"--schemes": schemes, "--depths": depths, "--widths": widths}
    for option, value in given.items():
        if value is not None:
            raise InitlabError(f"{option}: the base config loads its weights from {path} (init.from), which fix "
                               f"{'the init scheme' if option == '--schemes' else 'depth and width'}; leave "
                               f"{option} out (activations, seeds and data can still be swept)")
    for axis in grid:
        if any(axis.path[: len(fixed)] == fixed for fixed in _FIXED_BY_WEIGHTS):
            raise InitlabError(f"--grid {axis.name}: the base config loads its weights from {path} (init.from), "
                               "which fix the weights and biases; init.from is a fixed base, not an axis")


def check_size(lengths: Sequence[int], seeds: int, max_runs: int, grid: Sequence[Axis] = ()) -> None:
    """Refuse, before planning anything, a sweep of more than ``max_runs`` cell runs."""
    count = seeds
    for length in [*lengths, *(len(axis.values) for axis in grid)]:
        count *= length
    if count > max_runs:
        names = ["scheme", "activation", "depth", "width", "seed"]
        counts = [*zip([*lengths, seeds], names, strict=True), *((len(a.values), f"{a.name} value") for a in grid)]
        shape = " x ".join(f"{n:,} {axis}{'s' if n != 1 else ''}" for n, axis in counts if n != 1 or axis == "scheme")
        raise InitlabError(f"the sweep has {count:,} cell runs ({shape}), more than --max-runs {max_runs:,}; "
                           f"give --max-runs {count} to run it anyway")


def check_feasible(plan: Plan) -> None:
    """Refuse a plan with a cell that cannot fit in memory, checked once per distinct network size and grid value."""
    from initlab.devices import check_memory, usable

    checked: set[tuple[Any, ...]] = set()
    for run in plan.runs:
        size = (run.depth, run.width, *run.grid.values())  # a grid axis may change the size (data.batch_size)
        if run.config is None or size in checked:
            continue
        checked.add(size)
        try:
            check_memory(run.config, usable(run.config))
        except InitlabError as err:
            raise InitlabError(f"cell depth {run.depth}, width {run.width}: {err}") from None


def check_layers(chosen: list[int] | None, depths: list[int]) -> None:
    """Refuse ``--layers`` that name no layer at any of the sweep's depths."""
    if chosen is not None and not any(-d <= layer < d for layer in chosen for d in depths):
        raise InitlabError(f"--layers: no layer of {chosen} exists at depth {', '.join(map(str, depths))}")


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
    grid: dict[str, Any] = field(default_factory=dict)  # the grid axes' values by dotted path, in plan order

    @property
    def position(self) -> tuple[Any, ...]:
        """Where the run sits in the matrix: (scheme, activation, depth, width, grid values...)."""
        return (self.scheme, self.activation, self.depth, self.width, *self.grid.values())

    def ids(self) -> dict[str, Any]:
        """The identifying columns of the tidy table: the fixed ones, then the grid axes by dotted path."""
        return {"cell": self.cell, "scheme": self.scheme, "activation": self.activation,
                "depth": self.depth, "width": self.width, "seed": self.seed, **self.grid}

    def as_dict(self) -> dict[str, Any]:
        return {**self.ids(), "config": self.raw, "error": self.error}


@dataclass(frozen=True)
class Plan:
    """Every cell run of a sweep, in matrix order, and the axes they were planned from."""

    name: str
    axes: dict[str, list[Any]]  # schemes, activations (labels), depths, widths, seeds
    runs: tuple[CellRun, ...]
    argv: list[str] = field(default_factory=list)
    grid: tuple[Axis, ...] = ()  # --grid axes, in the order given

    @property
    def cell_keys(self) -> list[str]:
        """The columns that identify a cell: :data:`CELL_KEYS`, then the grid axes' dotted paths."""
        return [*CELL_KEYS, *(axis.name for axis in self.grid)]

    @property
    def id_columns(self) -> list[str]:
        """The columns that identify a row of the tidy table: :data:`ID_COLUMNS`, then the grid axes'."""
        return [*ID_COLUMNS, *(axis.name for axis in self.grid)]

    def positions(self) -> list[tuple[Any, ...]]:
        """The matrix cells, in plan order, each once."""
        return list(dict.fromkeys(run.position for run in self.runs))

    def to_json(self) -> str:
        grid = {"grid": [axis.as_dict() for axis in self.grid]} if self.grid else {}  # old plans read the same
        return to_json({"format": PLAN_FORMAT, "name": self.name, "argv": self.argv, "axes": self.axes, **grid,
                        "runs": [run.as_dict() for run in self.runs]})

    @classmethod
    def from_json(cls, text: str, source: str) -> Plan:
        """Read a plan written by :meth:`to_json`, re-validating every stored config."""
        try:
            data = json.loads(text)
            if data.get("format") != PLAN_FORMAT:
                raise ValueError(f"format is {data.get('format')!r}, not {PLAN_FORMAT!r}")
            grid = tuple(Axis.from_dict(axis) for axis in data.get("grid", []))  # none before --grid
            runs = tuple(_stored_run(entry, [axis.name for axis in grid]) for entry in data["runs"])
            return cls(str(data["name"]), dict(data["axes"]), runs, list(data.get("argv", [])), grid)
        except (ValueError, KeyError, TypeError, AttributeError, ValidationError) as err:
            raise InitlabError(f"{source}: not a readable compare plan ({str(err).splitlines()[0]})") from None


def _stored_run(entry: dict[str, Any], grid: Sequence[str]) -> CellRun:
    config = Config.model_validate(entry["config"]) if entry["error"] is None else None
    if config is not None and config_hash(config) != entry["cell"]:
        raise ValueError(f"cell {entry['cell']}: its config no longer hashes to its id")
    fields = {k: entry[k] for k in ("cell", "scheme", "activation", "depth", "width", "seed", "error")}
    return CellRun(config=config, raw=entry["config"], grid={name: entry[name] for name in grid}, **fields)


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
    grid: Sequence[Axis] = (),
) -> Plan:
    """Every (scheme, activation, depth, width, grid values..., seed) of a sweep as a resolved config.

    Empty axes take the base config's value; seeds are ``base.seed``, ``base.seed + 1``, ...
    A scheme replaces the base's weight scheme (its per-layer overrides and bias scheme
    stay); the grid axes' values are then set on it (:func:`initlab.config.patched`). A
    combination that does not validate (``gain: torch`` on gelu, say) is planned as a failed
    run carrying the error, so the other cells still run; but a grid value that does not
    validate on its own in a cell that does is refused (:class:`~initlab.errors.ConfigError`).
    """
    if not schemes:
        raise InitlabError("give at least one scheme")
    check_seeds(base.seed, seeds, "seeds")
    acts = list(activations) or [base.model.activation]
    axes: dict[str, list[Any]] = {
        "schemes": [_label(base, s) for s in schemes], "activations": [a.label() for a in acts],
        "depths": list(depths) or [base.model.depth], "widths": list(widths) or [base.model.width],
        "seeds": [base.seed + i for i in range(seeds)],
    }
    for name in ("schemes", "activations"):
        no_repeats(axes[name], f"--{name}")
    runs: list[CellRun] = []
    for scheme, act, depth, width in itertools.product(schemes, acts, axes["depths"], axes["widths"]):
        raw = _position_raw(base, scheme, act, depth, width)
        _check_grid_values(raw, grid)
        for values in itertools.product(*(axis.values for axis in grid)):
            runs += [_resolve(raw, _label(base, scheme), act, seed, grid, values) for seed in axes["seeds"]]
    _check_distinct(runs)
    return Plan(base.name, axes, tuple(runs), grid=tuple(grid))


def _check_distinct(runs: Sequence[CellRun]) -> None:
    """Refuse grid values that resolve to the same network (a value another field overrides, such as
    ``init.bias.std`` under ``model.bias_std``): the tables would label one run with a value it never had."""
    seen: dict[str, CellRun] = {}
    for run in runs:
        other = seen.setdefault(run.cell, run)
        if other is not run and run.grid != other.grid:
            given = ", ".join(f"{k}={shown_value(v)}" for k, v in run.grid.items() if other.grid.get(k) != v)
            same = ", ".join(f"{k}={shown_value(v)}" for k, v in other.grid.items() if run.grid.get(k) != v)
            raise InitlabError(f"--grid {given}: has no effect here (the cell runs the same config as with {same}); "
                               "another field sets it")


def _position_raw(base: Config, scheme: Scheme, act: Activation, depth: int, width: int) -> dict[str, Any]:
    """The base config's dump with a cell's scheme, activation, depth and width."""
    raw = base.model_dump(mode="json")
    raw["model"] = {**raw["model"], "activation": act.model_dump(mode="json"), "depth": depth, "width": width}
    kept = {key: raw["init"][key] for key in ("layers", "bias", "from") if key in raw["init"]}
    raw["init"] = {**scheme.model_dump(mode="json"), **kept}
    return raw


def _label(base: Config, scheme: Scheme) -> str:
    """A row of the matrix: the scheme, or the file the weights are loaded from."""
    return scheme.label() if base.init.from_ is None else f"from {Path(base.init.from_).name}"


def _check_grid_values(raw: dict[str, Any], grid: Sequence[Axis]) -> None:
    """Every grid value alone on a cell that validates without the grid: a value that fails is refused now."""
    try:
        Config.model_validate(raw)
    except ValidationError:
        return  # the cell fails whatever the grid: planned as failed runs
    for axis in grid:
        for value in axis.values:
            patched(raw, [axis.override(value)])


def _resolve(raw: dict[str, Any], scheme: str, act: Activation, seed: int, grid: Sequence[Axis],
             values: Sequence[Any]) -> CellRun:
    where: dict[str, Any] = {"scheme": scheme, "activation": act.label(), "depth": raw["model"]["depth"],
                             "width": raw["model"]["width"], "seed": seed,
                             "grid": {axis.name: value for axis, value in zip(grid, values, strict=True)}}
    overrides = [Override(("seed",), seed, "seed"), *(a.override(v) for a, v in zip(grid, values, strict=True))]
    try:
        config = patched(raw, overrides)
    except ConfigError as err:
        return _failed(raw, overrides, "; ".join(line.split(": ", 1)[-1] for line in err.lines), where)
    return CellRun(cell=config_hash(config), config=config, raw=config.model_dump(mode="json"), **where)


def _failed(raw: dict[str, Any], overrides: Sequence[Override], error: str, where: dict[str, Any]) -> CellRun:
    """A cell run whose config does not validate: its id hashes the mapping as patched."""
    applied = {**raw, "seed": where["seed"]}
    key = {**applied, "grid": where["grid"]} if where["grid"] else applied  # grid cells apart, old ids kept
    cell = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return CellRun(cell=cell, config=None, raw=applied, error=error, **where)
