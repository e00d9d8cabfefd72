"""Claims of the seed papers, re-tested with the arena, and a plain verdict for each.

A claims file (TOML) lists ``[[claim]]`` entries: which paper, what it claims, the paper's own
number, the experiment file that re-tests it (an ordinary ``optarena compare`` experiment), the task,
and the method and baseline optimizers. :func:`judge` reads the experiment's store and compares the
method's final test metric over seeds with the baseline's: the 95% Welch interval of the difference
decides — wholly on the better side: *confirmed*; wholly on the worse side: *not confirmed*;
straddling zero, or fewer than two seeds each: *inconclusive*.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tomllib
from scipy import stats

from optarena.arena import store
from optarena.arena.config import ConfigError, load_experiment_file
from optarena.arena.protocol import Experiment
from optarena.arena.stats import mean_ci
from optarena.arena.tasks import get_task

CLAIM_KEYS = ("id", "paper", "claim", "paper_result", "experiment", "task", "method", "baseline")
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


def load_claims(path: str | Path) -> list[Claim]:
    """The ``[[claim]]`` entries of ``path``; a missing or unknown key is named with its claim."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ConfigError(f"{path}: no such claims file") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: malformed TOML: {error}") from error
    claims = []
    for i, entry in enumerate(data.get("claim", [])):
        label = f"{path}: claim {entry.get('id', i + 1)!r}"
        unknown = sorted(set(entry) - set(CLAIM_KEYS))
        missing = [k for k in CLAIM_KEYS if k not in entry]
        if unknown:
            raise ConfigError(f"{label}: unknown key {unknown[0]!r}; valid keys: {', '.join(CLAIM_KEYS)}")
        if missing:
            raise ConfigError(f"{label}: missing key {missing[0]!r}")
        claims.append(Claim(**{**entry, "experiment": (path.parent / entry["experiment"]).resolve()}))
    if not claims:
        raise ConfigError(f"{path}: no [[claim]] entries")
    return claims


@dataclass(frozen=True)
class Comparison:
    method: tuple[float, float, float]  # mean and 95% interval
    baseline: tuple[float, float, float]
    difference: tuple[float, float, float]  # method − baseline, oriented so that positive is better
    n_method: int
    n_baseline: int
    verdict: str


def compare_seeds(
    method: Sequence[float], baseline: Sequence[float], mode: str, confidence: float = 0.95
) -> Comparison:
    """Compare per-seed final metrics; ``mode`` 'max' or 'min' says which side is better."""
    a, b = np.asarray(method, dtype=float), np.asarray(baseline, dtype=float)
    sign = 1.0 if mode == "max" else -1.0
    diff = sign * (a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return Comparison(mean_ci(a), mean_ci(b), (diff, -math.inf, math.inf), len(a), len(b), "inconclusive")
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        low = high = diff
    else:
        df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch–Satterthwaite
        half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
        low, high = diff - half, diff + half
    verdict = "confirmed" if low > 0 else "not confirmed" if high < 0 else "inconclusive"
    return Comparison(mean_ci(a), mean_ci(b), (diff, low, high), len(a), len(b), verdict)


@dataclass(frozen=True)
class Judgement:
    claim: Claim
    experiment: Experiment
    comparison: Comparison


def final_metrics(experiment: Experiment, task: str, optimizer: str) -> list[float]:
    """The final test metric of each seed's rerun of ``optimizer`` on ``task``."""
    records = store.load_experiment(experiment.storage_url, experiment.name)
    record = records.get((task, optimizer))
    if record is None or not record.final:
        raise RuntimeError(
            f"No reruns of {optimizer} on {task} in {experiment.storage_url} (experiment {experiment.name!r}); "
            "run it first (optarena evidence --run)"
        )
    return [t.value for t in record.final]


def judge(claim: Claim, overrides: dict | None = None) -> Judgement:
    experiment = load_experiment_file(claim.experiment, **(overrides or {}))
    mode = get_task(claim.task).mode
    comparison = compare_seeds(
        final_metrics(experiment, claim.task, claim.method),
        final_metrics(experiment, claim.task, claim.baseline),
        mode,
    )
    return Judgement(claim, experiment, comparison)


def _interval(values: tuple[float, float, float]) -> str:
    mean, low, high = values
    if not math.isfinite(low):
        return f"{mean:.4g}"
    return f"{mean:.4g} [{low:.4g}, {high:.4g}]"


def render(judgements: Sequence[Judgement], title: str = "Re-testing the seed papers' claims") -> str:
    """Markdown: one table row per claim, then each claim's setup."""
    lines = [
        f"# {title}",
        "",
        "Each claim is re-tested with `optarena compare` under the equal-budget protocol (docs/arena.md): the "
        "same tuning budget and sampler for method and baseline, then the best configuration rerun on fresh "
        "seeds. Numbers are the final test metric, mean [95% t interval] over seeds; the verdict reads the 95% "
        "Welch interval of the difference (better side: confirmed; worse side: not confirmed; across zero: "
        "inconclusive).",
        "",
        "| claim | paper | paper's result | method | baseline | difference (better > 0) | seeds | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for j in judgements:
        c, cmp = j.claim, j.comparison
        lines.append(
            f"| {c.id}: {c.claim} | {c.paper} | {c.paper_result} | {c.method} {_interval(cmp.method)} | "
            f"{c.baseline} {_interval(cmp.baseline)} | {_interval(cmp.difference)} | "
            f"{cmp.n_method}/{cmp.n_baseline} | **{cmp.verdict}** |"
        )
    lines += ["", "## Setups", ""]
    for j in judgements:
        e = j.experiment
        lines.append(
            f"- **{j.claim.id}** — {j.claim.task}: {e.trials} tuning trials and {e.seeds} seeds per optimizer, "
            f"{e.epochs or get_task(j.claim.task).epochs} epochs, subset {e.subset or 'all'}, sampler {e.sampler}, "
            f"pruning {'on' if e.prune else 'off'}; experiment file `{j.claim.experiment.name}`, "
            f"store `{e.storage_url}`."
        )
    return "\n".join(lines) + "\n"
