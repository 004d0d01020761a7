"""The order-to-chaos phase diagram as a figure: regions, critical line, ξ_c contours.

Like :mod:`initlab.plots` (whose :func:`~initlab.plots.figure_files` writes it): matplotlib
imported inside the functions, object-oriented API only (no pyplot), and an SVG with no date
and fixed element ids, so the same diagram gives the same bytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from initlab.theory import PhaseDiagram

#: Ordered (gradients vanish) blue, chaotic (gradients explode) red: the verdict colours; where q has
#: no fixed point (codes -2 vanishing, 2 exploding: no phase) paler.
_REGION_COLOURS = ["#dbe5f1", "#aec7e8", "#ff9896", "#fde0dd"]
_NO_FIXED_POINT = {-2: ("vanishing (no fixed point: q → 0)", 0), 2: ("exploding (no fixed point: q → ∞)", 3)}
_XI_LEVELS = [1, 2, 5, 10, 20, 50, 100]


def _regions(diagram: PhaseDiagram) -> Any:
    """Colour index per cell: the side of χ₁ = 1 (the critical band is the line, not stray white cells)."""
    side = np.where(diagram.chi1 < 1.0, 1, 2)
    return np.where(diagram.phase == -2, 0, np.where(diagram.phase == 2, 3, side))


def _xi_contours(ax: Any, diagram: PhaseDiagram) -> None:
    """Contours of ξ_c drawn on 1/ξ_c = −ln χ_c, smooth through 0 at the critical line (ξ_c has a pole
    there, which a contour of ξ_c itself on a coarse grid turns into a jagged line)."""
    with np.errstate(divide="ignore"):
        inverse = np.where(np.isnan(diagram.xi_c), np.nan, 1.0 / diagram.xi_c)  # ∞ -> 0
    levels = [1.0 / v for v in reversed(_XI_LEVELS)
              if np.nanmin(inverse, initial=np.inf) < 1.0 / v < np.nanmax(inverse, initial=-np.inf)]
    if levels:
        contours = ax.contour(diagram.sw2, diagram.sb2, inverse, levels=levels, colors="#555555", linewidths=0.8)
        ax.clabel(contours, fmt=lambda v: f"ξc={1.0 / v:.3g}", fontsize=7)


def phase_figure(diagram: PhaseDiagram) -> Any:
    """The phase diagram of ``diagram`` (a ``matplotlib.figure.Figure``)."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    figure = Figure(figsize=(6.4, 4.8), layout="constrained")
    ax = figure.subplots()
    ax.pcolormesh(diagram.sw2, diagram.sb2, _regions(diagram), cmap=ListedColormap(_REGION_COLOURS), vmin=-0.5,
                  vmax=3.5, shading="nearest")
    _xi_contours(ax, diagram)
    line = np.isfinite(diagram.critical_sw2)
    ax.plot(diagram.critical_sw2[line], diagram.critical_sb2[line], color="black", linewidth=2.0,
            marker="o" if line.sum() == 1 else None)  # ReLU's edge of chaos is one point
    ax.set_xlim(diagram.sw2[0], diagram.sw2[-1])
    ax.set_ylim(diagram.sb2[0], diagram.sb2[-1])
    ax.set_xlabel("σw² (weight variance × fan_in)")
    ax.set_ylabel("σb² (bias variance)")
    ax.set_title(f"{diagram.activation}: order-to-chaos phase diagram (mean field)", fontsize=10)
    shown = set(np.unique(_regions(diagram)).tolist())
    labels = {1: "ordered (χ₁ < 1)", 2: "chaotic (χ₁ > 1)", **{c: t for t, c in _NO_FIXED_POINT.values()}}
    handles: list[Any] = [Patch(color=_REGION_COLOURS[c], label=labels[c]) for c in (1, 2, 0, 3) if c in shown]
    handles += [ax.plot([], [], color="black", linewidth=2.0, label="critical line χ₁ = 1 at a fixed point q*")[0],
                ax.plot([], [], color="#555555", linewidth=0.8, label="ξc contours (layers)")[0]]
    ax.legend(handles=handles, fontsize=7, loc="upper left")
    return figure


def phase_plot_files(diagram: PhaseDiagram) -> dict[str, bytes]:
    """The figure as ``{"png": bytes, "svg": bytes}``; the SVG carries no date, so it is reproducible."""
    from initlab.plots import figure_files

    return figure_files(phase_figure(diagram))
