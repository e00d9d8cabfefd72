"""Claims of the seed papers, re-tested with the arena, and a plain verdict for each.

A claims file (TOML) holds a ``title``, free-text ``notes`` and ``[[claim]]`` entries: which paper,
what it claims, the paper's own number and setup, the experiment file that re-tests it (an ordinary
``optarena compare`` experiment), the task, and the method and baseline optimizers (registered names
or the experiment's variants). By default a claim compares the final *test* metric over seeds;
``split = "train"`` compares the training metric (Adaburst reports training accuracy) and
``at_epoch = N`` the metric after epoch N (the speed of early training).

:func:`judge` reads the experiment's store and compares the method's seeds with the baseline's. Both
sides rerun the same seeds (seed s fixes the initial weights and the batch order on both), so the
difference is estimated **paired by seed**: the 95% Student-t interval of the per-seed differences
(scipy's ``ttest_rel``); where the seeds do not match, the 95% Welch interval. The interval decides —
wholly on the better side: *confirmed*; wholly on the worse side: *not confirmed*; straddling zero, or
fewer than two seeds: *inconclusive*. A seed that diverged has no value: if only one side diverged,
that side lost; if both did, the claim is inconclusive.

:func:`render` writes the verdicts, the setups, the learning-rate sensitivity of every optimizer
(from its tuning trials, with figures), the compute budget and the file's notes as one markdown page.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tomllib
from scipy import stats

from optarena.arena import records
from optarena.arena.config import ConfigError, load_experiment_file
from optarena.arena.markdown import code_span, link_target
from optarena.arena.markdown import text as md
from optarena.arena.protocol import Experiment
from optarena.arena.stats import mean_ci
from optarena.arena.tasks import get_task

REQUIRED_KEYS = ("id", "paper", "claim", "paper_result", "experiment", "task", "method", "baseline")
OPTIONAL_KEYS = ("paper_setup", "split", "at_epoch")
FILE_KEYS = ("title", "notes", "claim")
SPLITS = ("test", "train")
VERDICTS = ("confirmed", "not confirmed", "inconclusive")


@dataclass(frozen=True)
class Claim:
    id: str
    paper: str
    claim: str
    paper_result: str
    experiment: Path  # the experiment TOML, resolved against the claims file's folder
    task: str
    method: str
    baseline: str
    paper_setup: str = ""
    split: str = "test"
    at_epoch: int | None = None  # None: the last epoch

    @property
    def measure(self) -> str:
        when = "final" if self.at_epoch is None else f"after epoch {self.at_epoch}"
        return f"{self.split} metric, {when}"


@dataclass(frozen=True)
class ClaimsFile:
    title: str
    notes: str
    claims: list[Claim]


def load_claims_file(path: str | Path) -> ClaimsFile:
    """Read a claims file; a missing or unknown key, or a value of the wrong type, is named with its claim."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ConfigError(f"{path}: no such claims file") from error
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: not a UTF-8 text file (byte 0x{error.object[error.start]:02x} at offset {error.start}); "
            "save it as UTF-8"
        ) from error
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the claims file ({error.strerror or error})") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: malformed TOML: {error}") from error
    unknown_top = sorted(set(data) - set(FILE_KEYS))
    if unknown_top:
        raise ConfigError(f"{path}: unknown key {unknown_top[0]!r}; valid keys: {', '.join(FILE_KEYS)}")
    for key in ("title", "notes"):
        if not isinstance(data.get(key, ""), str):
            raise ConfigError(f"{path}: key {key!r} must be a string, got {data[key]!r}")
    entries = data.get("claim", [])
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise ConfigError(f"{path}: 'claim' must be a list of tables ([[claim]] entries), got {entries!r}")
    claims = []
    for i, entry in enumerate(entries):
        label = f"{path}: claim {entry.get('id', i + 1)!r}"
        unknown = sorted(set(entry) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
        missing = [k for k in REQUIRED_KEYS if k not in entry]
        if unknown:
            valid = ", ".join(REQUIRED_KEYS + OPTIONAL_KEYS)
            raise ConfigError(f"{label}: unknown key {unknown[0]!r}; valid keys: {valid}")
        if missing:
            raise ConfigError(f"{label}: missing key {missing[0]!r}")
        for key in (*REQUIRED_KEYS, "paper_setup", "split"):
            if key in entry and not isinstance(entry[key], str):
                raise ConfigError(f"{label}: key {key!r} must be a string, got {entry[key]!r}")
        if entry.get("split", "test") not in SPLITS:
            raise ConfigError(f"{label}: split {entry['split']!r}; expected one of {', '.join(SPLITS)}")
        at_epoch = entry.get("at_epoch")
        if at_epoch is not None and (isinstance(at_epoch, bool) or not isinstance(at_epoch, int) or at_epoch < 1):
            raise ConfigError(f"{label}: at_epoch {at_epoch!r}; expected an integer >= 1")
        claims.append(Claim(**{**entry, "experiment": (path.parent / entry["experiment"]).resolve()}))
    if not claims:
        raise ConfigError(f"{path}: no [[claim]] entries")
    ids = [c.id for c in claims]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}: claim ids repeat: {sorted({i for i in ids if ids.count(i) > 1})}")
    return ClaimsFile(data.get("title", "Re-testing the seed papers' claims"), data.get("notes", ""), claims)


def load_claims(path: str | Path) -> list[Claim]:
    return load_claims_file(path).claims


@dataclass(frozen=True)
class Comparison:
    method: tuple[float, float, float]  # mean and 95% interval (finite seeds)
    baseline: tuple[float, float, float]
    difference: tuple[float, float, float]  # method − baseline, oriented so that positive is better
    n_method: int
    n_baseline: int
    verdict: str
    diverged_method: int = 0
    diverged_baseline: int = 0
    paired: bool = False
    welch: tuple[float, float, float] = (math.nan, math.nan, math.nan)  # the unpaired interval, for reference


def compare_seeds(
    method: Sequence[float],
    baseline: Sequence[float],
    mode: str,
    confidence: float = 0.95,
    paired: bool = False,
) -> Comparison:
    """Compare per-seed metrics (``nan`` = a diverged seed); ``mode`` 'max' or 'min' says which side is better.

    ``paired``: ``method[i]`` and ``baseline[i]`` ran the same seed; the interval is then the t interval of
    the per-seed differences, else Welch's.
    """
    a_all, b_all = np.asarray(method, dtype=float), np.asarray(baseline, dtype=float)
    if paired and len(a_all) != len(b_all):
        raise ValueError(f"Invalid paired comparison: {len(a_all)} method seeds against {len(b_all)} baseline seeds")
    a, b = a_all[np.isfinite(a_all)], b_all[np.isfinite(b_all)]
    lost_a, lost_b = len(a_all) - len(a), len(b_all) - len(b)
    nan3 = (math.nan, math.nan, math.nan)
    summary = (mean_ci(a) if len(a) else nan3, mean_ci(b) if len(b) else nan3)
    if lost_a or lost_b:
        verdict = "inconclusive" if lost_a and lost_b else "not confirmed" if lost_a else "confirmed"
        return Comparison(*summary, nan3, len(a_all), len(b_all), verdict, lost_a, lost_b, paired)
    sign = 1.0 if mode == "max" else -1.0
    diff = sign * (a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return Comparison(*summary, (diff, -math.inf, math.inf), len(a), len(b), "inconclusive", paired=paired)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    welch = (diff, diff, diff)
    if se > 0:
        df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch–Satterthwaite
        half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
        welch = (diff, diff - half, diff + half)
    _, low, high = mean_ci(sign * (a - b), confidence) if paired else welch
    verdict = "confirmed" if low > 0 else "not confirmed" if high < 0 else "inconclusive"
    return Comparison(*summary, (diff, low, high), len(a), len(b), verdict, paired=paired, welch=welch)


@dataclass(frozen=True)
class Judgement:
    claim: Claim
    experiment: Experiment
    comparison: Comparison


class MissingRuns(RuntimeError):
    """The store has no reruns (or no tuning trials) of an optimizer a claim needs."""


def _record(experiment: Experiment, task: str, optimizer: str, phase: str = "final") -> records.PairResults:
    record = records.load_results(experiment.storage_url, experiment.name).pairs.get((task, optimizer))
    if record is None or not getattr(record, phase):
        raise MissingRuns(
            f"No reruns of {optimizer} on {task} in {experiment.storage_url} (experiment {experiment.name!r}); "
            "run it first (optarena evidence --run)"
        )
    return record


def seed_metrics(
    experiment: Experiment, task: str, optimizer: str, split: str = "test", at_epoch: int | None = None
) -> dict[int, float]:
    """Seed -> the ``split`` metric after ``at_epoch`` (None: the last epoch); ``nan`` for a diverged seed."""
    values = {}
    for trial in _record(experiment, task, optimizer).final:
        seed = trial.seed if trial.seed is not None else trial.number
        rows = trial.run.rows if trial.run is not None else []
        if (trial.run is not None and trial.run.diverged) or not rows:
            values[seed] = math.nan
            continue
        if at_epoch is None:
            row = rows[-1]
        else:
            row = next((r for r in rows if int(r["epoch"]) == at_epoch), None)
            if row is None:
                raise RuntimeError(f"{optimizer} on {task}: the reruns end at epoch {int(rows[-1]['epoch'])}, "
                                   f"before at_epoch = {at_epoch}")  # fmt: skip
        value = float(row[f"{split}_metric"])
        values[seed] = value if math.isfinite(value) else math.nan
    return dict(sorted(values.items()))


def judge(claim: Claim, overrides: dict | None = None) -> Judgement:
    experiment = load_experiment_file(claim.experiment, **(overrides or {}))
    mode = get_task(claim.task).mode

    def metrics(name: str) -> dict[int, float]:
        return seed_metrics(experiment, claim.task, name, claim.split, claim.at_epoch)

    method, baseline = metrics(claim.method), metrics(claim.baseline)
    paired = list(method) == list(baseline)
    comparison = compare_seeds(list(method.values()), list(baseline.values()), mode, paired=paired)
    return Judgement(claim, experiment, comparison)


# --- sensitivity and budget ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sensitivity:
    """How one optimizer's tuning trials (spread over its lr range by the sampler) scored on validation."""

    optimizer: str
    trials: int
    best: float
    median: float
    worst: float
    diverged: int
    best_lr: float


def sensitivity(experiment: Experiment, task: str, optimizer: str) -> Sensitivity:
    record = _record(experiment, task, optimizer, phase="tune")
    scored = [t for t in record.tune if t.value is not None and math.isfinite(t.value)]
    mode = get_task(task).mode
    values = [float(t.value) for t in scored]  # type: ignore[arg-type]
    if not scored:
        return Sensitivity(optimizer, len(record.tune), math.nan, math.nan, math.nan, len(record.tune), math.nan)
    best = (max if mode == "max" else min)(scored, key=lambda t: t.value)
    worst = min(values) if mode == "max" else max(values)
    return Sensitivity(
        optimizer,
        len(record.tune),
        float(best.value),  # type: ignore[arg-type]
        statistics.median(values),
        worst,
        len(record.tune) - len(scored),
        float(best.params.get("lr", math.nan)),
    )


def _seconds(trials: Sequence[records.TrialRecord]) -> float:
    return sum(t.seconds for t in trials if t.seconds is not None)


@dataclass(frozen=True)
class Budget:
    experiment: Experiment
    runs: int
    seconds: float
    devices: tuple[str, ...]
    threads: tuple[str, ...]


def budget(experiment: Experiment) -> Budget:
    results = records.load_results(experiment.storage_url, experiment.name)
    trials = [t for r in results.pairs.values() for t in (*r.tune, *r.final)]
    devices = tuple(
        sorted({str(t.run.device if t.run is not None and t.run.device is not None else "?") for t in trials})
    )
    threads = tuple(
        sorted({str(t.run.threads if t.run is not None and t.run.threads is not None else "?") for t in trials})
    )
    return Budget(experiment, len(trials), _seconds(trials), devices, threads)


def sensitivity_figure(experiment: Experiment, task: str, optimizers: Sequence[str], path: Path) -> None:
    """The report's lr-sensitivity plot (every tuning trial) for ``optimizers`` only."""
    from optarena.arena import report

    results = records.load_results(experiment.storage_url, experiment.name)
    _, tasks, _ = report._collect(results.select(task, list(optimizers)))
    view = tasks[0]
    view.runs.sort(key=lambda r: list(optimizers).index(r.name))
    path.parent.mkdir(parents=True, exist_ok=True)
    report._sensitivity_figure(view, report._colors([r.name for r in view.runs]), path)


# --- the page -------------------------------------------------------------------------------------------------


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
