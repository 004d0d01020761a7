"""Where a study runs: device resolution, dtype support, memory estimates, matmul precision.

Everything here fails early with an :class:`~initlab.errors.InitlabError` (one line, exit
code 2 in the CLI) before any work is done: CUDA asked for but absent, a device id out
of range, a dtype the device cannot do, a model that cannot fit.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch

from initlab.errors import InitlabError

if TYPE_CHECKING:
    from initlab.config import Config

DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
#: Statistics copy each probed output to float64; this many copies live at once.
_FLOAT64_COPIES = 2
#: Tensors of ``(rows, width)`` autograd saves per block for the backward pass (Linear's input, the
#: activation's input or output).
_SAVED_PER_BLOCK = 2


def largest(dtype: str) -> float:
    """The largest finite value of a config's ``dtype`` (what overflows beyond it; predictions near it count
    as non-finite)."""
    return float(torch.finfo(DTYPES[dtype]).max)


@dataclass(frozen=True)
class Placement:
    """The device the model lives on and, under DataParallel, the replicas' device ids."""

    device: torch.device
    device_ids: tuple[int, ...] = ()
    output_device: int | None = None

    @property
    def replicas(self) -> int:
        return max(len(self.device_ids), 1)


def place(config: Config) -> Placement:
    """Resolve ``device`` and ``data_parallel`` against the hardware that is really there."""
    spec = config.device
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(spec)
    if device.type == "cuda":
        count = _cuda_count(f"device {config.device!r}")
        index = device.index if device.index is not None else 0
        _check_ids([index], count, "device")
        device = torch.device("cuda", index)
    parallel = config.data_parallel
    if parallel is None:
        return Placement(device)
    if device.type != "cuda":
        raise InitlabError("data_parallel needs CUDA, and this run resolved to the CPU (device: cpu or no GPU)")
    count = _cuda_count("data_parallel")
    _check_ids(parallel.device_ids, count, "data_parallel.device_ids")
    output = parallel.output_device if parallel.output_device is not None else parallel.device_ids[0]
    _check_ids([output], count, "data_parallel.output_device")
    # nn.DataParallel keeps the module on device_ids[0] and scatters from there.
    return Placement(torch.device("cuda", parallel.device_ids[0]), tuple(parallel.device_ids), output)


def _cuda_count(what: str) -> int:
    if not torch.cuda.is_available():
        raise InitlabError(
            f"{what}: CUDA is not available on this machine "
            "(use device: cpu, or device: auto to take a GPU only when there is one)"
        )
    return torch.cuda.device_count()


def _check_ids(ids: Any, count: int, what: str) -> None:
    for index in ids:
        if not 0 <= index < count:
            raise InitlabError(f"{what}: no CUDA device {index}; this machine has {count} (ids 0..{count - 1})")


def usable(config: Config) -> Placement:
    """Where ``config`` runs, after checking the device and dtype exist and work here."""
    placement = place(config)
    check_dtype(placement, config.dtype)
    return placement


def check_dtype(placement: Placement, dtype: str) -> None:
    """Refuse a dtype the device cannot run a Linear layer in."""
    torch_dtype = DTYPES[dtype]
    if placement.device.type == "cuda" and dtype == "bfloat16":
        for index in placement.device_ids or (placement.device.index or 0,):
            if not torch.cuda.is_bf16_supported() or torch.cuda.get_device_capability(index) < (8, 0):
                raise InitlabError(f"dtype bfloat16: {torch.cuda.get_device_name(index)} has no bfloat16 support")
        return
    try:
        probe = torch.ones(2, 2, dtype=torch_dtype, device=placement.device)
        torch.nn.functional.linear(probe, probe)
    except RuntimeError as err:
        raise InitlabError(f"dtype {dtype} is not supported on {placement.device}: {err}") from None


# ---------------------------------------------------------------- memory


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a study needs on each device it uses."""

    parameters: int
    activations: int
    probes: int
    gradients: int = 0  # the weights' gradients, with a backward pass

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.activations + self.probes


def estimate(config: Config, placement: Placement, streamed: bool = False) -> MemoryEstimate:
    """Peak bytes on one device: a full parameter copy per replica, its slice of the batch.

    ``streamed`` (``memory: stream``, :mod:`initlab.stream`): one block's weights (drawn, then in the model's
    dtype) and the generator's state at every block; with a backward pass, every block's input is kept.
    """
    depth, width = config.model.depth, config.model.width
    elem = DTYPES[config.dtype].itemsize
    block = (width * width + (width if config.model.bias else 0)) * elem
    parameters = 2 * block + depth * STATES_PER_BLOCK * _state_bytes(config) if streamed else depth * block
    rows = -(-config.data.batch_size // placement.replicas)  # the largest DataParallel chunk
    # Input, Linear output and activation output in the model's dtype, and the float64
    # copies the statistics make of one probed output.
    activations = rows * width * (3 * elem + _FLOAT64_COPIES * 8)
    gradients = 0
    if config.backward is not None:
        gradients = block if streamed else parameters
        # Autograd keeps each block's Linear input and activation output for the backward pass; streamed,
        # each block's input is kept and the block recomputed.
        activations += depth * rows * width * (1 if streamed else _SAVED_PER_BLOCK) * elem
    probes = depth * 2 * placement.replicas * (width + 16) * 8  # per-unit counts + moments
    return MemoryEstimate(parameters, activations, probes, gradients)


#: Generator states :mod:`initlab.stream` keeps per block: before its construction and its scheme draws.
STATES_PER_BLOCK = 2


def _state_bytes(config: Config) -> int:
    """Bytes of one saved generator state: mt19937's on the CPU, Philox's seed and offset on CUDA."""
    return 16 if config.rng == "device" and config.device != "cpu" else 5056


def available_bytes(device: torch.device) -> int | None:
    """Free memory on ``device`` (None when it cannot be told)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def check_memory(config: Config, placement: Placement) -> Literal["full", "stream"]:
    """How the study holds its weights (``config.memory``; ``auto``: every block at once where that fits,
    else block by block), refusing, before building anything, a study that cannot fit where it would run."""
    whole = placement.device_ids or config.jacobian is not None or config.init.from_ is not None
    if config.memory != "auto" or whole:  # only a study that can run block by block streams
        mode: Literal["full", "stream"] = "stream" if config.memory == "stream" else "full"
        _refuse_beyond(config, placement, mode == "stream")
        return mode
    try:
        _refuse_beyond(config, placement, streamed=False)
        return "full"
    except InitlabError:
        _refuse_beyond(config, placement, streamed=True)
        return "stream"


def _refuse_beyond(config: Config, placement: Placement, streamed: bool) -> None:
    need = estimate(config, placement, streamed)
    if placement.device.type == "cpu":
        checks = [(placement.device, need.total)]
    else:
        # Weights are drawn on the CPU (rng: cpu) before they move, so the CPU holds them too.
        ids = placement.device_ids or (placement.device.index or 0,)
        checks = [(torch.device("cpu"), need.parameters if config.rng == "cpu" else 0)]
        checks += [(torch.device("cuda", i), need.total) for i in ids]
    for device, bytes_needed in checks:
        free = available_bytes(device)
        if free is not None and bytes_needed > free:
            raise InitlabError(
                f"the study needs about {gib(bytes_needed)} on {device}{' streamed block by block' * streamed} "
                f"(parameters {gib(need.parameters)}, "
                + (f"their gradients {gib(need.gradients)}, " if need.gradients else "")
                + f"activations {gib(need.activations)}) but {device} has {gib(free)} free; "
                "reduce model.depth, model.width or data.batch_size"
                + (" (or measure the forward pass only: --no-backward)" if need.gradients else "")
            )


# ---------------------------------------------------------------- precision and metadata


@contextmanager
def matmul_precision(precision: str) -> Iterator[None]:
    """Set float32 matmul precision for the block, then restore it (it is process-global).

    ``highest`` is full float32 (TF32 off); ``high`` allows TF32 or bf16x3; ``medium`` bf16.
    """
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def describe(placement: Placement, precision: str) -> dict[str, Any]:
    """What meta.json records about the hardware and numerics settings."""
    info: dict[str, Any] = {
        "device": str(placement.device),
        "data_parallel": list(placement.device_ids) or None,
        "output_device": placement.output_device,
        "precision": precision,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cuda": torch.version.cuda,
    }
    if placement.device.type == "cuda":
        ids = placement.device_ids or (placement.device.index or 0,)
        info["gpus"] = [
            {"id": i, "name": torch.cuda.get_device_name(i), "capability": list(torch.cuda.get_device_capability(i)),
             "memory_bytes": torch.cuda.get_device_properties(i).total_memory}
            for i in ids
        ]
        driver = getattr(torch._C, "_cuda_getDriverVersion", None)
        info["driver"] = driver() if driver is not None else None
        info["cublas_workspace_config"] = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    return info
