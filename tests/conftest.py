from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from initlab.config import Config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def make_config(**sections: Any) -> Config:
    """A small study config; keyword arguments replace whole top-level sections."""
    raw: dict[str, Any] = {"name": "t", "seed": 3, "model": {"depth": 6, "width": 32}, "data": {"batch_size": 8}}
    raw.update(sections)
    return Config.model_validate(raw)


@pytest.fixture
def write_yaml(tmp_path: Path):  # type: ignore[no-untyped-def]
    def write(text: str, name: str = "study.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` need a GPU: skip them, visibly, where there is none."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA; this machine has none")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
