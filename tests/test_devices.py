"""Devices: placement errors, memory refusal, dtypes, precision, and exact statistics across replicas."""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

import initlab
import initlab.runner
from initlab import devices
from initlab.config import load_config
from initlab.errors import InitlabError
from initlab.model import build, draw_input, probe_targets
from initlab.probes import ForwardProbe
from initlab.statistics import statistics_for
from tests.conftest import CONFIGS, make_config

NO_CUDA = not torch.cuda.is_available()


@pytest.mark.skipif(not NO_CUDA, reason="checks the message for a machine without CUDA")
@pytest.mark.parametrize(
    "spec", [{"device": "cuda"}, {"device": "cuda:1"}, {"device": "cuda", "data_parallel": {"device_ids": [0]}}]
)
def test_cuda_asked_for_but_absent_is_a_clear_error(spec: dict[str, object]) -> None:
    with pytest.raises(InitlabError, match="CUDA is not available on this machine"):
        initlab.run(make_config(**spec))


def test_auto_takes_the_cpu_without_cuda() -> None:
    placement = devices.place(make_config(device="auto"))
    assert placement.device.type == ("cpu" if NO_CUDA else "cuda")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"data_parallel": {"device_ids": [0]}}, "needs device: cuda"),
        ({"device": "cuda:0", "data_parallel": {"device_ids": [0, 1]}}, "choose GPUs in data_parallel.device_ids"),
        ({"device": "cuda", "data_parallel": {"device_ids": [0, 0]}}, "distinct"),
        ({"device": "cuda", "data_parallel": {"device_ids": []}}, "at least 1 item"),
    ],
)
def test_data_parallel_config_is_checked(spec: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_config(**spec)


def test_a_model_that_cannot_fit_is_refused_before_building(monkeypatch: pytest.MonkeyPatch) -> None:
    config = make_config(model={"depth": 10, "width": 100}, memory="full")  # auto would stream it (test_stream)
    need = devices.estimate(config, devices.place(config))
    assert need.parameters == need.gradients == 10 * 100 * 100 * 4  # the weights and their gradients
    forward = devices.estimate(config.model_copy(update={"backward": None}), devices.place(config))
    assert (forward.parameters, forward.gradients) == (10 * 100 * 100 * 4, 0)
    assert need.activations - forward.activations == 10 * 8 * 100 * 2 * 4  # two saved tensors per block
    monkeypatch.setattr(devices, "available_bytes", lambda device: need.total - 1)
    monkeypatch.setattr(initlab.runner, "build", lambda *a: pytest.fail("built anyway"))
    with pytest.raises(InitlabError, match=r"needs about 0\.00 GiB on cpu .* but cpu has 0\.00 GiB free"):
        initlab.run(config)


def test_estimate_splits_the_batch_across_replicas() -> None:
    config = make_config(model={"depth": 4, "width": 64}, data={"batch_size": 10})
    one = devices.estimate(config, devices.Placement(torch.device("cpu")))
    three = devices.estimate(config, devices.Placement(torch.device("cpu"), (0, 1, 2)))
    assert one.parameters == three.parameters  # every replica holds a full copy
    assert three.activations == one.activations * 4 // 10  # the largest chunk: ceil(10 / 3) = 4 rows


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_types_start_from_the_float32_weights_and_keep_float64_statistics(dtype: str) -> None:
    base = make_config(model={"depth": 6, "width": 64, "activation": "tanh"}, init={"scheme": "xavier", "gain": "auto"})
    full, half = initlab.run(base), initlab.run(base.model_copy(update={"dtype": dtype}))
    eps = torch.finfo(getattr(torch, dtype)).eps
    # Rounding weights and inputs to the half type moves stds by a few ulps of that type.
    assert half.layers["weight_std"].tolist() == pytest.approx(full.layers["weight_std"].tolist(), rel=2 * eps)
    assert half.layers["std"].tolist() == pytest.approx(full.layers["std"].tolist(), rel=20 * eps)


def test_precision_is_applied_and_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    real_forward = initlab.runner._passes
    monkeypatch.setattr(
        initlab.runner, "_passes", lambda *a: seen.append(torch.get_float32_matmul_precision()) or real_forward(*a)
    )
    before = torch.get_float32_matmul_precision()
    result = initlab.run(make_config(precision="medium"))
    assert seen == ["medium"]
    assert torch.get_float32_matmul_precision() == before
    assert result.meta["precision"] == "medium"


def test_meta_records_placement_and_numerics() -> None:
    meta = initlab.run(make_config()).meta
    assert {"device", "data_parallel", "precision", "tf32_matmul", "deterministic_algorithms", "rng"} <= set(meta)


@pytest.mark.parametrize(("batch", "replicas"), [(10, 3), (7, 2), (16, 4), (5, 5)])
def test_replicas_in_threads_merge_to_the_single_device_statistics(batch: int, replicas: int) -> None:
    """What nn.DataParallel does: fresh replica objects that carry the original's hooks, each
    called on its slice of the batch in its own thread. Per-layer stats must equal one pass."""
    config = make_config(model={"depth": 5, "width": 24, "activation": "relu"}, data={"batch_size": batch})
    generator = torch.Generator().manual_seed(config.seed)
    model = build(config, generator, torch.float32)
    x = draw_input(config, generator, torch.float32)
    sites = {s: statistics_for(s, config.model.activation) for s in ("pre", "post")}

    with torch.no_grad(), ForwardProbe(probe_targets(model), sites) as probe:
        model(x)
        single = probe.records()
    with torch.no_grad(), ForwardProbe(probe_targets(model), sites) as probe:
        copies = [copy.deepcopy(model) for _ in range(replicas)]  # replicate(): hooks come along
        chunks = x.chunk(replicas)  # scatter(): ceil(batch / replicas) rows each, the last shorter
        assert len({c.shape[0] for c in chunks}) > 1 or batch % replicas == 0
        with ThreadPoolExecutor(replicas) as pool:
            list(pool.map(lambda pair: pair[0](pair[1]), zip(copies, chunks, strict=False)))
        merged = probe.records()
    assert [(r["layer"], r["site"], r["stat"]) for r in merged] == [(r["layer"], r["site"], r["stat"]) for r in single]
    for a, b in zip(single, merged, strict=True):
        assert b["value"] == pytest.approx(a["value"], rel=1e-6, abs=1e-12), (a, b)


# ---------------------------------------------------------------- on a GPU


CLASSIC = ["linear-normal", "linear-normal-scaled", "tanh-normal-scaled", "tanh-xavier", "relu-kaiming", "relu-xavier"]


def _agree(cpu: initlab.Result, gpu: initlab.Result) -> None:
    """Same weights and inputs; different kernels round differently, and chaotic nets (tanh at
    gain 5/3) amplify that layer after layer, so only the first layers agree to float32 precision."""
    assert gpu.layers["weight_std"].tolist() == pytest.approx(cpu.layers["weight_std"].tolist(), rel=1e-12)
    both = cpu.layers["std"].notna() & gpu.layers["std"].notna()
    first = both & (cpu.layers["layer"] < 5)
    assert gpu.layers["std"][first].tolist() == pytest.approx(cpu.layers["std"][first].tolist(), rel=1e-5)
    assert gpu.layers["std"][both].tolist() == pytest.approx(cpu.layers["std"][both].tolist(), rel=5e-2)
    assert gpu.verdict.regime == cpu.verdict.regime


@pytest.mark.cuda
@pytest.mark.parametrize("name", CLASSIC)
def test_cuda_matches_cpu(name: str) -> None:
    config = load_config(CONFIGS / f"{name}.yaml")
    _agree(initlab.run(config), initlab.run(config.model_copy(update={"device": "cuda"})))


@pytest.mark.cuda
@pytest.mark.parametrize("batch", [16, 15])
def test_data_parallel_statistics_equal_those_of_the_gathered_outputs(batch: int) -> None:
    """Through the real nn.DataParallel: merged replica partials equal the float64 std of the
    concatenated replica outputs of the same layer, to 1e-6 (uneven splits included)."""
    import threading

    ids = list(range(torch.cuda.device_count()))
    config = load_config(CONFIGS / "tanh-xavier.yaml", ["model.depth=12", f"data.batch_size={batch}"])
    generator = torch.Generator().manual_seed(config.seed)
    model = build(config, generator, torch.float32).cuda()
    x = draw_input(config, generator, torch.float32).cuda()
    sites = {s: statistics_for(s, config.model.activation) for s in ("pre", "post")}
    seen: dict[int, list[torch.Tensor]] = {}
    lock = threading.Lock()

    def keep(layer: int):  # type: ignore[no-untyped-def]
        def hook(module: torch.nn.Module, inputs: object, output: torch.Tensor) -> None:
            with lock:
                seen.setdefault(layer, []).append(output.detach().double().cpu())

        return hook

    handles = [block.register_forward_hook(keep(i)) for i, block in enumerate(model.blocks)]
    try:
        with torch.no_grad(), ForwardProbe(probe_targets(model), sites) as probe:
            torch.nn.DataParallel(model, ids)(x)
            records = probe.records()
    finally:
        for handle in handles:
            handle.remove()
    stds = {r["layer"]: r["value"] for r in records if r["site"] == "post" and r["stat"] == "std"}
    assert all(len(parts) == len(ids) for parts in seen.values())
    for layer, parts in seen.items():
        assert stds[layer] == pytest.approx(torch.cat(parts).std().item(), rel=1e-6)


@pytest.mark.cuda
def test_data_parallel_run_agrees_with_the_single_device_run() -> None:
    ids = list(range(torch.cuda.device_count()))
    base = ["device=cuda", "data.batch_size=15"]
    single = initlab.run(load_config(CONFIGS / "relu-kaiming.yaml", base))
    split = initlab.run(load_config(CONFIGS / "relu-kaiming.yaml", [*base, f"data_parallel.device_ids={ids}"]))
    _agree(single, split)
    assert split.meta["data_parallel"] == ids


@pytest.mark.skipif(not NO_CUDA, reason="checks the message for a machine without CUDA")
@pytest.mark.parametrize("flags", [["--device", "cuda"], ["--devices", "0,1"]])
def test_compare_refuses_an_absent_gpu_before_any_cell(tmp_path: Path, flags: list[str]) -> None:
    from typer.testing import CliRunner

    from initlab.cli import app

    result = CliRunner().invoke(app, ["compare", "--schemes", "xavier", "--depth", "3", "--width", "8", *flags,
                                      "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "CUDA is not available on this machine" in result.stderr
    assert not any(tmp_path.iterdir())
