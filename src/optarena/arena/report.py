"""The arena's report: Markdown and HTML pages with figures, built from the results store alone.

``build_report(storage_url, experiment, out_dir)`` reads every (task, optimizer) study of
``experiment`` and writes ``report.md``, ``report.html`` (the same content, self-contained: inline
CSS, figures as relative ``figures/*.png`` links) and the figures themselves.

The page is built once as a list of blocks (headings, paragraphs, tables, figures) and rendered to
both formats, so the two never disagree and every piece of text is escaped in one place. Nothing
time-dependent goes into the text: rebuilding from the same store gives the same ``report.md``.

Figures are drawn on ``matplotlib.figure.Figure`` objects with an Agg canvas, never through
``pyplot``: no global figure registry holds them, so building many reports does not grow memory and
does not change the caller's matplotlib backend.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter
from matplotlib.transforms import blended_transform_factory

from optarena.arena import markdown, stats
from optarena.arena.records import ExperimentResults, PairResults, TaskInfo, TrialRecord, load_results
from optarena.arena.store import list_experiments

FIGURES = "figures"
DPI = 100
CONFIDENCE = 0.95
# The optimizers whose second-moment decay the β2(t) figure explains.
BETA2_OPTIMIZERS = frozenset({"adamnx", "adax", "adam", "adamw", "adafactor"})
WARNING = (
    "Do not pick an optimizer from one plot, one task or one table: differences that stay inside the "
    "confidence intervals are noise, the tuning budget is small, and a ranking on these tasks need not "
    "carry over to yours."
)


# --- the content model: blocks rendered to Markdown and to HTML ----------------------------------------


@dataclass(frozen=True)
class Span:
    """A run of inline text; bold marks a winner, code marks names and values."""

    text: str
    bold: bool = False
    code: bool = False


Inline = list[Span]


def _spans(*parts: str | Span) -> Inline:
    return [p if isinstance(p, Span) else Span(p) for p in parts]


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Paragraph:
    parts: Inline
    css: str = ""  # an HTML class (e.g. "warning"); Markdown renders the text alone


@dataclass
class Bullets:
    items: list[Inline]


@dataclass
class Table:
    header: list[str]
    rows: list[list[Inline]]


@dataclass
class Image:
    path: str  # relative to the report, e.g. "figures/digits_curves_step.png"
    alt: str
    caption: str


Block = Heading | Paragraph | Bullets | Table | Image


def _md_escape(text: str, in_table: bool = False) -> str:
    # Characters that would start emphasis, code, a link or raw HTML (optarena.arena.markdown.text).
    return markdown.text(text, in_table=in_table)


def _md_inline(parts: Inline, in_table: bool = False) -> str:
    out = []
    for span in parts:
        # A name may hold backticks, '<' or '|': code goes in one safe code span (optarena.arena.markdown).
        text = markdown.code_span(span.text, in_table=in_table) if span.code else _md_escape(span.text, in_table)
        out.append(f"**{text}**" if span.bold else text)
    return "".join(out)


def _html_inline(parts: Inline) -> str:
    out = []
    for span in parts:
        text = html.escape(span.text)
        if span.code:
            text = f"<code>{text}</code>"
        out.append(f"<strong>{text}</strong>" if span.bold else text)
    return "".join(out)


def render_markdown(blocks: Sequence[Block]) -> str:
    """The blocks as GitHub-flavoured Markdown."""
    chunks: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            chunks.append(f"{'#' * block.level} {_md_escape(block.text)}")
        elif isinstance(block, Paragraph):
            chunks.append(_md_inline(block.parts))
        elif isinstance(block, Bullets):
            chunks.append("\n".join(f"- {_md_inline(item)}" for item in block.items))
        elif isinstance(block, Table):
            lines = [
                "| " + " | ".join(_md_escape(h, in_table=True) for h in block.header) + " |",
                "|" + "|".join("---" for _ in block.header) + "|",
            ]
            lines += ["| " + " | ".join(_md_inline(c, in_table=True) for c in row) + " |" for row in block.rows]
            chunks.append("\n".join(lines))
        elif isinstance(block, Image):
            alt = block.alt.replace("[", "(").replace("]", ")")
            chunks.append(f"![{_md_escape(alt)}]({markdown.link_target(block.path)})\n\n*{_md_escape(block.caption)}*")
    return "\n\n".join(chunks) + "\n"


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1150px; margin: 2em auto;
       padding: 0 1em; color: #1d1d1f; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #bbb; padding-bottom: .15em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f0f0f3; }
tr:nth-child(even) td { background: #fafafa; }
code { background: #f3f3f6; padding: 0 .25em; border-radius: 3px; font-size: .95em; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #e3e3e3; }
figcaption { color: #555; font-size: .9em; }
.warning { background: #fff4e0; border-left: 4px solid #e69500; padding: .5em .8em; }
"""


def render_html(blocks: Sequence[Block], title: str) -> str:
    """The blocks as one self-contained HTML page (inline CSS, no external resources)."""
    body: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            css = f' class="{html.escape(block.css)}"' if block.css else ""
            body.append(f"<p{css}>{_html_inline(block.parts)}</p>")
        elif isinstance(block, Bullets):
            items = "".join(f"<li>{_html_inline(item)}</li>" for item in block.items)
            body.append(f"<ul>{items}</ul>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block.header)
            rows = "".join("<tr>" + "".join(f"<td>{_html_inline(c)}</td>" for c in row) + "</tr>" for row in block.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(block, Image):
            body.append(
                f'<figure><img src="{html.escape(block.path)}" alt="{html.escape(block.alt)}">'
                f"<figcaption>{html.escape(block.caption)}</figcaption></figure>"
            )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


# --- number formatting --------------------------------------------------------------------------------


def fmt_metric(value: float, metric: str) -> str:
    """Accuracy as a percentage, anything else with 4 significant digits."""
    if not math.isfinite(value):
        return "diverged" if math.isinf(value) else "—"
    if metric == "accuracy":
        return f"{100 * value:.2f}%"
    return f"{value:.4g}"


def fmt_number(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else "—"


def fmt_steps(value: float) -> str:
    return "not reached" if math.isinf(value) else f"{value:,.0f}"


def fmt_seconds(value: float) -> str:
    return "not reached" if math.isinf(value) else f"{value:.3g} s"


def fmt_param(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    return f"{value:.3g}"


def _fmt_ci(mean: float, low: float, high: float, n: int, metric: str) -> str:
    if n == 0:
        return "—"
    if n == 1:
        return f"{fmt_metric(mean, metric)} (1 seed, no CI)"
    if metric == "accuracy":
        # A t-interval over few seeds can leave [0, 1]; clipping keeps exactly the same overlaps, since every
        # mean lies inside [0, 1].
        low, high = min(max(low, 0.0), 1.0), min(max(high, 0.0), 1.0)
    return f"{fmt_metric(mean, metric)} [{fmt_metric(low, metric)}, {fmt_metric(high, metric)}]"


def _fmt_space(spec: tuple[Any, ...]) -> str:
    kind = spec[0]
    if kind == "choice":
        return "{" + ", ".join(fmt_param(v) for v in spec[1]) + "}"
    low, high = fmt_param(spec[1]), fmt_param(spec[2])
    return f"{low}..{high} (int)" if kind == "int" else f"[{low}, {high}]" + (" log" if kind == "log" else "")


def table_headers(metric: str) -> list[str]:
    """The per-task summary table's column names."""
    return [
        "Optimizer",
        "Best configuration",
        f"Final test {metric}: mean [95% CI]",
        "Median",
        f"Best test {metric}",
        "Steps to target",
        "Time to target",
        "Train-loss AUC",
        "Diverged",
    ]


# --- reading the store into per-task views -----------------------------------------------------------------


@dataclass
class OptimizerRuns:
    """One optimizer on one task: its tuning trials and its seeded reruns (sorted by seed)."""

    name: str
    tune: list[TrialRecord]
    finals: list[TrialRecord]
    mode: str

    @property
    def worst(self) -> float:
        return -math.inf if self.mode == "max" else math.inf

    def diverged(self, trial: TrialRecord) -> bool:
        value = trial.value
        return (trial.run is not None and trial.run.diverged) or value is None or not math.isfinite(value)

    @property
    def values(self) -> list[float]:
        """Final test metric per seed; a diverged run scores the worst value, as it does in tuning."""
        return [self.worst if self.diverged(t) else float(t.value) for t in self.finals]  # type: ignore[arg-type]

    @property
    def finite_values(self) -> list[float]:
        return [float(t.value) for t in self.finals if not self.diverged(t)]  # type: ignore[arg-type]

    @property
    def n_diverged(self) -> int:
        return sum(self.diverged(t) for t in self.finals)

    def records(self, include_diverged: bool = False) -> list[list[dict[str, float]]]:
        return [
            list(t.run.rows)
            for t in self.finals
            if t.run is not None and t.run.rows and (include_diverged or not self.diverged(t))
        ]

    def configuration(self) -> dict[str, Any]:
        """The configuration that was rerun (from the reruns; the best tuning trial if none ran yet)."""
        if self.finals:
            config = dict(self.finals[0].params)
            if config:
                return config
        scored = [t for t in self.tune if t.state == "complete" and t.value is not None and math.isfinite(t.value)]
        if not scored:
            return {}
        best = max(scored, key=lambda t: t.value) if self.mode == "max" else min(scored, key=lambda t: t.value)
        return dict(best.params)


@dataclass
class TaskView:
    name: str
    metric: str
    mode: str
    target: float | None
    kind: str
    runs: list[OptimizerRuns] = field(default_factory=list)


def _ordered(preferred: Iterable[str], present: Iterable[str]) -> list[str]:
    """``present`` in the experiment's configured order, anything else after it, sorted."""
    present = set(present)
    out = [p for p in dict.fromkeys(preferred) if p in present]
    return out + sorted(present - set(out))


def _seed(trial: TrialRecord) -> int:
    return trial.seed if trial.seed is not None else trial.number


# --- figures ----------------------------------------------------------------------------------------------


def _new_figure(width: float = 7.5, height: float = 4.2) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # explicitly Agg: PNG output without touching pyplot or the global backend
    return fig


def _save(fig: Figure, path: Path) -> None:
    # No "Software" stamp: the PNG bytes then depend only on the data and the matplotlib version.
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    fig.clear()  # drop the artists now rather than when the last reference goes


def _colors(optimizers: Sequence[str]) -> dict[str, Any]:
    cmap = matplotlib.colormaps["tab10"]
    return {name: cmap(i % 10) for i, name in enumerate(optimizers)}


_LINESTYLES = ("-", "--", "-.", ":")


def _linestyle(colors: dict[str, Any], name: str) -> str:
    # Optimizers that behave alike (AdamW and AdamNX early on) draw the same curve: vary the dash as well.
    return _LINESTYLES[list(colors).index(name) % len(_LINESTYLES)]


def _wants_log(values: Iterable[float]) -> bool:
    finite = [v for v in values if math.isfinite(v)]
    return bool(finite) and min(finite) > 0 and max(finite) / min(finite) > 100


def _style_metric_axis(ax: Any, task: TaskView, values: Iterable[float]) -> None:
    if task.metric == "accuracy":
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))
    elif task.mode == "min" and _wants_log(values):
        ax.set_yscale("log")  # function values fall over many decades


def _curves_figure(task: TaskView, colors: dict[str, Any], x_key: str, path: Path) -> None:
    """Test metric, mean ± CI over the non-diverged seeds, against steps or wall time."""
    fig = _new_figure()
    ax = fig.add_subplot()
    plotted: list[float] = []
    for runs in task.runs:
        curves = runs.records()
        label = runs.name + (f" ({runs.n_diverged}/{len(runs.finals)} diverged)" if runs.n_diverged else "")
        if not curves:
            ax.plot([], [], color=colors[runs.name], label=f"{runs.name} (no run to draw)")
            continue
        length = min(len(c) for c in curves)  # equal unless a run was cut short
        y = [[row["test_metric"] for row in c[:length]] for c in curves]
        x = np.mean([[row[x_key] for row in c[:length]] for c in curves], axis=0)
        mean, low, high = stats.curve_ci(y, CONFIDENCE)
        if task.metric == "accuracy":  # a t-interval over few seeds can leave [0, 1]; accuracy cannot
            low, high = np.clip(low, 0, 1), np.clip(high, 0, 1)
        ax.plot(x, mean, color=colors[runs.name], linestyle=_linestyle(colors, runs.name), label=label, marker="o")
        if len(curves) > 1:
            ax.fill_between(x, low, high, color=colors[runs.name], alpha=0.2, linewidth=0)
        plotted += list(mean)
        # Adaburst's restarts, one dotted line per burst per seed, at the step (or that seed's time) it fired.
        first = True
        for trial in runs.finals:
            events = trial.run.events.get("burst", []) if trial.run is not None else []
            records = trial.run.rows if trial.run is not None else []
            for event in events:
                if x_key == "step":
                    where = float(event)
                else:
                    steps = [r["step"] for r in records]
                    where = float(np.interp(event, steps, [r["wall_time"] for r in records]))
                ax.axvline(
                    where,
                    color=colors[runs.name],
                    linestyle=":",
                    alpha=0.7,
                    label=f"{runs.name} burst" if first else None,
                )
                first = False
    if task.target is not None:
        ax.axhline(task.target, color="0.4", linestyle="--", linewidth=1, label="target")
    _style_metric_axis(ax, task, plotted)
    ax.set_xlabel("step" if x_key == "step" else "wall time (s)")
    ax.set_ylabel(f"test {task.metric}")
    ax.set_title(f"{task.name}: test {task.metric} (mean ± 95% CI over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def _trial_score(trial: TrialRecord) -> float | None:
    """A tuning trial's validation value; a pruned one keeps its last reported value."""
    if trial.value is not None:
        return float(trial.value)
    if trial.intermediate_values:
        return float(trial.intermediate_values[max(trial.intermediate_values)])
    return None


def _sensitivity_figure(task: TaskView, colors: dict[str, Any], path: Path) -> None:
    """Every tuning trial's lr against its validation value; hollow = pruned, x at the edge = diverged."""
    fig = _new_figure()
    ax = fig.add_subplot()
    edge = blended_transform_factory(ax.transData, ax.transAxes)
    plotted: list[float] = []
    any_pruned = any_diverged = False
    lrs = [t.params["lr"] for runs in task.runs for t in runs.tune if "lr" in t.params]
    for runs in task.runs:
        color = colors[runs.name]
        points = [(t.params["lr"], _trial_score(t), t.state) for t in runs.tune if "lr" in t.params]
        done = sorted((lr, v) for lr, v, s in points if s == "complete" and v is not None and math.isfinite(v))
        pruned = [(lr, v) for lr, v, s in points if s == "pruned" and v is not None and math.isfinite(v)]
        diverged = [lr for lr, v, _ in points if v is None or not math.isfinite(v)]
        if done:
            ax.plot(*zip(*done), color=color, linestyle=_linestyle(colors, runs.name), marker="o", label=runs.name)
        else:
            ax.plot([], [], color=color, marker="o", label=runs.name)
        if pruned:
            ax.scatter(*zip(*pruned), facecolors="none", edgecolors=color, marker="o", s=36)
        if diverged:
            # Drawn on the "worst" edge of the axes: the value is ±inf.
            y = 0.03 if task.mode == "max" else 0.97
            ax.scatter(
                diverged,
                [y] * len(diverged),
                transform=edge,
                color=color,
                marker="x",
                s=40,
            )
        any_pruned, any_diverged = any_pruned or bool(pruned), any_diverged or bool(diverged)
        plotted += [v for _, v in done + pruned]
    # Legend keys for the marker kinds, after the optimizers so those keep their order.
    if any_pruned:
        ax.scatter([], [], facecolors="none", edgecolors="0.3", marker="o", label="pruned (hollow)")
    if any_diverged:
        ax.scatter([], [], color="0.3", marker="x", label="diverged (drawn on the edge)")
    ax.set_xscale("log")
    if lrs:  # the diverged markers do not widen the data limits (their y is in axes units): set x by hand
        ax.set_xlim(min(lrs) / 1.4, max(lrs) * 1.4)
    _style_metric_axis(ax, task, plotted)
    ax.set_xlabel("learning rate")
    ax.set_ylabel(f"validation {task.metric}")
    ax.set_title(f"{task.name}: learning-rate sensitivity (every tuning trial)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    _save(fig, path)


def _function_grid(function: Any, resolution: int = 160) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import torch

    (x0, x1), (y0, y1) = function.bounds
    xs, ys = np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution)
    grid_x, grid_y = np.meshgrid(xs, ys)
    points = torch.tensor(np.stack([grid_x.ravel(), grid_y.ravel()], axis=1), dtype=torch.float64)
    with torch.no_grad():
        try:
            values = torch.func.vmap(function.fn)(points)
        except Exception:  # a function vmap cannot batch: evaluate point by point
            values = torch.stack([function.fn(p) for p in points])
    return grid_x, grid_y, values.numpy().reshape(grid_x.shape)


def _trajectory_figure(task: TaskView, colors: dict[str, Any], path: Path) -> bool:
    """Each optimizer's seed-1 path over the function's contours; False when there is nothing to draw."""
    from optarena.arena.tasks.functions import FUNCTIONS

    function = FUNCTIONS.get(task.name)
    paths = {}
    for runs in task.runs:
        trials = [t for t in runs.finals if t.run is not None and t.run.trajectory]
        if trials:
            trial = min(trials, key=lambda t: (_seed(t) != 1, _seed(t)))  # seed 1, else the lowest seed
            paths[runs.name] = (np.asarray(trial.run.trajectory, dtype=float), _seed(trial))  # type: ignore[union-attr]
    if function is None or not paths:
        return False
    fig = _new_figure(7.0, 5.6)
    ax = fig.add_subplot()
    grid_x, grid_y, values = _function_grid(function)
    # Levels dense near the minimum, where the paths end: quantiles on a cubic scale.
    levels = np.unique(np.quantile(values, np.linspace(0.0, 1.0, 28) ** 3))
    ax.contourf(grid_x, grid_y, values, levels=levels, cmap="Blues_r", alpha=0.35)
    ax.contour(grid_x, grid_y, values, levels=levels, colors="0.55", linewidths=0.3)
    for name, (points, seed) in paths.items():
        points = points[np.isfinite(points).all(axis=1)]
        label = name + ("" if seed == 1 else f" (seed {seed})")
        style = _linestyle(colors, name)
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
    _save(fig, path)
    return True


def _update_magnitude_figure(task: TaskView, colors: dict[str, Any], path: Path) -> bool:
    """Mean |Δθ| per epoch, averaged over layers then seeds (the Adaburst paper's Fig. 1); log y."""
    fig = _new_figure()
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
        style = _linestyle(colors, runs.name)
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
    ax.legend(fontsize=8)
    _save(fig, path)
    return True


def _profile_figure(costs: dict[str, dict[str, float]], colors: dict[str, Any], path: Path) -> None:
    """Dolan–Moré profiles of steps-to-target over the tasks, τ on a log axis."""
    ratios = [
        cost / min(row.values())
        for row in costs.values()
        for cost in row.values()
        if math.isfinite(cost) and math.isfinite(min(row.values())) and min(row.values()) > 0
    ]
    tau_max = max(4.0, 1.5 * max(ratios, default=1.0))
    taus = np.logspace(0, math.log10(tau_max), 200)
    profile = stats.performance_profile(costs, list(taus))
    fig = _new_figure()
    ax = fig.add_subplot()
    for name in colors:
        if name in profile:
            style = _linestyle(colors, name)
            ax.step(taus, profile[name], where="post", color=colors[name], linestyle=style, label=name, linewidth=1.6)
    ax.set_xscale("log")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("τ (steps-to-target within τ × the best optimizer's)")
    ax.set_ylabel("fraction of tasks")
    ax.set_title(f"Performance profile over {len(costs)} task(s): steps to target")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    _save(fig, path)


def beta2_complements(t: np.ndarray) -> dict[str, np.ndarray]:
    """1 − β̂_t, the weight of the newest g² in each method's second moment, computed without cancellation.

    Adam (bias-corrected, β2 = 0.999): β̂ = β2(1−β2^{t−1})/(1−β2^t), so 1 − β̂ = (1−β2)/(1−β2^t).
    AdaX (β = 1e-4): 1 − β̂ = β/((1+β)^t − 1).
    AdamNX (Eq. 11, r = 1−β2): 1 − β̂ = β2^{r(t−1)}(1 − β2^r)/(1 − β2^{rt}), equal to 1 − ``adamnx_beta2``
    but exact where β̂ rounds to 1 (it falls below 1e-16 within the plotted range for β2 = 0.99).
    Adafactor: β̂ = 1 − t^−0.8.
    """
    t = np.asarray(t, dtype=float)
    out = {"Adam, β2 = 0.999": 1e-3 / -np.expm1(t * math.log(0.999))}
    beta = 1e-4
    out["AdaX, β = 1e-4"] = beta / np.expm1(t * math.log1p(beta))
    for beta2 in (0.99, 0.999):
        rate, log_b = 1 - beta2, math.log(beta2)
        newest = -math.expm1(rate * log_b)  # 1 − β2^r
        out[f"AdamNX, β2 = {beta2}"] = np.exp(rate * (t - 1) * log_b) * newest / -np.expm1(rate * t * log_b)
    out["Adafactor, 1 − t^−0.8"] = t**-0.8
    return out


def _beta2_figure(path: Path) -> None:
    t = np.unique(np.round(np.logspace(0, 6, 800)))
    fig = _new_figure()
    ax = fig.add_subplot()
    for (label, values), style in zip(beta2_complements(t).items(), ("-", "--", "-", "-.", ":")):
        # AdaX (dashed) lies on AdamNX with β2 = 0.99: draw it on top so both stay visible.
        ax.plot(t, values, linestyle=style, linewidth=1.8, label=label, zorder=3 if label.startswith("AdaX") else 2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(1e-12, 2)
    ax.set_xlabel("step t")
    ax.set_ylabel("1 − β̂2(t)  (weight of the newest g²)")
    ax.set_title("Effective second-moment decay β̂2(t)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    _save(fig, path)


# --- sections ----------------------------------------------------------------------------------------------


def _median(values: Sequence[float]) -> float:
    return float(np.median(values)) if len(values) else math.nan


def _config_spans(config: dict[str, Any]) -> Inline:
    if not config:
        return _spans("—")
    keys = sorted(config, key=lambda k: (k != "lr", k))  # lr first
    return _spans(Span("; ".join(f"{k} = {fmt_param(config[k])}" for k in keys), code=True))


def _winner(task: TaskView) -> tuple[str | None, str]:
    """The separated winner (or None) and the sentence that says why."""
    ran = [r for r in task.runs if r.finals]
    metric = f"final test {task.metric}"
    if len(ran) < 2:
        return None, "Fewer than two optimizers have reruns: nothing to rank."
    if any(len(r.finals) < 2 for r in ran):
        return None, f"No optimizer is marked: with a single seed there is no confidence interval of the {metric}."
    intervals = {}
    for runs in ran:
        # A diverged rerun scores the worst value, so its optimizer's interval is the worst point.
        intervals[runs.name] = (
            (runs.worst,) * 3 if runs.n_diverged else stats.mean_ci(runs.values, CONFIDENCE)  # type: ignore[assignment]
        )
    winner = stats.separated_winner(intervals, task.mode)
    if winner is None:
        return None, (
            f"No optimizer is separated: the 95% confidence intervals of the {metric} overlap, "
            "so this table does not rank them."
        )
    side = "above" if task.mode == "max" else "below"
    return winner, f"★ {winner}: its 95% confidence interval of the {metric} lies entirely {side} every other's."


def _summary_table(task: TaskView, winner: str | None) -> Table:
    rows = []
    for runs in task.runs:
        finite = runs.finite_values
        n = len(runs.finals)
        mean, low, high = stats.mean_ci(finite, CONFIDENCE) if finite else (math.nan,) * 3
        curves = runs.records(include_diverged=True)
        best = [stats.best_value(c, task.mode) for c in runs.records()]
        if task.target is not None and curves:
            steps = _median([stats.steps_to_target(c, task.target, task.mode) for c in curves])
            seconds = _median([stats.time_to_target(c, task.target, task.mode) for c in curves])
            reached = sum(stats.first_reaching(c, task.target, task.mode) is not None for c in curves)
            steps_text = f"{fmt_steps(steps)} ({reached}/{len(curves)})"
            time_text = fmt_seconds(seconds)
        else:
            steps_text = time_text = "—"
        areas = [stats.curve_area(c) for c in runs.records()]
        name = Span(f"★ {runs.name}", bold=True) if runs.name == winner else Span(runs.name)
        rows.append(
            [
                [name],
                _config_spans(runs.configuration()),
                _spans(_fmt_ci(mean, low, high, len(finite), task.metric)),
                _spans(fmt_metric(_median(runs.values), task.metric) if n else "—"),
                _spans(fmt_metric(_median(best), task.metric) if best else "—"),
                _spans(steps_text),
                _spans(time_text),
                _spans(fmt_number(_median(areas)) if areas else "—"),
                _spans(f"{runs.n_diverged}/{n}"),
            ]
        )
    return Table(table_headers(task.metric), rows)


def _task_section(task: TaskView, colors: dict[str, Any], figures: Path) -> list[Block]:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", task.name)
    better = "higher" if task.mode == "max" else "lower"
    target = "none" if task.target is None else fmt_metric(task.target, task.metric)
    blocks: list[Block] = [
        Heading(2, f"Task: {task.name}"),
        Paragraph(
            _spans(
                f"Metric: {task.metric} ({better} is better); target for steps- and time-to-target: {target}; "
                f"kind: {task.kind}."
            )
        ),
    ]
    winner, sentence = _winner(task)
    blocks.append(_summary_table(task, winner))
    blocks.append(Paragraph(_spans(Span(sentence, bold=winner is not None))))
    reasons = [
        _spans(Span(runs.name, code=True), f" seed {_seed(t)}: {t.run.diverged_reason}")
        for runs in task.runs
        for t in runs.finals
        if t.run is not None and t.run.diverged_reason
    ]
    if reasons:  # why each diverged rerun stopped (a non-finite loss, gradient or metric, and when)
        blocks += [Paragraph(_spans("Diverged reruns, and why they stopped:")), Bullets(reasons)]
    blocks.append(
        Paragraph(
            _spans(
                "Final test metric: over the seeds that did not diverge (a diverged rerun scores the worst value, "
                "which the median and the winner rule include)"
                + (", interval clipped to 0-100%. " if task.metric == "accuracy" else ". ")
                + "Median and best: over seeds; best is each rerun's "
                "best evaluation. Steps and time to target: median over seeds of the first evaluation reaching the "
                "target (how many seeds reached it in brackets). Train-loss AUC: median over seeds of the area "
                "under the training loss against the fraction of training done (lower is faster)."
            )
        )
    )
    bursts = any(t.run is not None and t.run.events.get("burst") for runs in task.runs for t in runs.finals)
    for key, what, x_note in (
        ("step", "step", ""),
        ("wall_time", "wall time", " (x: the seeds' mean wall time at each evaluation)"),
    ):
        name = f"{slug}_curves_{'step' if key == 'step' else 'time'}.png"
        _curves_figure(task, colors, key, figures / name)
        blocks.append(
            Image(
                f"{FIGURES}/{name}",
                f"{task.name}: test {task.metric} vs {what}",
                f"Test {task.metric} against {what}{x_note}: mean over the non-diverged seeds, band = 95% CI"
                + (" (clipped to 0-100%); " if task.metric == "accuracy" else "; ")
                + "dashed horizontal line = target"
                + ("; dotted vertical lines mark Adaburst's burst restarts." if bursts else "."),
            )
        )
    name = f"{slug}_lr_sensitivity.png"
    _sensitivity_figure(task, colors, figures / name)
    trials = sum(len(r.tune) for r in task.runs)
    pruned = sum(t.state == "pruned" for r in task.runs for t in r.tune)
    blocks.append(
        Image(
            f"{FIGURES}/{name}",
            f"{task.name}: learning-rate sensitivity",
            f"Validation {task.metric} of every tuning trial ({trials} trials, {pruned} pruned) against its learning "
            "rate; hollow markers are pruned trials (their last reported value), crosses on the edge diverged.",
        )
    )
    if task.kind == "function":
        name = f"{slug}_trajectories.png"
        if _trajectory_figure(task, colors, figures / name):
            blocks.append(
                Image(
                    f"{FIGURES}/{name}",
                    f"{task.name}: optimizer trajectories",
                    "The path of each optimizer's seed-1 rerun over the function's contours; "
                    "circle = start, star = minimum.",
                )
            )
    name = f"{slug}_update_magnitudes.png"
    if _update_magnitude_figure(task, colors, figures / name):
        blocks.append(
            Image(
                f"{FIGURES}/{name}",
                f"{task.name}: update magnitudes per epoch",
                "Mean |Δθ| per step in each epoch, averaged over the weight layers and the seeds (log scale).",
            )
        )
    return blocks


def _protocol_blocks(
    experiment: str, config: dict[str, Any], tasks: list[TaskView], optimizers: list[str], records: list[PairResults]
) -> list[Block]:
    from optarena.arena import protocol
    from optarena.arena.variants import parse_variant, resolve
    from optarena.optim import get_optimizer_info

    seeds = config.get("seeds")
    trials = config.get("trials")
    epochs_by_task: dict[str, str] = {}
    for task in tasks:
        epochs = config.get("epochs")
        if epochs is None:
            observed = [r[-1]["epoch"] for runs in task.runs for r in runs.records()]
            epochs = int(max(observed)) if observed else "task default"
        epochs_by_task[task.name] = str(epochs)
    epochs_text = (
        next(iter(epochs_by_task.values()))
        if len(set(epochs_by_task.values())) == 1
        else "; ".join(f"{k}: {v}" for k, v in epochs_by_task.items())
    )
    # Describe the sampler and pruner by building them as the protocol does, so the text cannot drift.
    namespace = SimpleNamespace(**config)
    try:
        sampler = protocol.make_sampler(namespace, int(trials))  # type: ignore[arg-type]
        startup = getattr(sampler, "_n_startup_trials", "?")
        sampler_text = (
            f"{type(sampler).__name__} (seed {config.get('sampler_seed')}, {startup} random startup trials), "
            "the same for every optimizer"
        )
    except Exception:  # an old or foreign store: say what the config says
        sampler_text = f"seed {config.get('sampler_seed')}"
    pruners = []
    for task in tasks:
        try:
            epochs = int(epochs_by_task[task.name])
            pruner = protocol.make_pruner(namespace, epochs)  # type: ignore[arg-type]
        except Exception:
            pruners.append("prune" if config.get("prune") else "none")
            continue
        if type(pruner).__name__ == "NopPruner":
            pruners.append("none")
        else:
            pruners.append(
                f"{type(pruner).__name__} ({getattr(pruner, '_n_startup_trials', '?')} startup trials, "
                f"warm-up: {getattr(pruner, '_n_warmup_steps', '?')} epoch(s))"
            )
    pruner_text = pruners[0] if len(set(pruners)) == 1 else "; ".join(f"{t.name}: {p}" for t, p in zip(tasks, pruners))

    finals = [t for r in records for t in r.final]
    devices = sorted({str(t.run.device if t.run is not None and t.run.device is not None else "?") for t in finals})
    threads = sorted({str(t.run.threads if t.run is not None and t.run.threads is not None else "?") for t in finals})
    loads = [t.run.load_average[0] for t in finals if t.run is not None and t.run.load_average]
    load_text = (
        f"1-minute load average when each rerun started: min {min(loads):.2f}, median {_median(loads):.2f}, "
        f"max {max(loads):.2f}"
        if loads
        else "load average not recorded"
    )
    versions: dict[str, set[str]] = {}
    for record in records:
        for key, value in (record.config.versions if record.config is not None else {}).items():
            versions.setdefault(key, set()).add(str(value))
    version_text = ", ".join(f"{k} {' / '.join(sorted(v))}" for k, v in sorted(versions.items())) or "not recorded"

    blocks: list[Block] = [
        Heading(1, f"optarena report: {experiment}"),
        Paragraph(_spans(Span("Warning:", bold=True), " " + WARNING), css="warning"),
        Bullets(
            [
                _spans("Experiment: ", Span(experiment, code=True)),
                _spans("Tasks: ", *_joined_code([t.name for t in tasks])),
                _spans("Optimizers: ", *_joined_code(optimizers)),
                _spans(
                    f"Protocol: {trials} tuning trials per optimizer on seed 0, scored on the final validation "
                    f"metric; the best configuration rerun on seeds 1..{seeds}, scored on the test split"
                ),
                _spans(f"Epochs: {epochs_text}"),
                _spans(f"Sampler: {sampler_text}"),
                _spans(f"Pruner: {pruner_text}"),
                _spans(f"Versions: {version_text}"),
                _spans(
                    f"Timings: device {', '.join(devices) or '?'}, {', '.join(threads) or '?'} thread(s), {load_text}. "
                    "Wall-time comparisons hold only within this run on this machine."
                ),
            ]
        ),
        Heading(3, "Search space (lr log-uniform, plus each optimizer's own knobs)"),
    ]
    rows = []
    declared = config.get("variants") or {}
    for name in optimizers:
        try:
            variant = parse_variant(name, declared[name]) if name in declared else resolve(name)
        except ValueError:
            rows.append([_spans(Span(name, code=True)), _spans("not registered"), _spans("—"), _spans("—")])
            continue
        low, high = get_optimizer_info(variant.optimizer).lr_range
        knobs = "; ".join(f"{k} ∈ {_fmt_space(spec)}" for k, spec in variant.search_space().items()) or "none"
        lr_text = f"[{fmt_param(low)}, {fmt_param(high)}] log"
        rows.append([_spans(Span(name, code=True)), _spans(lr_text), _spans(knobs), _spans(variant.describe())])
    blocks.append(Table(["Optimizer", "lr range", "Knobs", "Fixed"], rows))
    return blocks


def _joined_code(names: Sequence[str]) -> list[Span]:
    out: list[Span] = []
    for i, name in enumerate(names):
        if i:
            out.append(Span(", "))
        out.append(Span(name, code=True))
    return out


def _across_tasks(tasks: list[TaskView], optimizers: list[str], colors: dict[str, Any], figures: Path) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Across tasks")]
    costs = {}
    for task in tasks:
        if task.target is None:
            continue
        row = {}
        for runs in task.runs:
            curves = runs.records(include_diverged=True)
            if curves:
                row[runs.name] = _median([stats.steps_to_target(c, task.target, task.mode) for c in curves])
        if row:
            costs[task.name] = row
    if costs:
        _profile_figure(costs, colors, figures / "performance_profile.png")
        blocks.append(
            Image(
                f"{FIGURES}/performance_profile.png",
                "Performance profile: steps to target",
                "For each optimizer, the fraction of tasks on which its median steps-to-target is within τ times "
                "the best optimizer's; a task no optimizer solved counts as unsolved for all.",
            )
        )
        if not any(math.isfinite(cost) for row in costs.values() for cost in row.values()):
            blocks.append(Paragraph(_spans("No optimizer reached the target on any task, so every profile is 0.")))
    else:
        blocks.append(Paragraph(_spans("No task has a target and a rerun: no performance profile.")))
    if BETA2_OPTIMIZERS & set(optimizers):
        _beta2_figure(figures / "beta2.png")
        blocks.append(
            Image(
                f"{FIGURES}/beta2.png",
                "Effective second-moment decay",
                "1 − β̂2(t), the weight each method gives the newest squared gradient, on log-log axes: Adam's "
                "levels off at 1 − β2, Adafactor's falls as t^−0.8, AdaX's and AdamNX's fall towards 0 (their "
                "preconditioner freezes); AdaX with β = 1e-4 all but coincides with AdamNX with β2 = 0.99, "
                "as β = β2^−(1−β2) − 1 makes them equal.",
            )
        )
    return blocks


# --- entry point ---------------------------------------------------------------------------------------------


def _collect(results: ExperimentResults) -> tuple[dict[str, Any], list[TaskView], list[str]]:
    pairs = results.pairs
    configs = [
        pairs[key].config.experiment for key in sorted(pairs) if pairs[key].config and pairs[key].config.experiment
    ]
    config: dict[str, Any] = dict(configs[0]) if configs else {}
    task_names = _ordered(config.get("tasks", []), (t for t, _ in pairs))
    optimizers = _ordered(config.get("optimizers", []), (o for _, o in pairs))
    tasks = []
    for task_name in task_names:
        found = next((pairs[k].config for k in sorted(pairs) if k[0] == task_name and pairs[k].config), None)
        info = found.task if found is not None else TaskInfo()
        view = TaskView(task_name, info.metric, info.mode, info.target, info.kind)
        for optimizer in optimizers:
            pair = pairs.get((task_name, optimizer))
            if pair is not None:
                finals = sorted(pair.final, key=_seed)
                tune = sorted(pair.tune, key=lambda t: t.number)
                view.runs.append(OptimizerRuns(optimizer, tune, finals, info.mode))
        tasks.append(view)
    return config, tasks, optimizers


def build_report(storage_url: str, experiment: str, out_dir: Path) -> Path:
    """Write ``report.md``, ``report.html`` and ``figures/*.png`` for ``experiment`` into ``out_dir``.

    Returns the path of ``report.md``. PNGs left in ``out_dir/figures`` by an earlier build are removed
    first, so the folder holds exactly the figures the new report shows.
    """
    results = load_results(storage_url, experiment)
    if not results.pairs:
        known = ", ".join(list_experiments(storage_url)) or "none"
        raise ValueError(f"Unknown experiment {experiment!r} in {storage_url}; experiments there: {known}")
    out_dir = Path(out_dir)
    figures = out_dir / FIGURES
    figures.mkdir(parents=True, exist_ok=True)
    for stale in figures.glob("*.png"):
        stale.unlink()

    config, tasks, optimizers = _collect(results)
    colors = _colors(optimizers)
    pairs = [results.pairs[k] for k in sorted(results.pairs)]
    blocks = _protocol_blocks(experiment, config, tasks, optimizers, pairs)
    for task in tasks:
        blocks += _task_section(task, colors, figures)
    blocks += _across_tasks(tasks, optimizers, colors, figures)

    md_path = out_dir / "report.md"
    md_path.write_text(render_markdown(blocks), encoding="utf-8")
    (out_dir / "report.html").write_text(render_html(blocks, f"optarena report: {experiment}"), encoding="utf-8")
    return md_path
