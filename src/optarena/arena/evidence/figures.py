"""The evidence page's figures: the forest plot of every claim, and each paper's small multiples.

Colours follow :func:`palette`: one colour per optimizer for the whole page, from the sorted names of every
optimizer a claim names, so an optimizer looks the same in every figure. Every axes holds at most
:data:`MAX_SERIES` series and legends sit outside the data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

from optarena.arena.analysis import stats
from optarena.arena.render import plotting
from optarena.arena.study import records

MAX_SERIES = 8
VERDICT_COLORS = {"confirmed": "#1a7f37", "refuted": "#cf222e", "underpowered": "#8c959f"}


def palette(names: Sequence[str]) -> dict[str, Any]:
    """One colour per optimizer, consistent across the page and its full reports: the render layer's palette
    (77 distinct colours) by sorted name."""
    return plotting.optimizer_colors(sorted(set(names)))


def forest(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Each claim's paired difference in units of its margin, with its 95% interval, the paper's effect and
    the margin marked, coloured by verdict. ``rows``: id, difference (mean, low, high), margin,
    paper_effect (or None), verdict, rule."""
    n = len(rows)
    fig = plotting.new_figure(9.0, 1.6 + 0.27 * n)
    ax = fig.add_subplot()
    for i, row in enumerate(rows):
        y = n - 1 - i
        mean, low, high = (v / row["margin"] for v in row["difference"])
        color = VERDICT_COLORS[row["verdict"]]
        if math.isfinite(low) and math.isfinite(high):
            ax.plot([low, high], [y, y], color=color, linewidth=2.2, solid_capstyle="butt")
        if math.isfinite(mean):
            ax.plot([mean], [y], marker="o", color=color, markersize=5)
        if row["paper_effect"] is not None:
            ax.plot([row["paper_effect"] / row["margin"]], [y], marker="D", markerfacecolor="none",
                    markeredgecolor="black", markersize=6)  # fmt: skip
        if row["rule"] == "non-inferiority":
            ax.plot([-1], [y], marker="|", color="black", markersize=10)
    ax.axvline(0, color="0.2", linewidth=1)
    for x in (-1, 1):
        ax.axvline(x, color="0.5", linewidth=0.8, linestyle="--")
    ax.set_yticks(range(n), [row["id"] for row in reversed(rows)], fontsize=7)
    ax.set_xscale("symlog", linthresh=2.0)
    ax.set_ylim(-0.8, n - 0.2)
    ax.set_xlabel("method − baseline, in units of the claim's margin (positive favours the method; symlog axis)")
    ax.set_title("Every claim: paired difference and 95% interval")
    ax.grid(alpha=0.3, axis="x", which="both")
    handles = [
        matplotlib.lines.Line2D([], [], color=c, linewidth=2.2, marker="o", label=v) for v, c in VERDICT_COLORS.items()
    ]
    handles += [
        matplotlib.lines.Line2D([], [], linestyle="none", marker="D", markerfacecolor="none", markeredgecolor="black",
                                label="the paper's effect"),
        matplotlib.lines.Line2D([], [], color="0.5", linestyle="--", label="± margin"),
        matplotlib.lines.Line2D([], [], linestyle="none", marker="|", color="black", markersize=10,
                                label="non-inferiority bound"),
    ]  # fmt: skip
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    plotting.save(fig, path)


def _series(pair: records.PairResults, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Steps, mean, low and high of ``key`` over the non-diverged reruns, at the rows that record it (a measurement
    such as FID is taken at some epochs only); None: nothing to draw."""
    runs = [t.run for t in pair.final if t.run is not None and not t.run.diverged]
    curves = [rows for rows in ([r for r in run.rows if key in r] for run in runs) if rows]
    if not curves:
        return None
    length = min(len(c) for c in curves)
    steps = np.mean([[r["step"] for r in c[:length]] for c in curves], axis=0)
    mean, low, high = stats.curve_ci([[r[key] for r in c[:length]] for c in curves])
    return steps, mean, low, high


def small_multiples(
    panels: Sequence[dict[str, Any]], results: dict[str, records.ExperimentResults], colors: dict[str, Any], path: Path
) -> None:
    """One axes per claim (``panels``: title, experiment name, task, optimizers, split key, at_epoch step): the
    claim's metric over training, mean and 95% band over seeds (method solid, baseline dashed), Adaburst's burst
    restarts as dotted lines."""
    columns = min(3, len(panels))
    rows_n = math.ceil(len(panels) / columns)
    fig = plotting.new_figure(3.4 * columns + 0.4, 2.5 * rows_n + 0.9)
    axes = np.atleast_1d(fig.subplots(rows_n, columns, squeeze=False)).ravel()
    shown: dict[str, Any] = {}
    for ax, panel in zip(axes, panels):
        pairs = results[panel["experiment"]].pairs
        for position, name in enumerate(panel["optimizers"][:MAX_SERIES]):
            pair = pairs.get((panel["task"], name))
            drawn = _series(pair, panel["key"]) if pair is not None else None
            if drawn is None:
                continue
            steps, mean, low, high = drawn
            if panel["ylabel"].endswith("accuracy"):  # a t-interval over few seeds can leave [0, 1]; accuracy cannot
                low, high = np.clip(low, 0, 1), np.clip(high, 0, 1)
            style = "-" if position == 0 else "--"  # the claim's method solid, its baseline dashed
            ax.plot(steps, mean, color=colors[name], linestyle=style, linewidth=1.4, marker="o", markersize=2.5)
            ax.fill_between(steps, low, high, color=colors[name], alpha=0.18, linewidth=0)
            shown.setdefault(name, matplotlib.lines.Line2D([], [], color=colors[name], linewidth=1.6))
            for trial in pair.final:  # type: ignore[union-attr]
                for step in trial.run.events.get("burst", []) if trial.run is not None else []:
                    ax.axvline(step, color=colors[name], linestyle=":", linewidth=0.9)
        if panel.get("at_step") is not None:
            ax.axvline(panel["at_step"], color="0.3", linewidth=0.8, linestyle="--")
        ax.set_title(panel["title"], fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("step", fontsize=7)
        ax.set_ylabel(panel["ylabel"], fontsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    handles = [shown[name] for name in sorted(shown)]
    fig.legend(handles, sorted(shown), loc="outside lower center", ncol=min(6, max(1, len(shown))), fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    plotting.save(fig, path)


def profiles(costs: dict[str, dict[str, float]], colors: dict[str, Any], path: Path, title: str) -> None:
    """Dolan–Moré profiles of ``costs`` (task -> optimizer -> steps to the task's target, inf if never), in panels
    of at most :data:`MAX_SERIES` optimizers."""
    names = sorted({name for row in costs.values() for name in row})
    chunks = [names[i : i + MAX_SERIES] for i in range(0, len(names), MAX_SERIES)] or [[]]
    ratios = [c / min(r.values()) for r in costs.values() for c in r.values()
              if math.isfinite(c) and math.isfinite(min(r.values())) and min(r.values()) > 0]  # fmt: skip
    taus = np.logspace(0, math.log10(max(4.0, 1.5 * max(ratios, default=1.0))), 200)
    profile = stats.performance_profile(costs, list(taus))
    fig = plotting.new_figure(4.2 * len(chunks) + 2.4, 3.4)
    axes = np.atleast_1d(fig.subplots(1, len(chunks), squeeze=False)).ravel()
    for ax, chunk in zip(axes, chunks):
        for name in chunk:
            ax.step(taus, profile[name], where="post", color=colors[name], linewidth=1.5, label=name)
        ax.set_xscale("log")
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("τ (within τ × the best steps-to-target)", fontsize=7)
        ax.set_ylabel("fraction of tasks", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.suptitle(title, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    plotting.save(fig, path)
