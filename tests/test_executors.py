"""Where a sweep's cells run: in this process, a local process pool (--workers), Dask (a LocalCluster, or a
cluster of real `dask scheduler` / `dask worker` processes through --address). Every engine gives the same
bytes; a dead worker loses only its cell (retried, else reported) and --resume finishes the rest; Ctrl-C
cancels what is outstanding. Everything binds to 127.0.0.1 and every wait has a deadline."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from initlab import plots, results, sweep
from initlab.cli import app, progress_display, progress_line
from initlab.sweep import executors
from initlab.sweep.execute import compute

runner = CliRunner()
SWEEP = ["compare", "--schemes", "xavier,kaiming", "--activations", "tanh,relu", "--depth", "6", "--width", "16",
         "--seeds", "2"]
DASK = shutil.which("dask", path=str(Path(sys.executable).parent)) or shutil.which("dask")


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "120"})
    return result.exit_code, result.stdout, result.stderr


def folder_of(root: Path) -> Path:
    (folder,) = [p for p in (root / "compare").iterdir() if (p / "plan.json").exists()]
    return folder


def tables(folder: Path) -> dict[str, str]:
    """The sweep's tables and every cell's layers.csv, by name."""
    out = {name: (folder / name).read_text() for name in ("layers.csv", "summary.csv", "traces.csv")}
    out |= {f"cells/{p.name}": (p / "layers.csv").read_text() for p in sorted((folder / "cells").iterdir())}
    return out


def swept(root: Path, *options: str, base: list[str] = SWEEP) -> Path:
    code, _, err = invoke(*base, "--threads", "1", "--out", str(root), *options)
    assert code == 0, err
    return folder_of(root)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The in-process sweep's tables, one torch thread per cell."""
    return tables(swept(tmp_path_factory.mktemp("in-process")))


# ---------------------------------------------------------------- the same bytes on every engine


def test_the_process_pool_gives_the_in_process_bytes(tmp_path: Path, reference: dict[str, str]) -> None:
    folder = swept(tmp_path, "--workers", "2")
    assert tables(folder) == reference and len(reference) == 3 + 8
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["execution"] == {"executor": "process", "workers": 2, "threads": 1}


def test_a_dask_local_cluster_gives_the_in_process_bytes(tmp_path: Path, reference: dict[str, str]) -> None:
    folder = swept(tmp_path, "--executor", "dask", "--workers", "2")
    assert tables(folder) == reference
    execution = json.loads((folder / "meta.json").read_text())["execution"]
    assert execution == {"executor": "dask", "workers": 2, "threads": 1, "address": "LocalCluster"}


def test_in_process_records_its_thread_count(reference: dict[str, str], tmp_path: Path) -> None:
    import torch

    before = torch.get_num_threads()
    folder = swept(tmp_path)
    assert json.loads((folder / "meta.json").read_text())["execution"] == {
        "executor": "in-process", "workers": 1, "threads": 1}
    assert torch.get_num_threads() == before  # the sweep's count does not leak into the caller


def test_in_process_by_default_records_torchs_own_thread_count(tmp_path: Path) -> None:
    import torch

    code, _, err = invoke(*SWEEP, "--out", str(tmp_path))
    assert code == 0, err
    assert json.loads((folder_of(tmp_path) / "meta.json").read_text())["execution"] == {
        "executor": "in-process", "workers": 1, "threads": torch.get_num_threads()}


# ---------------------------------------------------------------- bad options: one line, exit 2, nothing written


@pytest.mark.parametrize(("options", "expected"), [
    (["--address", "tcp://127.0.0.1:1"], "--address names a Dask scheduler: give it with --executor dask"),
    (["--executor", "dask", "--address", "127.0.0.1:8786"], "expected a scheduler address like tcp://"),
    (["--executor", "dask", "--address", "tcp://127.0.0.1:1", "--workers", "2"], "drop --workers"),
    (["--executor", "ray"], "--executor 'ray': expected one of process, dask"),
    (["--workers", str(executors.cores() + 1), "--threads", "1"], "(workers x threads <= cores)"),
    (["--threads", str(executors.cores() + 1)], "(workers x threads <= cores)"),
    # No --workers given: the default (a worker per core) is what is too many; the error names what was given.
    (["--executor", "process", "--threads", "2"],
     f"error: --executor process --threads 2: {executors.cores()} worker(s) x 2 torch thread(s)"),
    (["--executor", "dask", "--threads", "2"],
     f"error: --executor dask --threads 2: {executors.cores()} worker(s) x 2 torch thread(s)"),
    (["--workers", str(executors.cores() + 1)], f"--workers {executors.cores() + 1}: "),
])
def test_bad_executor_options_are_one_line_and_write_nothing(tmp_path: Path, options: list[str], expected: str
                                                            ) -> None:
    code, out, err = invoke(*SWEEP, "--out", str(tmp_path / "out"), *options)
    assert code == 2 and out == "" and err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert expected in err
    assert not (tmp_path / "out").exists()


def test_without_dask_the_executor_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # what `import distributed` finds: nothing
    code, _, err = invoke(*SWEEP, "--executor", "dask", "--out", str(tmp_path))
    assert code == 2 and err == f"error: {executors.DASK_MISSING}\n"
    assert "pip install 'initlab[dask]'" in err and not any(tmp_path.iterdir())


# ---------------------------------------------------------------- a dead worker: retried, else reported; --resume


class DyingPool(Executor):
    """Runs calls here, except that the first ``deaths`` calls for ``victim`` end as a dead worker's do."""

    def __init__(self, victim: str, deaths: int) -> None:
        self.victim, self.deaths, self.calls = victim, deaths, 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        if args[0].cell == self.victim and self.deaths > 0:
            self.deaths -= 1
            future.set_exception(BrokenProcessPool("a child process terminated abruptly"))
        else:
            future.set_result(fn(*args, **kwargs))
        return future


def dying_engine(victim: str, deaths: int, retries: int) -> tuple[executors.Engine, list[int]]:
    pool = DyingPool(victim, deaths)
    rebuilt: list[int] = []
    engine = executors.Engine("process", pool, slots=3, threads=1, workers=2, retries=retries,
                              lost=executors.broken_pool)
    engine.rebuild = lambda: rebuilt.append(1) or pool  # type: ignore[func-returns-value]
    return engine, rebuilt


def small_plan() -> sweep.Plan:
    return sweep.plan_from_options(None, schemes="xavier,kaiming", activations="tanh,relu", depth=5, width=8,
                                   seeds=2)


def test_a_cell_whose_worker_died_is_retried_and_the_bytes_are_the_same() -> None:
    plan = small_plan()
    whole = sweep.run_sweep(plan, engine=executors.in_process(1))
    engine, rebuilt = dying_engine(plan.runs[3].cell, deaths=2, retries=2)
    retried = sweep.run_sweep(plan, engine=engine)
    assert len(rebuilt) == 2 and not retried.failed
    assert results.csv_text(retried.layers) == results.csv_text(whole.layers)
    assert results.csv_text(retried.summary) == results.csv_text(whole.summary)


def test_a_cell_lost_past_its_retries_is_reported_and_resume_finishes_it(tmp_path: Path) -> None:
    plan = small_plan()
    lost = plan.runs[5]
    folder = sweep.SweepFolder.create(tmp_path, plan, [], plots.std_plot_files)
    engine, _ = dying_engine(lost.cell, deaths=3, retries=2)
    partial = sweep.run_sweep(plan, folder, engine=engine)
    assert [entry["cell"] for entry in partial.failed] == [lost.cell]
    assert partial.failed[0]["error"].startswith("lost: the worker running it died 3 time(s)")
    assert lost.cell not in folder.finished() and len(folder.finished()) == len(plan.runs) - 1  # the rest is on disk
    row = partial.summary[partial.summary["activation"] == lost.activation]
    assert "failed" in set(row["status"])

    resumed_folder, resumed_plan = sweep.resume(folder.path, [], {})
    sweep.run_sweep(resumed_plan, resumed_folder, engine=executors.process_pool(2, 1))
    whole = sweep.run_sweep(plan, engine=executors.in_process(1))
    assert (folder.path / "layers.csv").read_text() == results.csv_text(whole.layers)
    assert (folder.path / "summary.csv").read_text() == results.csv_text(whole.summary)


class Preempted(Exception):
    """Another engine's lost worker (a preempted node, say): an exception type execute.py has never heard of."""


class PreemptingPool(Executor):
    """Runs calls here; the victim's first call ends as its (preempted) node's would."""

    def __init__(self, victim: str) -> None:
        self.victim, self.preempted = victim, False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        if args[0].cell == self.victim and not self.preempted:
            self.preempted = True
            future.set_exception(Preempted("node 7"))
        else:
            future.set_result(fn(*args, **kwargs))
        return future


def test_an_engine_says_which_errors_are_lost_workers_and_the_sweep_needs_no_other_knowledge() -> None:
    plan = small_plan()
    victim = plan.runs[2].cell

    def lost(error: BaseException) -> tuple[int, str] | None:
        return (1, f"preempted: {error}") if isinstance(error, Preempted) else None

    engine = executors.Engine("preemptible", PreemptingPool(victim), slots=1, threads=1, workers=1, lost=lost)
    reported = sweep.run_sweep(plan, engine=engine)  # no retries: reported, in the engine's words
    assert [(e["cell"], e["error"]) for e in reported.failed] == [
        (victim, "lost: the worker running it died 1 time(s) (preempted: node 7)")]
    engine = executors.Engine("preemptible", PreemptingPool(victim), slots=1, threads=1, workers=1, lost=lost,
                              retries=1)
    retried = sweep.run_sweep(plan, engine=engine)
    whole = sweep.run_sweep(plan, engine=executors.in_process(1))
    assert not retried.failed and results.csv_text(retried.layers) == results.csv_text(whole.layers)
    engine = executors.Engine("preemptible", PreemptingPool(victim), slots=1, threads=1, workers=1)
    with pytest.raises(Preempted):  # an engine that does not call it a lost worker: the error is raised
        sweep.run_sweep(plan, engine=engine)


def test_compute_sets_the_thread_count_and_returns_only_the_result() -> None:
    import torch

    before = torch.get_num_threads()
    try:
        layers, summary, error = compute(small_plan().runs[0], 1)
        assert torch.get_num_threads() == 1 and error is None and summary is not None
        assert layers is not None and layers.startswith("layer,")
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------- real processes


def children(pid: int) -> list[int]:
    """A process's direct children (Linux: /proc/PID/task/*/children)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


def cells_done(root: Path) -> int:
    folders = [p for p in (root / "compare").glob("*/cells")] if (root / "compare").is_dir() else []
    return sum(1 for f in folders for p in f.iterdir() if not p.name.startswith("."))


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


LONG = ["compare", "--schemes", "xavier,kaiming", "--depth", "100", "--width", "32", "--seeds", "15"]


def driver(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "initlab.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux's /proc")
def test_a_killed_pool_worker_is_replaced_and_ctrl_c_stops_every_worker(tmp_path: Path) -> None:
    process = driver(*LONG, "--threads", "1", "--workers", "2", "--out", str(tmp_path / "a"))
    try:
        wait_until(lambda: cells_done(tmp_path / "a") >= 2, 90, "two cells")
        workers = [p for p in children(process.pid) if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert workers, children(process.pid)
        os.kill(workers[0], signal.SIGKILL)  # mid-sweep: the pool breaks, is rebuilt, the cells in flight rerun
        _, err = process.communicate(timeout=180)
    finally:
        process.kill()
    assert process.returncode == 0, err
    whole = tables(swept(tmp_path / "b", base=LONG))
    assert tables(folder_of(tmp_path / "a")) == whole

    process = driver(*LONG, "--threads", "1", "--workers", "2", "--out", str(tmp_path / "c"))
    try:
        wait_until(lambda: cells_done(tmp_path / "c") >= 2, 90, "two cells")
        workers = children(process.pid)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "interrupted:" in err and "resume with: initlab compare --resume" in err and "Traceback" not in err
    assert not any(Path(f"/proc/{pid}").exists() and b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
                   for pid in workers)  # no worker outlives the sweep
    folder = folder_of(tmp_path / "c")
    assert json.loads((folder / "meta.json").read_text())["interrupted"] is True
    code, _, err = invoke("compare", "--resume", str(folder), "--threads", "1")
    assert code == 0, err
    assert tables(folder) == whole


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def dask_cluster(workers: int, *worker_options: str) -> Iterator[str]:
    """`dask scheduler` and `dask worker --nworkers N` on 127.0.0.1, always stopped."""
    assert DASK is not None
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    # --no-dashboard alone still serves HTTP on every interface (distributed 2026.8): bind it to 127.0.0.1.
    local = ["--host", "127.0.0.1", "--no-dashboard", "--dashboard-address", "127.0.0.1:0"]
    started = [subprocess.Popen([DASK, "scheduler", *local, "--port", str(port)], **logs)]  # type: ignore[call-overload]
    try:
        started.append(subprocess.Popen([DASK, "worker", address, *local, "--nworkers", str(workers),
                                         "--nthreads", "1", *worker_options], **logs))  # type: ignore[call-overload]
        from distributed import Client

        with Client(address, timeout=30) as client:
            client.wait_for_workers(workers, timeout=60)
        yield address
    finally:
        for process in reversed(started):
            process.terminate()
        for process in reversed(started):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.skipif(DASK is None, reason="needs dask[distributed] (the dev extra)")
def test_a_real_dask_cluster_through_address_survives_a_killed_worker(tmp_path: Path,
                                                                      reference: dict[str, str]) -> None:
    from distributed import Client

    with dask_cluster(2) as address:
        assert tables(swept(tmp_path / "a", "--executor", "dask", "--address", address)) == reference

        process = driver(*LONG, "--threads", "1", "--executor", "dask", "--address", address,
                         "--out", str(tmp_path / "b"))
        try:
            wait_until(lambda: cells_done(tmp_path / "b") >= 2, 90, "two cells")
            with Client(address, timeout=20) as client:
                pids = client.run(os.getpid)
            os.kill(next(iter(pids.values())), signal.SIGKILL)  # its nanny starts another; the cell is rescheduled
            _, err = process.communicate(timeout=240)
        finally:
            process.kill()
        assert process.returncode in (0, 1), err
        folder = folder_of(tmp_path / "b")
        meta = json.loads((folder / "meta.json").read_text())
        assert meta["execution"]["address"] == address and meta["finished"] + len(meta["failed"]) == 30
        code, _, err = invoke("compare", "--resume", str(folder), "--executor", "dask", "--address", address)
        assert code == 0, err
    assert tables(folder) == tables(swept(tmp_path / "c", base=LONG))


def test_progress_line_and_display_are_whole_at_any_width() -> None:
    assert progress_line(0, 20, 0.0) == "0/20 cells"
    assert progress_line(10, 20, 5.0) == "10/20 cells, 2 cells/s, ETA 0:00:05"
    assert progress_line(1, 7201, 1.0) == "1/7201 cells, 1 cells/s, ETA 2:00:00"
    assert progress_line(15, 20, 5.0, since=10) == "15/20 cells, 1 cells/s, ETA 0:00:05"  # 10 were on disk already
    assert progress_line(10, 20, 5.0, since=10) == "10/20 cells"  # none run yet: no rate
    assert progress_line(123, 2000, 10.0, width=30) == "123/2000, 12.3/s, ETA 0:02:33"
    assert progress_line(123, 2000, 10.0, width=25) == "123/2000 ETA 0:02:33"
    assert progress_line(123, 2000, 10.0, width=12) == "123/2000"
    for width in (20, 30, 46, 60, 200):
        console = Console(width=width, force_terminal=True, record=True)
        display = progress_display(console, auto_refresh=False)
        display.add_task("", total=2000, completed=123, elapsed=10.0)
        for renderable in display.get_renderables():
            console.print(renderable)
        (text,) = console.export_text().splitlines()  # one line: never wrapped
        assert len(text.rstrip()) < width and "123/2000" in text and "…" not in text, text
        expected = progress_line(123, 2000, 10.0, width - 1)
        assert text.startswith(expected) and ("━" in text) == (width - len(expected) - 2 >= 10), (width, text)


def test_resumed_sweeps_progress_counts_the_cells_already_done(tmp_path: Path) -> None:
    plan = small_plan()
    folder = sweep.SweepFolder.create(tmp_path, plan, [], plots.std_plot_files)
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(plan, folder, lambda done, total, cell: (_ for _ in ()).throw(KeyboardInterrupt)
                        if done == 3 else None)
    seen: list[tuple[int, int]] = []
    resumed_folder, resumed_plan = sweep.resume(folder.path, [], {})
    sweep.run_sweep(resumed_plan, resumed_folder, lambda done, total, cell: seen.append((done, total)))
    assert seen == [(done, 8) for done in range(3, 9)]


def test_the_interrupt_message_comes_after_the_bar_is_gone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import initlab.cli as cli

    events: list[str] = []

    @contextmanager
    def bar(wanted: bool) -> Iterator[Callable[[int, int, object], None]]:
        events.append("bar on")
        try:
            yield lambda done, total, cell: None
        finally:
            events.append("bar off")

    def interrupted(*args: Any) -> None:
        events.append("message")
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_progress_bar", bar)
    monkeypatch.setattr(sweep, "run_sweep", interrupted)
    monkeypatch.setattr(cli.typer, "echo", lambda *a, **k: events.append("echo"))
    code, _, _ = invoke(*SWEEP, "--out", str(tmp_path))
    assert code == 130 and events == ["bar on", "message", "bar off", "echo", "echo"], events


class PoisonPool(Executor):
    """Threads standing in for worker processes: the victim's call breaks the pool, and every call in
    flight with it ends as a broken pool's do, as with a real ProcessPoolExecutor."""

    def __init__(self, victim: str) -> None:
        import threading
        from concurrent.futures import ThreadPoolExecutor

        self.victim, self.broken, self.threads = victim, threading.Event(), ThreadPoolExecutor(3)

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        import time

        if args[0].cell == self.victim:
            time.sleep(0.05)
            self.broken.set()
            raise BrokenProcessPool("a child process terminated abruptly")
        deadline = time.monotonic() + 0.2  # long enough to be in flight beside the victim
        while time.monotonic() < deadline:
            if self.broken.is_set():
                raise BrokenProcessPool("a child process terminated abruptly")
            time.sleep(0.01)
        return fn(*args)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self.threads.submit(self._call, fn, *args)

    def rebuild(self) -> Executor:
        self.broken.clear()
        return self


def test_only_the_cell_that_kills_its_worker_is_reported_not_its_neighbours() -> None:
    plan = small_plan()
    victim = plan.runs[2].cell
    pool = PoisonPool(victim)
    engine = executors.Engine("process", pool, slots=3, threads=1, workers=3, retries=2, lost=executors.broken_pool)
    engine.rebuild = pool.rebuild
    try:
        outcome = sweep.run_sweep(plan, engine=engine)
    finally:
        pool.threads.shutdown()
    assert [entry["cell"] for entry in outcome.failed] == [victim]
    whole = sweep.run_sweep(plan, engine=executors.in_process(1))
    healthy = whole.layers[whole.layers["cell"] != victim].reset_index(drop=True)
    assert results.csv_text(outcome.layers) == results.csv_text(healthy)


def test_an_address_where_no_scheduler_answers_writes_nothing(tmp_path: Path) -> None:
    code, out, err = invoke(*SWEEP, "--out", str(tmp_path / "out"), "--executor", "dask",
                            "--address", "tcp://127.0.0.1:1")
    assert code == 2 and out == "" and "--address tcp://127.0.0.1:1: no Dask scheduler answers there" in err, err
    assert not (tmp_path / "out").exists()


class Killing(Executor):
    """Submits to ``inner``, except that the victim's call ends its worker process (``os._exit``: a builtin,
    so it travels to any worker by reference), as a cell that crashes the interpreter would."""

    def __init__(self, inner: Executor, victim: str) -> None:
        self.inner, self.victim = inner, victim

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if args[0].cell == self.victim:
            return self.inner.submit(os._exit, 1)
        return self.inner.submit(fn, *args, **kwargs)


@pytest.mark.slow
@pytest.mark.skipif(DASK is None, reason="needs dask[distributed] (the dev extra)")
def test_a_cell_that_kills_its_dask_worker_is_tried_retries_plus_one_times_and_reported_so() -> None:
    plan = small_plan()
    victim = plan.runs[1].cell
    engine = executors.dask(None, 2, 1)
    engine.executor = Killing(engine.executor, victim)
    outcome = sweep.run_sweep(plan, engine=engine)
    assert [entry["cell"] for entry in outcome.failed] == [victim]
    # The scheduler let RETRIES more workers die running it before giving up: RETRIES + 1 deaths in all.
    assert outcome.failed[0]["error"].startswith(f"lost: the worker running it died {executors.RETRIES + 1} time(s)")
    whole = sweep.run_sweep(plan, engine=executors.in_process(1))
    healthy = whole.layers[whole.layers["cell"] != victim].reset_index(drop=True)
    assert results.csv_text(outcome.layers) == results.csv_text(healthy)


@pytest.mark.skipif(DASK is None, reason="needs dask[distributed] (the dev extra)")
def test_cuda_cells_for_a_remote_cluster_are_not_refused_for_the_drivers_lack_of_a_gpu(tmp_path: Path) -> None:
    # The driver's devices say nothing of the cluster's: the sweep goes as far as the scheduler (none answers here).
    code, _, err = invoke(*SWEEP, "--out", str(tmp_path / "out"), "--device", "cuda", "--executor", "dask",
                          "--address", "tcp://127.0.0.1:1")
    assert code == 2 and "no Dask scheduler answers there" in err, err
    code, _, err = invoke(*SWEEP, "--out", str(tmp_path / "out"), "--device", "cuda")  # here: refused up front
    assert code == 2 and "CUDA is not available" in err, err


@pytest.mark.slow
@pytest.mark.skipif(DASK is None, reason="needs dask[distributed] (the dev extra)")
@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="the worker must lack CUDA")
def test_a_cuda_cell_on_a_remote_worker_without_cuda_fails_with_one_clear_error(tmp_path: Path) -> None:
    from distributed import Client

    base = ["compare", "--schemes", "xavier", "--depth", "3", "--width", "8", "--device", "cuda"]
    with dask_cluster(1, "--resources", "GPU=1") as address:  # a worker that declares a GPU it does not have
        code, out, err = invoke(*base, "--out", str(tmp_path), "--executor", "dask", "--address", address)
        engine = executors.dask(address, None, 1)
        try:  # what a CUDA cell's task asks the scheduler for
            running = engine.pick(True).submit(time.sleep, 30)
            with Client(address, timeout=20) as client:
                def asked() -> list[Any]:
                    return list(client.run_on_scheduler(lambda dask_scheduler: [
                        ts.resource_restrictions for ts in dask_scheduler.tasks.values() if "sleep" in str(ts.key)]))
                wait_until(lambda: bool(asked()), 20, "the task at the scheduler")
                cuda_tasks = asked()
            running.cancel()
        finally:
            engine.stop()
    assert code == 1 and "Traceback" not in out + err, out + err
    failed = json.loads((folder_of(tmp_path) / "meta.json").read_text())["failed"]
    assert [entry["error"] for entry in failed] == [
        "device 'cuda': CUDA is not available on this machine (use device: cpu, or device: auto to take a GPU "
        "only when there is one)"]
    assert cuda_tasks == [{"GPU": 1}]  # placed by the GPU resource


@pytest.mark.slow
@pytest.mark.skipif(DASK is None, reason="needs dask[distributed] (the dev extra)")
def test_cuda_cells_on_a_cluster_whose_workers_declare_no_gpu_are_refused_not_left_waiting(tmp_path: Path) -> None:
    base = ["compare", "--schemes", "xavier", "--depth", "3", "--width", "8", "--device", "cuda"]
    with dask_cluster(1) as address:
        code, out, err = invoke(*base, "--out", str(tmp_path / "out"), "--executor", "dask", "--address", address)
    assert code == 2 and out == "" and len(err.splitlines()) == 1, err
    assert "declares the GPU resource" in err and not (tmp_path / "out").exists()


@pytest.mark.skipif(DASK is None, reason="needs dask[distributed] (the dev extra)")
def test_the_local_clusters_sockets_listen_on_127_0_0_1_at_random_ports_not_8787() -> None:
    import warnings

    import psutil

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine = executors.dask(None, 1, 1)
    try:
        here = psutil.Process()
        listening = [c.laddr for p in [here, *here.children(recursive=True)]
                     for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    finally:
        engine.stop()
    assert len(listening) >= 3  # the scheduler, its HTTP server, the nanny, the worker
    assert all(address.ip == "127.0.0.1" and address.port != 8787 for address in listening), listening
    assert not [str(w.message) for w in caught if "in use" in str(w.message)]  # no port was fought over


def on_a_terminal(width: int, *args: str, interrupt: bool = False) -> str:
    """What ``initlab`` writes to stderr when it is a terminal ``width`` columns wide (a pty); with
    ``interrupt``, Ctrl-C (SIGINT) once a cell has finished."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, width, 0, 0))
    process = subprocess.Popen([sys.executable, "-m", "initlab.cli", *args], stdout=subprocess.DEVNULL,
                               stderr=slave, env={**os.environ, "COLUMNS": str(width)})
    os.close(slave)
    out, deadline = b"", time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the process closed the terminal
                    break
                out += chunk
                if interrupt and b"1/" in out:
                    process.send_signal(signal.SIGINT)
                    interrupt = False
            elif process.poll() is not None:
                break
    finally:
        process.kill()
        process.wait(timeout=10)
        os.close(master)
    return out.decode()


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pty")
@pytest.mark.parametrize("width", [30, 200])
def test_on_a_real_terminal_every_frame_of_the_bar_is_whole_and_one_line(tmp_path: Path, width: int) -> None:
    import re

    text = on_a_terminal(width, *LONG[:-1], "4", "--threads", "1", "--out", str(tmp_path))
    frames = [re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", f) for f in re.split(r"\r\x1b\[2K", text)]
    shown = [f.strip() for f in frames if "/8" in f]
    assert any(f.startswith("8/8") for f in shown) and not any("0/0" in f for f in shown), shown
    assert all(len(f.rstrip()) < width and "\n" not in f.strip() for f in frames), frames  # never wrapped nor cut
    assert any("ETA" in f for f in shown), shown


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pty")
def test_on_a_real_terminal_ctrl_c_prints_its_message_on_lines_of_its_own(tmp_path: Path) -> None:
    import re

    text = on_a_terminal(60, *LONG, "--threads", "1", "--out", str(tmp_path), interrupt=True)
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    lines = [line.split("\r")[-1] for line in plain.replace("\r\n", "\n").split("\n")]
    assert any(line.startswith("interrupted: ") for line in lines), lines
    assert any(line.startswith("resume with: initlab compare --resume ") for line in lines), lines
