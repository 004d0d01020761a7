"""Sweeps: one network under several init schemes, activations, depths, widths and seeds
(``initlab compare``).

One module per step: :mod:`~initlab.sweep.specs` parses what the command line gives,
:mod:`~initlab.sweep.plan` resolves every cell run's config, :mod:`~initlab.sweep.execute` runs
them, :mod:`~initlab.sweep.aggregate` turns finished runs into tables and verdicts (pure
functions), and :mod:`~initlab.sweep.store` keeps the results folder. Figures and terminal
output (:mod:`initlab.plots`, :mod:`initlab.report`) depend on this package, never the reverse.
"""

from initlab.sweep.aggregate import Comparison, aggregate, cell_trace, median_traces, median_verdict
from initlab.sweep.execute import Progress, check_placeable, run_cell, run_sweep
from initlab.sweep.outcome import Outcome
from initlab.sweep.plan import (
    CELL_KEYS,
    ID_COLUMNS,
    CellRun,
    Plan,
    base_config,
    check_layers,
    check_size,
    config_hash,
    plan_from_options,
    plan_sweep,
)
from initlab.sweep.specs import activation_overrides, parse_activations, parse_ints, parse_schemes, split_specs
from initlab.sweep.store import Figures, SweepFolder, resume

__all__ = [
    "CELL_KEYS",
    "ID_COLUMNS",
    "CellRun",
    "Comparison",
    "Figures",
    "Outcome",
    "Plan",
    "Progress",
    "SweepFolder",
    "activation_overrides",
    "aggregate",
    "base_config",
    "cell_trace",
    "check_layers",
    "check_placeable",
    "check_size",
    "config_hash",
    "median_traces",
    "median_verdict",
    "parse_activations",
    "parse_ints",
    "parse_schemes",
    "plan_from_options",
    "plan_sweep",
    "resume",
    "run_cell",
    "run_sweep",
    "split_specs",
]
