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


def optimizer_colors(optimizers: Sequence[str]) -> Colors:
    """One colour per optimizer, in order (its line style follows from its place: :func:`linestyle`)."""
    cmap = matplotlib.colormaps["tab10"]
    return {name: cmap(i % 10) for i, name in enumerate(optimizers)}


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
