"""initlab: weight-initialization studies in PyTorch.

``initlab.run(config)`` runs one study and returns a :class:`~initlab.runner.Result`;
``initlab.load_config(path, overrides)`` reads a YAML config. Attributes are imported
lazily so that ``initlab --help`` never imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from initlab.config import Config, load_config
    from initlab.runner import Result, run

_LAZY = {
    "Config": "initlab.config",
    "load_config": "initlab.config",
    "Result": "initlab.runner",
    "run": "initlab.runner",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'initlab' has no attribute {name!r}")


__all__ = ["Config", "Result", "__version__", "load_config", "run"]
