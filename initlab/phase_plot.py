"""The order-to-chaos phase diagram as a figure: regions, critical line, ξ_c contours.

Like :mod:`initlab.plots` (whose :func:`~initlab.plots.figure_files` writes it): matplotlib
imported inside the functions, object-oriented API only (no pyplot), and an SVG with no date
and fixed element ids, so the same diagram gives the same bytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from initlab.theory import PhaseDiagram

#: Ordered (gradients vanish) blue, chaotic (gradients explode) red: the verdict colours.
_REGION_COLOURS = ["#aec7e8", "#f7f7f7", "#ff9896"]
_XI_LEVELS = [1, 2, 5, 10, 20, 50, 100]


def phase_figure(diagram: PhaseDiagram) -> Any:
    """The phase diagram of ``diagram`` (a ``matplotlib.figure.Figure``)."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    figure = Figure(figsize=(6.4, 4.8), layout="constrained")
    ax = figure.subplots()
    ax.pcolormesh(diagram.sw2, diagram.sb2, diagram.phase, cmap=ListedColormap(_REGION_COLOURS), vmin=-1.5,
                  vmax=1.5, shading="nearest")
    xi = np.where(np.isfinite(diagram.xi_c), diagram.xi_c, np.nan)
    levels = [v for v in _XI_LEVELS if np.nanmin(xi, initial=np.inf) < v < np.nanmax(xi, initial=-np.inf)]
    if levels:
        contours = ax.contour(diagram.sw2, diagram.sb2, xi, levels=levels, colors="#555555", linewidths=0.8)
        ax.clabel(contours, fmt=lambda v: f"ξc={v:g}", fontsize=7)
    line = np.isfinite(diagram.critical_sw2)
    ax.plot(diagram.critical_sw2[line], diagram.critical_sb2[line], color="black", linewidth=2.0)
    ax.set_xlim(diagram.sw2[0], diagram.sw2[-1])
    ax.set_ylim(diagram.sb2[0], diagram.sb2[-1])
    ax.set_xlabel("σw² (weight variance × fan_in)")
    ax.set_ylabel("σb² (bias variance)")
    ax.set_title(f"{diagram.activation}: order-to-chaos phase diagram (mean field)", fontsize=10)
    handles = [Patch(color=_REGION_COLOURS[0], label="ordered (χ₁ < 1)"),
               Patch(color=_REGION_COLOURS[2], label="chaotic (χ₁ > 1)"),
               Patch(facecolor=_REGION_COLOURS[1], edgecolor="#999999", label=f"critical (|χ₁ − 1| ≤ {diagram.tol:g})"),
               ax.plot([], [], color="black", linewidth=2.0, label="critical line χ₁ = 1")[0],
               ax.plot([], [], color="#555555", linewidth=0.8, label="ξc contours (layers)")[0]]
    ax.legend(handles=handles, fontsize=7, loc="upper left")
    return figure


def phase_plot_files(diagram: PhaseDiagram) -> dict[str, bytes]:
    """The figure as ``{"png": bytes, "svg": bytes}``; the SVG carries no date, so it is reproducible."""
    from initlab.plots import figure_files

    return figure_files(phase_figure(diagram))
