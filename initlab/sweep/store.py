"""A sweep's results folder: its plan, one folder per finished cell run, the aggregates. It writes
tables and the bytes of figures its caller draws; it never draws."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from initlab import __version__
from initlab.config import to_yaml
from initlab.errors import InitlabError
from initlab.folder_lock import FolderLock
from initlab.results import csv_text, git_commit, run_id, to_json, write_folder
from initlab.sweep.aggregate import Comparison
from initlab.sweep.outcome import Outcome
from initlab.sweep.plan import Plan, check_feasible


def resume(path: Path, argv: Sequence[str], given: dict[str, object], figures: Figures | None = None,
           remote: bool = False) -> tuple[SweepFolder, Plan]:
    """The folder and plan of an earlier sweep; ``given`` are the other options, which must be unset.
    Its cells' devices and memory are checked here unless they run ``remote`` (on a cluster's machines).

    The folder is not locked yet: enter it (``with folder:``) around the work.
    """
    extra = [name for name, value in given.items() if value is not None]
    if extra:
        raise InitlabError(f"--resume takes the sweep from its folder; drop {', '.join(extra)}")
    folder, plan = SweepFolder.open(path, argv, figures)
    if not remote:
        check_feasible(plan)
    return folder, plan


#: Draws a sweep's figures: file name -> bytes (:func:`initlab.plots.std_plot_files`).
Figures = Callable[[Comparison], dict[str, bytes]]


class SweepFolder:
    """``<root>/<name>/<run-id>/``: ``plan.json``, ``cells/<id>/`` per finished cell run, aggregates.

    The folder is created with its plan (atomically); each cell run is staged and renamed
    into ``cells/`` when complete; aggregate files are replaced atomically, so every file
    that exists is whole, whenever the sweep stops. While :func:`sweep` works in it, the
    folder holds a lock file (``.lock``, :class:`~initlab.folder_lock.FolderLock`), so a second
    sweep of the same folder is refused rather than doing the work twice.
    """

    def __init__(self, path: Path, argv: Sequence[str], resumed: bool, figures: Figures | None = None) -> None:
        self.path = path
        self.argv = list(argv)
        self.resumed = resumed
        self.figures = figures

    def lock(self) -> FolderLock:
        """The folder's lock (not yet taken): ``with folder.lock():`` around the work."""
        return FolderLock(self.path)

    @classmethod
    def create(cls, root: Path, plan: Plan, argv: Sequence[str], figures: Figures | None = None) -> SweepFolder:
        """A new, empty sweep folder holding ``plan.json``; ``figures`` draws the aggregates' figures."""
        ident = run_id(datetime.now(timezone.utc), plan.axes["seeds"][0])
        stored = dataclasses.replace(plan, argv=list(argv))
        path = write_folder(root, plan.name, ident, {"plan.json": stored.to_json()})
        return cls(path, argv, resumed=False, figures=figures)

    @classmethod
    def open(cls, path: Path, argv: Sequence[str], figures: Figures | None = None) -> tuple[SweepFolder, Plan]:
        """An existing sweep folder and its plan (for ``--resume``)."""
        if not path.is_dir():
            raise InitlabError(f"--resume {path}: no such folder")
        plan_file = path / "plan.json"
        if not plan_file.is_file():
            raise InitlabError(f"--resume {path}: not a compare results folder (no plan.json)")
        plan = Plan.from_json(plan_file.read_text(encoding="utf-8"), str(plan_file))
        return cls(path, argv, resumed=True, figures=figures), plan

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

    def finish(self, comparison: Comparison, elapsed: float, interrupted: bool,
               execution: dict[str, Any] | None = None) -> None:
        """(Re)write the aggregates: layers.csv, summary.csv, traces.csv, meta.json and the figures
        (:func:`initlab.plots.std_plot_files`: std.png, std.svg and, with a backward pass, grad.png, grad.svg)."""
        _replace(self.path / "layers.csv", csv_text(comparison.layers).encode())
        _replace(self.path / "summary.csv", csv_text(comparison.summary).encode())
        _replace(self.path / "traces.csv", csv_text(comparison.traces).encode())
        meta = sweep_meta(comparison, self.argv, elapsed, interrupted, self.resumed) | {"execution": execution}
        _replace(self.path / "meta.json", to_json(meta).encode())
        for name, data in (self.figures(comparison) if self.figures is not None else {}).items():
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

    from initlab.checkpoint import source

    base = next((run.config for run in comparison.plan.runs if run.config is not None), None)
    grid = {"grid": [axis.as_dict() for axis in comparison.plan.grid]} if comparison.plan.grid else {}
    return {
        "initlab": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "platform": platform.platform(), "device": base.device if base else None,
        "dtype": base.dtype if base else None,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "argv": list(argv), "resumed": resumed, "git_commit": git_commit(),
        "axes": comparison.plan.axes, **grid, "cell_runs": len(comparison.plan.runs),
        "finished": int(comparison.layers["cell"].nunique()), "missing": comparison.missing,
        "interrupted": interrupted, "elapsed_s": elapsed, "failed": comparison.failed,
        **({"init_from": source(base.init.from_)} if base is not None and base.init.from_ is not None else {}),
    }
