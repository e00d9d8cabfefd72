"""The evidence page: the verdicts by paper, what we learned, and the setups, as one Markdown page.

:func:`render` writes the verdicts, the setups, the learning-rate sensitivity of every optimizer
(from its tuning trials, with the report's figure), the compute budget and the claims file's notes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from optarena.arena.analysis.views import collect
from optarena.arena.evidence.claims import Claim
from optarena.arena.evidence.judgement import VERDICTS, Comparison, Judgement, MissingRuns, budget, sensitivity
from optarena.arena.render.figures import draw_lr_sensitivity
from optarena.arena.render.markdown import code_span, link_target
from optarena.arena.render.markdown import text as md
from optarena.arena.render.plotting import optimizer_colors
from optarena.arena.spec.experiment import Experiment
from optarena.arena.study import records
from optarena.arena.tasks import get_task


def sensitivity_figure(experiment: Experiment, task: str, optimizers: Sequence[str], path: Path) -> None:
    """The report's lr-sensitivity plot (every tuning trial) for ``optimizers`` only, in their order."""
    results = records.load_results(experiment.storage_url, experiment.name).select(task, list(optimizers))
    view = collect(results).tasks[0]
    view.runs.sort(key=lambda r: list(optimizers).index(r.name))
    path.parent.mkdir(parents=True, exist_ok=True)
    draw_lr_sensitivity(view, optimizer_colors([r.name for r in view.runs]), path)


def _interval(values: tuple[float, float, float]) -> str:
    mean, low, high = values
    if math.isnan(mean):
        return "—"
    if not math.isfinite(low) or low == high == mean:
        return f"{mean:.4g}"
    return f"{mean:.4g} [{low:.4g}, {high:.4g}]"


def _seeds(cmp: Comparison) -> str:
    text = f"{cmp.n_method}/{cmp.n_baseline}" + (" paired" if cmp.paired else "")
    if cmp.diverged_method or cmp.diverged_baseline:
        text += f" (diverged {cmp.diverged_method}/{cmp.diverged_baseline})"
    return text


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def _setup_line(e: Experiment, path: Path) -> str:
    task = get_task(e.tasks[0])
    if task.kind == "language":
        scored = "its fixed evaluation windows"
    else:
        scored = f"the first {e.eval_subset} examples" if e.eval_subset else "all examples"
    return (
        f"{code_span(path.name)} ({md(e.name)}): {md(', '.join(e.tasks))}; {e.epochs or task.epochs} epochs, "
        f"training subset {e.subset or 'all'}, scored on {scored} of each split; {e.trials} tuning trials "
        f"(sampler {e.sampler}, pruning {'on' if e.prune else 'off'}) and {e.seeds} seeds per optimizer; "
        f"{len(e.optimizers)} optimizers"
    )


def render(
    judgements: Sequence[Judgement],
    title: str = "Re-testing the seed papers' claims",
    notes: str = "",
    figures: Path | None = None,
    page: Path | None = None,
    missing: Sequence[Claim] = (),
) -> str:
    """Markdown: the verdicts by paper, what we learned (tallies, sensitivity, budget, notes), the setups.

    ``missing`` claims (whose experiment has not finished their optimizers) are listed as not run yet.

    With ``figures`` (a folder) an lr-sensitivity figure is drawn per paper and experiment, linked
    relative to ``page`` (where the markdown will be written).
    """
    lines = [
        f"# {md(title)}",
        "",
        "Each claim is re-tested with `optarena compare` under the equal-budget protocol (docs/arena.md): the "
        "same tuning budget and sampler for method and baseline, then the best configuration rerun on fresh "
        "seeds. Numbers are the claim's metric (test accuracy, or nats per character for Shakespeare, unless the "
        "claim says otherwise), mean [95% t interval] over seeds. Method and baseline rerun the same seeds (a seed "
        "fixes the initial weights and the batch order), so their difference is paired by seed: the 95% t interval "
        "of the per-seed differences (Welch's interval where seeds do not match). The verdict reads it: wholly on "
        "the better side, confirmed; wholly on the worse side, not confirmed; across zero, inconclusive. Every "
        "study that was run is here, including those that contradict the papers.",
        "",
    ]
    papers = list(dict.fromkeys(j.claim.paper for j in judgements))
    for paper in papers:
        lines += [
            f"## {md(paper)}",
            "",
            "| claim | paper's result (paper's setup) | our setup | method | baseline | difference (better > 0) "
            "| unpaired (Welch), for reference | seeds | verdict |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for j in (j for j in judgements if j.claim.paper == paper):
            c, cmp = j.claim, j.comparison
            paper_text = c.paper_result + (f" ({c.paper_setup})" if c.paper_setup else "")
            cells = (
                f"{c.id}: {c.claim}",
                paper_text,
                f"{c.task}, {c.measure} ({c.experiment.name})",
                f"{c.method} {_interval(cmp.method)}",
                f"{c.baseline} {_interval(cmp.baseline)}",
                _interval(cmp.difference),
                _interval(cmp.welch),
                _seeds(cmp),
            )
            lines.append("| " + " | ".join(md(cell, in_table=True) for cell in cells) + f" | **{cmp.verdict}** |")
        lines.append("")

    if missing:
        lines += [
            "## Not run yet",
            "",
            "The stores hold no reruns yet for these claims (finish them with `--run`):",
            "",
        ]
        lines += [
            f"- {md(c.id)} ({md(c.paper)}): {md(c.method)} vs {md(c.baseline)} in {code_span(c.experiment.name)}"
            for c in missing
        ]
        lines.append("")
    lines += ["## What we learned", "", "### Verdicts", ""]
    for paper in papers:
        mine = [j for j in judgements if j.claim.paper == paper]
        tally = {v: [j.claim.id for j in mine if j.comparison.verdict == v] for v in VERDICTS}
        parts = [f"{v} {len(ids)} ({md(', '.join(ids))})" for v, ids in tally.items() if ids]
        lines.append(f"- **{md(paper)}**: " + "; ".join(parts) + ".")
    lines += [""]
    if notes.strip():
        lines += [notes.strip(), ""]

    lines += [
        "### Learning-rate sensitivity",
        "",
        "Every optimizer's tuning trials spread its learning rate (and its own knobs) over the whole search range "
        "(scrambled Sobol points), so the spread of their validation scores is how much the method punishes a "
        "poorly chosen learning rate: a small gap between the best and the median trial means a forgiving method.",
        "",
    ]
    experiments: dict[Path, tuple[Experiment, list[Judgement]]] = {}
    for j in judgements:
        experiments.setdefault(j.claim.experiment, (j.experiment, []))[1].append(j)
    for path, (experiment, group) in experiments.items():
        for task in dict.fromkeys(j.claim.task for j in group):
            metric = get_task(task).metric
            lines += [
                f"**{md(task)}** ({md(path.name)}; validation {md(metric)} of the tuning trials)",
                "",
                "| optimizer | trials | best | median | worst | diverged | best lr |",
                "|---|---|---|---|---|---|---|",
            ]
            names = list(
                dict.fromkeys(n for j in group if j.claim.task == task for n in (j.claim.method, j.claim.baseline))
            )
            for name in names:
                try:
                    s = sensitivity(experiment, task, name)
                except MissingRuns:
                    continue
                lines.append(
                    f"| {md(name, in_table=True)} | {s.trials} | {s.best:.4g} | {s.median:.4g} | {s.worst:.4g} | "
                    f"{s.diverged} | "
                    f"{s.best_lr:.3g} |"
                )
            lines.append("")
            if figures is not None:
                for paper in dict.fromkeys(j.claim.paper for j in group if j.claim.task == task):
                    chosen = list(dict.fromkeys(
                        n for j in group if j.claim.task == task and j.claim.paper == paper
                        for n in (j.claim.method, j.claim.baseline)
                    ))  # fmt: skip
                    figure = figures / f"sensitivity-{_slug(experiment.name)}-{_slug(paper)}.png"
                    sensitivity_figure(experiment, task, chosen, figure)
                    link = figure.relative_to(page.parent) if page is not None else figure
                    alt = md(f"{paper} on {task}: lr sensitivity".replace("[", "(").replace("]", ")"))
                    lines += [f"![{alt}]({link_target(link.as_posix())})", ""]

    lines += [
        "### Budget",
        "",
        "| experiment | runs (tuning + reruns) | compute (sum of run times) | device | threads per run |",
        "|---|---|---|---|---|",
    ]
    for path, (experiment, _) in experiments.items():
        b = budget(experiment)
        cells = (path.name, str(b.runs), f"{b.seconds / 3600:.2f} h", ", ".join(b.devices), ", ".join(b.threads))
        lines.append("| " + " | ".join(md(cell, in_table=True) for cell in cells) + " |")
    lines += ["", "## Setups", ""]
    for path, (experiment, _) in experiments.items():
        where = experiment.storage or f"{experiment.out.as_posix()}/optarena.db (SQLite)"
        lines.append(f"- {_setup_line(experiment, path)}; store {code_span(where)}.")
    return "\n".join(lines) + "\n"
