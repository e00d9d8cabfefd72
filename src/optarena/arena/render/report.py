"""The arena's report: Markdown and HTML pages with figures, built from the results store alone.

``build_report(storage_url, experiment, out_dir)`` reads every (task, optimizer) pair of
``experiment`` (:func:`optarena.arena.study.records.load_results`) and writes ``report.md``,
``report.html`` (the same content, self-contained: inline CSS, figures as relative
``figures/*.png`` links) and the figures themselves. The page is one list of blocks
(:mod:`optarena.arena.render.document`): the protocol, then per task its summary table, the winner
rule's verdict and its figures (:data:`optarena.arena.render.figures.TASK_FIGURES`), then the
figures across tasks. Nothing time-dependent goes into the text: rebuilding from the same store
gives the same ``report.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from optarena.arena.analysis.views import (
    ExperimentView,
    OptimizerRuns,
    Ranking,
    TaskView,
    collect,
    environment,
    epochs_run,
    median,
    rank,
    seed_of,
    summarize,
)
from optarena.arena.render import figures
from optarena.arena.render.document import (
    Block,
    Bullets,
    Heading,
    Inline,
    Paragraph,
    Span,
    Table,
    render_html,
    render_markdown,
    spans,
)
from optarena.arena.render.formatting import (
    fmt_ci,
    fmt_metric,
    fmt_number,
    fmt_param,
    fmt_seconds,
    fmt_space,
    fmt_steps,
)
from optarena.arena.render.plotting import Colors, optimizer_colors
from optarena.arena.spec.experiment import tune_seed_list
from optarena.arena.spec.search import describe_pruner, describe_sampler, describe_search_space
from optarena.arena.study.records import load_results
from optarena.arena.study.store import list_experiments

WARNING = (
    "Do not pick an optimizer from one plot, one task or one table: differences that stay inside the "
    "confidence intervals are noise, the tuning budget is small, and a ranking on these tasks need not "
    "carry over to yours."
)


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


def _joined_code(names: Sequence[str]) -> list[Span]:
    out: list[Span] = []
    for i, name in enumerate(names):
        if i:
            out.append(Span(", "))
        out.append(Span(name, code=True))
    return out


# --- the protocol ------------------------------------------------------------------------------------------


def _epochs(view: ExperimentView) -> dict[str, int | None]:
    """Each task's epochs: as configured, else as its reruns ran (None: not known)."""
    configured = view.config.get("epochs")
    return {task.name: configured if configured is not None else epochs_run(task) for task in view.tasks}


def _sampler_text(config: dict) -> str:
    sampler = describe_sampler(config)
    if sampler is None:  # an old or foreign store: say what the configuration says
        return f"seed {config.get('sampler_seed')}"
    if sampler.startup_trials is None:  # QMC: every trial is a point of the scrambled sequence, no start-up phase
        return f"{sampler.name} (seed {sampler.seed}, no random start-up phase), the same for every optimizer"
    startup = sampler.startup_trials
    return f"{sampler.name} (seed {sampler.seed}, {startup} random startup trials), the same for every optimizer"


def _protocol_text(config: dict) -> str:
    """The tuning and rerun protocol the study's stored configuration describes."""
    tune_seeds = tune_seed_list(int(config.get("tune_seeds") or 1))
    on = f"seed {tune_seeds[0]}" if len(tune_seeds) == 1 else f"seeds {', '.join(map(str, tune_seeds))} (mean score)"
    text = f"{config.get('trials')} tuning trials per optimizer, each on {on}, scored on the final validation metric"
    widenings = int(config.get("max_widenings") or 0)
    if widenings:
        text += (
            f"; a log-scale range whose best value sat on an edge widened ×{config.get('widen_factor', 10):g} and "
            f"searched again, up to {widenings} time(s)"
        )
    if config.get("tune_weight_decay"):
        text += "; weight decay tuned"
    if config.get("protocol"):
        text += f" (the {config['protocol']!r} protocol)"
    return text + f"; the best configuration rerun on seeds 1..{config.get('seeds')}, scored on the test split"


def _pruner_text(config: dict, epochs: int | None) -> str:
    pruner = describe_pruner(config, epochs)
    if pruner is None:
        return "none"
    if pruner.warmup_epochs is None:
        return "prune"
    return f"{pruner.name} ({pruner.startup_trials} startup trials, warm-up: {pruner.warmup_epochs} epoch(s))"


def _protocol_blocks(view: ExperimentView) -> list[Block]:
    config = view.config
    epochs = _epochs(view)
    epochs_texts = ["task default" if e is None else str(e) for e in epochs.values()]
    if len(set(epochs_texts)) == 1:
        epochs_text = epochs_texts[0]
    else:
        epochs_text = "; ".join(f"{task}: {text}" for task, text in zip(epochs, epochs_texts))
    pruners = [_pruner_text(config, epochs[task.name]) for task in view.tasks]
    if len(set(pruners)) == 1:
        pruner_text = pruners[0]
    else:
        pruner_text = "; ".join(f"{t.name}: {p}" for t, p in zip(view.tasks, pruners))
    env = environment(view)
    load_text = (
        f"1-minute load average when each rerun started: min {min(env.loads):.2f}, "
        f"median {median(env.loads):.2f}, max {max(env.loads):.2f}"
        if env.loads
        else "load average not recorded"
    )
    version_text = ", ".join(f"{k} {' / '.join(v)}" for k, v in env.versions.items()) or "not recorded"
    blocks: list[Block] = [
        Heading(1, f"optarena report: {view.name}"),
        Paragraph(spans(Span("Warning:", bold=True), " " + WARNING), css="warning"),
        Bullets(
            [
                spans("Experiment: ", Span(view.name, code=True)),
                spans("Tasks: ", *_joined_code([t.name for t in view.tasks])),
                spans("Optimizers: ", *_joined_code(view.optimizers)),
                spans(f"Protocol: {_protocol_text(config)}"),
                spans(f"Epochs: {epochs_text}"),
                spans(f"Sampler: {_sampler_text(config)}"),
                spans(f"Pruner: {pruner_text}"),
                spans(f"Versions: {version_text}"),
                spans(
                    f"Timings: device {', '.join(env.devices) or '?'}, {', '.join(env.threads) or '?'} thread(s), "
                    f"{load_text}. Wall-time comparisons hold only within this run on this machine."
                ),
            ]
        ),
        Heading(3, "Search space (lr log-uniform, plus each optimizer's own knobs)"),
    ]
    rows = []
    declared = config.get("variants") or {}
    for name in view.optimizers:
        space = describe_search_space(name, declared)
        if space is None:  # a variant the store does not describe (an older store): what its trials searched
            rows.append([spans(Span(name, code=True)), *_searched(view, name)])
            continue
        low, high = space.lr_range
        knobs = "; ".join(f"{k} ∈ {fmt_space(spec)}" for k, spec in space.knobs.items()) or "none"
        lr_text = f"[{fmt_param(low)}, {fmt_param(high)}] log"
        rows.append([spans(Span(name, code=True)), spans(lr_text), spans(knobs), spans(space.fixed)])
    blocks.append(Table(["Optimizer", "lr range", "Knobs", "Fixed"], rows))
    return blocks


def _searched(view: ExperimentView, name: str) -> list[Inline]:
    """lr range, knobs and a note for an optimizer whose space the store does not record: from its trials."""
    trials = [t for task in view.tasks for runs in task.runs if runs.name == name for t in runs.tune]
    lrs = sorted({float(t.params["lr"]) for t in trials if "lr" in t.params})
    knobs = sorted({k for t in trials for k in t.params if k != "lr"})
    lr_text = f"tried {fmt_param(lrs[0])} … {fmt_param(lrs[-1])} ({len(lrs)} values)" if lrs else "—"
    return [
        spans(lr_text),
        spans("; ".join(knobs) or "none"),
        spans("a variant this store does not describe: its trials' values"),
    ]


# --- a task -------------------------------------------------------------------------------------------------


def _ranking_sentence(task: TaskView, ranking: Ranking) -> str:
    metric = f"final test {task.metric}"
    if ranking.reason == "too few optimizers":
        return "Fewer than two optimizers have reruns: nothing to rank."
    if ranking.reason == "single seed":
        return f"No optimizer is marked: with a single seed there is no confidence interval of the {metric}."
    if ranking.reason == "overlap":
        return (
            f"No optimizer is separated: the 95% confidence intervals of the {metric} overlap, "
            "so this table does not rank them."
        )
    side = "above" if task.mode == "max" else "below"
    return f"★ {ranking.winner}: its 95% confidence interval of the {metric} lies entirely {side} every other's."


def _config_spans(config: dict) -> Inline:
    if not config:
        return spans("—")
    keys = sorted(config, key=lambda k: (k != "lr", k))  # lr first
    return spans(Span("; ".join(f"{k} = {fmt_param(config[k])}" for k in keys), code=True))


def _summary_row(task: TaskView, runs: OptimizerRuns, winner: str | None) -> list[Inline]:
    s = summarize(task, runs)
    if s.steps_to_target is not None and s.seconds_to_target is not None:
        steps_text = f"{fmt_steps(s.steps_to_target)} ({s.reached}/{s.curves})"
        time_text = fmt_seconds(s.seconds_to_target)
    else:
        steps_text = time_text = "—"
    name = Span(f"★ {runs.name}", bold=True) if runs.name == winner else Span(runs.name)
    return [
        [name],
        _config_spans(runs.configuration()),
        spans(fmt_ci(*s.final, s.finite, task.metric)),
        spans(fmt_metric(s.median_final, task.metric) if s.seeds else "—"),
        spans(fmt_metric(s.median_best, task.metric) if s.median_best is not None else "—"),
        spans(steps_text),
        spans(time_text),
        spans(fmt_number(s.curve_area) if s.curve_area is not None else "—"),
        spans(f"{s.diverged}/{s.seeds}"),
    ]


def _task_section(task: TaskView, colors: Colors, folder: Path) -> list[Block]:
    better = "higher" if task.mode == "max" else "lower"
    target = "none" if task.target is None else fmt_metric(task.target, task.metric)
    if task.target_derived:
        stored = "none" if task.stored_target is None else fmt_metric(task.stored_target, task.metric)
        target += (
            f" (derived from the reruns: the median over the optimizers of each one's median best test {task.metric}; "
            f"the median rerun of fewer than half of them reached the experiment's target, {stored})"
        )
    ranking = rank(task)
    blocks: list[Block] = [
        Heading(2, f"Task: {task.name}"),
        Paragraph(
            spans(
                f"Metric: {task.metric} ({better} is better); target for steps- and time-to-target: {target}; "
                f"kind: {task.kind}."
            )
        ),
        Table(table_headers(task.metric), [_summary_row(task, runs, ranking.winner) for runs in task.runs]),
        Paragraph(spans(Span(_ranking_sentence(task, ranking), bold=ranking.winner is not None))),
    ]
    reasons = [
        spans(Span(runs.name, code=True), f" seed {seed_of(t)}: {t.run.diverged_reason}")
        for runs in task.runs
        for t in runs.finals
        if t.run is not None and t.run.diverged_reason
    ]
    if reasons:  # why each diverged rerun stopped (a non-finite loss, gradient or metric, and when)
        blocks += [Paragraph(spans("Diverged reruns, and why they stopped:")), Bullets(reasons)]
    blocks.append(
        Paragraph(
            spans(
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
    for figure in figures.TASK_FIGURES:
        blocks += figure(task, colors, folder)
    return blocks


# --- the page -----------------------------------------------------------------------------------------------


def report_blocks(view: ExperimentView, folder: Path, colors: Colors | None = None) -> list[Block]:
    """The whole report as blocks, its figures drawn into ``folder`` (``colors``: one per optimizer, to match
    other pages' figures; by default :func:`~optarena.arena.render.plotting.optimizer_colors` in the report's order)."""
    if colors is None or not set(view.optimizers) <= set(colors):
        colors = optimizer_colors(view.optimizers)
    blocks = _protocol_blocks(view)
    for task in view.tasks:
        blocks += _task_section(task, colors, folder)
    blocks.append(Heading(2, "Across tasks"))
    for figure in figures.EXPERIMENT_FIGURES:
        blocks += figure(view, colors, folder)
    return blocks


def build_report(storage_url: str, experiment: str, out_dir: Path, colors: Colors | None = None) -> Path:
    """Write ``report.md``, ``report.html`` and ``figures/*.png`` for ``experiment`` into ``out_dir``
    (``colors``: see :func:`report_blocks`).

    Returns the path of ``report.md``. PNGs left in ``out_dir/figures`` by an earlier build are removed
    first, so the folder holds exactly the figures the new report shows.
    """
    results = load_results(storage_url, experiment)
    if not results.pairs:
        known = ", ".join(list_experiments(storage_url)) or "none"
        raise ValueError(f"Unknown experiment {experiment!r} in {storage_url}; experiments there: {known}")
    out_dir = Path(out_dir)
    folder = out_dir / figures.FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.png"):
        stale.unlink()
    blocks = report_blocks(collect(results), folder, colors)
    md_path = out_dir / "report.md"
    md_path.write_text(render_markdown(blocks), encoding="utf-8")
    (out_dir / "report.html").write_text(render_html(blocks, f"optarena report: {experiment}"), encoding="utf-8")
    return md_path
