"""What every figure shares: Agg figures outside pyplot, reproducible PNGs, one colour and dash per optimizer.

Figures are drawn on ``matplotlib.figure.Figure`` objects with an Agg canvas, never through
``pyplot``: no global figure registry holds them, so building many reports does not grow memory and
does not change the caller's matplotlib backend.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from optarena.arena.analysis.views import TaskView

DPI = 100
FOLDER = "figures"  # beside the report; the pages link figures/<name>.png
Colors = dict[str, Any]  # optimizer -> matplotlib colour


def slug(name: str) -> str:
    """``name`` as a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def new_figure(width: float = 7.5, height: float = 4.2) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # explicitly Agg: PNG output without touching pyplot or the global backend
    return fig


def save(fig: Figure, path: Path) -> None:
    # No "Software" stamp: the PNG bytes then depend only on the data and the matplotlib version.
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    fig.clear()  # drop the artists now rather than when the last reference goes


# 77 distinct colours: tab10, Dark2, Set1, tab20's light shades (a hue's dark and light shades kept apart), then
# tab20b and tab20c.
PALETTE = tuple(
    matplotlib.colormaps[name](i)
    for name, indices in (
        ("tab10", range(10)), ("Dark2", range(8)), ("Set1", range(9)), ("tab20", range(1, 20, 2)),
        ("tab20b", range(20)), ("tab20c", range(20)),
    )
    for i in indices
)  # fmt: skip
MAX_SERIES = 8  # optimizers per axes: more are drawn as small multiples


def optimizer_colors(optimizers: Sequence[str]) -> Colors:
    """One colour per optimizer, in order, distinct for up to 77 (its line style follows from its place:
    :func:`linestyle`)."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(optimizers)}


def chunks(names: Sequence[Any], size: int = MAX_SERIES) -> list[list[Any]]:
    """``names`` in consecutive groups of at most ``size``, balanced (28 in groups of 7, not 8+8+8+4)."""
    count = max(1, math.ceil(len(names) / size))
    per = math.ceil(len(names) / count) if names else 0
    return [list(names[i : i + per]) for i in range(0, len(names), per)] if names else [[]]


def panel_figure(panels: int, width: float = 7.5, height: float = 4.2) -> tuple[Figure, list[Any]]:
    """A figure of ``panels`` axes stacked vertically (one when ``panels`` is 1), each ``height`` high at most."""
    fig = new_figure(width + 1.9, height if panels == 1 else 0.8 + 3.2 * panels)  # + the legend's column
    axes = fig.subplots(panels, 1, squeeze=False)[:, 0]
    return fig, list(axes)


def legend_outside(ax: Any, fontsize: int = 8) -> None:
    """The legend to the right of the axes, outside the data."""
    ax.legend(fontsize=fontsize, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


LINESTYLES = ("-", "--", "-.", ":")


def linestyle(colors: Colors, name: str) -> str:
    # Optimizers that behave alike (AdamW and AdamNX early on) draw the same curve: vary the dash as well.
    return LINESTYLES[list(colors).index(name) % len(LINESTYLES)]


def _wants_log(values: Iterable[float]) -> bool:
    finite = [v for v in values if math.isfinite(v)]
    return bool(finite) and min(finite) > 0 and max(finite) / min(finite) > 100


def style_metric_axis(ax: Any, task: TaskView, values: Iterable[float]) -> None:
    if task.metric == "accuracy":
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))
    elif task.mode == "min" and _wants_log(values):
        ax.set_yscale("log")  # function values fall over many decades
