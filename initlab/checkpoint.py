"""Saved weights: write a study's network as a ``state_dict`` and study a saved one (``init.from``).

A checkpoint is read with ``torch.load(..., weights_only=True)`` and nothing else, so a file
never runs code. It is checked against the network :func:`initlab.model.build` makes for the
config (any ``nn.Module``: its ``state_dict()`` says which tensors it needs, of which shape and
dtype) and copied over the drawn tensors; every mismatch is one :class:`InitlabError` line.

Accepted key forms (each key on its own, so a file mixes none of them up with another):

* initlab's, the network's own: ``blocks.{i}.linear.weight``, ``blocks.{i}.linear.bias``;
* a plain ``nn.ModuleList`` of ``nn.Linear``: ``{i}.weight``, ``{i}.bias``;
* a plain ``nn.ModuleList`` of blocks: ``{i}.linear.weight`` (and ``{i}.<sub>.<name>`` for any
  other part of a block);
* any of them saved from an ``nn.DataParallel`` wrapper: prefixed by ``module.``.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from initlab.errors import InitlabError

if TYPE_CHECKING:
    from initlab.config import Config

#: How many key names an error lists before "and N more".
_SHOWN = 4
_PLAIN_LINEAR = re.compile(r"^(\d+)\.(weight|bias)$")
_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")
_LINEAR_BIAS = re.compile(r"(^|\.)\d+(\.linear)?\.bias$")


@dataclass(frozen=True)
class Checkpoint:
    """A state_dict read from ``path``: its tensors (on the CPU) and the sha256 of the file's bytes."""

    path: str
    sha256: str
    size: int
    tensors: dict[str, torch.Tensor] = field(repr=False)

    def describe(self) -> dict[str, Any]:
        """Where the weights came from, for meta.json and summary.json."""
        return {"path": self.path, "sha256": self.sha256, "bytes": self.size}

    def load_into(self, module: nn.Module, dtype: torch.dtype) -> None:
        """Check the tensors against ``module``'s state_dict (floating ones must be ``dtype``, the study's)
        and copy them in; a mismatch raises one :class:`InitlabError` line."""
        expected = module.state_dict()
        matched = self._matched(expected)
        for key, tensor in matched.items():
            want = expected[key]
            if tuple(tensor.shape) != tuple(want.shape):
                self._fail(f"{key}: shape {list(tensor.shape)} in the file, {list(want.shape)} in the config's "
                           f"network{_network(module)}")
            wanted_dtype = dtype if want.is_floating_point() else want.dtype
            if tensor.dtype != wanted_dtype:
                self._fail(f"{key}: {_dtype(tensor.dtype)} in the file, the study's dtype is {_dtype(wanted_dtype)} "
                           f"(set dtype: {_dtype(tensor.dtype)}, or save the weights as {_dtype(wanted_dtype)})")
        with torch.no_grad():
            module.load_state_dict(matched, strict=True)  # copy_: onto the module's device and dtype

    def _matched(self, expected: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The file's tensors under the module's keys; missing, extra or doubled keys are errors."""
        out: dict[str, torch.Tensor] = {}
        given: dict[str, str] = {}
        extra = []
        for key, tensor in self.tensors.items():
            target = module_key(key, expected)
            if target is None:
                extra.append(key)
            elif target in given:
                self._fail(f"{target} is given twice, as {given[target]!r} and {key!r}")
            else:
                out[target], given[target] = tensor, key
        missing = [key for key in expected if key not in out]
        if missing or extra:
            parts = ([f"missing {_listed(missing)}"] if missing else []) + ([f"unexpected {_listed(extra)}"]
                                                                            if extra else [])
            self._fail(f"keys do not match the config's network ({len(expected)} tensors: "
                       f"{_first(list(expected))}): {'; '.join(parts)}{_bias_hint(missing, extra)}")
        return out

    def _fail(self, message: str) -> None:
        raise InitlabError(f"init.from: {self.path}: {message}")


def module_key(key: str, expected: Mapping[str, Any]) -> str | None:
    """The module's key a file's ``key`` stands for (see the accepted forms above), or None."""
    key = key.removeprefix("module.")
    plain = _PLAIN_LINEAR.match(key)
    for candidate in (key, f"blocks.{key}", f"blocks.{plain[1]}.linear.{plain[2]}" if plain else None):
        if candidate is not None and candidate in expected:
            return candidate
    return None


def read(path: str) -> Checkpoint:
    """Read a state_dict with ``torch.load(weights_only=True)``; anything else is an :class:`InitlabError`."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise InitlabError(f"init.from: {path}: cannot read it: {err.strerror}") from None
    loaded = _unpickled(path, data)
    if not isinstance(loaded, Mapping):
        raise InitlabError(f"init.from: {path}: holds {_kind(loaded)}, not a state_dict (a mapping of names to "
                           "tensors, as torch.save(model.state_dict(), path) writes)")
    if not loaded:
        raise InitlabError(f"init.from: {path}: an empty state_dict (no tensors)")
    for key, value in loaded.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor) or value.layout != torch.strided:
            raise InitlabError(f"init.from: {path}: {key!r} holds {_kind(value)}, not a tensor: not a state_dict "
                               "(a training checkpoint? save model.state_dict() alone)")
    tensors = {key: value.detach() for key, value in loaded.items()}
    return Checkpoint(path, hashlib.sha256(data).hexdigest(), len(data), tensors)


def source(path: str) -> dict[str, Any]:
    """Where weights come from, as :meth:`Checkpoint.describe` says it, without loading them (a sweep's meta.json)."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        return {"path": path, "sha256": None, "error": err.strerror}
    return {"path": path, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def _unpickled(path: str, data: bytes) -> Any:
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it then refuses anyway
            warnings.simplefilter("ignore")
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        refused = _GLOBAL.search(str(err))
        if refused:
            raise InitlabError(f"init.from: {path}: refused: it needs {refused[1]}, which "
                               "torch.load(weights_only=True) does not run (a pickled object, not a state_dict: "
                               "save model.state_dict())") from None
        raise InitlabError(f"init.from: {path}: not a state_dict saved by torch.save (weights_only=True cannot read "
                           "it)") from None
    except (RuntimeError, EOFError, ValueError, OSError, UnicodeDecodeError) as err:  # torch's corrupt-file errors
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InitlabError(f"init.from: {path}: not a readable torch.save file ({reason[:120]})") from None


def to_bytes(state: Mapping[str, torch.Tensor]) -> bytes:
    """``torch.save`` of a state_dict, as bytes (written atomically with the rest of a results folder)."""
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    return buffer.getvalue()


def cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s state_dict, copied to the CPU (independent tensors: a view would save its whole storage)."""
    return {key: value.detach().to("cpu", copy=True) for key, value in module.state_dict().items()}


def _kind(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {list(value.shape)}"
    return "nothing (None)" if value is None else f"a {type(value).__name__}"


def _dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _listed(keys: list[str]) -> str:
    return f"{len(keys)} ({_first(keys)})"


def _first(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f", ... {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else "")


def _bias_hint(missing: list[str], extra: list[str]) -> str:
    """A Linear layers' bias (not a norm layer's) is all that differs: ``model.bias`` says the other thing."""
    if missing and all(_LINEAR_BIAS.search(key) for key in missing) and not extra:
        return " (the file has no biases: set model.bias: false)"
    if extra and all(_LINEAR_BIAS.search(key) for key in extra) and not missing:
        return " (the file has biases: set model.bias: true)"
    return ""


def _network(module: nn.Module) -> str:
    blocks = getattr(module, "blocks", None)
    return f" ({len(blocks)} blocks)" if isinstance(blocks, nn.ModuleList) else ""


def check(configs: Iterable[Config]) -> None:
    """Check ``init.from`` against every distinct network of ``configs`` before anything runs (a sweep's
    cells): the file is read once and each network built once on the CPU; a mismatch is an error."""
    from initlab.devices import DTYPES
    from initlab.model import build

    read_once: dict[str, Checkpoint] = {}
    seen: set[tuple[str, str, str]] = set()
    for config in configs:
        path = config.init.from_
        key = (str(path), config.model.model_dump_json(), config.dtype)
        if path is None or key in seen:
            continue
        seen.add(key)
        if path not in read_once:
            read_once[path] = read(path)
        loaded = read_once[path]
        dtype = DTYPES[config.dtype]
        draw_dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32  # as the runner builds
        loaded.load_into(build(config, torch.Generator().manual_seed(config.seed), draw_dtype), dtype)
