"""initlab's benchmark suite: where time and memory go, as ratios measured side by side.

    .venv/bin/python bench/run.py            # the suite; writes BENCHMARKS.md
    .venv/bin/python bench/run.py --smoke    # tiny sizes, seconds; checks the suite runs

Every figure is a ratio of two timings taken in the same run, interleaved (A B A B ...),
so that a noisy machine slows both sides alike. Timings are the minimum (in-process) or
median (subprocesses) of several repetitions. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
_SCRIPT = Path(PYTHON).parent / "initlab"  # the console script users run
INITLAB = [str(_SCRIPT)] if _SCRIPT.exists() else [PYTHON, "-m", "initlab.cli"]


@dataclass
class Section:
    title: str
    target: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def interleaved(a: Callable[[], object], b: Callable[[], object], reps: int) -> tuple[list[float], list[float]]:
    """Time ``a`` and ``b`` alternately ``reps`` times each (after one warm-up of each)."""
    ta, tb = round_robin([a, b], reps)
    return ta, tb


def round_robin(fns: list[Callable[[], object]], reps: int) -> list[list[float]]:
    """Time every function in turn (A B C A B C ...) ``reps`` times each, after one warm-up of each."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for fn, out in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return times


def sh(cmd: list[str]) -> Callable[[], object]:
    env = {**os.environ, "COLUMNS": "100"}
    return lambda: subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT, env=env)


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


# ---------------------------------------------------------------- 1. start-up


#: The quick commands, each timed against ``python -c "import torch"`` in one round robin.
QUICK = [["gain", "tanh"], ["theory", "tanh", "--sw2", "1.5"], ["theory", "tanh", "--critical"]]


def startup(reps: int) -> Section:
    section = Section(
        "Start-up", "`initlab --help` <= 0.3 s and imports no torch; `initlab gain tanh` and `initlab theory ...` "
        "<= 1.15x `import torch`",
        ["command", "median", "baseline", "baseline median", "ratio"],
    )
    ta, tb = interleaved(sh(INITLAB + ["--help"]), sh([PYTHON, "-c", "pass"]), reps)
    section.rows.append(_startup_row(["--help"], ta, "python -c pass", tb))
    load = os.getloadavg()[0]
    base, *quick = round_robin([sh([PYTHON, "-c", "import torch"]), *(sh(INITLAB + args) for args in QUICK)], reps)
    for args, times in zip(QUICK, quick, strict=True):
        section.rows.append(_startup_row(args, times, 'python -c "import torch"', base))
    check = "import sys; from initlab.cli import app\ntry: app(['--help'])\nexcept SystemExit: pass\n" \
            "print(json.dumps(sorted(m for m in ('torch', 'pandas', 'matplotlib') if m in sys.modules)))"
    out = subprocess.run([PYTHON, "-c", "import json\n" + check], capture_output=True, text=True, cwd=ROOT, check=True)
    section.notes.append(f"heavy modules imported by `initlab --help`: {out.stdout.strip().splitlines()[-1]}")
    section.notes.append(f"medians of {reps} runs each, `import torch` and the quick commands in one round robin; "
                         f"load average {load:.2f} -> {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    return section


def _startup_row(args: list[str], times: list[float], base_name: str, base: list[float]) -> list[str]:
    a, b = statistics.median(times), statistics.median(base)
    return [f"`initlab {' '.join(args)}`", ms(a), base_name, ms(b), f"{a / b:.2f}x"]


# ---------------------------------------------------------------- 2. probe overhead


def _model(depth: int, width: int, batch: int, device: str) -> tuple[Any, Any, Any]:
    import torch

    from initlab.config import Config
    from initlab.model import build, draw_input, probe_targets
    from initlab.statistics import statistics_for

    config = Config.model_validate({
        "model": {"depth": depth, "width": width, "activation": "tanh"},
        "init": {"scheme": "xavier_uniform", "gain": "auto"}, "data": {"batch_size": batch},
    })
    generator = torch.Generator().manual_seed(0)
    model = build(config, generator, torch.float32).to(device)
    x = draw_input(config, generator, torch.float32).to(device)
    sites = {s: statistics_for(s, config.model.activation) for s in ("pre", "post")}
    return model, x, (probe_targets(model), sites)


Measure = Callable[[int, int, int, int, str], tuple[float, float]]


def _ratios(section: Section, measure: Measure, sizes: list[tuple[int, int]], depth: int, reps: int,
            device: str) -> Section:
    """``section`` with a row per (width, batch): the bare and probed times ``measure`` gives, and their ratio."""
    for width, batch in sizes:
        a, b = measure(depth, width, batch, reps, device)
        section.rows.append([str(width), str(batch), ms(a), ms(b), f"{b / a:.2f}x"])
    return section


def probe_overhead(sizes: list[tuple[int, int]], depth: int, reps: int, device: str) -> Section:
    section = Section(
        f"Probe overhead ({device}, depth {depth}, tanh)",
        "every probe on <= 1.10x the bare forward at width >= 1024, batch >= 1024",
        ["width", "batch", "bare forward", "probed forward + read-back", "ratio"],
    )
    return _ratios(section, _overhead, sizes, depth, reps, device)


def _overhead(depth: int, width: int, batch: int, reps: int, device: str) -> tuple[float, float]:
    """Best bare and best probed forward time of one model."""
    import torch

    from initlab.probes import ForwardProbe

    model, x, (targets, sites) = _model(depth, width, batch, device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def bare() -> None:
        with torch.no_grad():
            model(x)
        sync()

    def probed() -> None:
        with torch.no_grad(), ForwardProbe(targets, sites) as probe:
            model(x)
            probe.records()  # reads back, so it synchronises too

    ta, tb = interleaved(bare, probed, reps)
    return min(ta), min(tb)


def backward_overhead(sizes: list[tuple[int, int]], depth: int, reps: int, device: str) -> Section:
    section = Section(
        f"Backward overhead ({device}, depth {depth}, tanh)",
        "every probe on, forward and backward, <= 1.25x the bare forward + backward at width >= 1024, batch >= 1024",
        ["width", "batch", "bare forward + backward", "probed forward + backward + read-back", "ratio"],
    )
    section.notes.append("probed: what `initlab.run` records (forward sites with the histogram, the weights, the "
                         "gradients of pre-activations, outputs and weights), read back once at the end")
    return _ratios(section, _backward_overhead, sizes, depth, reps, device)


def _backward_overhead(depth: int, width: int, batch: int, reps: int, device: str) -> tuple[float, float]:
    """Best bare and best probed forward + backward time of one model (upstream gradient N(0, 1))."""
    import torch

    from initlab.config import Config
    from initlab.probes import ForwardProbe, GradientProbe
    from initlab.runner import record_weights, site_statistics

    model, x, (targets, _) = _model(depth, width, batch, device)
    sites = site_statistics(Config.model_validate({"model": {"activation": "tanh"}}))
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def bare() -> None:
        model.zero_grad(set_to_none=True)
        model(x).backward(g)
        sync()

    def probed() -> None:
        model.zero_grad(set_to_none=True)
        with ForwardProbe(targets, sites) as probe, GradientProbe(targets, probe.accumulator):
            record_weights(probe.accumulator, model, "weight")
            model(x).backward(g)
            record_weights(probe.accumulator, model, "weight_grad")
            probe.records()  # reads back, so it synchronises too

    ta, tb = interleaved(bare, probed, reps)
    return min(ta), min(tb)


# ---------------------------------------------------------------- 3. end to end


def hand_written(config: Any) -> list[float]:
    """The tutorial's loop: seed, ModuleList of Linear, init, randn, per-layer x.std()."""
    import torch
    from torch import nn

    torch.manual_seed(config.seed)
    width, act = config.model.width, config.model.activation.module()
    layers = nn.ModuleList([nn.Linear(width, width, bias=False) for _ in range(config.model.depth)])
    with torch.no_grad():
        for layer in layers:
            config.init.weight.init_(layer.weight, config.model.activation, None)
        x = torch.randn(config.data.batch_size, width)
        stds = []
        for layer in layers:
            x = act(layer(x))
            stds.append(x.std().item())
    return stds


def end_to_end(names: list[str], reps: int) -> Section:
    section = Section(
        "End to end (in-process, classic configs: 100 x 256, batch 16, forward only: backward=false)",
        "close to the irreducible work: weight generation and the matrix products",
        ["config", "hand-written script", "initlab.run + save", "ratio", "build", "forward + stats", "write"],
    )
    for name in names:
        a, b, timings = _end_to_end(name, reps)
        section.rows.append([
            name, ms(a), ms(b), f"{b / a:.2f}x",
            ms(timings["build_s"]), ms(timings["forward_s"] + timings.get("statistics_s", 0.0)),
            ms(timings["write_s"]),
        ])
    section.notes.append("the split (build, forward + stats, write) is that of the last repetition")
    return section


def _end_to_end(name: str, reps: int) -> tuple[float, float, dict[str, float]]:
    import initlab
    from initlab.results import save_run

    config = initlab.load_config(ROOT / "configs" / f"{name}.yaml", ["backward=false"])  # as the script
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:

        def ours() -> None:
            result = initlab.run(config)
            start = time.perf_counter()
            save_run(result, Path(tmp), [])
            timings.update(result.meta["timings"], write_s=time.perf_counter() - start)

        ta, tb = interleaved(lambda: hand_written(config), ours, reps)
    return min(ta), min(tb), timings


# ---------------------------------------------------------------- 4. sweeps


def sweep(schemes: str, activations: str, seeds: int, depth: int, width: int) -> Section:
    import torch

    from initlab import plots, sweep
    from initlab.config import load_config
    from initlab.model import build, draw_input

    base = load_config(None, [f"model.depth={depth}", f"model.width={width}", "backward=false"])
    plan = sweep.plan_sweep(base, sweep.parse_schemes(schemes), sweep.parse_activations(activations),
                              seeds=seeds)
    section = Section(
        f"Sweep: `compare --schemes {schemes} --activations {activations} --seeds {seeds} --no-backward` "
        f"({depth} x {width})",
        "the sweep adds <= 25 % on top of its irreducible parts (weight generation + bare forward)",
        ["runs", "irreducible: generate + bare forward", "sweep, results written", "ratio"],
    )
    configs = [run.config for run in plan.runs if run.config is not None]

    def irreducible() -> None:
        for config in configs:
            generator = torch.Generator().manual_seed(config.seed)
            model = build(config, generator, torch.float32)
            x = draw_input(config, generator, torch.float32)
            with torch.no_grad():
                model(x)

    def ours() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            sweep.run_sweep(plan, sweep.SweepFolder.create(Path(tmp), plan, [], plots.std_plot_files))

    ta, tb = interleaved(irreducible, ours, 1)
    a, b = min(ta), min(tb)
    section.rows.append([str(len(configs)), ms(a), ms(b), f"{b / a:.2f}x"])
    return section


def sweep_executors(schemes: str, activations: str, seeds: int, depth: int, width: int, threads: int) -> Section:
    """One sweep in this process with ``threads`` torch threads, then on ``threads`` workers of one thread
    each (a process pool, a Dask LocalCluster): the same total threads. Times include starting the workers."""
    import importlib.util

    from initlab import plots, sweep
    from initlab.config import load_config
    from initlab.sweep import executors

    base = load_config(None, [f"model.depth={depth}", f"model.width={width}", "backward=false"])
    plan = sweep.plan_sweep(base, sweep.parse_schemes(schemes), sweep.parse_activations(activations), seeds=seeds)
    section = Section(
        f"Sweep executors: `compare --schemes {schemes} --activations {activations} --seeds {seeds} "
        f"--no-backward` ({depth} x {width}, {len(plan.runs)} cells)",
        f"{threads} workers >= 1.7x faster than in-process at equal total threads ({threads})",
        ["executor", "workers x threads", "wall", "cells/s", "speed-up"],
    )
    engines: list[tuple[str, Callable[[], executors.Engine]]] = [
        ("in-process", lambda: executors.in_process(threads)),
        (f"--workers {threads}", lambda: executors.process_pool(threads, 1)),
    ]
    if importlib.util.find_spec("distributed") is not None:
        engines.append((f"--executor dask --workers {threads}", lambda: executors.dask(None, threads, 1)))
    base_time = None
    for name, start in engines:
        with tempfile.TemporaryDirectory() as tmp:
            began = time.perf_counter()
            engine = start()
            shape = f"{engine.workers} x {engine.threads}"
            sweep.run_sweep(plan, sweep.SweepFolder.create(Path(tmp), plan, [], plots.std_plot_files), engine=engine)
            took = time.perf_counter() - began
        base_time = base_time or took
        section.rows.append([f"`{name}`", shape, ms(took), f"{len(plan.runs) / took:.1f}", f"{base_time / took:.2f}x"])
    section.notes.append("one run each, worker start-up included (spawned processes import torch; Dask starts a "
                         "scheduler and nannies); every engine writes byte-identical tables (tests/test_executors.py)")
    return section


# ---------------------------------------------------------------- 5. memory


_MEMORY_CHILD = """
import json, sys
import initlab
from initlab.config import Config

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))

config = Config.model_validate(json.loads(sys.argv[1]))
initlab.run(config.model_copy(update={"model": config.model.model_copy(update={"depth": 1, "width": 8})}))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
base = status("VmRSS")
result = initlab.run(config)
print(json.dumps({"base": base, "peak": status("VmHWM"), "memory": result.meta["memory"],
                  "seconds": sum(result.meta["timings"].values())}))
"""


def memory(shapes: list[tuple[int, int]], batch: int) -> Section:
    section = Section(
        f"Peak memory (CPU, batch {batch}, float32)",
        "peak <= 1.5x (parameter bytes + one batch of activations per layer)",
        ["depth", "width", "parameters", "budget", "peak RSS - baseline", "ratio"],
    )
    for depth, width in shapes:
        config = {"model": {"depth": depth, "width": width, "activation": "relu"},
                  "init": {"scheme": "kaiming_normal"}, "data": {"batch_size": batch}, "backward": False}
        out = subprocess.run([PYTHON, "-c", _MEMORY_CHILD, json.dumps(config)], capture_output=True, text=True,
                             cwd=ROOT, check=True)
        seen = json.loads(out.stdout.strip().splitlines()[-1])
        params = depth * width * width * 4
        budget = params + depth * batch * width * 4
        used = seen["peak"] - seen["base"]
        section.rows.append([str(depth), str(width), _mb(params), _mb(budget), _mb(used), f"{used / budget:.2f}x"])
    section.notes.append("baseline: the RSS of the same process after a tiny warm-up run (imports, allocator); "
                         "peak: its VmHWM, reset to the baseline just before the run")
    return section


def streamed_memory(depths: list[int], width: int, batch: int) -> Section:
    """``memory: stream`` against depth: what the in-memory run would need, what the streamed run used."""
    import torch

    from initlab import devices
    from initlab.config import Config

    section = Section(
        f"Depth in bounded memory (CPU, memory: stream, width {width}, batch {batch}, forward + backward)",
        "depth 10,000 x width 1,024 (batch 64) runs on this machine; peak grows with depth only by the kept "
        "block inputs (batch x width per block, for the backward pass) and the per-block statistics",
        ["depth", "in memory would need", "streamed estimate", "peak RSS - baseline", "time"],
    )
    place = devices.Placement(torch.device("cpu"))
    for depth in depths:
        raw = {"model": {"depth": depth, "width": width, "activation": "relu"}, "init": {"scheme": "kaiming_normal"},
               "data": {"batch_size": batch}, "memory": "stream"}
        config = Config.model_validate(raw)
        whole, streamed = (devices.estimate(config, place, s).total for s in (False, True))
        out = subprocess.run([PYTHON, "-c", _MEMORY_CHILD, json.dumps(raw)], capture_output=True, text=True,
                             cwd=ROOT, check=True)
        seen = json.loads(out.stdout.strip().splitlines()[-1])
        section.rows.append([f"{depth:,}", _mb(whole), _mb(streamed), _mb(seen["peak"] - seen["base"]),
                             f"{seen['seconds']:.1f} s"])
    section.notes.append("every weight is drawn twice forward and once more backward (the generator's state is "
                         "saved per block, 10 KiB, and replayed); baseline and peak as in the peak-memory section")
    return section


def _mb(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


# ---------------------------------------------------------------- report


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"{cpu}, {os.cpu_count()} cores; torch {torch.__version__} ({torch.get_num_threads()} threads); "
            f"Python {platform.python_version()}; GPU: {gpu}")


def markdown(sections: list[Section], header: str) -> str:
    lines = [header, ""]
    for section in sections:
        lines += [f"## {section.title}", "", f"Target: {section.target}.", ""]
        lines += ["| " + " | ".join(section.columns) + " |", "|" + "---|" * len(section.columns)]
        lines += ["| " + " | ".join(row) + " |" for row in section.rows]
        lines += [""] + [f"- {note}" for note in section.notes] + ([""] if section.notes else [])
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the suite runs (CI)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write the report (default: BENCHMARKS.md; with --smoke, nowhere)")
    parser.add_argument("--device", default=None, help="also measure probe overhead on this device (e.g. cuda)")
    parser.add_argument("--startup", type=int, default=None, metavar="REPS",
                        help="only the start-up section, REPS runs of each command; prints, writes nothing")
    args = parser.parse_args()
    if args.startup is not None:
        print(markdown([startup(reps=args.startup)], "# Start-up"))
        return
    import torch

    if args.smoke:
        sections = [
            startup(reps=1),
            probe_overhead([(32, 8)], depth=4, reps=1, device="cpu"),
            backward_overhead([(32, 8)], depth=4, reps=1, device="cpu"),
            end_to_end(["tanh-xavier"], reps=1),
            sweep("xavier,kaiming", "tanh", seeds=2, depth=4, width=16),
            sweep_executors("xavier,kaiming", "tanh", seeds=2, depth=4, width=16, threads=2),
            memory([(4, 32)], batch=4),
            streamed_memory([4, 8], width=32, batch=4),
        ]
    else:
        sizes = [(256, 16), (256, 1024), (1024, 16), (1024, 1024)]
        sections = [
            startup(reps=7),
            probe_overhead(sizes, depth=100, reps=5, device="cpu"),
            backward_overhead([(256, 16), (1024, 16), (1024, 1024)], depth=100, reps=5, device="cpu"),
            backward_overhead([(2048, 2048)], depth=20, reps=5, device="cpu"),
            end_to_end(["linear-normal", "tanh-xavier", "relu-kaiming"], reps=5),
            sweep("normal,xavier,kaiming,default", "linear,tanh,relu", seeds=10, depth=100, width=256),
            sweep_executors("normal,xavier,kaiming,default,orthogonal", "linear,tanh,relu,selu", seeds=10, depth=50,
                            width=256, threads=2),
            memory([(100, 256), (100, 1024), (1000, 256), (1000, 1024)], batch=16),
            streamed_memory([100, 1000, 10_000], width=1024, batch=64),
        ]
        device = args.device or ("cuda" if torch.cuda.is_available() else None)
        if device:
            gpu_sizes = [*sizes, (4096, 16), (4096, 1024)]
            sections.insert(2, probe_overhead(gpu_sizes, depth=100, reps=10, device=device))
            sections.insert(3, backward_overhead(gpu_sizes, depth=100, reps=10, device=device))
    header = f"# Benchmarks\n\n`{' '.join(['python', *sys.argv])}` on {machine()}."
    text = markdown(sections, header)
    out = args.out if args.out is not None or args.smoke else ROOT / "BENCHMARKS.md"
    if out is not None:
        out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
