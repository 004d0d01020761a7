"""Running a sweep's cells. Nothing here prints: progress is reported through a callback, and
files are written only through a :class:`~initlab.sweep.store.SweepFolder`, one finished cell at a
time, so an interrupted sweep keeps what it finished and :func:`run_sweep` on the same folder runs
only what is missing. Where the cells run is an :class:`~initlab.sweep.executors.Engine`: this process
by default, or workers that send back only each finished cell's result (:func:`compute`). Which errors mean a
dead worker rather than a failed cell is the engine's to say (:attr:`Engine.lost`): nothing here knows an
engine's exception types."""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

from initlab.errors import InitlabError
from initlab.results import csv_text
from initlab.sweep.aggregate import Comparison, aggregate
from initlab.sweep.executors import Engine, Loss, in_process
from initlab.sweep.outcome import Outcome
from initlab.sweep.plan import CellRun, Plan
from initlab.sweep.store import SweepFolder

if TYPE_CHECKING:
    from initlab.model import ConstructionDraws


#: ``progress(done, total, cell)`` after each cell run, ``total`` the plan's cell runs and ``done`` those
#: finished, on disk already included; ``cell`` is None for the first call, made before any cell runs.
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


#: What a cell sends back from wherever it ran: its layers.csv text, summary and error.
Result = tuple[str | None, dict[str, Any] | None, str | None]

#: This process's construction draws (see :class:`initlab.model.ConstructionDraws`): a cache shared by the
#: cells a process runs, worker or driver; the numbers are the same with or without it.
_DRAWS: list[ConstructionDraws] = []


def compute(cell: CellRun, threads: int | None) -> Result:
    """Run one cell here with ``threads`` torch threads (None: as they are): what an executor calls."""
    import torch

    from initlab.model import ConstructionDraws

    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if not _DRAWS:
        _DRAWS.append(ConstructionDraws())
    outcome = run_cell(cell, _DRAWS[0])
    return outcome.layers_csv, outcome.summary, outcome.error


def check_placeable(plan: Plan, engine: Engine) -> None:
    """Refuse cells that need a GPU on a cluster with workers, none of which declares the ``GPU`` resource:
    they would wait for one for ever. (A cluster with no workers yet may grow GPU workers: not refused.)"""
    if not engine.gpu_workers and engine.gpu_workers is not None and engine.workers > 0 and any(
            _needs_gpu(cell) for cell in plan.runs):
        raise InitlabError(f"--device cuda: no worker of the cluster at {engine.info.get('address')} declares the "
                           "GPU resource (start GPU workers with: dask worker ADDRESS --resources GPU=1)")


def _needs_gpu(cell: CellRun) -> bool:
    return cell.config is not None and cell.config.device.startswith("cuda")


def run_sweep(plan: Plan, folder: SweepFolder | None = None, progress: Progress | None = None,
              engine: Engine | None = None) -> Comparison:
    """Run every cell of ``plan`` not yet in ``folder`` on ``engine`` (default: in this process) and
    aggregate all that are finished.

    Each finished cell is written to ``folder`` as it arrives; the aggregates are written at the
    end, and also when a KeyboardInterrupt stops the sweep (which is then re-raised after the
    outstanding cells are cancelled). The engine is stopped when the sweep ends, however it ends.
    The folder is locked meanwhile: another process sweeping it is refused with an InitlabError.
    """
    engine = engine if engine is not None else in_process(None)
    try:
        with folder.lock() if folder is not None else nullcontext():
            return _sweep(plan, folder, progress, engine)
    finally:
        engine.stop()


def _sweep(plan: Plan, folder: SweepFolder | None, progress: Progress | None, engine: Engine) -> Comparison:
    started = time.perf_counter()
    outcomes = folder.load(plan) if folder is not None else {}
    todo = [cell for cell in plan.runs if cell.cell not in outcomes]
    execution = engine.describe()
    already, total = len(plan.runs) - len(todo), len(plan.runs)
    if progress is not None:
        progress(already, total, None)
    try:
        for done, outcome in enumerate(_stream(engine, todo), already + 1):
            if folder is not None and outcome.error is None:
                folder.save(outcome)
            outcomes[outcome.run.cell] = outcome
            if progress is not None:
                progress(done, total, outcome.run)
    except KeyboardInterrupt:
        engine.stop()  # cancel what is outstanding before the aggregates are written
        if folder is not None:
            folder.finish(aggregate(plan, outcomes), time.perf_counter() - started, interrupted=True,
                          execution=execution)
        raise
    comparison = aggregate(plan, outcomes)
    if folder is not None:
        folder.finish(comparison, time.perf_counter() - started, interrupted=False, execution=execution)
    return comparison


def _stream(engine: Engine, todo: list[CellRun]) -> Iterator[Outcome]:
    """The outcomes of ``todo`` as they finish, at most ``engine.slots`` cells in flight."""
    queue = deque(todo)
    pending: dict[Future[Result], CellRun] = {}
    attempts: Counter[str] = Counter()
    order = {cell.cell: index for index, cell in enumerate(todo)}
    # Cells in flight when a worker died: which of them killed it is unknown, so they run again one at a
    # time, uncharged; only a cell that breaks the pool alone is charged (a healthy neighbour never is).
    suspects: set[str] = set()
    while queue or pending:
        while queue and len(pending) < (1 if suspects else engine.slots):
            cell = queue.popleft()
            pending[engine.pick(_needs_gpu(cell)).submit(compute, cell, engine.threads)] = cell
        finished, _ = wait(pending, return_when=FIRST_COMPLETED)
        if engine.rebuild is not None and any(_loss(engine, f) for f in finished):
            finished = set(pending)  # a dead worker breaks the whole pool: every call in flight ends
            wait(finished)
            engine.rebuild()
            broken = [f for f in finished if _loss(engine, f)]
            if len(broken) > 1:
                cells = sorted((pending.pop(f) for f in broken), key=lambda c: order[c.cell])
                suspects.update(c.cell for c in cells)
                queue.extendleft(reversed(cells))  # again first, in plan order
                finished -= set(broken)
        for future in sorted(finished, key=lambda f: order[pending[f].cell]):  # plan order among the finished
            cell = pending.pop(future)
            outcome = _outcome(cell, future, attempts, engine)
            if outcome is None:
                queue.appendleft(cell)
            else:
                suspects.discard(cell.cell)
                yield outcome


def _loss(engine: Engine, future: Future[Result]) -> Loss | None:
    error = future.exception()
    return engine.lost(error) if error is not None else None


def _outcome(cell: CellRun, future: Future[Result], attempts: Counter[str], engine: Engine) -> Outcome | None:
    """A finished call's outcome; None to run the cell again (its worker died, retries are left)."""
    error = future.exception()
    if error is None:
        layers, summary, message = future.result()
        return Outcome(cell, layers, summary, message)
    loss = engine.lost(error)
    if loss is None:
        raise error
    deaths, reason = loss
    attempts[cell.cell] += deaths
    if attempts[cell.cell] <= engine.retries:
        return None
    return Outcome(cell, error=f"lost: the worker running it died {attempts[cell.cell]} time(s) ({reason})")
