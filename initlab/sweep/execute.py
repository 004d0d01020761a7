"""Running a sweep's cells. Nothing here prints: progress is reported through a callback, and
files are written only through a :class:`~initlab.sweep.store.SweepFolder`, one finished cell at a
time, so an interrupted sweep keeps what it finished and :func:`run_sweep` on the same folder runs
only what is missing."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import TYPE_CHECKING

from initlab.errors import InitlabError
from initlab.results import csv_text
from initlab.sweep.aggregate import Comparison, aggregate
from initlab.sweep.outcome import Outcome
from initlab.sweep.plan import CellRun, Plan
from initlab.sweep.store import SweepFolder

if TYPE_CHECKING:
    from initlab.model import ConstructionDraws


#: ``progress(done, total, cell)`` after each cell run (``cell`` is None for the first call, done = 0).
Progress = Callable[[int, int, CellRun | None], None]


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


def run_sweep(plan: Plan, folder: SweepFolder | None = None, progress: Progress | None = None) -> Comparison:
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
