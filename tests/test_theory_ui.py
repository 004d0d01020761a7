"""What a user sees of the mean-field theory (issue 10): the predicted columns and the theory line
of ``run``, the dashed predicted traces of the plots, and ``initlab theory``'s help and refusals."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from initlab import theory
from initlab.cli import app


def invoke(*args: str, columns: int = 100) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": str(columns)})
    return result.exit_code, result.stdout, result.stderr


# ---------------------------------------------------------------- initlab theory


def test_theory_help_shows_metavars_not_python_types() -> None:
    code, out, _ = invoke("theory", "--help")
    assert code == 0
    assert "Usage: initlab theory [OPTIONS] ACTIVATION\n" in out
    assert re.search(r"^\s+ACTIVATION\s+Activation name", out, re.MULTILINE)
    assert "--param NAME=VALUE" in out and "--depth N " in out and "--sw2 NUMBER" in out and "--out DIR" in out
    leaks = re.findall(r"<[^>]*>|\{[^}]*\}", out)  # <list[str]>, <int range>, {activation}
    assert not leaks, leaks


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_theory_phase_refuses_an_uncreatable_out_before_computing(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the diagram was computed before --out was checked")

    monkeypatch.setattr(theory, "phase_diagram", never)
    code, out, err = invoke("theory", "tanh", "--phase", "--out", "/proc/initlab-x")
    assert code == 2, err
    assert out == "" and len(err.splitlines()) == 1 and err.startswith("error: ") and "/proc/initlab-x" in err
