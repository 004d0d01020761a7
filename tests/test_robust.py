"""A robust command line: run ids that say what a run holds, bounded inputs, feasibility and
writability checked before any work, folder locks, the umask, SIGTERM, --version and -h."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import initlab.runner
from initlab import devices, folder_lock, plots, results, sweep
from initlab.cli import app
from initlab.errors import InitlabError
from initlab.limits import MAX_SEED
from tests.conftest import CONFIGS

runner = CliRunner()
SMALL = ["model.depth=6", "model.width=16"]
TINY = ["--depth", "4", "--width", "8"]


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "120"})
    return result.exit_code, result.stdout, result.stderr


def one_error_line(code: int, out: str, err: str, expected: str) -> None:
    assert code == 2, err
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert expected in err and "Traceback" not in err


def tree(root: Path) -> list[Path]:
    return sorted(root.rglob("*")) if root.exists() else []


# ---------------------------------------------------------------- item 4: the run id says what a run holds


def test_overrides_name_the_run_folder_and_meta_lists_them(tmp_path: Path) -> None:
    code, _, err = invoke("run", str(CONFIGS / "tanh-xavier.yaml"), *SMALL, "init.scheme=normal", "init.std=0.0625",
                          "--out", str(tmp_path))
    assert code == 0, err
    (folder,) = (tmp_path / "tanh-xavier").iterdir()
    assert re.fullmatch(r"\d{8}-\d{6}-s1\+model\.depth=6\+model\.width=16\+init\.scheme=normal\+init\.std=0\.0625",
                        folder.name), folder.name
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["overrides"] == [*SMALL, "init.scheme=normal", "init.std=0.0625"]


def test_without_overrides_the_run_id_is_time_and_seed(tmp_path: Path) -> None:
    config = tmp_path / "small.yaml"
    config.write_text("model: {depth: 4, width: 8}\nseed: 7\n")
    code, _, err = invoke("run", str(config), "--out", str(tmp_path / "r"))
    assert code == 0, err
    (folder,) = (tmp_path / "r" / "small").iterdir()
    assert re.fullmatch(r"\d{8}-\d{6}-s7", folder.name), folder.name
    assert json.loads((folder / "meta.json").read_text())["overrides"] == []


def test_run_id_is_safe_for_file_systems_and_bounded() -> None:
    when = datetime(2026, 11, 23, 14, 1, 2, tzinfo=timezone.utc)
    assert results.run_id(when, 1) == "20261123-140102-s1"
    assert results.run_id(when, 1, ["init.scheme=normal", "init.std=0.0625"]) == \
        "20261123-140102-s1+init.scheme=normal+init.std=0.0625"
    assert results.run_id(when, 1, ["name=a/b", "x=[1, 2]"]) == "20261123-140102-s1+name=a_b+x=_1_2_"
    many = [f"init.layers.{i}.val=0.{i}" for i in range(10)]
    long = results.run_id(when, 1, many)
    assert re.fullmatch(r"20261123-140102-s1\+o[0-9a-f]{10}", long), long
    assert long != results.run_id(when, 1, many[:-1] + ["init.layers.9.val=0.8"])  # the hash tells them apart


# ---------------------------------------------------------------- item 5: gain's inputs and memory


def test_gain_with_more_samples_than_memory_is_refused_with_the_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "available_bytes", lambda device: 10_000)
    code, out, err = invoke("gain", "tanh", "--samples", "1000")
    one_error_line(code, out, err, "std ratio over 1,000 samples needs about 0.00 GiB of memory")
    assert "--samples" in err


def test_gain_with_absurd_samples_is_refused_at_once() -> None:
    code, out, err = invoke("gain", "tanh", "--samples", "100000000000")
    one_error_line(code, out, err, "std ratio over 100,000,000,000 samples needs about 3725.29 GiB")


def test_gain_seed_is_bounded_by_what_torch_takes() -> None:
    code, out, err = invoke("gain", "tanh", "--seed", str(MAX_SEED + 1), "--samples", "1000")
    one_error_line(code, out, err, f"--seed {MAX_SEED + 1}: outside 0..{MAX_SEED}")
    code, out, err = invoke("gain", "tanh", "--seed", str(MAX_SEED), "--samples", "1000", "--json")
    assert code == 0, err
    assert json.loads(out)["gains"][0]["seed"] == MAX_SEED


# ---------------------------------------------------------------- items 6, 7: compare checks every cell first


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--depth", "100000", "--width", "100000"], "cell depth 100000, width 100000: the study needs about"),
        (["--depths", "4,100000", "--width", "10000"], "cell depth 100000, width 10000"),
        (["--seed", str(MAX_SEED), "--seeds", "2", *TINY], f"--seed/--seeds {MAX_SEED}..{MAX_SEED + 1}: outside"),
        (["--seeds", "100000000"], "the sweep has 100,000,000 cell runs"),
        (["--activations", "tanh,relu", "--seeds", "3", "--max-runs", "5", *TINY], "give --max-runs 6 to run it"),
    ],
)
def test_compare_refuses_infeasible_sweeps_before_writing(tmp_path: Path, args: list[str], expected: str) -> None:
    code, out, err = invoke("compare", "--schemes", "xavier", *args, "--out", str(tmp_path / "out"))
    one_error_line(code, out, err, expected)
    assert not (tmp_path / "out").exists()


def test_compare_seed_option_is_bounded(tmp_path: Path) -> None:
    code, out, err = invoke("compare", "--schemes", "xavier", "--seed", str(MAX_SEED + 1), "--out", str(tmp_path))
    one_error_line(code, out, err, f"--seed {MAX_SEED + 1}: seed: input should be less than or equal to {MAX_SEED}")
    assert not any(tmp_path.iterdir())


def test_max_runs_counts_cells_times_seeds(tmp_path: Path) -> None:
    code, _, err = invoke("compare", "--schemes", "xavier,kaiming", "--seeds", "3", "--max-runs", "6", *TINY,
                          "--no-save")
    assert code == 0, err
    with pytest.raises(InitlabError, match="1,000,000 cell runs"):
        sweep.check_size([10, 10, 10, 10], 100, 100_000)


# ---------------------------------------------------------------- item 9: the results folder is proved first


def test_an_uncreatable_out_is_refused_before_the_study(monkeypatch: pytest.MonkeyPatch) -> None:
    if not Path("/proc/self").exists():
        pytest.skip("needs /proc")

    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the study ran")

    monkeypatch.setattr(initlab.runner, "run", never)
    code, out, err = invoke("run", str(CONFIGS / "tanh-xavier.yaml"), "--out", "/proc/initlab-x")
    one_error_line(code, out, err, "cannot create the results folder /proc/initlab-x/tanh-xavier")


def test_the_creatability_check_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "available_bytes", lambda device: 1000)  # the study is refused after the check
    code, out, err = invoke("run", str(CONFIGS / "tanh-xavier.yaml"), "--out", str(tmp_path / "new" / "root"))
    one_error_line(code, out, err, "the study needs about")
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------- item 11: the umask


def modes(root: Path) -> set[tuple[str, int]]:
    return {("dir" if p.is_dir() else "file", stat.S_IMODE(p.stat().st_mode)) for p in tree(root)}


@pytest.fixture(params=[0o022, 0o027])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    before = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(before)


def test_run_and_compare_folders_respect_the_umask(tmp_path: Path, umask: int) -> None:
    code, _, err = invoke("run", str(CONFIGS / "tanh-xavier.yaml"), *SMALL, "--out", str(tmp_path))
    assert code == 0, err
    code, _, err = invoke("compare", "--schemes", "xavier,kaiming", "--seeds", "2", *TINY, "--out", str(tmp_path))
    assert code == 0, err
    assert {p.name for p in (tmp_path / "compare").iterdir()} and (tmp_path / "compare").is_dir()
    assert modes(tmp_path) == {("dir", 0o777 & ~umask), ("file", 0o666 & ~umask)}


# ---------------------------------------------------------------- items 10, 12: real processes


def initlab_process(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "initlab.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(predicate: Any, process: subprocess.Popen[str], timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            raise AssertionError(f"the process ended first: {process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("timed out")
        time.sleep(0.02)


# 40 cell runs of about 20 ms each (on an idle CPU): long enough to stop in the middle.
SWEEP = dict(schemes="xavier,kaiming", depth=200, width=32, seeds=20)
LONG_SWEEP = ["compare", "--schemes", "xavier,kaiming", "--depth", "200", "--width", "32", "--seeds", "20"]


def cells(folder: Path) -> int:
    return len([p for p in (folder / "cells").iterdir() if not p.name.startswith(".")]) \
        if (folder / "cells").is_dir() else 0


def sweep_folder(root: Path) -> Path | None:
    found = [p for p in (root / "compare").glob("*") if (p / "plan.json").exists()] \
        if (root / "compare").is_dir() else []
    return found[0] if found else None


@pytest.mark.slow
def test_sigterm_keeps_finished_cells_and_resume_completes_byte_identically(tmp_path: Path) -> None:
    process = initlab_process(*LONG_SWEEP, "--out", str(tmp_path / "a"))
    wait_for(lambda: (f := sweep_folder(tmp_path / "a")) is not None and cells(f) >= 2, process)
    process.terminate()
    _, err = process.communicate(timeout=30)
    assert process.returncode == 143, err
    folder = sweep_folder(tmp_path / "a")
    assert folder is not None
    assert f"resume with: initlab compare --resume {folder}" in err and "terminated (SIGTERM)" in err
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["interrupted"] is True and 0 < meta["finished"] < meta["cell_runs"]
    assert not list(folder.rglob(".*.tmp")) and not (folder / ".lock").exists()  # nothing half-written or held

    done = subprocess.run([sys.executable, "-m", "initlab.cli", "compare", "--resume", str(folder)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    whole = sweep.run_sweep(sweep.plan_from_options(None, **SWEEP))  # type: ignore[arg-type]
    assert (folder / "layers.csv").read_text() == results.csv_text(whole.layers)
    assert (folder / "summary.csv").read_text() == results.csv_text(whole.summary)


def catches_sigterm(pid: int) -> bool:
    """Whether the process has installed its SIGTERM handler (Linux: the SigCgt mask of /proc/PID/status)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(re.search(r"^SigCgt:\s*([0-9a-f]+)$", status, re.M).group(1), 16)  # type: ignore[union-attr]
    return bool(caught >> (15 - 1) & 1)


def cpu_seconds(pid: int) -> float:
    """User and system time of a process so far (Linux: /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")
def test_sigterm_stops_a_run_promptly_and_writes_nothing(tmp_path: Path) -> None:
    import time

    # About 20 s of work on a 2-core machine: weights for 5000 layers, then the probed forward pass.
    process = initlab_process("run", str(CONFIGS / "tanh-xavier.yaml"), "model.depth=5000", "model.width=128",
                              "--out", str(tmp_path))
    wait_for(lambda: catches_sigterm(process.pid) and cpu_seconds(process.pid) > 4.0, process)  # in the study
    sent = time.monotonic()
    process.terminate()
    _, err = process.communicate(timeout=30)
    assert time.monotonic() - sent < 10
    assert process.returncode == 143, err
    assert "terminated (SIGTERM)" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_a_second_process_on_a_locked_folder_is_refused(tmp_path: Path) -> None:
    first = initlab_process(*LONG_SWEEP[:-1], "300", "--out", str(tmp_path))  # runs until terminated
    try:
        wait_for(lambda: (f := sweep_folder(tmp_path)) is not None and cells(f) >= 1, first)
        folder = sweep_folder(tmp_path)
        assert folder is not None
        second = subprocess.run([sys.executable, "-m", "initlab.cli", "compare", "--resume", str(folder)],
                                capture_output=True, text=True, timeout=120, check=False)
        assert second.returncode == 2, second.stderr
        assert f"is in use by initlab pid {first.pid} on" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1 and "Traceback" not in second.stderr
    finally:
        first.terminate()
        first.communicate(timeout=30)
    assert first.returncode == 143
    assert not (folder / ".lock").exists()


def test_a_stale_lock_is_taken_over_and_a_live_one_respected(tmp_path: Path) -> None:
    import socket

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    plan = sweep.plan_sweep(sweep.base_config(None, depth=3, width=4), sweep.parse_schemes("xavier"))
    folder = sweep.SweepFolder.create(tmp_path, plan, [], plots.std_plot_files)
    lock = folder.path / folder_lock.LOCK_NAME
    lock.write_text(json.dumps({"pid": int(gone.stdout), "host": socket.gethostname()}))
    sweep.run_sweep(plan, folder)  # the dead holder's lock is taken over
    assert not lock.exists() and (folder.path / "summary.csv").exists()

    lock.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))  # alive
    with pytest.raises(InitlabError, match=f"in use by initlab pid {os.getppid()}"):
        sweep.run_sweep(plan, folder)
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere"}))  # cannot be checked: respected
    with pytest.raises(InitlabError, match="pid 1 on elsewhere"):
        sweep.run_sweep(plan, folder)


# ---------------------------------------------------------------- what people expect


def test_version_is_printed_without_importing_torch() -> None:
    code = ("import sys\nfrom initlab.cli import app\ntry:\n    app(['--version'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, 'pandas' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    first, imported = done.stdout.splitlines()
    from importlib.metadata import version

    assert first == f"initlab {initlab.__version__} (torch {version('torch')})"
    assert imported == "False False"


@pytest.mark.parametrize("command", [[], ["run"], ["gain"], ["compare"]])
def test_dash_h_is_help_on_every_command(command: list[str]) -> None:
    code, out, err = invoke(*command, "-h")
    assert code == 0, err
    assert out.startswith("Usage: ") and "-h, --help" in out


def test_shell_completion_is_offered() -> None:
    code, out, _ = invoke("--help")
    assert code == 0 and "--install-completion" in out and "--show-completion" in out


def test_taking_over_a_stale_lock_never_removes_a_fresh_one(tmp_path: Path) -> None:
    from initlab.folder_lock import _take_over

    lock = tmp_path / folder_lock.LOCK_NAME
    fresh = json.dumps({"pid": os.getpid(), "host": "here"})
    lock.write_text(fresh)  # another process took the lock since this one judged it stale
    _take_over(lock, json.dumps({"pid": 999999999, "host": "here"}))
    assert lock.read_text() == fresh and [p.name for p in tmp_path.iterdir()] == [folder_lock.LOCK_NAME]


def test_an_empty_lock_is_held_for_a_moment_then_stale(tmp_path: Path) -> None:
    lock = tmp_path / folder_lock.LOCK_NAME
    lock.write_text("")  # a process between creating its lock and writing it
    with pytest.raises(InitlabError, match="in use by another process"):
        folder_lock.FolderLock(tmp_path).acquire()
    os.utime(lock, (0, 0))  # long ago: that process died in between
    with folder_lock.FolderLock(tmp_path) as taken:
        assert taken.held and json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()
