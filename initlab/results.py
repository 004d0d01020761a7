"""The results folder: ``<root>/<name>/<run-id>/`` with config, per-layer table, summary, meta.

A run never overwrites another: the folder is staged under a hidden name and renamed
into place only when every file is written, so a folder that exists is complete.
Floats are written in their shortest round-trip form, so the same numbers give the
same bytes; non-finite values become empty CSV cells and JSON nulls, never NaN tokens.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from initlab.errors import InitlabError

if TYPE_CHECKING:
    import pandas as pd

    from initlab.config import Config
    from initlab.runner import Result
    from initlab.seeds import SeedStudy


def clean(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return clean(value.item())
    return value


def to_json(value: Any) -> str:
    """Strict JSON (``allow_nan=False``) of ``value`` with non-finite floats as null."""
    return json.dumps(clean(value), indent=2, allow_nan=False) + "\n"


def table_records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of a DataFrame as JSON-safe dicts (missing values as None)."""
    return [clean(row) for row in table.astype(object).where(table.notna(), None).to_dict("records")]


def csv_text(table: pd.DataFrame) -> str:
    """The CSV bytes of a table: shortest round-trip floats, empty cells for missing values."""
    text: str = table.to_csv(index=False, lineterminator="\n")
    return text


def git_commit(cwd: Path | None = None) -> str | None:
    """The commit checked out in ``cwd`` when it is inside a git repository, else None."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


#: Longest list of overrides spelled out in a run id; a longer one becomes a hash (meta.json has it whole).
ID_OVERRIDES_MAX = 80


def run_id(when: datetime, seed: int, overrides: Sequence[str] = ()) -> str:
    """A sortable folder name: UTC start time, seed and the command-line overrides, if any.

    ``20261123-140102-s1+init.scheme=normal+init.std=0.0625``: characters a file system or a
    shell may mind become ``_``; past :data:`ID_OVERRIDES_MAX` characters the overrides are
    replaced by ``o`` and 10 hex digits of their sha256, so the name stays short.
    """
    ident = f"{when.astimezone(timezone.utc):%Y%m%d-%H%M%S}-s{seed}"
    if not overrides:
        return ident
    tail = "+".join(re.sub(r"[^A-Za-z0-9._=-]+", "_", item) for item in overrides)
    if len(tail) > ID_OVERRIDES_MAX:
        tail = "o" + hashlib.sha256("\n".join(overrides).encode()).hexdigest()[:10]
    return f"{ident}+{tail}"


def check_writable(root: Path) -> None:
    """Refuse, before any work, a results root that cannot hold folders."""
    existing = next((p for p in (root, *root.absolute().parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise InitlabError(f"results folder {root}: {existing} is a file, not a folder (see --out)")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise InitlabError(f"results folder {root}: cannot write in {existing} (see --out)")


def check_creatable(parent: Path) -> None:
    """Prove, before any work, that result folders can be made in ``parent``, and leave nothing.

    Makes ``parent`` (and its missing parents) and a staging folder in it, then removes what
    it made: a read-only file system, ``/proc`` or a missing permission is found now, not
    after the study.
    """
    check_writable(parent)
    missing = [p for p in (parent, *parent.absolute().parents) if not p.exists()]  # deepest first
    try:
        _make_stage(_make_parent(parent), "probe").rmdir()
    finally:
        for made in missing:
            try:
                made.rmdir()
            except OSError:  # not made by us after all, or another run is filling it
                break


def _make_parent(parent: Path) -> Path:
    check_writable(parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InitlabError(f"cannot create the results folder {parent}: {err.strerror}") from None
    return parent


def _make_stage(parent: Path, ident: str) -> Path:
    """A new hidden folder in ``parent``, made with the umask's permissions (mkdtemp would force 0700)."""
    for _ in range(100):
        stage = parent / f".{ident}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            stage.mkdir()
        except FileExistsError:
            continue
        except OSError as err:
            raise InitlabError(f"cannot create a results folder in {parent}: {err.strerror}") from None
        return stage
    raise InitlabError(f"cannot create a results folder in {parent}: no free staging name")


def write_folder(root: Path, name: str, ident: str, files: dict[str, str] | dict[str, str | bytes]) -> Path:
    """Write ``files`` into a new ``root/name/ident[-k]`` folder, atomically; return it."""
    parent = _make_parent(root / name)
    stage = _make_stage(parent, ident)
    try:
        for filename, text in files.items():
            if isinstance(text, bytes):  # figures
                (stage / filename).write_bytes(text)
            else:
                (stage / filename).write_text(text, encoding="utf-8")
        return _rename_unique(stage, parent, ident)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _rename_unique(stage: Path, parent: Path, ident: str) -> Path:
    for k in range(1, 10_000):
        target = parent / (ident if k == 1 else f"{ident}-{k}")
        if target.exists():
            continue
        try:
            os.rename(stage, target)
        except OSError:  # another run took the name between the check and the rename
            continue
        return target
    raise FileExistsError(f"no free results folder name for {ident} in {parent}")


def study_files(config: Config, layers: pd.DataFrame, summary: dict[str, Any], meta: dict[str, Any]) -> dict[str, str]:
    """The files of a ``run`` results folder, as text."""
    from initlab.config import to_yaml  # here, not at the top: the quick commands' JSON needs no config

    return {
        "config.yaml": to_yaml(config),
        "layers.csv": csv_text(layers),
        "summary.json": to_json(summary),
        "meta.json": to_json(meta),
    }


def save_run(
    result: Result,
    root: Path,
    argv: Sequence[str],
    overrides: Sequence[str] = (),
    extra: dict[str, str | bytes] | None = None,
    meta_extra: dict[str, Any] | None = None,
) -> Path:
    """Save a :class:`~initlab.runner.Result` (and ``extra`` files, replacing any of the same name)
    under ``root``; return its folder.

    ``overrides`` (as typed on the command line) name the folder along with the start time
    and seed, so that a folder says what it holds; meta.json lists them whole.
    """
    meta = {**result.meta, "argv": list(argv), "overrides": list(overrides), "git_commit": git_commit(),
            **(meta_extra or {})}
    started = datetime.fromisoformat(meta["started"])
    files: dict[str, str | bytes] = {**study_files(result.config, result.layers, result.summary, meta)}
    if result.jacobian is not None:
        files["jacobian.csv"] = csv_text(result.jacobian.table())
    files |= extra or {}
    return write_folder(root, result.config.name, run_id(started, result.config.seed, overrides), files)


def study_extra_files(study: SeedStudy) -> dict[str, str | bytes]:
    """What ``initlab run`` writes beside :func:`study_files`: the plots (``std``, and ``grad`` with a
    backward pass), the histogram and, with several seeds, the tidy per-seed layers.csv, the median
    traces and the seeds' summary."""
    from initlab import plots

    files: dict[str, str | bytes] = {f"std.{fmt}": data for fmt, data in plots.figure_files(
        plots.study_figure(study)).items()}
    if study.backward is not None:  # the gradient figure, beside the std one
        files |= {f"grad.{fmt}": data for fmt, data in plots.figure_files(
            plots.study_figure(study, plots.BACKWARD)).items()}
    histogram = study.histogram
    if histogram is not None and len(histogram):
        config = study.config
        seeds = f"seed {config.seed}" if len(study.runs) == 1 else f"{len(study.runs)} seeds, counts added"
        title = (f"{config.name}: |x| of block outputs by layer\n"
                 f"depth {config.model.depth}, width {config.model.width}, {seeds}")
        files["histogram.png"] = plots.figure_files(plots.histogram_figure(histogram, title), ["png"])["png"]
        files["histogram.csv"] = csv_text(histogram)
    if len(study.runs) > 1:
        files |= {"layers.csv": csv_text(study.layers), "traces.csv": csv_text(study.traces),
                  "summary.json": to_json(study.summary)}
        tables = [r.jacobian.table().assign(seed=r.config.seed) for r in study.runs if r.jacobian is not None]
        if tables:  # every seed's singular values, tidy, as layers.csv is
            import pandas as pd

            files["jacobian.csv"] = csv_text(pd.concat(tables, ignore_index=True)[["seed", *tables[0].columns[:-1]]])
    return files


def model_files(study: SeedStudy) -> dict[str, bytes]:
    """``--save-model``: every seed's network as a state_dict file: ``model.pt`` for one seed,
    ``model-s<seed>.pt`` for each of several; none where the runs kept no weights."""
    from initlab.checkpoint import to_bytes

    kept = [(r.config.seed, r.weights) for r in study.runs if r.weights is not None]
    if len(kept) == 1:
        return {"model.pt": to_bytes(kept[0][1])}
    return {f"model-s{seed}.pt": to_bytes(weights) for seed, weights in kept}


def save_study(study: SeedStudy, root: Path, argv: Sequence[str], overrides: Sequence[str] = ()) -> Path:
    """Save an ``initlab run`` study (one seed or several) under ``root``, with its networks' state_dicts
    where the runs kept them (meta.json gives each file's sha256); return its folder."""
    models = model_files(study)
    saved = {"saved_models": {name: hashlib.sha256(data).hexdigest() for name, data in models.items()}}
    return save_run(study.runs[0], root, argv, overrides, {**study_extra_files(study), **models},
                    saved if models else None)
