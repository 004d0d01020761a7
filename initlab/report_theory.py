"""Rendering of ``initlab theory``: tables for people, JSON for scripts.

The tables are :class:`initlab.report.FittedTable`: split or laid out one value per line to fit
the terminal, so a number is never cut or folded. Every number is printed whole (6 significant
digits in text, full precision in JSON); infinities print as ``∞`` in text and ``null`` in JSON.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import RenderableType
from rich.text import Text

from initlab.report import Col, FittedTable
from initlab.results import to_json
from initlab.theory import CRITICAL_TOL, PhaseDiagram, PointTheory, Trajectory


def num(value: float | None) -> str:
    """A number whole: 6 significant digits, ``∞`` for infinity, ``n/a`` for undefined."""
    if value is None or math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.6g}"


_FATES = {
    "fixed_point": "stable fixed point of the length map",
    "marginal": "marginal: every q is a fixed point, q stays where it starts",
    "unstable": "unstable fixed point (q0 sits on it)",
    "vanishing": "q collapses to 0 (the signal vanishes)",
    "explosion": "q grows without bound (no fixed point)",
}


#: How a phase reads: where q has no fixed point, the phase is no phase (see theory.Phase).
PHASE_TEXT = {"exploding": "exploding (no fixed point)", "vanishing": "vanishing (no fixed point)"}
_PHASE_NAMES = {-2: "vanishing", -1: "ordered", 0: "critical", 1: "chaotic", 2: "exploding"}


def summary_line(theory: dict[str, Any]) -> str:
    """``run``'s line under the verdict: q*, χ₁ (phase), ξ_c of the network's prediction
    (:meth:`initlab.theory.Prediction.summary`), ``n/a`` where undefined, or why the theory does not apply."""
    if not theory["applicable"]:
        return f"theory: does not apply: {theory['reason']}"
    if theory.get("residual"):  # a residual stream has no fixed point, phase or depth scale: the columns say it
        return "; ".join(["theory: per-block columns (mean field, wide-network limit)", *theory.get("notes", [])])
    phase = PHASE_TEXT.get(theory["phase"], theory["phase"]) or "n/a"
    line = (f"theory: q* = {num(theory['q_star'])}, χ₁ = {num(theory['chi1'])}, phase {phase}, "
            f"ξ_c = {num(theory['xi_c'])} layers (mean field, wide-network limit)")
    return "; ".join([line, *theory.get("notes", [])])


def point_text(label: str, at: PointTheory, layers: Trajectory, q0_note: str = "") -> list[RenderableType]:
    """The numbers at one (σw², σb²) and the per-layer prediction, as tables that fit any width."""
    rows = [
        ("q*", at.q_star, f"{_FATES[at.fate]}, from q0 = {num(at.q0)}"),
        ("χ₁", at.chi1, "σw²·E[φ′(√q* z)²]: gradient factor per layer (ordered < 1 < chaotic)"),
        ("phase", None, f"ordered if χ₁ < 1, chaotic if χ₁ > 1, critical if |χ₁ − 1| ≤ {CRITICAL_TOL:g}"
                        if at.phase not in PHASE_TEXT else
                        f"q → {'∞' if at.phase == 'exploding' else '0'}: order and chaos need a fixed point q*"
                        + (", χ₁ is its limit" if at.phase == "exploding" else "")),
        ("c*", at.c_star, "fixed point of the correlation map (1: inputs become aligned)"),
        ("χ_c", at.chi_c, "slope of the correlation map at c*"),
        ("ξ_q", at.xi_q, "depth scale of the approach to q*, layers: −1/ln(∂q_{l+1}/∂q_l at q*)"),
        ("ξ_c", at.xi_c, "depth scale of correlations, layers: −1/ln χ_c"),
    ]
    shown = [PHASE_TEXT.get(at.phase, at.phase) or "n/a" if name == "phase" else num(value) for name, value, _ in rows]
    title = (f"{label}: σw² = {num(at.sw2)}, σb² = {num(at.sb2)}, q0 = {num(at.q0)}{q0_note} "
             "(mean-field, wide-network limit)")
    summary = FittedTable(title, [Col("name", [name for name, _, _ in rows], "left")],
                          [Col("value", shown, "left"),
                           Col("meaning", [meaning for _, _, meaning in rows], "left", prose=True)])
    columns = zip(layers.q, layers.pre_std, layers.post_std, layers.chi, strict=True)
    values = [[num(v) for v in row] for row in columns]
    per_layer = FittedTable(
        f"per layer, from q0 = {num(at.q0)}:", [Col("layer", [str(i) for i in range(len(values))])],
        [Col(header, [row[k] for row in values]) for k, header in enumerate(("q_l", "pre std", "post std", "χ_l"))],
    )
    return [summary, per_layer]


def point_json(label: str, at: PointTheory, layers: Trajectory) -> str:
    return to_json({"activation": label, **asdict(at), "critical_tol": CRITICAL_TOL, "layers": [
        {"layer": i, "q": q, "pre_std": pre, "post_std": post, "chi": chi}
        for i, (q, pre, post, chi) in enumerate(zip(layers.q, layers.pre_std, layers.post_std, layers.chi,
                                                    strict=True))
    ]})


def critical_text(label: str, given: str, value: float, found: float | None, at: PointTheory | None,
                  asymptotic: float | None = None) -> str:
    """``σw² = … at σb² = …`` on the edge of chaos, or why there is none."""
    other = "σw²" if given == "σb²" else "σb²"
    if found is None:
        text = (f"{label}: no {other} puts χ₁ = 1 at a fixed point q* at {given} = {num(value)} "
                f"(searched {'[1e-3, 1e3]' if other == 'σw²' else '[0, 1e3]'}): no edge of chaos")
        if asymptotic is not None:
            text += (f"\n  asymptotic boundary (not a critical point): {other} = {num(asymptotic)}, where χ₁ → 1 "
                     "only in the limit of a q that has no fixed point (it grows without bound or collapses)")
        return text + "\n"
    text = f"{label}: edge of chaos at {given} = {num(value)}: {other} = {num(found)}"
    if at is not None:
        text += f" (q* = {num(at.q_star)}, χ₁ = {num(at.chi1)})"
    return text + "\n"


def critical_json(label: str, sw2: float | None, sb2: float | None, at: PointTheory | None,
                  asymptotic: dict[str, float] | None = None) -> str:
    """The edge of chaos; where there is none, null σw²/σb² with ``reason`` and the ``asymptotic`` boundary."""
    document: dict[str, Any] = {"activation": label, "sw2": sw2, "sb2": sb2,
                                "q_star": at.q_star if at else None, "chi1": at.chi1 if at else None}
    if at is None:
        document["reason"] = "no root of χ₁ = 1 at a fixed point q* (no edge of chaos)"
        document["asymptotic"] = asymptotic
    return to_json(document)


def phase_text(diagram: PhaseDiagram, files: list[Path]) -> list[RenderableType]:
    """The diagram's range, its critical line as a table (or why there is none), and the files."""
    head = (f"{diagram.activation}: phase diagram over σw² ∈ [{num(diagram.sw2[0])}, {num(diagram.sw2[-1])}], "
            f"σb² ∈ [{num(diagram.sb2[0])}, {num(diagram.sb2[-1])}]")
    points = [(num(b), num(w)) for b, w in zip(diagram.critical_sb2, diagram.critical_sw2, strict=True)
              if math.isfinite(w)]
    out: list[RenderableType] = [Text(head)]
    if points:
        out.append(FittedTable("critical line (χ₁ = 1 at a fixed point q*):", [Col("σb²", [b for b, _ in points])],
                               [Col("σw²", [w for _, w in points])]))
    else:
        out.append(Text("  critical line: none (no edge of chaos with a fixed point q* in this range)"))
    out += [Text(f"wrote {path}") for path in files]
    return out


def phase_json(diagram: PhaseDiagram, files: list[Path]) -> str:
    names = _PHASE_NAMES
    document: dict[str, Any] = {
        "activation": diagram.activation, "sw2": diagram.sw2.tolist(), "sb2": diagram.sb2.tolist(),
        "chi1": diagram.chi1.tolist(), "phase": [[names[int(v)] for v in row] for row in diagram.phase],
        "xi_c": diagram.xi_c.tolist(), "critical_tol": diagram.tol,
        "critical_line": [{"sb2": b, "sw2": w} for b, w in zip(diagram.critical_sb2.tolist(),
                                                                diagram.critical_sw2.tolist(), strict=True)],
        "files": [str(path) for path in files],
    }
    return to_json(document)
