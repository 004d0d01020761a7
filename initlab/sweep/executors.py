"""Where a sweep's cells run: an :class:`Engine` wraps a :class:`concurrent.futures.Executor` (``submit``
returns a Future), so another engine (Ray, submitit) is a few lines: an executor and how to stop it.

- :func:`in_process`: each cell runs inside ``submit``, in this process, exactly as a plain loop would.
- :func:`process_pool`: ``N`` local processes (spawned: a fork of a process whose torch thread pool
  already runs can hang); a pool broken by a dead worker is rebuilt (:meth:`Engine.rebuild`).
- :func:`dask`: a Dask ``LocalCluster`` bound to 127.0.0.1 and stopped with the sweep, or an existing
  cluster at ``address``. Cells that need a GPU ask for the ``GPU`` resource. A cell whose worker died
  is rescheduled by Dask's scheduler itself (its ``allowed-failures``: :data:`RETRIES` on a LocalCluster,
  the cluster's own setting at ``address``), not by the driver.

Only the module-level function a cell runs and its arguments travel to a worker, and only the cell's
result travels back: workers need no shared file system.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from initlab.errors import InitlabError

#: What ``--executor`` accepts; the default runs in this process (or, with ``--workers``, a process pool).
EXECUTORS = ("process", "dask")

#: Times a cell whose worker died is run again before it is reported failed.
RETRIES = 2

DASK_MISSING = "--executor dask needs Dask: pip install 'initlab[dask]' (or: pip install 'dask[distributed]')"


class InProcess(Executor):
    """Runs each call inside ``submit``, in this process: the default, and the exact reference."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as err:  # the Future carries it, as any executor's does
            future.set_exception(err)
        return future


#: A call that ended because its worker died: the deaths it stands for, and a short reason.
Loss = tuple[int, str]


@dataclass
class Engine:
    """An executor and what the sweep needs to know about it.

    ``slots`` cells are kept in flight (a few per worker, so none idles while the driver writes);
    ``threads`` is the torch thread count inside every cell (None: this process's, unchanged);
    ``gpu`` is the executor for cells that need a GPU (Dask: one that requests the ``GPU`` resource).
    ``lost(error)`` says whether a call's error means its worker died, not the cell: how many deaths it
    stands for and a short reason, else None (the error is the driver's to raise). ``rebuild``, where
    given, replaces an executor that a dead worker broke as a whole (every call in flight ends).
    """

    name: str
    executor: Executor
    slots: int
    threads: int | None
    workers: int
    stop: Callable[[], None] = lambda: None
    gpu: Executor | None = None
    retries: int = 0  # the driver's own retries of a cell whose worker died (process pool)
    rebuild: Callable[[], Executor] | None = None
    gpu_workers: int | None = None  # a cluster's workers that declare the GPU resource (None: not a cluster)
    lost: Callable[[BaseException], Loss | None] = lambda error: None
    info: dict[str, Any] = field(default_factory=dict)

    def pick(self, needs_gpu: bool) -> Executor:
        return self.gpu if needs_gpu and self.gpu is not None else self.executor

    def describe(self) -> dict[str, Any]:
        """What meta.json records: engine, workers, torch threads per cell (as they are here, if not set)."""
        threads = self.threads
        if threads is None:
            import torch

            threads = torch.get_num_threads()
        return {"executor": self.name, "workers": self.workers, "threads": threads, **self.info}


def cores() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_threads(workers: int, threads: int, where: str) -> None:
    """Refuse more torch threads than cores on one machine: workers x threads <= cores."""
    if workers * threads > cores():
        fix = f"--threads {cores() // workers}" if cores() >= workers else f"--workers {cores()} at most"
        raise InitlabError(f"{where}: {workers} worker(s) x {threads} torch thread(s) is more than the {cores()} "
                           f"cores here (workers x threads <= cores); give {fix}")


def in_process(threads: int | None) -> Engine:
    engine = Engine("in-process", InProcess(), slots=1, threads=threads, workers=1)
    if threads is not None:
        check_threads(1, threads, "--threads")
        import torch

        before = torch.get_num_threads()
        engine.stop = lambda: torch.set_num_threads(before)  # the cells' count is this sweep's, not the caller's
    return engine


def _ignore_interrupts() -> None:
    """A worker leaves Ctrl-C to the driver, which cancels and stops it (so no worker dies half-way)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def process_pool(workers: int, threads: int | None, retries: int = RETRIES) -> Engine:
    threads = threads if threads is not None else max(1, cores() // workers)
    check_threads(workers, threads, "--workers")
    import multiprocessing

    def new() -> Executor:
        return ProcessPoolExecutor(workers, multiprocessing.get_context("spawn"), initializer=_ignore_interrupts)

    engine = Engine("process", new(), slots=2 * workers, threads=threads, workers=workers, retries=retries,
                    lost=broken_pool)

    def rebuild() -> Executor:
        _kill(engine.executor)
        engine.executor = new()
        return engine.executor

    engine.rebuild = rebuild
    engine.stop = lambda: _kill(engine.executor)
    return engine


def broken_pool(error: BaseException) -> Loss | None:
    """A process pool's lost worker: one death (the pool is broken as a whole and rebuilt)."""
    return (1, str(error)) if isinstance(error, BrokenProcessPool) else None


def _kill(pool: Executor) -> None:
    """Stop a process pool now: queued calls cancelled, running ones ended (their cells are not written)."""
    assert isinstance(pool, ProcessPoolExecutor)
    # The pool's processes (no public accessor): shutdown() alone waits for the running calls to finish.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:  # idle workers leave on shutdown's sentinel; a running one is ended
        process.join(timeout=0.5)
        if process.is_alive():
            process.kill()
            process.join(timeout=10)


def dask(address: str | None, workers: int | None, threads: int | None, retries: int = RETRIES) -> Engine:
    """A Dask client on ``address``, or on a LocalCluster of ``workers`` processes (default: one per core)."""
    import importlib

    try:  # untyped: held as Any
        distributed: Any = importlib.import_module("distributed")
    except ImportError:
        raise InitlabError(DASK_MISSING) from None
    if address is None:
        workers = workers if workers is not None else cores()
        threads = threads if threads is not None else max(1, cores() // workers)
        check_threads(workers, threads, "--executor dask")
        cluster = _local_cluster(distributed, workers, retries)
        client = distributed.Client(cluster)
        engine = Engine("dask", client.get_executor(pure=False), slots=max(2, 2 * workers), threads=threads,
                        workers=workers, info={"address": "LocalCluster"}, lost=killed_worker)
        # No GPU executor: the workers share this machine's devices (the driver checked them), declare no resources.
        engine.stop = lambda: _close(client, cluster)
        return engine
    try:
        client = distributed.Client(address, timeout=5)
    except OSError as err:
        raise InitlabError(f"--address {address}: no Dask scheduler answers there ({err})") from None
    found = client.scheduler_info().get("workers", {}).values()
    engine = Engine("dask", client.get_executor(pure=False), slots=max(2, 2 * len(found)),
                    threads=threads if threads is not None else 1,  # the cluster's cores are not known here: one each
                    workers=len(found), info={"address": address}, lost=killed_worker,
                    gpu=client.get_executor(pure=False, resources={"GPU": 1}),  # workers started --resources GPU=1
                    gpu_workers=sum(1 for w in found if w.get("resources", {}).get("GPU")))
    engine.stop = lambda: _close(client, None)
    return engine


def _local_cluster(distributed: Any, workers: int, retries: int) -> Any:
    """A LocalCluster of ``workers`` one-thread processes where every socket listens on 127.0.0.1 only.

    A dead worker's cell is retried by the scheduler (``allowed_failures``), never by the executor: Dask's
    ``retries`` only covers a task that raises, and a cell's errors are results, not worth a retry. The
    scheduler's HTTP server listens whatever the dashboard options say (distributed 2026.8;
    ``dashboard_address=None`` means 127.0.0.1:8787, which another user's cluster may hold): here a random
    port on 127.0.0.1, with no dashboard on it. The workers' HTTP servers take random ports there too.
    """
    options = {"allowed_failures": retries, "dashboard": False, "dashboard_address": "127.0.0.1:0"}
    return distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                    silence_logs=50, scheduler_kwargs=options)


def killed_worker(error: BaseException) -> Loss | None:
    """Dask's KilledWorker: its scheduler ran the cell on allowed_failures + 1 workers, and all of them died."""
    from distributed.scheduler import KilledWorker

    if not isinstance(error, KilledWorker):
        return None
    return error.allowed_failures + 1, f"the last on {error.last_worker.address}"


def _close(client: Any, cluster: Any) -> None:
    client.close()
    if cluster is not None:
        cluster.close()


def choose(executor: str | None, workers: int | None, address: str | None, threads: int | None
           ) -> Callable[[], Engine]:
    """The engine the options name, checked now (nothing started): call the result to start it.

    No option: this process. ``--workers N``: a pool of N processes. ``--executor dask``: a local
    Dask cluster (``--workers`` processes), or the one at ``--address``.
    """
    if executor is not None and executor not in EXECUTORS:
        raise InitlabError(f"--executor {executor!r}: expected one of {', '.join(EXECUTORS)} (default: in-process)")
    if address is not None and executor != "dask":
        raise InitlabError("--address names a Dask scheduler: give it with --executor dask")
    if address is not None and not address.startswith(("tcp://", "tls://", "ucx://", "inproc://")):
        raise InitlabError(f"--address {address!r}: expected a scheduler address like tcp://127.0.0.1:8786")
    if address is not None and workers is not None:
        raise InitlabError("--workers and --address: a cluster's workers are set where it starts; drop --workers")
    # The options as given, to name them in an error (a default worker count is one per core).
    given = " ".join(f"{option} {value}" for option, value in (
        ("--executor", executor), ("--workers", workers), ("--threads", threads)) if value is not None)
    if executor == "dask":
        import importlib.util

        if importlib.util.find_spec("distributed") is None:
            raise InitlabError(DASK_MISSING)
        if address is None:
            check_threads(workers or cores(), threads or 1, given)
        return lambda: dask(address, workers, threads)
    if executor == "process" or workers is not None:
        count = workers if workers is not None else cores()
        check_threads(count, threads or 1, given)
        return lambda: process_pool(count, threads)
    if threads is not None:
        check_threads(1, threads, given)
    return lambda: in_process(threads)
