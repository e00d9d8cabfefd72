"""The report's figures: each is one function that draws its PNG and returns the blocks that show it.

They are here, and the generative tasks' (FID curves, sample grids) in :mod:`optarena.arena.render.generation`.

A task figure takes a :class:`~optarena.arena.analysis.views.TaskView`, an experiment figure the
whole :class:`~optarena.arena.analysis.views.ExperimentView`; both get the optimizers' colours and
the folder the PNGs go to, and return the page's blocks (an :class:`Image`, and any remark it needs),
or none when there is nothing to draw. The report shows them in the order of :data:`TASK_FIGURES`
and :data:`EXPERIMENT_FIGURES`: a new figure is a new function added to one of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.transforms import blended_transform_factory

from optarena.arena.analysis import stats
from optarena.arena.analysis.views import (
    CONFIDENCE,
    ExperimentView,
    TaskView,
    seed_of,
    steps_to_target_costs,
    trial_score,
)
from optarena.arena.render import plotting
from optarena.arena.render.beta2 import beta2
from optarena.arena.render.document import Block, Image, Paragraph, spans
from optarena.arena.render.generation import generation_curves, sample_grids
from optarena.arena.render.plotting import FOLDER, Colors
from optarena.arena.tasks.functions import FUNCTIONS

TaskFigure = Callable[[TaskView, Colors, Path], list[Block]]
ExperimentFigure = Callable[[ExperimentView, Colors, Path], list[Block]]


# --- drawing --------------------------------------------------------------------------------------------------


def _draw_curves(task: TaskView, colors: Colors, x_key: str, path: Path) -> None:
    """Test metric, mean ± CI over the non-diverged seeds, against steps or wall time; at most
    :data:`~optarena.arena.render.plotting.MAX_SERIES` optimizers per axes, legends outside the data."""
    groups = plotting.chunks(task.runs)
    fig, axes = plotting.panel_figure(len(groups))
    for ax, group in zip(axes, groups):
        accuracy = task.metric == "accuracy"
        plotted = [value for runs in group for value in _draw_curve_group(ax, runs, colors, x_key, accuracy)]
        if task.target is not None:
            ax.axhline(task.target, color="0.4", linestyle="--", linewidth=1, label="target")
        plotting.style_metric_axis(ax, task, plotted)
        ax.set_xlabel("step" if x_key == "step" else "wall time (s)")
        ax.set_ylabel(f"test {task.metric}")
        ax.grid(alpha=0.3)
        plotting.legend_outside(ax)
    axes[0].set_title(f"{task.name}: test {task.metric} (mean ± 95% CI over seeds)")
    plotting.save(fig, path)


def _draw_curve_group(ax: Any, runs: Any, colors: Colors, x_key: str, accuracy: bool) -> list[float]:
    """One optimizer's curve, band and burst restarts on ``ax``; returns the plotted means."""
    curves = runs.curves()
    label = runs.name + (f" ({runs.n_diverged}/{len(runs.finals)} diverged)" if runs.n_diverged else "")
    if not curves:
        ax.plot([], [], color=colors[runs.name], label=f"{runs.name} (no run to draw)")
        return []
    length = min(len(c) for c in curves)  # equal unless a run was cut short
    y = [[row["test_metric"] for row in c[:length]] for c in curves]
    x = np.mean([[row[x_key] for row in c[:length]] for c in curves], axis=0)
    mean, low, high = stats.curve_ci(y, CONFIDENCE)
    if accuracy:  # a t-interval over few seeds can leave [0, 1]; accuracy cannot
        low, high = np.clip(low, 0, 1), np.clip(high, 0, 1)
    style = plotting.linestyle(colors, runs.name)
    ax.plot(x, mean, color=colors[runs.name], linestyle=style, label=label, marker="o")
    if len(curves) > 1:
        ax.fill_between(x, low, high, color=colors[runs.name], alpha=0.2, linewidth=0)
    # Adaburst's restarts, one dotted line per burst per seed, at the step (or that seed's time) it fired.
    first = True
    for trial in runs.finals:
        events = trial.run.events.get("burst", []) if trial.run is not None else []
        records = trial.run.rows if trial.run is not None else []
        for event in events:
            where = float(event)
            if x_key != "step":
                where = float(np.interp(event, [r["step"] for r in records], [r["wall_time"] for r in records]))
            label = f"{runs.name} burst" if first else None
            ax.axvline(where, color=colors[runs.name], linestyle=":", alpha=0.7, label=label)
            first = False
    return list(mean)


def draw_lr_sensitivity(task: TaskView, colors: Colors, path: Path) -> None:
    """Every tuning trial's lr against its validation value; hollow = pruned, x at the edge = diverged; at most
    :data:`~optarena.arena.render.plotting.MAX_SERIES` optimizers per axes, legends outside the data."""
    groups = plotting.chunks(task.runs)
    fig, axes = plotting.panel_figure(len(groups))
    lrs = [t.params["lr"] for runs in task.runs for t in runs.tune if "lr" in t.params]
    for ax, group in zip(axes, groups):
        _draw_sensitivity_group(ax, task, group, colors)
        ax.set_xscale("log")
        if lrs:  # the diverged markers do not widen the data limits (their y is in axes units): set x by hand
            ax.set_xlim(min(lrs) / 1.4, max(lrs) * 1.4)
        ax.set_xlabel("learning rate")
        ax.set_ylabel(f"validation {task.metric}")
        ax.grid(alpha=0.3, which="both")
        plotting.legend_outside(ax)
    axes[0].set_title(f"{task.name}: learning-rate sensitivity (every tuning trial)")
    plotting.save(fig, path)


def _draw_sensitivity_group(ax: Any, task: TaskView, group: list, colors: Colors) -> None:
    edge = blended_transform_factory(ax.transData, ax.transAxes)
    plotted: list[float] = []
    any_pruned = any_diverged = False
    for runs in group:
        color = colors[runs.name]
        points = [(t.params["lr"], trial_score(t), t.state) for t in runs.tune if "lr" in t.params]
        done = sorted((lr, v) for lr, v, s in points if s == "complete" and v is not None and math.isfinite(v))
        pruned = [(lr, v) for lr, v, s in points if s == "pruned" and v is not None and math.isfinite(v)]
        diverged = [lr for lr, v, _ in points if v is None or not math.isfinite(v)]
        style = plotting.linestyle(colors, runs.name)
        if done:
            ax.plot(*zip(*done), color=color, linestyle=style, marker="o", label=runs.name)
        else:
            ax.plot([], [], color=color, marker="o", label=runs.name)
        if pruned:
            ax.scatter(*zip(*pruned), facecolors="none", edgecolors=color, marker="o", s=36)
        if diverged:  # drawn on the "worst" edge of the axes: the value is ±inf
            y = 0.03 if task.mode == "max" else 0.97
            ax.scatter(diverged, [y] * len(diverged), transform=edge, color=color, marker="x", s=40)
        any_pruned, any_diverged = any_pruned or bool(pruned), any_diverged or bool(diverged)
        plotted += [v for _, v in done + pruned]
    # Legend keys for the marker kinds, after the optimizers so those keep their order.
    if any_pruned:
        ax.scatter([], [], facecolors="none", edgecolors="0.3", marker="o", label="pruned (hollow)")
    if any_diverged:
        ax.scatter([], [], color="0.3", marker="x", label="diverged (drawn on the edge)")
    plotting.style_metric_axis(ax, task, plotted)


def _draw_trajectories(task: TaskView, colors: Colors, path: Path) -> bool:
    """Each optimizer's seed-1 path over the function's contours; False when there is nothing to draw."""
    function = FUNCTIONS.get(task.name)
    paths = {}
    for runs in task.runs:
        trials = [t for t in runs.finals if t.run is not None and t.run.trajectory]
        if trials:
            trial = min(trials, key=lambda t: (seed_of(t) != 1, seed_of(t)))  # seed 1, else the lowest seed
            paths[runs.name] = (np.asarray(trial.run.trajectory, dtype=float), seed_of(trial))  # type: ignore[union-attr]
    if function is None or not paths:
        return False
    fig = plotting.new_figure(7.0, 5.6)
    ax = fig.add_subplot()
    grid_x, grid_y, values = function.grid()
    # Levels dense near the minimum, where the paths end: quantiles on a cubic scale.
    levels = np.unique(np.quantile(values, np.linspace(0.0, 1.0, 28) ** 3))
    ax.contourf(grid_x, grid_y, values, levels=levels, cmap="Blues_r", alpha=0.35)
    ax.contour(grid_x, grid_y, values, levels=levels, colors="0.55", linewidths=0.3)
    for name, (points, seed) in paths.items():
        points = points[np.isfinite(points).all(axis=1)]
        label = name + ("" if seed == 1 else f" (seed {seed})")
        style = plotting.linestyle(colors, name)
        ax.plot(points[:, 0], points[:, 1], color=colors[name], linestyle=style, linewidth=1.6, label=label)
    ax.plot(*function.start, marker="o", color="black", markersize=8, linestyle="none", label="start")
    ax.plot(*function.minimum, marker="*", color="gold", markeredgecolor="black", markersize=14, linestyle="none")
    ax.plot([], [], marker="*", color="gold", markeredgecolor="black", linestyle="none", label="minimum")
    ax.set_xlim(*function.bounds[0])
    ax.set_ylim(*function.bounds[1])
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(f"{task.name}: trajectories of the seed-1 reruns")
    ax.legend(fontsize=8, loc="upper right")
    plotting.save(fig, path)
    return True


def _draw_update_magnitudes(task: TaskView, colors: Colors, path: Path) -> bool:
    """Mean |Δθ| per epoch, averaged over layers then seeds (the Adaburst paper's Fig. 1); log y."""
    fig = plotting.new_figure()
    ax = fig.add_subplot()
    drawn = False
    for runs in task.runs:
        per_seed = []
        for trial in runs.finals:
            layers = trial.run.update_magnitudes if trial.run is not None else {}
            series = [v for v in layers.values() if v]
            if series:
                length = min(len(v) for v in series)
                per_seed.append(np.mean([v[:length] for v in series], axis=0))
        if not per_seed:
            continue
        length = min(len(s) for s in per_seed)
        mean = np.mean([s[:length] for s in per_seed], axis=0)
        mean = np.where(mean > 0, mean, np.nan)  # a zero update cannot sit on a log axis
        style = plotting.linestyle(colors, runs.name)
        ax.plot(np.arange(1, length + 1), mean, color=colors[runs.name], linestyle=style, marker="o", label=runs.name)
        drawn = True
    if not drawn:
        fig.clear()
        return False
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean |Δθ| per step (mean over layers)")
    ax.set_title(f"{task.name}: per-layer update magnitude per epoch")
    ax.grid(alpha=0.3, which="both")
    plotting.legend_outside(ax)
    plotting.save(fig, path)
    return True


def _draw_profile(costs: dict[str, dict[str, float]], colors: Colors, path: Path) -> None:
    """Dolan–Moré profiles of steps-to-target over the tasks, τ on a log axis, in panels of at most
    :data:`~optarena.arena.render.plotting.MAX_SERIES` optimizers."""
    ratios = [
        cost / min(row.values())
        for row in costs.values()
        for cost in row.values()
        if math.isfinite(cost) and math.isfinite(min(row.values())) and min(row.values()) > 0
    ]
    tau_max = max(4.0, 1.5 * max(ratios, default=1.0))
    taus = np.logspace(0, math.log10(tau_max), 200)
    profile = stats.performance_profile(costs, list(taus))
    groups = plotting.chunks([name for name in colors if name in profile])
    fig, axes = plotting.panel_figure(len(groups))
    for ax, group in zip(axes, groups):
        for name in group:
            style = plotting.linestyle(colors, name)
            ax.step(taus, profile[name], where="post", color=colors[name], linestyle=style, label=name, linewidth=1.6)
        ax.set_xscale("log")
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("τ (steps-to-target within τ × the best optimizer's)")
        ax.set_ylabel("fraction of tasks")
        ax.grid(alpha=0.3, which="both")
        plotting.legend_outside(ax)
    axes[0].set_title(f"Performance profile over {len(costs)} task(s): steps to target")
    plotting.save(fig, path)


def profile_costs(view: ExperimentView) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Steps-to-target costs per task, and the tasks whose target was derived (task -> that target).

    Each task's target is the one its tables use (:func:`~optarena.arena.analysis.views.reporting_target`: the
    stored target where the median rerun of at least half the optimizers reaches it, else the reachable target of
    the reruns), so the profile compares the optimizers rather than drawing a line at 0."""
    costs = steps_to_target_costs(view.tasks)
    return costs, {t.name: t.target for t in view.tasks if t.target_derived and t.name in costs}  # type: ignore[misc]


# --- the figures of a task -----------------------------------------------------------------------------------


def _curves(task: TaskView, colors: Colors, folder: Path, key: str, what: str, x_note: str) -> list[Block]:
    name = f"{plotting.slug(task.name)}_curves_{'step' if key == 'step' else 'time'}.png"
    _draw_curves(task, colors, key, folder / name)
    bursts = any(t.run is not None and t.run.events.get("burst") for runs in task.runs for t in runs.finals)
    caption = (
        f"Test {task.metric} against {what}{x_note}: mean over the non-diverged seeds, band = 95% CI"
        + (" (clipped to 0-100%); " if task.metric == "accuracy" else "; ")
        + "dashed horizontal line = target"
        + ("; dotted vertical lines mark Adaburst's burst restarts." if bursts else ".")
    )
    return [Image(f"{FOLDER}/{name}", f"{task.name}: test {task.metric} vs {what}", caption)]


def curves_by_step(task: TaskView, colors: Colors, folder: Path) -> list[Block]:
    """Test metric against steps, mean and 95% band over the seeds; bursts and the target marked."""
    return _curves(task, colors, folder, "step", "step", "")


def curves_by_time(task: TaskView, colors: Colors, folder: Path) -> list[Block]:
    """The same against training wall time (the seeds' mean at each evaluation)."""
    return _curves(task, colors, folder, "wall_time", "wall time", " (x: the seeds' mean wall time at each evaluation)")


def lr_sensitivity(task: TaskView, colors: Colors, folder: Path) -> list[Block]:
    """Every tuning trial's validation score against its learning rate."""
    name = f"{plotting.slug(task.name)}_lr_sensitivity.png"
    draw_lr_sensitivity(task, colors, folder / name)
    trials = sum(len(r.tune) for r in task.runs)
    pruned = sum(t.state == "pruned" for r in task.runs for t in r.tune)
    caption = (
        f"Validation {task.metric} of every tuning trial ({trials} trials, {pruned} pruned) against its learning "
        "rate; hollow markers are pruned trials (their last reported value), crosses on the edge diverged."
    )
    return [Image(f"{FOLDER}/{name}", f"{task.name}: learning-rate sensitivity", caption)]


def trajectories(task: TaskView, colors: Colors, folder: Path) -> list[Block]:
    """A 2-D function task: each optimizer's path over the contours."""
    name = f"{plotting.slug(task.name)}_trajectories.png"
    if task.kind != "function" or not _draw_trajectories(task, colors, folder / name):
        return []
    caption = "The path of each optimizer's seed-1 rerun over the function's contours; circle = start, star = minimum."
    return [Image(f"{FOLDER}/{name}", f"{task.name}: optimizer trajectories", caption)]


def update_magnitudes(task: TaskView, colors: Colors, folder: Path) -> list[Block]:
    """Mean per-layer update size per epoch, where the reruns recorded it."""
    name = f"{plotting.slug(task.name)}_update_magnitudes.png"
    if not _draw_update_magnitudes(task, colors, folder / name):
        return []
    caption = "Mean |Δθ| per step in each epoch, averaged over the weight layers and the seeds (log scale)."
    return [Image(f"{FOLDER}/{name}", f"{task.name}: update magnitudes per epoch", caption)]


# --- the figures across tasks --------------------------------------------------------------------------------


def performance_profile(view: ExperimentView, colors: Colors, folder: Path) -> list[Block]:
    """Dolan–Moré profiles of steps-to-target across the tasks (a derived target where the fixed one is out of
    reach: :func:`profile_costs`)."""
    costs, derived = profile_costs(view)
    if not costs:
        return [Paragraph(spans("No task has a rerun: no performance profile."))]
    _draw_profile(costs, colors, folder / "performance_profile.png")
    rule = ""
    if derived:
        targets = "; ".join(f"{name}: {value:.4g}" for name, value in derived.items())
        rule = (
            " Where no optimizer reached a task's fixed target (or it has none), the target is derived from the "
            "data: the median over optimizers of each one's median best test metric (the lower median when "
            f"higher is better), which at least half of them reach ({targets})."
        )
    caption = (
        "For each optimizer, the fraction of tasks on which its median steps-to-target is within τ times the best "
        "optimizer's; a task no optimizer solved counts as unsolved for all." + rule
    )
    return [Image(f"{FOLDER}/performance_profile.png", "Performance profile: steps to target", caption)]


# The report's figures, in the order it shows them: per task after its table, then across tasks.
TASK_FIGURES: tuple[TaskFigure, ...] = (
    curves_by_step,
    curves_by_time,
    generation_curves,
    sample_grids,
    lr_sensitivity,
    trajectories,
    update_magnitudes,
)
EXPERIMENT_FIGURES: tuple[ExperimentFigure, ...] = (performance_profile, beta2)
