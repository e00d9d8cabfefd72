"""The evidence page: the forest plot and verdicts first, then one section per seed paper, as one Markdown page.

:func:`render` corrects the verdicts across the page (Holm, :func:`~optarena.arena.evidence.judgement.correct`),
draws the forest plot, writes the per-seed values (a CSV beside the page), and gives each paper its claims,
small-multiple curves, burst events, AGR's measured change where recorded, time to a data-derived target,
and learning-rate sensitivity; then what is not re-tested, the budgets, the hand-written commentary (marked
as such) and the setups as the stores recorded them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optarena.arena.analysis.views import collect
from optarena.arena.evidence import agr_change, sections
from optarena.arena.evidence import figures as evidence_figures
from optarena.arena.evidence.claims import Claim, Untested
from optarena.arena.evidence.judgement import ALPHA, POWER, VERDICTS, Comparison, Judgement, correct, measured
from optarena.arena.render.figures import draw_lr_sensitivity
from optarena.arena.render.markdown import code_span, link_target
from optarena.arena.render.markdown import text as md
from optarena.arena.spec.experiment import Experiment
from optarena.arena.study import records
from optarena.arena.tasks import get_task

PER_SEED_CSV = "claims-per-seed.csv"


def sensitivity_figure(
    experiment: Experiment, task: str, optimizers: Sequence[str], path: Path, colors: dict[str, Any] | None = None
) -> None:
    """The report's lr-sensitivity plot (every tuning trial) for ``optimizers`` only, in their order."""
    results = records.load_results(experiment.storage_url, experiment.name).select(task, list(optimizers))
    view = collect(results).tasks[0]
    view.runs.sort(key=lambda r: list(optimizers).index(r.name))
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [r.name for r in view.runs]
    chosen = colors or evidence_figures.palette(names)
    draw_lr_sensitivity(view, {name: chosen[name] for name in names}, path)


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


def _p(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2g}"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def _link(path: Path, page: Path | None) -> str:
    return link_target((path.relative_to(page.parent) if page is not None else path).as_posix())


def _effect(claim: Claim) -> str:
    return "none" if claim.paper_effect is None else f"{claim.paper_effect:+.4g}"


def _bound_text(claim: Claim) -> str:
    confirm = {"superiority": "> 0", "relevance": f"> {claim.margin:.4g}", "non-inferiority": f"> −{claim.margin:.4g}"}
    return f"{claim.rule} ({confirm[claim.rule]}); refuted below {claim.refute_bound:+.4g}"


def _setup_line(path: Path, experiment: Experiment, protocol: dict[str, Any]) -> str:
    task = get_task(experiment.tasks[0])
    eval_subset = protocol.get("eval_subset", experiment.eval_subset)
    if task.kind == "language":
        scored = "its fixed evaluation windows"
    else:
        scored = f"the first {eval_subset} examples" if eval_subset else "all examples"
    tune_seeds = protocol.get("tune_seeds")
    tuned_on = f"{tune_seeds} seeds" if tune_seeds else "seed 0"
    return (
        f"{code_span(path.name)} ({md(experiment.name)}), as its store recorded it: {md(', '.join(experiment.tasks))}; "
        f"{protocol.get('epochs') or task.epochs} epochs, training subset {protocol.get('subset') or 'all'}, scored "
        f"on {scored} of each split; {protocol.get('trials', '?')} tuning trials on {tuned_on} (sampler "
        f"{protocol.get('sampler', '?')}, sampler seed {protocol.get('sampler_seed', '?')}, pruning "
        f"{'on' if protocol.get('prune') else 'off'}) and {protocol.get('seeds', '?')} seeds per optimizer; "
        f"{len(protocol.get('optimizers', experiment.optimizers))} optimizers"
    )


def _intro() -> list[str]:
    return [
        "Each claim is re-tested with `optarena compare`: the same tuning budget and sampler for method and baseline, "
        "then each one's best configuration rerun on fresh seeds. Method and baseline rerun the same seeds (a seed "
        "fixes the initial weights and the batch order), so the difference is paired by seed (Welch's statistics "
        "where the seeds do not match), oriented so that positive favours the method, in the claim's metric. Every "
        "claim was registered in the claims file with its metric, direction, the paper's effect, a margin of "
        "practical relevance and a rule. Verdicts, from two one-sided t tests per claim at α = "
        f"{ALPHA:g} each (the 95% two-sided interval read on one side), Holm-corrected over the {{n}} claims of "
        "this page, separately for the confirming and the refuting tests:",
        "",
        "- **confirmed**: the difference lies above the rule's bound (0 for superiority, the margin for relevance, "
        "−margin for non-inferiority): Holm-adjusted p (confirm) < " + f"{ALPHA:g}; and for superiority the 95% "
        "interval reaches the margin (a difference wholly below the margin is not practically relevant);",
        "- **refuted**: otherwise, where it lies below the paper's effect (the margin where the paper gives no "
        "number; −margin for non-inferiority), a TOST-style reading: the interval excludes what the paper claims; "
        f"Holm-adjusted p (refute) < {ALPHA:g};",
        "- **underpowered**: neither; MDE is the minimum detectable effect at this number of seeds, "
        f"(t(1 − α/2, n − 1) + t({POWER:g}, n − 1)) · sd/√n with α = 0.05 and power {POWER:g}, sd the per-seed "
        "differences' standard deviation.",
        "",
    ]


def render(
    judgements: Sequence[Judgement],
    title: str = "Re-testing the seed papers' claims",
    commentary: str = "",
    figures: Path | None = None,
    page: Path | None = None,
    missing: Sequence[Claim] = (),
    untested: Sequence[Untested] = (),
    colors: dict[str, Any] | None = None,
) -> str:
    """Markdown: forest plot and verdicts, the papers' sections, what is not re-tested, budgets, commentary, setups.

    ``missing`` claims (whose experiment has not finished their optimizers) are listed as not run yet. With
    ``figures`` (a folder) the figures and the per-seed CSV are written there, linked relative to ``page``.
    ``colors``: one per optimizer (by default :func:`~optarena.arena.evidence.figures.palette` of the claims').
    """
    judgements = correct(judgements)
    results: dict[str, records.ExperimentResults] = {}
    experiments: dict[Path, Experiment] = {}
    for j in judgements:
        experiments.setdefault(j.claim.experiment, j.experiment)
        if j.experiment.name not in results:
            results[j.experiment.name] = records.load_results(j.experiment.storage_url, j.experiment.name)
    names = [n for j in judgements for n in (j.claim.method, j.claim.baseline)]
    if colors is None or not set(names) <= set(colors):
        colors = evidence_figures.palette(names)
    lines = [f"# {md(title)}", "", *(s.replace("{n}", str(len(judgements))) for s in _intro())]
    protocols = {path: _protocol(results[e.name]) for path, e in experiments.items()}
    recorded = [
        p.config is not None and getattr(p.config, "budget", None) is not None
        for r in results.values()
        for p in r.pairs.values()
    ]
    if not any(recorded):
        lines += [
            "**The stores were run under the old protocol.** They predate the budget record and the pre-registered "
            "margins: each optimizer was tuned with the trials listed under Setups (the tuning grid as stored: the "
            "sensitivity tables count the distinct learning rates each optimizer tried), and no study records its "
            "budget.",
            "",
        ]
    else:
        lines += [f"The protocol's budget is recorded by {sum(recorded)} of the {len(recorded)} studies.", ""]
    lines += ["## All claims", ""]
    tally = {v: sum(j.verdict == v for j in judgements) for v in VERDICTS}
    lines += [", ".join(f"{v}: {k}" for v, k in tally.items()) + f" (of {len(judgements)} claims).", ""]
    if figures is not None and judgements:
        forest = figures / "forest.png"
        rows = [
            dict(id=j.claim.id, difference=j.comparison.difference, margin=j.claim.margin,
                 paper_effect=j.claim.paper_effect, verdict=j.verdict, rule=j.claim.rule)
            for j in judgements
        ]  # fmt: skip
        evidence_figures.forest(rows, forest)
        lines += [
            f"![forest plot of every claim]({_link(forest, page)})",
            "",
            "*Each claim's paired difference (dot) and 95% interval (bar) in units of its margin, coloured by verdict; "
            "diamond = the paper's effect, dashed = ± margin, tick = the non-inferiority bound.*",
            "",
        ]
        sections.per_seed_csv(judgements, figures.parent / PER_SEED_CSV)
        csv_link = _link(figures.parent / PER_SEED_CSV, page)
        lines += [f"Per-seed values of every claim: [{PER_SEED_CSV}]({csv_link}).", ""]
    lines += [
        "| claim | metric, rule | paper's effect | margin | difference [95% CI] | seeds | p confirm (Holm) "
        "| p refute (Holm) | MDE | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for j in judgements:
        c, cmp = j.claim, j.comparison
        cells = (c.id, f"{c.measure}; {_bound_text(c)}", _effect(c), f"{c.margin:.4g}", _interval(cmp.difference),
                 _seeds(cmp), f"{_p(cmp.p_confirm)} ({_p(j.p_confirm_holm)})",
                 f"{_p(cmp.p_refute)} ({_p(j.p_refute_holm)})", f"{cmp.mde:.3g}")  # fmt: skip
        lines.append(sections.row(cells)[:-1] + f"| **{j.verdict}** |")
    lines.append("")
    if missing:
        lines += ["## Not run yet", "", "The stores hold none, or not all, of the reruns their studies planned for "
                  "these claims (a study still running; finish them with `--run`):"]  # fmt: skip
        lines.append("")
        lines += [f"- {md(c.id)} ({md(c.paper)}): {md(c.method)} vs {md(c.baseline)} in {code_span(c.experiment.name)}"
                  for c in missing]  # fmt: skip
        lines.append("")
    for paper in dict.fromkeys(j.claim.paper for j in judgements):
        mine = [j for j in judgements if j.claim.paper == paper]
        lines += _paper_section(paper, mine, results, colors, figures, page)
    if untested:
        lines += ["## Not re-tested", "", "Claims of the seeds that no study here re-tests, and why:", ""]
        lines += sections.untested_lines(untested)
    lines += ["## Budget", "", *sections.budget_lines(experiments)]
    if commentary.strip():
        lines += ["## Commentary (hand-written, not generated from the stores)", "", commentary.strip(), ""]
    lines += ["## Setups", ""]
    for path, experiment in experiments.items():
        where = experiment.storage or f"{experiment.out.as_posix()}/optarena.db (SQLite)"
        lines.append(f"- {_setup_line(path, experiment, protocols[path])}; store {code_span(where)}.")
    return "\n".join(lines) + "\n"


def _protocol(results: records.ExperimentResults) -> dict[str, Any]:
    """The settings the store's studies recorded (the grown experiment's: the one naming most optimizers), with
    the optimizers the store holds; a setting the studies disagree on lists every value."""
    configs = [p.config.experiment for p in results.pairs.values() if p.config is not None and p.config.experiment]
    if not configs:
        return {}
    protocol = dict(max(configs, key=lambda c: len(c.get("optimizers", []))))
    for key in ("trials", "seeds", "tune_seeds", "epochs", "subset", "eval_subset", "sampler", "sampler_seed"):
        values = list(dict.fromkeys(str(c.get(key)) for c in configs if c.get(key) is not None))
        if len(values) > 1:
            protocol[key] = " or ".join(values)
    protocol["optimizers"] = list(dict.fromkeys(o for _, o in results.pairs))
    return protocol


def _paper_section(
    paper: str,
    group: Sequence[Judgement],
    results: dict[str, records.ExperimentResults],
    colors: dict[str, Any],
    figures: Path | None,
    page: Path | None,
) -> list[str]:
    lines = [
        f"## {md(paper)}",
        "",
        "| claim | paper's result (setup) | the paper's effect, from | our setup | method | baseline "
        "| difference (better > 0) | unpaired (Welch), for reference | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for j in group:
        c, cmp = j.claim, j.comparison
        cells = (f"{c.id}: {c.claim}", c.paper_result + (f" ({c.paper_setup})" if c.paper_setup else ""),
                 f"{_effect(c)}: {c.paper_effect_source}", f"{c.task}, {c.measure} ({c.experiment.name})",
                 f"{c.method} {_interval(cmp.method)}", f"{c.baseline} {_interval(cmp.baseline)}",
                 _interval(cmp.difference), _interval(cmp.welch))  # fmt: skip
        lines.append(sections.row(cells)[:-1] + f"| **{j.verdict}** |")
    lines.append("")
    tally = {v: [j.claim.id for j in group if j.verdict == v] for v in VERDICTS}
    parts = [f"{v} {len(ids)} ({md(', '.join(ids))})" for v, ids in tally.items() if ids]
    lines += ["Verdicts: " + "; ".join(parts) + ".", ""]
    commented = [j.claim for j in group if j.claim.commentary]
    if commented:
        lines += ["Commentary (hand-written):", ""] + [f"- {md(c.id)}: {md(c.commentary)}" for c in commented] + [""]
    by_task: dict[tuple[str, str], list[Judgement]] = {}
    for j in group:
        by_task.setdefault((j.experiment.name, j.claim.task), []).append(j)
    if figures is not None:
        panels = []
        for (name, task), js in by_task.items():
            for j in js:
                c = j.claim
                at_step = _step_of_epoch(results[name], task, c.method, c.at_epoch) if c.at_epoch else None
                column, _ = measured(c, get_task(task))  # a recorded measurement (FID) is plotted where it was taken
                panels.append(
                    dict(title=f"{c.id} ({task})", experiment=name, task=task, key=column or f"{c.split}_metric",
                         optimizers=[c.method, c.baseline], ylabel=c.metric, at_step=at_step)
                )  # fmt: skip
        path = figures / f"curves-{_slug(paper)}.png"
        evidence_figures.small_multiples(panels, results, colors, path)
        lines += [
            f"![{md(paper.replace('[', '(').replace(']', ')'))}: the claims' curves]({_link(path, page)})",
            "",
            "*One panel per claim: the claim's metric over training (mean and 95% band over seeds) for its method and "
            "baseline; dashed vertical line = the epoch an early claim reads; dotted vertical lines = burst restarts.*",
            "",
        ]
    bursts: list[str] = []
    agr: list[str] = []
    costs: dict[str, dict[str, float]] = {}
    target_text: list[str] = []
    for (name, task), js in by_task.items():
        optimizers = list(dict.fromkeys(n for j in js for n in (j.claim.method, j.claim.baseline)))
        bursts += sections.burst_lines(results[name], task, optimizers)
        agr += sections.agr_lines(results[name], task, optimizers)
        table, cost = sections.target_lines(results[name], task, optimizers)
        target_text += table
        if cost:
            costs[f"{name}/{task}"] = cost
    if any("adaburst" in j.claim.method for j in group):
        lines += ["### Burst events", ""]
        lines += bursts or ["No Adaburst rerun in these stores recorded a burst event.", ""]
    agr_tasks = [(key, js) for key, js in by_task.items() if any("agr" in j.claim.method for j in js)]
    if agr_tasks:
        lines += ["### AGR's relative change", "", *agr]
        if not agr:
            tasks = ", ".join(task for (_, task), _ in agr_tasks)
            lines += [f"The stores do not record AGR's relative change over training ({md(tasks)}).", ""]
        lines += _measured_agr(agr_tasks)
    if target_text:
        lines += ["### Time to target", "", f"Rule: {sections.TARGET_RULE}.", "", *target_text]
        if figures is not None and costs:
            path = figures / f"profile-{_slug(paper)}.png"
            evidence_figures.profiles(costs, colors, path, f"{paper}: performance profiles over {len(costs)} task(s)")
            lines += [f"![{md(paper.replace('[', '(').replace(']', ')'))}: performance profiles]({_link(path, page)})",
                      ""]  # fmt: skip
    lines += ["### Learning-rate sensitivity", ""]
    for (name, task), js in by_task.items():
        optimizers = list(dict.fromkeys(n for j in js for n in (j.claim.method, j.claim.baseline)))
        lines += sections.sensitivity_lines(js, task, optimizers)
        if figures is not None:
            path = figures / f"sensitivity-{_slug(name)}-{_slug(paper)}.png"
            sensitivity_figure(js[0].experiment, task, optimizers, path, colors)
            lines += [f"![{md(f'{paper} on {task}: lr sensitivity'.replace('[', '(').replace(']', ')'))}]"
                      f"({_link(path, page)})", ""]  # fmt: skip
    return lines


def _step_of_epoch(results: records.ExperimentResults, task: str, optimizer: str, epoch: int) -> float | None:
    pair = results.pairs.get((task, optimizer))
    for trial in pair.final if pair is not None else []:
        for row in trial.run.rows if trial.run is not None else []:
            if int(row["epoch"]) == epoch:
                return float(row["step"])
    return None


def _measured_agr(agr_tasks: Sequence[tuple[tuple[str, str], Sequence[Judgement]]]) -> list[str]:
    """‖AGR(g) − g‖/‖g‖ per layer type, measured now on each task's model (:mod:`.agr_change`)."""
    lines = [
        "Measured by this command on each task's model at seed 1 (the first rerun's initial weights), on one "
        "gradient of its first training batch, with optarena's reference AGR: the median and largest "
        "‖AGR(g) − g‖/‖g‖ over the tensors of each layer type. Under the paper's scope (agr_scope = 'weights') "
        "AGR changes only the tensors of two or more dimensions; the authors' code changes all of them.",
        "",
        "| task | layer type | tensors | entries per tensor | median change | largest | under the paper's scope |",
        "|---|---|---|---|---|---|---|",
    ]
    for (_, task), js in agr_tasks:
        for c in agr_change.measure(js[0].experiment, task):
            entries = f"{c.smallest:,}" if c.smallest == c.largest else f"{c.smallest:,}-{c.largest:,}"
            cells = (task, c.kind, c.tensors, entries, f"{c.median:.2g}", f"{c.maximum:.2g}",
                     "yes" if c.paper_scope else "no")  # fmt: skip
            lines.append(sections.row(cells))
    return [*lines, ""]
